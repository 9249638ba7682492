//! The cpio "newc" (`070701`) and "crc" (`070702`) formats as the kernel's
//! initramfs unpacker reads them (init/initramfs.c,
//! Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! On-disk layout of one entry:
//!
//! ```text
//! offset  size  field
//!      0     6  magic "070701" (newc) or "070702" (crc)
//!      6     8  c_ino        all numbers: 8 ASCII hex digits
//!     14     8  c_mode       file type and permission bits (S_IFMT, 07777)
//!     22     8  c_uid
//!     30     8  c_gid
//!     38     8  c_nlink
//!     46     8  c_mtime
//!     54     8  c_filesize   bytes of data (symlink: the target)
//!     62     8  c_maj        device the inode lives on (hard-link key)
//!     70     8  c_min
//!     78     8  c_rmaj       device number of a char/block node
//!     86     8  c_rmin
//!     94     8  c_namesize   name length including its terminating NUL
//!    102     8  c_chksum     crc format: 32-bit sum of the data bytes
//!    110        name, NUL; padded so that 110 + namesize is a multiple of 4
//!               data; padded to a multiple of 4
//! ```
//!
//! The entry named `TRAILER!!!` ends an archive and resets the hard-link
//! table. Numbers are 32 bits wide, so no file can reach 4 GiB. The old
//! binary and "odc" (`070707`) formats are rejected, as the kernel does.

use serde::Serialize;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 110;
/// Name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";
/// The kernel's limit for names and symlink targets (PATH_MAX).
pub const PATH_MAX: u32 = 4096;

/// Which of the two ASCII formats an entry uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `070701`: no checksum.
    Newc,
    /// `070702`: `c_chksum` holds the 32-bit sum of the data bytes.
    Crc,
}

impl Format {
    pub fn magic(self) -> &'static [u8; 6] {
        match self {
            Format::Newc => b"070701",
            Format::Crc => b"070702",
        }
    }
}

/// The numeric fields of one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Header {
    pub format: Format,
    pub ino: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub filesize: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub namesize: u32,
    pub check: u32,
}

/// File type from `c_mode & S_IFMT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    /// A type the kernel ignores (it creates nothing for it).
    Unknown,
}

pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

impl FileType {
    pub fn from_mode(mode: u32) -> FileType {
        match mode & S_IFMT {
            S_IFREG => FileType::Regular,
            S_IFDIR => FileType::Directory,
            S_IFLNK => FileType::Symlink,
            S_IFCHR => FileType::CharDevice,
            S_IFBLK => FileType::BlockDevice,
            S_IFIFO => FileType::Fifo,
            S_IFSOCK => FileType::Socket,
            _ => FileType::Unknown,
        }
    }

    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => S_IFREG,
            FileType::Directory => S_IFDIR,
            FileType::Symlink => S_IFLNK,
            FileType::CharDevice => S_IFCHR,
            FileType::BlockDevice => S_IFBLK,
            FileType::Fifo => S_IFIFO,
            FileType::Socket => S_IFSOCK,
            FileType::Unknown => 0,
        }
    }

    /// The letter `ls -l` and `cpio -tv` print.
    pub fn letter(self) -> char {
        match self {
            FileType::Regular => '-',
            FileType::Directory => 'd',
            FileType::Symlink => 'l',
            FileType::CharDevice => 'c',
            FileType::BlockDevice => 'b',
            FileType::Fifo => 'p',
            FileType::Socket => 's',
            FileType::Unknown => '?',
        }
    }
}

impl Header {
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode)
    }

    /// Bytes from the start of the header to the start of the data.
    pub fn data_offset(&self) -> u64 {
        pad4(HEADER_LEN as u64 + u64::from(self.namesize))
    }
}

/// Why a header could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// `070707` or the old binary magic: the kernel wants `-H newc`.
    OldFormat,
    /// Not a cpio header at all.
    NoMagic,
    /// A field holds something other than 8 hex digits.
    BadNumber { field: &'static str },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::OldFormat => write!(
                f,
                "old cpio format (odc/binary); the kernel only accepts newc or crc (cpio -H newc)"
            ),
            HeaderError::NoMagic => write!(f, "no cpio magic (expected 070701 or 070702)"),
            HeaderError::BadNumber { field } => {
                write!(f, "header field {field} is not 8 hexadecimal digits")
            }
        }
    }
}

const FIELDS: [&str; 13] = [
    "c_ino",
    "c_mode",
    "c_uid",
    "c_gid",
    "c_nlink",
    "c_mtime",
    "c_filesize",
    "c_maj",
    "c_min",
    "c_rmaj",
    "c_rmin",
    "c_namesize",
    "c_chksum",
];

fn hex8(b: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for &c in b {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        v = (v << 4) | u32::from(d);
    }
    Some(v)
}

/// Parses a 110-byte header.
pub fn parse_header(b: &[u8; HEADER_LEN]) -> Result<Header, HeaderError> {
    let format = match &b[..6] {
        b"070701" => Format::Newc,
        b"070702" => Format::Crc,
        b"070707" => return Err(HeaderError::OldFormat),
        m if m[..2] == [0xc7, 0x71] || m[..2] == [0x71, 0xc7] => {
            return Err(HeaderError::OldFormat)
        }
        _ => return Err(HeaderError::NoMagic),
    };
    let mut f = [0u32; 13];
    for (i, v) in f.iter_mut().enumerate() {
        let s = 6 + i * 8;
        *v = hex8(&b[s..s + 8]).ok_or(HeaderError::BadNumber { field: FIELDS[i] })?;
    }
    Ok(Header {
        format,
        ino: f[0],
        mode: f[1],
        uid: f[2],
        gid: f[3],
        nlink: f[4],
        mtime: f[5],
        filesize: f[6],
        dev_major: f[7],
        dev_minor: f[8],
        rdev_major: f[9],
        rdev_minor: f[10],
        namesize: f[11],
        check: f[12],
    })
}

/// Formats a header (upper-case hex digits, as GNU cpio writes them).
pub fn format_header(h: &Header) -> [u8; HEADER_LEN] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; HEADER_LEN];
    out[..6].copy_from_slice(h.format.magic());
    let fields = [
        h.ino,
        h.mode,
        h.uid,
        h.gid,
        h.nlink,
        h.mtime,
        h.filesize,
        h.dev_major,
        h.dev_minor,
        h.rdev_major,
        h.rdev_minor,
        h.namesize,
        h.check,
    ];
    for (i, v) in fields.iter().enumerate() {
        for d in 0..8 {
            out[6 + i * 8 + d] = HEX[((v >> (28 - 4 * d)) & 0xf) as usize];
        }
    }
    out
}

/// Rounds up to a multiple of 4.
pub fn pad4(n: u64) -> u64 {
    (n + 3) & !3
}

/// The 32-bit sum the crc format stores (GNU cpio and the kernel add the
/// data bytes as unsigned values, wrapping).
pub fn checksum_update(sum: u32, data: &[u8]) -> u32 {
    // Summing in u64 lanes lets the compiler vectorise; the wrap only
    // matters modulo 2^32 at the end.
    let mut acc: u64 = 0;
    for chunk in data.chunks(1 << 20) {
        acc += chunk.iter().map(|&b| u64::from(b)).sum::<u64>();
    }
    sum.wrapping_add(acc as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            format: Format::Crc,
            ino: 7,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            nlink: 1,
            mtime: 0x5f5e1000,
            filesize: 1234,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 8,
            rdev_minor: 1,
            namesize: 5,
            check: 0xdeadbeef,
        };
        assert_eq!(parse_header(&format_header(&h)), Ok(h));
    }

    #[test]
    fn rejects_old_format() {
        let mut b = [b'0'; HEADER_LEN];
        b[..6].copy_from_slice(b"070707");
        assert_eq!(parse_header(&b), Err(HeaderError::OldFormat));
        b[..6].copy_from_slice(b"07070x");
        assert_eq!(parse_header(&b), Err(HeaderError::NoMagic));
    }
}
