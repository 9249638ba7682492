//! `kmodkit initrd`: the command line of the initramfs engine
//! (kmodkit-initramfs). Argument definitions live here so the man page and
//! completions include them; all format knowledge is in the library.
//!
//! - `args`: the subcommands and their flags;
//! - `list`: `examine` and `ls`;
//! - `unpack`: `extract` and `cat`;
//! - `pack`: `create` and `repack`;
//! - `compare`: `diff`.
//!
//! `add-drivers` and `modules` are defined in `crate::add_drivers`, which
//! shares only the terminal progress bar (`crate::progress`) and the read
//! limit flags (`crate::read_flags`) with these commands.

mod args;
mod compare;
mod list;
mod pack;
mod unpack;

pub use args::{InitrdArgs, InitrdCommand};

use std::path::Path;

use anyhow::{bail, Context};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kmodkit_initramfs::diff;
use kmodkit_initramfs::read::{Image, ReadOptions, SegmentSummary};

use crate::read_flags::ReadFlags;

/// Listing-type commands parse on the decompressing thread (the parser's
/// work is small next to decompression, and a second thread would only add
/// hand-offs); extraction and repack decompress on a thread of their own.
fn read_opts(r: &ReadFlags) -> ReadOptions {
    ReadOptions {
        max_output: r.max_size,
        threaded: false,
    }
}

fn read_opts_threaded(r: &ReadFlags) -> ReadOptions {
    ReadOptions {
        max_output: r.max_size,
        threaded: true,
    }
}

fn open(path: &Path) -> anyhow::Result<Image<'static>> {
    Ok(Image::open(path)?)
}

/// Glob filter over normalised names (no leading `/` or `./`).
struct Selection {
    globs: Option<GlobSet>,
    segments: Vec<usize>,
}

impl Selection {
    fn new(globs: &[String], segments: &[usize]) -> anyhow::Result<Selection> {
        let globs = if globs.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let g = g.trim_start_matches("./").trim_start_matches('/');
                b.add(
                    GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()
                        .with_context(|| format!("bad glob '{g}'"))?,
                );
            }
            Some(b.build()?)
        };
        Ok(Selection {
            globs,
            segments: segments.to_vec(),
        })
    }

    fn matches(&self, segment: usize, name: &[u8]) -> bool {
        if !self.segments.is_empty() && !self.segments.contains(&segment) {
            return false;
        }
        match &self.globs {
            None => true,
            Some(g) => g.is_match(diff::normal_name(name)),
        }
    }
}

/// `initrd diff` exits as diff(1): 0 same, 1 different, 2 trouble; main
/// maps its errors to [`DIFF_TROUBLE`].
pub fn is_diff(args: &InitrdArgs) -> bool {
    matches!(args.command, InitrdCommand::Diff(_))
}

pub const DIFF_TROUBLE: u8 = 2;

pub fn run(args: &InitrdArgs) -> anyhow::Result<bool> {
    match &args.command {
        InitrdCommand::Examine(a) => list::examine(a),
        InitrdCommand::Ls(a) => list::ls(a),
        InitrdCommand::Extract(a) => unpack::extract_cmd(a),
        InitrdCommand::Cat(a) => unpack::cat(a),
        InitrdCommand::Create(a) => pack::create_cmd(a),
        InitrdCommand::Repack(a) => pack::repack(a),
        InitrdCommand::Diff(a) => compare::diff_cmd(a),
        InitrdCommand::AddDrivers(a) => crate::add_drivers::add_drivers(a),
        InitrdCommand::Modules(a) => crate::add_drivers::modules(a),
    }
}

fn check_segments(wanted: &[usize], segs: &[SegmentSummary]) -> anyhow::Result<()> {
    for &w in wanted {
        if w == 0 || w > segs.len() {
            bail!(
                "--segment {w}: the image has {} segment(s), numbered from 1 (see `kmodkit initrd examine`)",
                segs.len()
            );
        }
    }
    Ok(())
}
