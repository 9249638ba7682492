//! The output file: written through kmodkit_commit::Staged, with
//! writeback started as it grows.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kmodkit_commit::{Backup, Committed, Staged};

use crate::error::Error;

/// Counts bytes on their way to the file.
pub(super) struct Counting<W> {
    pub(super) inner: W,
    pub(super) count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.count += buf.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` through [`kmodkit_commit::Staged`]: a temporary file in
/// the same directory, fsynced and renamed into place, removed on error
/// and on SIGINT/SIGTERM; the old file stays until the rename and, with
/// [`Backup::Keep`], after it as `PATH.bak` (or `PATH.bak.N`). The new
/// file gets the permission bits `mode`, or else those of the file it
/// replaces (0644 for a new file), before it appears at `path`.
pub fn write_atomically(
    path: &Path,
    backup: Backup,
    mode: Option<u32>,
    write: impl FnOnce(&mut OutputFile) -> Result<(), Error>,
) -> Result<Committed, Error> {
    let mut staged = Staged::new(path)?;
    let mode = mode.or_else(|| fs::metadata(path).ok().map(|m| m.permissions().mode()));
    if let Some(mode) = mode {
        staged.set_mode(mode & 0o7777)?;
    }
    let mut out = OutputFile {
        file: staged.file(),
        written: 0,
        started: 0,
    };
    write(&mut out).map_err(|e| e.naming_output(path))?;
    Ok(staged.commit(backup)?)
}

/// The temporary output file. It starts writeback of every 8 MiB written
/// (posix_fadvise DONTNEED does, on Linux) so the disk works while the
/// compressor does, and the final fsync has little left to wait for.
pub struct OutputFile<'f> {
    file: &'f mut File,
    written: u64,
    started: u64,
}

impl Write for OutputFile<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        kmodkit_commit::fault_point("commit-write");
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= 8 << 20 {
            // Advisory only: an error changes nothing for correctness.
            let len = std::num::NonZeroU64::new(self.written - self.started);
            let _ =
                rustix::fs::fadvise(&*self.file, self.started, len, rustix::fs::Advice::DontNeed);
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
