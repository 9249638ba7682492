//! Extraction into a directory with the kernel's semantics (init/initramfs.c:
//! a later entry replaces an earlier file of another type, hard links are
//! keyed by inode, device and type and reset at each trailer) and without
//! ever writing outside the target directory:
//!
//! - names are taken relative to the directory (a leading `/` or `./` is
//!   dropped, as the kernel unpacks into `/`); a `..` component is refused;
//! - every parent directory must be a real directory: a symlink in the
//!   path (one the archive made, or one that was there) is refused, so no
//!   write goes through it;
//! - files are opened with `O_NOFOLLOW`, so a symlink planted at a file's
//!   name is replaced, not followed; hard links only ever point at names
//!   this extraction created inside the directory, and `link()` does not
//!   follow symlinks;
//! - device nodes are made only by root, otherwise skipped and reported;
//! - directory modes and times are set last, deepest first (a read-only
//!   directory must not stop its own entries from being written).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, CWD};
use serde::Serialize;

use crate::cpio::{FileType, Header};
use crate::error::Error;
use crate::read::{self, Entry, Image, Progress, ReadOptions, SegmentSummary, Visitor};

/// Extraction settings.
#[derive(Debug, Clone, Copy)]
pub struct ExtractOptions {
    /// Set owners from the archive (default: when running as root).
    pub preserve_owner: bool,
    /// Make device nodes (default: when running as root; they need it).
    pub make_devices: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ExtractOptions {
            preserve_owner: root,
            make_devices: root,
        }
    }
}

/// An entry that was not created, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub segment: usize,
    pub name: String,
    pub reason: String,
}

/// What an extraction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractReport {
    pub entries: u64,
    pub bytes: u64,
    pub skipped: Vec<Skipped>,
    pub segments: Vec<SegmentSummary>,
}

/// Which entries to extract: (segment index, name as stored) -> bool.
pub type Filter<'f> = dyn Fn(usize, &[u8]) -> bool + 'f;

/// Extracts `image` into `dir` (created if missing).
pub fn extract(
    image: &Image<'_>,
    read_opts: &ReadOptions,
    progress: &dyn Progress,
    dir: &Path,
    opts: &ExtractOptions,
    filter: &Filter<'_>,
) -> Result<ExtractReport, Error> {
    fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let mut x = Extractor {
        image: image.name().to_string(),
        root: dir.to_path_buf(),
        opts: *opts,
        filter,
        dirs_ok: HashSet::new(),
        links: HashMap::new(),
        dirs: Vec::new(),
        current: None,
        euid: rustix::process::geteuid().as_raw(),
        egid: rustix::process::getegid().as_raw(),
        umask: process_umask(),
        report: ExtractReport::default(),
    };
    let segments = read::read_image(image, read_opts, progress, &mut x)?;
    x.finish_dirs()?;
    x.report.segments = segments;
    Ok(x.report)
}

struct OpenFile {
    file: File,
    /// Opened an existing file (its old mode stays unless set).
    existed: bool,
    path: PathBuf,
    header: Header,
}

struct Extractor<'f> {
    image: String,
    root: PathBuf,
    opts: ExtractOptions,
    filter: &'f Filter<'f>,
    /// Relative directories known to be real directories.
    dirs_ok: HashSet<PathBuf>,
    /// Hard-link table of the current archive: (ino, maj, min, type) -> path.
    links: HashMap<(u32, u32, u32, u32), PathBuf>,
    /// Directory modes and times, applied at the end.
    dirs: Vec<(PathBuf, u32, u32, u32, u32)>,
    current: Option<OpenFile>,
    report: ExtractReport,
    euid: u32,
    egid: u32,
    /// The process umask (bits open() and mkdir() take away).
    umask: u32,
}

/// The umask, read from /proc/self/status (reading it with umask(2)
/// would change it); when unknown, assume every bit is masked so modes
/// are always set explicitly.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o7777)
}

/// The name as relative components; `None` for the root itself.
fn relative(name: &[u8]) -> Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "the name contains '..' and would reach outside the target directory".into(),
                )
            }
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

fn ts(secs: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: i64::from(secs),
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl Extractor<'_> {
    fn unsafe_entry(&self, e: &Entry<'_>, problem: String) -> Error {
        Error::Unsafe {
            image: self.image.clone(),
            segment: e.segment,
            offset: e.offset,
            name: e.name_lossy(),
            problem,
        }
    }

    fn skip(&mut self, e: &Entry<'_>, reason: &str) {
        self.report.skipped.push(Skipped {
            segment: e.segment,
            name: e.name_lossy(),
            reason: reason.to_string(),
        });
    }

    /// Makes sure every parent of `rel` is a real directory inside root.
    fn parents(&mut self, e: &Entry<'_>, rel: &Path) -> Result<(), Error> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        if parent.as_os_str().is_empty() || self.dirs_ok.contains(parent) {
            return Ok(());
        }
        let mut prefix = PathBuf::new();
        for c in parent.components() {
            prefix.push(c);
            if self.dirs_ok.contains(&prefix) {
                continue;
            }
            let full = self.root.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(self.unsafe_entry(
                        e,
                        format!(
                            "its parent '{}' is a symlink; writing through it could leave the target directory",
                            prefix.display()
                        ),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(self.unsafe_entry(
                        e,
                        format!("its parent '{}' is not a directory", prefix.display()),
                    ))
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    // Archives normally list parents first; make missing
                    // ones like `cpio -d` does.
                    fs::create_dir(&full).map_err(|err| Error::write(&full, err))?;
                }
                Err(err) => return Err(Error::write(&full, err)),
            }
            self.dirs_ok.insert(prefix.clone());
        }
        Ok(())
    }

    /// Removes what is at `path` unless it already has type `want`
    /// (the kernel's clean_path()).
    fn clean(&mut self, path: &Path, want: Option<FileType>) -> Result<(), Error> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::write(path, e)),
            Ok(m) => {
                let ft = m.file_type();
                let same = match want {
                    Some(FileType::Directory) => ft.is_dir(),
                    Some(FileType::Regular) => ft.is_file(),
                    _ => false,
                };
                if same {
                    return Ok(());
                }
                if ft.is_dir() {
                    // Anything cached below it is gone with it.
                    self.dirs_ok.clear();
                    fs::remove_dir(path).map_err(|e| Error::write(path, e))
                } else {
                    fs::remove_file(path).map_err(|e| Error::write(path, e))
                }
            }
        }
    }

    fn link_key(h: &Header) -> Option<(u32, u32, u32, u32)> {
        (h.nlink >= 2).then_some((
            h.ino,
            h.dev_major,
            h.dev_minor,
            h.mode & crate::cpio::S_IFMT,
        ))
    }

    /// If this entry is a further name of an inode seen in this archive,
    /// links it and returns true.
    fn maybe_link(&mut self, h: &Header, path: &Path) -> Result<bool, Error> {
        let Some(key) = Self::link_key(h) else {
            return Ok(false);
        };
        match self.links.get(&key) {
            Some(first) if first != path => {
                let first = first.clone();
                self.clean(path, None)?;
                fs::hard_link(&first, path).map_err(|e| Error::write(path, e))?;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.links.insert(key, path.to_path_buf());
                Ok(false)
            }
        }
    }

    /// Whether a file this process creates needs a chown to get `h`'s owner.
    fn needs_chown(&self, h: &Header) -> bool {
        self.opts.preserve_owner && (h.uid != self.euid || h.gid != self.egid)
    }

    fn set_owner_at(&self, path: &Path, h: &Header) -> Result<(), Error> {
        if self.needs_chown(h) {
            rustix::fs::chownat(
                CWD,
                path,
                Some(rustix::fs::Uid::from_raw(h.uid)),
                Some(rustix::fs::Gid::from_raw(h.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::write(path, errno(e)))?;
        }
        Ok(())
    }

    /// Opens the file for writing; also says whether it existed before.
    fn open_regular(
        &mut self,
        path: &Path,
        h: &Header,
        linked: bool,
    ) -> Result<(File, bool), Error> {
        let open = |exclusive: bool, truncate: bool| {
            let mut o = OpenOptions::new();
            o.write(true)
                .mode(h.mode & 0o7777)
                .custom_flags(libc_o_nofollow());
            if exclusive {
                o.create_new(true);
            } else {
                o.create(true).truncate(truncate);
            }
            o.open(path)
        };
        if linked {
            return match open(false, false) {
                Ok(f) => Ok((f, true)),
                Err(_) => {
                    self.clean(path, Some(FileType::Regular))?;
                    open(false, true)
                        .map(|f| (f, true))
                        .map_err(|e| Error::write(path, e))
                }
            };
        }
        // Fresh name first (the common case); otherwise the kernel's
        // clean_path(): replace anything that is not a regular file, then
        // truncate.
        match open(true, true) {
            Ok(f) => Ok((f, false)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.clean(path, Some(FileType::Regular))?;
                open(false, true)
                    .map(|f| (f, true))
                    .map_err(|e| Error::write(path, e))
            }
            Err(e) => Err(Error::write(path, e)),
        }
    }

    fn finish_file(&mut self) -> Result<(), Error> {
        let Some(f) = self.current.take() else {
            return Ok(());
        };
        let h = f.header;
        let fd = &f.file;
        // open() applied the mode less the umask; only fix it up when the
        // umask took bits away (or the file existed already).
        if h.mode & 0o7777 & self.umask != 0 || f.existed {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(h.mode & 0o7777))
                .map_err(|e| Error::write(&f.path, errno(e)))?;
        }
        if self.needs_chown(&h) {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(h.uid)),
                Some(rustix::fs::Gid::from_raw(h.gid)),
            )
            .map_err(|e| Error::write(&f.path, errno(e)))?;
            // chown clears set-id bits; set the mode again.
            if h.mode & 0o6000 != 0 {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(h.mode & 0o7777))
                    .map_err(|e| Error::write(&f.path, errno(e)))?;
            }
        }
        rustix::fs::futimens(fd, &ts(h.mtime)).map_err(|e| Error::write(&f.path, errno(e)))?;
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), Error> {
        // Deepest first, as the kernel's dir_utime() (reverse of creation).
        let dirs = std::mem::take(&mut self.dirs);
        for (path, mode, uid, gid, mtime) in dirs.into_iter().rev() {
            // The directory may have been replaced by a later entry.
            let m = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => m,
                _ => continue,
            };
            use std::os::unix::fs::MetadataExt;
            if self.opts.preserve_owner && (m.uid() != uid || m.gid() != gid) {
                rustix::fs::chownat(
                    CWD,
                    &path,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::write(&path, errno(e)))?;
            }
            if m.mode() & 0o7777 != mode & 0o7777 {
                rustix::fs::chmodat(
                    CWD,
                    &path,
                    Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|e| Error::write(&path, errno(e)))?;
            }
            rustix::fs::utimensat(CWD, &path, &ts(mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| Error::write(&path, errno(e)))?;
        }
        Ok(())
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

impl Visitor for Extractor<'_> {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        if !(self.filter)(e.segment, e.name) {
            return Ok(false);
        }
        let rel = match relative(e.name) {
            Ok(Some(rel)) => rel,
            Ok(None) => {
                // "." (the root): its mode is the target directory's.
                return Ok(false);
            }
            Err(problem) => return Err(self.unsafe_entry(e, problem)),
        };
        self.parents(e, &rel)?;
        let path = self.root.join(&rel);
        let h = *e.header;
        self.report.entries += 1;
        match e.file_type() {
            FileType::Regular => {
                let linked = self.maybe_link(&h, &path)?;
                let (file, existed) = self.open_regular(&path, &h, linked)?;
                if linked {
                    // Opened without O_TRUNC: the kernel sizes the shared
                    // inode to this entry's data.
                    file.set_len(u64::from(h.filesize))
                        .map_err(|err| Error::write(&path, err))?;
                }
                self.current = Some(OpenFile {
                    existed,
                    file,
                    path,
                    header: h,
                });
                return Ok(true);
            }
            FileType::Directory => {
                // Try first: in a fresh directory nothing is in the way.
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                        self.clean(&path, Some(FileType::Directory))?;
                        match fs::create_dir(&path) {
                            Ok(()) => {}
                            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                            Err(err) => return Err(Error::write(&path, err)),
                        }
                    }
                    Err(err) => return Err(Error::write(&path, err)),
                }
                self.dirs_ok.insert(rel);
                self.dirs.push((path, h.mode, h.uid, h.gid, h.mtime));
            }
            FileType::Symlink => {
                let target = OsStr::from_bytes(e.link_target.unwrap_or_default());
                if let Err(err) = std::os::unix::fs::symlink(target, &path) {
                    if err.kind() != io::ErrorKind::AlreadyExists {
                        return Err(Error::write(&path, err));
                    }
                    self.clean(&path, None)?;
                    std::os::unix::fs::symlink(target, &path)
                        .map_err(|err| Error::write(&path, err))?;
                }
                self.set_owner_at(&path, &h)?;
                rustix::fs::utimensat(CWD, &path, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| Error::write(&path, errno(err)))?;
            }
            t @ (FileType::CharDevice
            | FileType::BlockDevice
            | FileType::Fifo
            | FileType::Socket) => {
                let device = matches!(t, FileType::CharDevice | FileType::BlockDevice);
                if device && !self.opts.make_devices {
                    self.report.entries -= 1;
                    self.skip(e, "device node skipped: only root can create it");
                    return Ok(false);
                }
                if self.maybe_link(&h, &path)? {
                    return Ok(false);
                }
                self.clean(&path, None)?;
                let kind = match t {
                    FileType::CharDevice => rustix::fs::FileType::CharacterDevice,
                    FileType::BlockDevice => rustix::fs::FileType::BlockDevice,
                    FileType::Fifo => rustix::fs::FileType::Fifo,
                    _ => rustix::fs::FileType::Socket,
                };
                let dev = rustix::fs::makedev(h.rdev_major, h.rdev_minor);
                rustix::fs::mknodat(CWD, &path, kind, Mode::from_raw_mode(h.mode & 0o7777), dev)
                    .map_err(|err| Error::write(&path, errno(err)))?;
                self.set_owner_at(&path, &h)?;
                rustix::fs::chmodat(
                    CWD,
                    &path,
                    Mode::from_raw_mode(h.mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|err| Error::write(&path, errno(err)))?;
                rustix::fs::utimensat(CWD, &path, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| Error::write(&path, errno(err)))?;
            }
            FileType::Unknown => {
                self.report.entries -= 1;
                self.skip(e, "unknown file type (the kernel ignores it too)");
            }
        }
        Ok(false)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some(f) = self.current.as_mut() {
            f.file
                .write_all(chunk)
                .map_err(|e| Error::write(&f.path, e))?;
            self.report.bytes += chunk.len() as u64;
        }
        Ok(())
    }

    fn entry_end(&mut self) -> Result<(), Error> {
        self.finish_file()
    }

    fn trailer(&mut self) -> Result<(), Error> {
        self.links.clear();
        Ok(())
    }
}
