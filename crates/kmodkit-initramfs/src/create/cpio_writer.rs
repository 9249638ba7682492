//! One cpio archive: headers, names, file data read straight into the
//! sink's buffer, the trailer.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use super::PlannedEntry;
use crate::cpio::{self, FileType, Format, Header, HEADER_LEN, TRAILER};
use crate::error::Error;
use crate::read::Progress;

pub(super) const ZEROS: [u8; 4] = [0; 4];

/// Writes one cpio archive (entries and trailer) to `out`; returns its
/// length. `progress` advances by input bytes read.
pub fn write_cpio(
    entries: &[PlannedEntry],
    format: Format,
    out: &mut dyn Write,
    progress: &dyn Progress,
    done: &mut u64,
) -> Result<u64, Error> {
    let mut out = WriteOut {
        out,
        buf: vec![0u8; 1 << 20],
    };
    generate_cpio(entries, format, &mut out, progress, done)
}

/// A failure while copying a file into the archive: reading the file, or
/// writing the archive.
pub(super) enum PutError {
    Read(io::Error),
    Write(io::Error),
}

/// Where [`generate_cpio`] puts the archive: bytes, and file contents that
/// the sink may read straight into its own buffer (one copy less).
pub(super) trait CpioOut {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Appends up to `want` bytes of `file` read at offset `at`; returns how
    /// many (0: the file ended early).
    fn put_file(&mut self, file: &File, at: u64, want: usize) -> Result<usize, PutError>;
}

/// A [`CpioOut`] over any writer, reading files through a buffer.
pub(super) struct WriteOut<'w> {
    out: &'w mut dyn Write,
    buf: Vec<u8>,
}

impl CpioOut for WriteOut<'_> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)
    }
    fn put_file(&mut self, file: &File, at: u64, want: usize) -> Result<usize, PutError> {
        let want = want.min(self.buf.len());
        let n = std::os::unix::fs::FileExt::read_at(file, &mut self.buf[..want], at)
            .map_err(PutError::Read)?;
        self.out
            .write_all(&self.buf[..n])
            .map_err(PutError::Write)?;
        Ok(n)
    }
}

pub(super) fn generate_cpio(
    entries: &[PlannedEntry],
    format: Format,
    out: &mut dyn CpioOut,
    progress: &dyn Progress,
    done: &mut u64,
) -> Result<u64, Error> {
    let mut written = 0u64;
    let put = |out: &mut dyn CpioOut, bytes: &[u8], written: &mut u64| -> io::Result<()> {
        *written += bytes.len() as u64;
        out.put(bytes)
    };
    let wr = |e: io::Error| Error::write_output(e);
    let mut sum_buf = Vec::new();
    for e in entries {
        let mut h = e.header;
        h.format = format;
        let mut file = None;
        if let Some(src) = &e.source {
            let f = fs::File::open(src).map_err(|err| Error::Input {
                path: src.clone(),
                cause: err,
            })?;
            if format == Format::Crc {
                sum_buf.resize(1 << 20, 0);
                let mut sum = 0u32;
                let mut r = &f;
                let mut total = 0u64;
                loop {
                    let n = r.read(&mut sum_buf).map_err(|err| Error::Input {
                        path: src.clone(),
                        cause: err,
                    })?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                    sum = cpio::checksum_update(sum, &sum_buf[..n]);
                }
                if total != u64::from(h.filesize) {
                    return Err(changed(src));
                }
                h.check = sum;
            }
            file = Some(f);
        }
        put(out, &cpio::format_header(&h), &mut written).map_err(wr)?;
        put(out, &e.name, &mut written).map_err(wr)?;
        let pad = (h.data_offset() - HEADER_LEN as u64 - e.name.len() as u64) as usize;
        put(out, &[0u8; 8][..pad], &mut written).map_err(wr)?;
        if let (Some(f), Some(src)) = (file, &e.source) {
            let mut left = u64::from(h.filesize);
            let mut at = 0u64;
            while left > 0 {
                let want = usize::try_from(left).unwrap_or(usize::MAX);
                let n = out.put_file(&f, at, want).map_err(|err| match err {
                    PutError::Read(cause) => Error::Input {
                        path: src.clone(),
                        cause,
                    },
                    PutError::Write(cause) => wr(cause),
                })?;
                if n == 0 {
                    return Err(changed(src));
                }
                written += n as u64;
                left -= n as u64;
                at += n as u64;
                *done += n as u64;
            }
            progress.set_position(*done);
        } else if h.file_type() == FileType::Symlink {
            put(out, &e.link_target, &mut written).map_err(wr)?;
        }
        let dpad = (cpio::pad4(u64::from(h.filesize)) - u64::from(h.filesize)) as usize;
        put(out, &ZEROS[..dpad], &mut written).map_err(wr)?;
    }
    let trailer = Header {
        format,
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        nlink: 1,
        mtime: 0,
        filesize: 0,
        dev_major: 0,
        dev_minor: 0,
        rdev_major: 0,
        rdev_minor: 0,
        namesize: TRAILER.len() as u32 + 1,
        check: 0,
    };
    put(out, &cpio::format_header(&trailer), &mut written).map_err(wr)?;
    put(out, TRAILER, &mut written).map_err(wr)?;
    let pad = (trailer.data_offset() - HEADER_LEN as u64 - TRAILER.len() as u64) as usize;
    put(out, &[0u8; 8][..pad], &mut written).map_err(wr)?;
    Ok(written)
}

pub(super) fn changed(src: &Path) -> Error {
    Error::Input {
        path: src.to_path_buf(),
        cause: io::Error::other("file changed size while it was being archived"),
    }
}
