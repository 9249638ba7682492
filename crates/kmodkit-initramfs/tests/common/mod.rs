//! Helpers shared by this crate's tests.

use kmodkit_initramfs::cpio::{self, Format, Header};

/// Appends one entry in the given format.
pub fn put(
    out: &mut Vec<u8>,
    format: Format,
    name: &str,
    mode: u32,
    data: &[u8],
    ino: u32,
    nlink: u32,
) {
    let check = if format == Format::Crc && mode & cpio::S_IFMT == cpio::S_IFREG {
        cpio::checksum_update(0, data)
    } else {
        0
    };
    let h = Header {
        format,
        ino,
        mode,
        uid: 0,
        gid: 0,
        nlink,
        mtime: 1_000_000,
        filesize: data.len() as u32,
        dev_major: 0,
        dev_minor: 0,
        rdev_major: 0,
        rdev_minor: 0,
        namesize: name.len() as u32 + 1,
        check,
    };
    out.extend_from_slice(&cpio::format_header(&h));
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
