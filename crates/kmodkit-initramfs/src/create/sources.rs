//! Entries to write: from a directory tree, or from a gen_init_cpio
//! manifest.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{invalid, SourceEntry};
use crate::cpio::FileType;
use crate::error::Error;

pub(super) fn dev_parts(rdev: u64) -> (u32, u32) {
    (rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// `dir` itself as the `.` entry (its mode, owners and mtime, as
/// `find . | cpio -o` gives the generators' images), then every file,
/// directory, link and node under it.
///
/// Each directory is read through its own descriptor and its entries are
/// looked up relative to it (`fstatat`, `readlinkat`, `openat`): no path
/// is walked from the top again per entry.
pub fn scan_dir(dir: &Path) -> Result<Vec<SourceEntry>, Error> {
    let input = |path: &Path, e: io::Error| Error::Input {
        path: path.to_path_buf(),
        cause: e,
    };
    let meta = fs::metadata(dir).map_err(|e| input(dir, e))?;
    if !meta.is_dir() {
        return Err(invalid(format!("{}: not a directory", dir.display())));
    }
    let fd = rustix::fs::open(dir, DIR_FLAGS, rustix::fs::Mode::empty())
        .map_err(|e| input(dir, e.into()))?;
    let mut out = vec![SourceEntry {
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        ..SourceEntry::new(
            b".".to_vec(),
            FileType::Directory,
            meta.permissions().mode() & 0o7777,
        )
    }];
    let mut path = dir.to_path_buf();
    scan(fd, &mut path, &mut Vec::new(), &mut out)?;
    Ok(out)
}

const DIR_FLAGS: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::DIRECTORY)
    .union(rustix::fs::OFlags::NOFOLLOW)
    .union(rustix::fs::OFlags::CLOEXEC);

/// Scans the directory open at `fd`, which is `path` (the scan's `dir`
/// joined with `rel`).
fn scan(
    fd: rustix::fd::OwnedFd,
    path: &mut PathBuf,
    rel: &mut Vec<u8>,
    out: &mut Vec<SourceEntry>,
) -> Result<(), Error> {
    use rustix::fs::{AtFlags, FileType as Ft};
    let input = |path: &Path, e: rustix::io::Errno| Error::Input {
        path: path.to_path_buf(),
        cause: e.into(),
    };
    let mut dir = rustix::fs::Dir::new(fd).map_err(|e| input(path, e))?;
    while let Some(ent) = dir.read() {
        let ent = ent.map_err(|e| input(path, e))?;
        // The entry owns its name; the directory's descriptor is borrowed
        // for the lookups until the next read.
        let dfd = dir.fd().map_err(|e| input(path, e))?;
        let name = ent.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        path.push(std::ffi::OsStr::from_bytes(bytes));
        let m =
            rustix::fs::statat(dfd, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| input(path, e))?;
        let base = rel.len();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(bytes);
        let mode = m.st_mode;
        let ft = Ft::from_raw_mode(mode);
        let mut e = SourceEntry {
            uid: m.st_uid,
            gid: m.st_gid,
            mtime: m.st_mtime.max(0) as u64,
            ..SourceEntry::new(rel.clone(), FileType::from_mode(mode), mode & 0o7777)
        };
        match ft {
            Ft::RegularFile => {
                e.source = Some(path.clone());
                e.size = m.st_size as u64;
                if m.st_nlink > 1 {
                    e.inode_key = Some((m.st_dev, m.st_ino));
                }
            }
            Ft::Symlink => {
                e.link_target = rustix::fs::readlinkat(dfd, name, Vec::new())
                    .map_err(|err| input(path, err))?
                    .into_bytes();
            }
            Ft::CharacterDevice | Ft::BlockDevice => e.rdev = dev_parts(m.st_rdev),
            _ => {}
        }
        out.push(e);
        if ft == Ft::Directory {
            let sub = rustix::fs::openat(dfd, name, DIR_FLAGS, rustix::fs::Mode::empty())
                .map_err(|err| input(path, err))?;
            scan(sub, path, rel, out)?;
        }
        rel.truncate(base);
        path.pop();
    }
    Ok(())
}

/// Parses a gen_init_cpio manifest; `base` resolves relative locations.
pub fn parse_manifest(text: &str, manifest: &Path) -> Result<Vec<SourceEntry>, Error> {
    let base = manifest.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| {
            invalid(format!(
                "{}:{}: {why}: '{line}' (see `kmodkit initrd create --help` for the manifest format)",
                manifest.display(),
                i + 1
            ))
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        let num =
            |s: &str, radix: u32| u32::from_str_radix(s, radix).map_err(|_| bad("bad number"));
        let name = |s: &str| s.trim_start_matches('/').as_bytes().to_vec();
        let mut e = SourceEntry::new(Vec::new(), FileType::Regular, 0);
        let owner = |e: &mut SourceEntry, at: usize| -> Result<(), Error> {
            e.perm = num(f.get(at).ok_or_else(|| bad("missing mode"))?, 8)? & 0o7777;
            e.uid = num(f.get(at + 1).ok_or_else(|| bad("missing uid"))?, 10)?;
            e.gid = num(f.get(at + 2).ok_or_else(|| bad("missing gid"))?, 10)?;
            Ok(())
        };
        match f[0] {
            "file" => {
                if f.len() < 6 {
                    return Err(bad(
                        "expected: file <name> <location> <mode> <uid> <gid> [<hard links>]",
                    ));
                }
                e.name = name(f[1]);
                let loc = Path::new(f[2]);
                let loc = if loc.is_absolute() {
                    loc.to_path_buf()
                } else {
                    base.join(loc)
                };
                let m = fs::metadata(&loc).map_err(|err| Error::Input {
                    path: loc.clone(),
                    cause: err,
                })?;
                if !m.is_file() {
                    return Err(bad("location is not a regular file"));
                }
                e.size = m.len();
                e.mtime = m.mtime().max(0) as u64;
                e.source = Some(loc);
                owner(&mut e, 3)?;
                if f.len() > 6 {
                    e.inode_key = Some((u64::MAX, i as u64));
                    for l in &f[6..] {
                        let mut link = e.clone();
                        link.name = name(l);
                        out.push(link);
                    }
                }
            }
            "dir" | "pipe" | "sock" => {
                if f.len() != 5 {
                    return Err(bad("expected: <type> <name> <mode> <uid> <gid>"));
                }
                e.file_type = match f[0] {
                    "dir" => FileType::Directory,
                    "pipe" => FileType::Fifo,
                    _ => FileType::Socket,
                };
                e.name = name(f[1]);
                owner(&mut e, 2)?;
            }
            "nod" => {
                if f.len() != 8 {
                    return Err(bad(
                        "expected: nod <name> <mode> <uid> <gid> <b|c> <maj> <min>",
                    ));
                }
                e.name = name(f[1]);
                owner(&mut e, 2)?;
                e.file_type = match f[5] {
                    "b" => FileType::BlockDevice,
                    "c" => FileType::CharDevice,
                    _ => return Err(bad("device type must be b or c")),
                };
                e.rdev = (num(f[6], 10)?, num(f[7], 10)?);
            }
            "slink" => {
                if f.len() != 6 {
                    return Err(bad("expected: slink <name> <target> <mode> <uid> <gid>"));
                }
                e.file_type = FileType::Symlink;
                e.name = name(f[1]);
                e.link_target = f[2].as_bytes().to_vec();
                owner(&mut e, 3)?;
            }
            other => return Err(bad(&format!("unknown entry type '{other}'"))),
        }
        if e.name.is_empty() {
            return Err(bad("empty name"));
        }
        out.push(e);
    }
    Ok(out)
}
