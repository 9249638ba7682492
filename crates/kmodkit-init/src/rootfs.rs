//! The root image: its SHA-256 checked, gzip removed if present (magic
//! `1f 8b`), then unpacked into a directory (the tmpfs at `/sysroot`).
//!
//! Two archive formats, told apart by their magic:
//! - cpio newc/crc (`070701`/`070702`): 110-byte header of 8-digit hex
//!   fields, name and data each padded to 4 bytes, `TRAILER!!!` last
//!   (Documentation/driver-api/early-userspace/buffer-format.rst);
//! - tar (POSIX ustar, `ustar` at offset 257): 512-byte headers with octal
//!   fields, data padded to 512, GNU `L`/`K` long names and link names;
//!   pax headers are skipped.
//!
//! Names are made relative; an entry with a `..` component is refused.
//! Hard links of cpio (the data goes with the last name) are not
//! reproduced: each name with data becomes its own file.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// Why the image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RootImageError {
    /// The checksum differs.
    #[error("sha256 of the image is {actual}, the configuration expects {expected}")]
    Checksum {
        /// What the configuration says.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
    /// gzip failed.
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    /// Neither cpio nor tar.
    #[error("the image is neither a cpio (newc) nor a tar archive (first bytes {0:02x?})")]
    Format(Vec<u8>),
    /// The archive is damaged.
    #[error("{format} archive, offset {offset}: {reason}")]
    Corrupt {
        /// cpio or tar.
        format: &'static str,
        /// Byte offset of the entry (in the uncompressed stream).
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// Writing the tree failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The path written.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What was unpacked.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    /// Archive format, "cpio" or "tar".
    pub format: &'static str,
    /// Whether it was gzip-compressed.
    pub gzip: bool,
    /// Entries written.
    pub entries: usize,
    /// Uncompressed archive size.
    pub bytes: usize,
}

/// Checks `image` against `sha256` and unpacks it into `target`.
pub fn unpack(image: &[u8], sha256: &str, target: &Path) -> Result<Unpacked, RootImageError> {
    let actual = sha256_hex(image);
    if !actual.eq_ignore_ascii_case(sha256.trim()) {
        return Err(RootImageError::Checksum {
            expected: sha256.to_string(),
            actual,
        });
    }
    let gzip = image.starts_with(&[0x1f, 0x8b]);
    let decompressed;
    let archive: &[u8] = if gzip {
        let mut out = Vec::with_capacity(image.len() * 3);
        flate2::read::MultiGzDecoder::new(image)
            .read_to_end(&mut out)
            .map_err(RootImageError::Gzip)?;
        decompressed = out;
        &decompressed
    } else {
        image
    };
    let (format, entries) = if archive.starts_with(b"070701") || archive.starts_with(b"070702") {
        ("cpio", unpack_cpio(archive, target)?)
    } else if archive.len() >= 262 && &archive[257..262] == b"ustar" {
        ("tar", unpack_tar(archive, target)?)
    } else {
        return Err(RootImageError::Format(
            archive[..archive.len().min(8)].to_vec(),
        ));
    };
    Ok(Unpacked {
        format,
        gzip,
        entries,
        bytes: archive.len(),
    })
}

/// The relative path of an archive name, or None for `.` / a `..` escape.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

enum Kind<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(String),
    Other,
}

fn write_entry(
    target: &Path,
    name: &str,
    mode: u32,
    uid: u32,
    gid: u32,
    kind: Kind<'_>,
) -> Result<bool, RootImageError> {
    let Some(relative) = safe_relative(name) else {
        return Ok(false);
    };
    let path = target.join(relative);
    let write = |source| RootImageError::Write {
        path: path.clone(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(write)?;
    }
    match kind {
        Kind::Dir => match fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(write(e)),
        },
        Kind::File(data) => {
            let _ = fs::remove_file(&path);
            fs::write(&path, data).map_err(write)?;
        }
        Kind::Symlink(to) => {
            let _ = fs::remove_file(&path);
            symlink(to, &path).map_err(write)?;
        }
        Kind::Other => return Ok(false),
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| write(std::io::ErrorKind::InvalidInput.into()))?;
    // SAFETY: c_path is a valid NUL-terminated path.
    unsafe { libc::lchown(c_path.as_ptr(), uid, gid) };
    if !matches!(fs::symlink_metadata(&path), Ok(m) if m.file_type().is_symlink()) {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)).map_err(write)?;
    }
    Ok(true)
}

fn unpack_cpio(archive: &[u8], target: &Path) -> Result<usize, RootImageError> {
    let mut offset = 0;
    let mut entries = 0;
    loop {
        // Zero padding between concatenated archives is allowed (init/initramfs.c).
        while offset < archive.len() && archive[offset] == 0 {
            offset += 1;
        }
        if offset >= archive.len() {
            return Ok(entries);
        }
        let at = offset;
        let corrupt = move |reason: String| RootImageError::Corrupt {
            format: "cpio",
            offset: at,
            reason,
        };
        let header = archive
            .get(offset..offset + 110)
            .ok_or_else(|| corrupt("truncated header".into()))?;
        if &header[..5] != b"07070" || !(header[5] == b'1' || header[5] == b'2') {
            return Err(corrupt(format!(
                "bad magic {:?}",
                String::from_utf8_lossy(&header[..6])
            )));
        }
        let field = |i: usize| -> Result<u32, RootImageError> {
            let text = std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .map_err(|_| corrupt("non-ASCII field".into()))?;
            u32::from_str_radix(text, 16)
                .map_err(|_| corrupt(format!("field {i} {text:?} is not hex")))
        };
        let (mode, uid, gid, filesize, namesize) = (
            field(1)?,
            field(2)?,
            field(3)?,
            field(6)? as usize,
            field(11)? as usize,
        );
        let name_start = offset + 110;
        let name_bytes = archive
            .get(name_start..name_start + namesize)
            .ok_or_else(|| corrupt("truncated name".into()))?;
        let name = String::from_utf8_lossy(name_bytes.strip_suffix(&[0]).unwrap_or(name_bytes))
            .into_owned();
        let data_start = (name_start + namesize + 3) & !3;
        let data = archive
            .get(data_start..data_start + filesize)
            .ok_or_else(|| corrupt(format!("{name}: data of {filesize} bytes truncated")))?;
        offset = (data_start + filesize + 3) & !3;
        if name == "TRAILER!!!" {
            continue;
        }
        let kind = match mode & 0o170000 {
            0o040000 => Kind::Dir,
            0o100000 => Kind::File(data),
            0o120000 => Kind::Symlink(String::from_utf8_lossy(data).into_owned()),
            _ => Kind::Other,
        };
        if write_entry(target, &name, mode, uid, gid, kind)? {
            entries += 1;
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn unpack_tar(archive: &[u8], target: &Path) -> Result<usize, RootImageError> {
    let mut offset = 0;
    let mut entries = 0;
    let mut long_name: Option<String> = None;
    let mut long_link: Option<String> = None;
    while offset + 512 <= archive.len() {
        let header = &archive[offset..offset + 512];
        let at = offset;
        let corrupt = move |reason: String| RootImageError::Corrupt {
            format: "tar",
            offset: at,
            reason,
        };
        if header.iter().all(|&b| b == 0) {
            return Ok(entries);
        }
        let number = |range: std::ops::Range<usize>, what: &str| {
            octal(&header[range]).ok_or_else(|| corrupt(format!("{what} is not octal")))
        };
        let size = number(124..136, "size")? as usize;
        let data_start = offset + 512;
        let data = archive
            .get(data_start..data_start + size)
            .ok_or_else(|| corrupt(format!("data of {size} bytes truncated")))?;
        offset = data_start + size.div_ceil(512) * 512;
        let type_flag = header[156];
        match type_flag {
            b'L' => {
                long_name = Some(c_string(data));
                continue;
            }
            b'K' => {
                long_link = Some(c_string(data));
                continue;
            }
            _ => {}
        }
        if matches!(type_flag, b'x' | b'g') {
            continue;
        }
        let name = long_name.take().unwrap_or_else(|| {
            let prefix = c_string(&header[345..500]);
            let name = c_string(&header[..100]);
            if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            }
        });
        let mode = number(100..108, "mode")? as u32;
        let uid = number(108..116, "uid")? as u32;
        let gid = number(116..124, "gid")? as u32;
        let link_name = long_link
            .take()
            .unwrap_or_else(|| c_string(&header[157..257]));
        let kind = match type_flag {
            b'0' | 0 | b'7' => Kind::File(data),
            b'5' => Kind::Dir,
            b'2' => Kind::Symlink(link_name),
            b'1' => {
                // A hard link: copy the earlier file's bytes.
                let from = safe_relative(&link_name).map(|p| target.join(p));
                match from.and_then(|p| fs::read(p).ok()) {
                    Some(bytes) => {
                        if write_entry(target, &name, mode, uid, gid, Kind::File(&bytes))? {
                            entries += 1;
                        }
                        continue;
                    }
                    None => Kind::Other,
                }
            }
            _ => Kind::Other,
        };
        if write_entry(target, &name, mode, uid, gid, kind)? {
            entries += 1;
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpio_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
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

    /// GNU tar is the oracle: its gnu (`L` long names) and ustar (name
    /// prefix) formats, gzip'd, with a directory, a symlink, a hard link
    /// and a name longer than 100 bytes.
    #[test]
    fn unpacks_what_gnu_tar_writes() {
        let source = tempfile::tempdir().unwrap();
        let long_dir = "d".repeat(60);
        let long = format!("{long_dir}/{}", "f".repeat(70));
        fs::create_dir_all(source.path().join("sbin")).unwrap();
        fs::create_dir_all(source.path().join(&long_dir)).unwrap();
        fs::write(source.path().join("sbin/init"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(
            source.path().join("sbin/init"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        fs::write(source.path().join(&long), b"long").unwrap();
        // A hard link to a long name needs GNU's `K` record: gnu format only.
        fs::hard_link(source.path().join(&long), source.path().join("hard")).unwrap();
        fs::hard_link(source.path().join("sbin/init"), source.path().join("hard2")).unwrap();
        symlink("sbin/init", source.path().join("init")).unwrap();
        for format in ["gnu", "ustar"] {
            let exclude = if format == "ustar" {
                "./hard"
            } else {
                "./none"
            }
            .to_string();
            let out = tempfile::tempdir().unwrap();
            let tar = std::process::Command::new("tar")
                .args(["--format", format, "--exclude", &exclude, "-czf", "-", "-C"])
                .arg(source.path())
                .arg(".")
                .output()
                .expect("tar");
            assert!(
                tar.status.success(),
                "{}",
                String::from_utf8_lossy(&tar.stderr)
            );
            let image = tar.stdout;
            let report = unpack(&image, &sha256_hex(&image), out.path()).unwrap();
            assert_eq!((report.format, report.gzip), ("tar", true), "{format}");
            assert_eq!(
                fs::read(out.path().join("sbin/init")).unwrap(),
                b"#!/bin/sh\n",
                "{format}"
            );
            let mode = fs::metadata(out.path().join("sbin/init"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o750, "{format}");
            assert_eq!(
                fs::read(out.path().join(&long)).unwrap(),
                b"long",
                "{format}"
            );
            if format == "gnu" {
                assert_eq!(
                    fs::read(out.path().join("hard")).unwrap(),
                    b"long",
                    "{format}"
                );
            }
            assert_eq!(
                fs::read(out.path().join("hard2")).unwrap(),
                b"#!/bin/sh\n",
                "{format}"
            );
            assert_eq!(
                fs::read_link(out.path().join("init")).unwrap(),
                Path::new("sbin/init"),
                "{format}"
            );
        }
    }

    #[test]
    fn unpacks_cpio_and_checks_the_digest() {
        let mut archive = Vec::new();
        cpio_entry(&mut archive, "sbin", 0o40755, b"");
        cpio_entry(&mut archive, "sbin/init", 0o100755, b"#!/bin/sh\n");
        cpio_entry(&mut archive, "bin/sh", 0o120777, b"busybox");
        cpio_entry(&mut archive, "../escape", 0o100644, b"x");
        cpio_entry(&mut archive, "TRAILER!!!", 0, b"");
        let dir = tempfile::tempdir().unwrap();
        let wrong = unpack(&archive, &"0".repeat(64), dir.path()).unwrap_err();
        assert!(
            wrong.to_string().starts_with("sha256 of the image is "),
            "{wrong}"
        );
        let report = unpack(&archive, &sha256_hex(&archive), dir.path()).unwrap();
        assert_eq!((report.format, report.entries), ("cpio", 3));
        assert_eq!(
            fs::read(dir.path().join("sbin/init")).unwrap(),
            b"#!/bin/sh\n"
        );
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert!(!dir.path().parent().unwrap().join("escape").exists());
    }
}
