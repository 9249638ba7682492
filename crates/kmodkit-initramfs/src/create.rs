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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use kmodkit_commit::{Backup, Committed, Staged};

use crate::compression::{self, Compression, EncodeOptions, Encoder};
use crate::cpio::{self, FileType, Format, Header, HEADER_LEN, PATH_MAX, TRAILER};
use crate::error::Error;
use crate::read::{self, Image, Progress, ReadOptions, SegmentInfo, SegmentSummary, StreamSink};

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

fn dev_parts(rdev: u64) -> (u32, u32) {
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
        name: b".".to_vec(),
        file_type: FileType::Directory,
        perm: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: u64::try_from(meta.mtime()).unwrap_or(0),
        rdev: (0, 0),
        source: None,
        size: 0,
        link_target: Vec::new(),
        inode_key: None,
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
            name: rel.clone(),
            file_type: FileType::from_mode(mode),
            perm: mode & 0o7777,
            uid: m.st_uid,
            gid: m.st_gid,
            mtime: m.st_mtime.max(0) as u64,
            rdev: (0, 0),
            source: None,
            size: 0,
            link_target: Vec::new(),
            inode_key: None,
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
        let mut e = SourceEntry {
            name: Vec::new(),
            file_type: FileType::Regular,
            perm: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            rdev: (0, 0),
            source: None,
            size: 0,
            link_target: Vec::new(),
            inode_key: None,
        };
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

/// Sorts, checks and numbers entries; adds missing parent directories.
pub fn plan(
    mut entries: Vec<SourceEntry>,
    opts: &CreateOptions,
) -> Result<Vec<PlannedEntry>, Error> {
    // Names as the kernel sees them: no leading "/" or "./", no "//".
    for e in &mut entries {
        let parts: Vec<&[u8]> = e
            .name
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        e.name = parts.join(&b'/');
        if e.name.is_empty() && e.file_type == FileType::Directory {
            // The root itself: the kernel applies its mode, owners and
            // mtime to / (init/initramfs.c do_name on ".").
            e.name = b".".to_vec();
        }
        if e.name.is_empty() || e.name.len() + 1 > PATH_MAX as usize {
            return Err(invalid(format!(
                "entry name '{}' is empty or longer than PATH_MAX",
                String::from_utf8_lossy(&e.name)
            )));
        }
        if e.link_target.len() > PATH_MAX as usize {
            return Err(invalid(format!(
                "symlink '{}': target longer than PATH_MAX",
                String::from_utf8_lossy(&e.name)
            )));
        }
        if e.size > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "'{}' is {} bytes; cpio newc cannot hold files of 4 GiB or more",
                String::from_utf8_lossy(&e.name),
                e.size
            )));
        }
    }
    // Keyed by name, "." as the empty key so that it comes first.
    let mut by_name: BTreeMap<Vec<u8>, SourceEntry> = BTreeMap::new();
    for e in entries {
        let key = if e.name == b"." {
            Vec::new()
        } else {
            e.name.clone()
        };
        if let Some(prev) = by_name.insert(key, e) {
            return Err(invalid(format!(
                "'{}' is listed twice",
                String::from_utf8_lossy(&prev.name)
            )));
        }
    }
    // Missing parents.
    let names: Vec<Vec<u8>> = by_name.keys().cloned().collect();
    for n in names {
        let mut p = n.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if by_name.contains_key(p) {
                break;
            }
            by_name.insert(
                p.to_vec(),
                SourceEntry {
                    name: p.to_vec(),
                    file_type: FileType::Directory,
                    perm: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    rdev: (0, 0),
                    source: None,
                    size: 0,
                    link_target: Vec::new(),
                    inode_key: None,
                },
            );
        }
    }
    // Sorted by bytes: a parent is a prefix of its children, so it comes first.
    let sorted: Vec<SourceEntry> = by_name.into_values().collect();
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    let mut group_size: HashMap<(u64, u64), u32> = HashMap::new();
    let mut group_last: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, e) in sorted.iter().enumerate() {
        if e.file_type == FileType::Directory {
            if let Some(p) = e.name.iter().rposition(|&b| b == b'/') {
                *subdirs.entry(&e.name[..p]).or_default() += 1;
            }
        }
        if let (FileType::Regular, Some(k)) = (e.file_type, e.inode_key) {
            *group_size.entry(k).or_default() += 1;
            group_last.insert(k, i);
        }
    }
    let mut ino_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next_ino = 1u32;
    let mut out = Vec::with_capacity(sorted.len());
    for (i, e) in sorted.iter().enumerate() {
        let group = match (e.file_type, e.inode_key) {
            (FileType::Regular, Some(k)) if group_size[&k] > 1 => Some(k),
            _ => None,
        };
        let ino = match group {
            Some(k) => *ino_of.entry(k).or_insert_with(|| {
                next_ino += 1;
                next_ino - 1
            }),
            None => {
                next_ino += 1;
                next_ino - 1
            }
        };
        let nlink = match (e.file_type, group) {
            (FileType::Directory, _) => 2 + subdirs.get(e.name.as_slice()).copied().unwrap_or(0),
            (_, Some(k)) => group_size[&k],
            _ => 1,
        };
        let carries_data = match group {
            Some(k) => group_last[&k] == i,
            None => e.file_type == FileType::Regular,
        };
        let mtime = match opts.clamp_mtime {
            Some(t) => e.mtime.min(t),
            None => e.mtime,
        };
        let (uid, gid) = if opts.keep_owners {
            (e.uid, e.gid)
        } else {
            (0, 0)
        };
        let filesize = match e.file_type {
            FileType::Regular if carries_data => e.size as u32,
            FileType::Symlink => e.link_target.len() as u32,
            _ => 0,
        };
        out.push(PlannedEntry {
            name: e.name.clone(),
            header: Header {
                format: opts.format,
                ino,
                mode: e.file_type.mode_bits() | (e.perm & 0o7777),
                uid,
                gid,
                nlink,
                mtime: mtime.min(u64::from(u32::MAX)) as u32,
                filesize,
                dev_major: 0,
                dev_minor: 0,
                rdev_major: e.rdev.0,
                rdev_minor: e.rdev.1,
                namesize: e.name.len() as u32 + 1,
                check: 0,
            },
            source: if carries_data { e.source.clone() } else { None },
            link_target: e.link_target.clone(),
        });
    }
    Ok(out)
}

/// Entries whose name was given explicitly by the manifest keep their
/// owners; a directory scan keeps them only when asked.
pub fn manifest_options(mut opts: CreateOptions) -> CreateOptions {
    opts.keep_owners = true;
    opts
}

const ZEROS: [u8; 4] = [0; 4];

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
enum PutError {
    Read(io::Error),
    Write(io::Error),
}

/// Where [`generate_cpio`] puts the archive: bytes, and file contents that
/// the sink may read straight into its own buffer (one copy less).
trait CpioOut {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Appends up to `want` bytes of `file` read at offset `at`; returns how
    /// many (0: the file ended early).
    fn put_file(&mut self, file: &File, at: u64, want: usize) -> Result<usize, PutError>;
}

/// A [`CpioOut`] over any writer, reading files through a buffer.
struct WriteOut<'w> {
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

fn generate_cpio(
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

fn changed(src: &Path) -> Error {
    Error::Input {
        path: src.to_path_buf(),
        cause: io::Error::other("file changed size while it was being archived"),
    }
}

/// Counts bytes on their way to the file.
struct Counting<W> {
    inner: W,
    count: u64,
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

/// Bytes of cpio handed from the generating thread to the compressor at
/// once. gzip's output (zlib-rs) depends on how its input is split into
/// writes, so it is fed the 4 MiB pieces it always was: images stay the
/// same bytes. The others' output does not depend on it (multi-threaded
/// zstd and xz cut fixed-size jobs; bzip2, lzma and lz4 fixed blocks), and
/// 1 MiB pieces mean fewer fresh pages to fault in.
fn gen_chunk(c: Compression) -> usize {
    match c {
        Compression::Gzip => 4 << 20,
        _ => 1 << 20,
    }
}

/// Fills fixed-size buffers with the cpio stream (file data read straight
/// into them) and sends each full one over a channel; used buffers come
/// back for reuse, so the few in flight are allocated (and faulted in)
/// once.
struct ChunkWriter {
    /// Always `chunk` bytes long; `len` of them are filled.
    buf: Vec<u8>,
    len: usize,
    chunk: usize,
    tx: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| vec![0; self.chunk]);
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        self.tx
            .send((full, len))
            .map_err(|_| io::Error::other("the compressor stopped"))
    }
}

impl CpioOut for ChunkWriter {
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.chunk - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == self.chunk {
                self.send()?;
            }
        }
        Ok(())
    }
    fn put_file(&mut self, file: &File, at: u64, want: usize) -> Result<usize, PutError> {
        let n = want.min(self.chunk - self.len);
        let n =
            std::os::unix::fs::FileExt::read_at(file, &mut self.buf[self.len..self.len + n], at)
                .map_err(PutError::Read)?;
        self.len += n;
        if self.len == self.chunk {
            self.send().map_err(PutError::Write)?;
        }
        Ok(n)
    }
}

/// One segment to write.
pub struct SegmentSpec<'a> {
    pub entries: &'a [PlannedEntry],
    pub format: Format,
    pub encode: EncodeOptions,
}

/// Writes the segments, in order, to `out`. Uncompressed segments start at
/// a multiple of 4; an lz4 segment followed by another gets 4 zero bytes
/// (the legacy frame has no end marker: decompress_unlz4.c stops at a zero
/// block size).
pub fn write_segments<W: Write + Send>(
    segments: &[SegmentSpec<'_>],
    out: &mut W,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let total: u64 = segments
        .iter()
        .flat_map(|s| s.entries.iter())
        .map(|e| {
            if e.source.is_some() {
                u64::from(e.header.filesize)
            } else {
                0
            }
        })
        .sum();
    progress.start(total);
    let mut done = 0u64;
    let mut w = Counting {
        inner: BufWriter::with_capacity(1 << 20, &mut *out),
        count: 0,
    };
    for (i, seg) in segments.iter().enumerate() {
        let wr = |e: io::Error| Error::write_output(e);
        if seg.encode.compression == Compression::None {
            let pad = (cpio::pad4(w.count) - w.count) as usize;
            w.write_all(&ZEROS[..pad]).map_err(wr)?;
            write_cpio(seg.entries, seg.format, &mut w, progress, &mut done)?;
        } else {
            let mut enc = compression::encoder(&seg.encode, &mut w).map_err(wr)?;
            // The cpio stream is generated (files read) on a second thread
            // and handed over in large chunks, so reading the tree overlaps
            // with compressing it instead of delaying the compressor.
            std::thread::scope(|scope| -> Result<(), Error> {
                let chunk = gen_chunk(seg.encode.compression);
                let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(4);
                let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
                let generator = scope.spawn(move || {
                    let mut chunks = ChunkWriter {
                        buf: vec![0; chunk],
                        len: 0,
                        chunk,
                        tx,
                        spare: back_rx,
                    };
                    let mut done_here = 0u64;
                    generate_cpio(
                        seg.entries,
                        seg.format,
                        &mut chunks,
                        progress,
                        &mut done_here,
                    )?;
                    chunks.send().map_err(wr)?;
                    Ok::<u64, Error>(done_here)
                });
                let mut failed = None;
                for (chunk, len) in rx.iter() {
                    if let Err(e) = enc.write_all(&chunk[..len]) {
                        failed = Some(wr(e));
                        break;
                    }
                    let _ = back_tx.send(chunk);
                }
                drop(rx);
                let generated = generator
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if let Some(e) = failed {
                    return Err(e);
                }
                done += generated?;
                Ok(())
            })?;
            enc.finish_encoder().map_err(wr)?;
            if seg.encode.compression == Compression::Lz4 && i + 1 < segments.len() {
                w.write_all(&ZEROS).map_err(wr)?;
            }
        }
    }
    w.flush().map_err(Error::write_output)?;
    progress.finish();
    Ok(())
}

/// How [`repack`] encodes the compressed segments.
#[derive(Debug, Clone, Copy)]
pub struct RecompressOptions {
    /// `None`: each segment keeps the compression it has.
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    pub threads: u32,
}

/// Re-encodes every compressed segment of `image` into `out` as
/// `recompress` says; uncompressed (early) segments are copied as they
/// are. The cpio streams are checked while they pass.
pub fn repack<W: Write + Send>(
    image: &Image<'_>,
    read_opts: &ReadOptions,
    recompress: &RecompressOptions,
    progress: &dyn Progress,
    out: &mut W,
) -> Result<Vec<SegmentSummary>, Error> {
    struct Repacker<'o, W: Write + Send> {
        state: Option<RepackState<'o, W>>,
        recompress: RecompressOptions,
        last_lz4: bool,
    }
    enum RepackState<'o, W: Write + Send> {
        Idle(Counting<BufWriter<&'o mut W>>),
        Encoding(Box<dyn Encoder<Counting<BufWriter<&'o mut W>>> + 'o>),
    }
    struct Ignore;
    impl read::Visitor for Ignore {
        fn entry(&mut self, _: &read::Entry<'_>) -> Result<bool, Error> {
            Ok(false)
        }
    }
    let wr = |e: io::Error| Error::write_output(e);
    impl<W: Write + Send> StreamSink for Repacker<'_, W> {
        fn segment_start(&mut self, info: &SegmentInfo) -> Result<(), Error> {
            let wr = |e: io::Error| Error::write_output(e);
            let Some(RepackState::Idle(mut w)) = self.state.take() else {
                unreachable!("segments do not nest")
            };
            if self.last_lz4 {
                w.write_all(&ZEROS).map_err(wr)?;
            }
            let compression = if info.compression == Compression::None {
                let pad = (cpio::pad4(w.count) - w.count) as usize;
                w.write_all(&ZEROS[..pad]).map_err(wr)?;
                Compression::None
            } else {
                self.recompress.compression.unwrap_or(info.compression)
            };
            let encode = EncodeOptions {
                compression,
                level: self.recompress.level,
                threads: self.recompress.threads,
            };
            self.last_lz4 = encode.compression == Compression::Lz4;
            self.state = Some(RepackState::Encoding(
                compression::encoder(&encode, w).map_err(wr)?,
            ));
            Ok(())
        }
        fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
            match self.state.as_mut() {
                Some(RepackState::Encoding(e)) => e.write_all(chunk).map_err(Error::write_output),
                _ => unreachable!("data inside a segment"),
            }
        }
        fn segment_end(&mut self, _: &SegmentSummary) -> Result<(), Error> {
            let Some(RepackState::Encoding(e)) = self.state.take() else {
                unreachable!("segment started")
            };
            let w = e.finish_encoder().map_err(Error::write_output)?;
            self.state = Some(RepackState::Idle(w));
            Ok(())
        }
    }
    let mut r = Repacker {
        state: Some(RepackState::Idle(Counting {
            inner: BufWriter::with_capacity(1 << 20, out),
            count: 0,
        })),
        recompress: *recompress,
        last_lz4: false,
    };
    let summaries =
        read::read_image_streams(image, read_opts, progress, &mut Ignore, Some(&mut r))?;
    if let Some(RepackState::Idle(mut w)) = r.state.take() {
        w.flush().map_err(wr)?;
    }
    Ok(summaries)
}
