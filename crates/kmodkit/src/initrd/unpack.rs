//! `initrd extract` and `initrd cat`.

use std::io::{self, Write};

use anyhow::bail;
use kmodkit_initramfs::cpio::FileType;
use kmodkit_initramfs::extract::{self, ExtractOptions};
use kmodkit_initramfs::read::{self, Entry, Visitor};
use kmodkit_initramfs::{diff, Error};

use super::args::{CatArgs, ExtractArgs};
use super::{check_segments, open, read_opts, read_opts_threaded, Selection};
use crate::progress::Bar;

pub(super) fn extract_cmd(a: &ExtractArgs) -> anyhow::Result<bool> {
    let image = open(&a.image)?;
    let sel = Selection::new(&a.globs, &a.segments)?;
    let mut opts = ExtractOptions {
        umask: crate::host::process_umask(),
        ..ExtractOptions::default()
    };
    if a.no_same_owner {
        opts.preserve_owner = false;
    }
    let bar = Bar::new("extract");
    let filter = |seg: usize, name: &[u8]| sel.matches(seg, name);
    let report = extract::extract(
        &image,
        &read_opts_threaded(&a.read),
        &bar,
        &a.dir,
        &opts,
        &filter,
    )?;
    for s in &report.skipped {
        diag!(
            "kmodkit: warning: {}: segment {}: '{}': {}",
            a.image.display(),
            s.segment,
            s.name,
            s.reason
        );
    }
    check_segments(&a.segments, &report.segments)?;
    Ok(true)
}

pub(super) fn cat(a: &CatArgs) -> anyhow::Result<bool> {
    struct Cat<W: Write> {
        want: String,
        out: W,
        found: bool,
        /// Data of the last match (a later entry replaces an earlier one,
        /// as in the kernel), kept only while it is the latest.
        buf: Vec<u8>,
        collecting: bool,
        kind: Option<FileType>,
    }
    impl<W: Write> Visitor for Cat<W> {
        fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
            if diff::normal_name(e.name) != self.want {
                return Ok(false);
            }
            self.found = true;
            self.kind = Some(e.file_type());
            self.buf.clear();
            self.collecting = e.file_type() == FileType::Regular;
            Ok(self.collecting)
        }
        fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
            self.buf.extend_from_slice(chunk);
            Ok(())
        }
    }
    let image = open(&a.image)?;
    let want = diff::normal_name(a.path.as_bytes());
    let mut c = Cat {
        want,
        out: io::stdout().lock(),
        found: false,
        buf: Vec::new(),
        collecting: false,
        kind: None,
    };
    read::read_image(&image, &read_opts(&a.read), &read::NoProgress, &mut c)?;
    if !c.found {
        bail!(
            "{}: no entry '{}' (see `kmodkit initrd ls`)",
            a.image.display(),
            a.path
        );
    }
    if c.kind != Some(FileType::Regular) {
        bail!("{}: '{}' is not a regular file", a.image.display(), a.path);
    }
    c.out.write_all(&c.buf)?;
    c.out.flush()?;
    Ok(true)
}
