//! Writing images: reproducible cpio archives from a directory or a
//! manifest, one or more segments (an uncompressed early segment first),
//! and repacking an existing image with another compression.
//!
//! Reproducible by default (same input, same bytes): entries sorted by
//! name (parents before children), inode numbers renumbered from 1 in that
//! order, device fields of the inode zero, owners 0 unless kept,
//! modification times clamped to SOURCE_DATE_EPOCH when one is given.
//! Hard links are kept: all names of an inode share its number and link
//! count, and the data goes with the last name, as GNU cpio writes it (the
//! kernel's maybe_link() links the earlier names and writes the data
//! through the last).
//!
//! The manifest is the kernel's gen_init_cpio format (usr/gen_init_cpio.c):
//!
//! ```text
//! file  <name> <location> <mode> <uid> <gid> [<hard links>...]
//! dir   <name> <mode> <uid> <gid>
//! nod   <name> <mode> <uid> <gid> <b|c> <maj> <min>
//! slink <name> <target> <mode> <uid> <gid>
//! pipe  <name> <mode> <uid> <gid>
//! sock  <name> <mode> <uid> <gid>
//! ```
//!
//! Modes are octal; a relative `<location>` is taken from the manifest's
//! directory; missing parent directories are added (0755, root).
//!
//! The pieces: `sources` (a directory scan, a manifest), `plan` (sorting,
//! checks, inode numbers), `cpio_writer` (one archive), `segments` (one
//! or more compressed segments, the cpio generated on a second thread),
//! `output` (the file written atomically), `repack`.

mod cpio_writer;
mod output;
mod plan;
mod repack;
mod segments;
mod sources;

pub use cpio_writer::write_cpio;
pub use output::{write_atomically, OutputFile};
pub use plan::{manifest_options, plan};
pub use repack::{repack, RecompressOptions};
pub use segments::{write_segments, SegmentSpec};
pub use sources::{parse_manifest, scan_dir};

use std::path::PathBuf;

use crate::cpio::{FileType, Format, Header};
use crate::error::Error;

/// One entry to write, before normalisation.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// Relative name, no leading `/`.
    pub name: Vec<u8>,
    pub file_type: FileType,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub rdev: (u32, u32),
    /// Regular files: where the data comes from, and its size.
    pub source: Option<PathBuf>,
    pub size: u64,
    pub link_target: Vec<u8>,
    /// Names sharing one inode carry the same key.
    pub inode_key: Option<(u64, u64)>,
}

impl SourceEntry {
    /// An entry owned by root, time 0, with no data, target or device
    /// number: the caller sets what it knows.
    pub fn new(name: Vec<u8>, file_type: FileType, perm: u32) -> SourceEntry {
        SourceEntry {
            name,
            file_type,
            perm,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev: (0, 0),
            source: None,
            size: 0,
            link_target: Vec::new(),
            inode_key: None,
        }
    }
}

/// How entries are normalised.
#[derive(Debug, Clone, Copy)]
pub struct CreateOptions {
    pub format: Format,
    /// Keep owners (a directory scan's uid/gid); otherwise 0.
    pub keep_owners: bool,
    /// Clamp modification times to this (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<u64>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            format: Format::Newc,
            keep_owners: false,
            clamp_mtime: None,
        }
    }
}

/// An entry ready to be written.
#[derive(Debug, Clone)]
pub struct PlannedEntry {
    pub name: Vec<u8>,
    pub header: Header,
    /// Data source when this entry carries data.
    pub source: Option<PathBuf>,
    pub link_target: Vec<u8>,
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}
