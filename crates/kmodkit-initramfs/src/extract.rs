//! Extraction into a directory with the kernel's semantics (init/initramfs.c:
//! a later entry replaces an earlier file of another type, hard links are
//! keyed by inode, device and type and reset at each trailer) and without
//! ever writing outside the target directory:
//!
//! - names are taken relative to the directory (a leading `/` or `./` is
//!   dropped, as the kernel unpacks into `/`); a `..` component is refused;
//! - every parent directory must be a real directory: a symlink in the
//!   path (one the archive made, or one that was there) is refused, so no
//!   write goes through it. Parents are opened one component at a time
//!   with `O_NOFOLLOW` and kept open while entries go into them, and each
//!   entry is made relative to its parent's descriptor (`openat`,
//!   `mkdirat`, ...) with its last component only;
//! - files are opened with `O_NOFOLLOW`, so a symlink planted at a file's
//!   name is replaced, not followed; hard links only ever point at names
//!   this extraction created inside the directory, and `linkat()` does not
//!   follow symlinks;
//! - device nodes are made only by root, otherwise skipped and reported;
//! - directory modes and times are set last, deepest first (a read-only
//!   directory must not stop its own entries from being written).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;
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
    /// The process umask: the bits open() and mkdir() take away, which
    /// extraction puts back with chmod where the archive asks for them.
    /// The caller reads it (the library does not look at process state);
    /// the default, every bit, means "unknown": modes are always set
    /// explicitly.
    pub umask: u32,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        let root = rustix::process::geteuid().is_root();
        ExtractOptions {
            preserve_owner: root,
            make_devices: root,
            umask: 0o7777,
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
    // The target itself may be reached through symlinks (the caller chose
    // it); nothing below it is.
    let root = rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::write(dir, errno(e)))?;
    let mut x = Extractor {
        image: image.name().to_string(),
        root: dir.to_path_buf(),
        parents: OpenParents::new(root),
        opts: *opts,
        filter,
        name: Vec::new(),
        links: HashMap::new(),
        dirs: Vec::new(),
        dir_names: Vec::new(),
        current: None,
        euid: rustix::process::geteuid().as_raw(),
        egid: rustix::process::getegid().as_raw(),
        umask: opts.umask & 0o7777,
        report: ExtractReport::default(),
    };
    let segments = match read::read_image(image, read_opts, progress, &mut x) {
        Ok(s) => s,
        // What is on disk stays (it may be what the user wanted to
        // salvage), but the error says that it is there and incomplete.
        Err(cause) => {
            return Err(Error::Incomplete {
                dir: dir.to_path_buf(),
                entries: x.report.entries,
                bytes: x.report.bytes,
                cause: Box::new(cause),
            })
        }
    };
    x.finish_dirs()?;
    x.report.segments = segments;
    Ok(x.report)
}

struct OpenFile {
    file: File,
    /// Opened an existing file (its old mode stays unless set).
    existed: bool,
    header: Header,
}

/// A directory entry's mode, owner and time, applied at the end.
struct DirMeta {
    /// Its relative name in `Extractor::dir_names`.
    name: Range<usize>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u32,
}

/// Descriptors (`O_PATH`) of the target and of the directories on the way
/// to the last entry's parent. Archives list a directory's entries
/// together, so most entries find their parent open already, and a
/// parent's path is walked (and checked) once, not once per entry.
///
/// Only that one chain is open: a directory an entry replaces (the
/// kernel's clean_path()) is a child of the entry's parent, never on the
/// chain, so nothing open goes stale.
struct OpenParents {
    root: Rc<OwnedFd>,
    /// Relative path of the deepest open directory (components joined by
    /// single slashes).
    path: Vec<u8>,
    /// The open directories below the root, outermost first: where each
    /// one's name ends in `path`, and its descriptor. Past
    /// [`MAX_OPEN_PARENTS`] only the deepest is kept.
    open: Vec<(usize, Rc<OwnedFd>)>,
}

/// Directory descriptors held at once (well below RLIMIT_NOFILE's usual
/// 1024, whatever the depth of a hostile archive).
const MAX_OPEN_PARENTS: usize = 64;

/// Why a component of an entry's parent path could not be used.
enum ParentProblem {
    Symlink,
    NotDirectory,
    Io(io::Error),
}

impl OpenParents {
    fn new(root: OwnedFd) -> OpenParents {
        OpenParents {
            root: Rc::new(root),
            path: Vec::new(),
            open: Vec::new(),
        }
    }

    fn deepest(&self) -> &Rc<OwnedFd> {
        self.open.last().map_or(&self.root, |(_, fd)| fd)
    }

    /// The directory `parent` (a relative path as `normalize` makes it;
    /// empty for the target), opened and checked component by component;
    /// missing components are made. On error, also says how much of
    /// `parent` leads to the component at fault.
    fn get(&mut self, parent: &[u8]) -> Result<Rc<OwnedFd>, (usize, ParentProblem)> {
        if parent != self.path.as_slice() {
            self.walk_to(parent)?;
        }
        Ok(Rc::clone(self.deepest()))
    }

    fn walk_to(&mut self, parent: &[u8]) -> Result<(), (usize, ParentProblem)> {
        // Keep the open directories that lead to `parent`.
        let mut keep = 0;
        let mut start = 0;
        for &(end, _) in &self.open {
            let leads = parent.len() >= end
                && parent[start..end] == self.path[start..end]
                && parent.get(end).is_none_or(|&b| b == b'/');
            if !leads {
                break;
            }
            keep += 1;
            start = end;
        }
        self.open.truncate(keep);
        self.path.truncate(start);
        let mut at = start;
        while at < parent.len() {
            if parent[at] == b'/' {
                at += 1;
            }
            let end = parent[at..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(parent.len(), |i| at + i);
            let fd = open_parent(self.deepest().as_fd(), &parent[at..end])
                .map_err(|problem| (end, problem))?;
            self.path.extend_from_slice(&parent[self.path.len()..end]);
            if self.open.len() > MAX_OPEN_PARENTS {
                self.open.pop();
            }
            self.open.push((end, Rc::new(fd)));
            at = end;
        }
        Ok(())
    }
}

/// Opens the directory `name` in `dir` without following a symlink there,
/// making it when missing (archives normally list parents first; missing
/// ones are made like `cpio -d` does).
fn open_parent(dir: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, ParentProblem> {
    const FLAGS: OFlags = OFlags::PATH
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    let failed = match rustix::fs::openat(dir, name, FLAGS, Mode::empty()) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    // Only now find out why (the common case costs one call).
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Err(match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Symlink => ParentProblem::Symlink,
            rustix::fs::FileType::Directory => ParentProblem::Io(errno(failed)),
            _ => ParentProblem::NotDirectory,
        }),
        Err(Errno::NOENT) => {
            rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o777))
                .map_err(|e| ParentProblem::Io(errno(e)))?;
            rustix::fs::openat(dir, name, FLAGS, Mode::empty())
                .map_err(|e| ParentProblem::Io(errno(e)))
        }
        Err(e) => Err(ParentProblem::Io(errno(e))),
    }
}

struct Extractor<'f> {
    image: String,
    root: PathBuf,
    parents: OpenParents,
    opts: ExtractOptions,
    filter: &'f Filter<'f>,
    /// The current entry's relative name (reused: no allocation per entry).
    name: Vec<u8>,
    /// Hard-link table of the current archive: (ino, maj, min, type) ->
    /// relative name.
    links: HashMap<(u32, u32, u32, u32), Box<[u8]>>,
    /// Directory modes and times, applied at the end ...
    dirs: Vec<DirMeta>,
    /// ... and their names, one after another.
    dir_names: Vec<u8>,
    current: Option<OpenFile>,
    report: ExtractReport,
    euid: u32,
    egid: u32,
    /// The process umask (bits open() and mkdir() take away).
    umask: u32,
}

/// Puts the name's components, relative and joined by single slashes, in
/// `out` (empty for the root itself).
fn normalize(name: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(
                    "the name contains '..' and would reach outside the target directory".into(),
                )
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(())
}

/// The parent's path and the last component of a normalized name.
fn split_name(name: &[u8]) -> (&[u8], &[u8]) {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&[], name),
    }
}

/// The path of a relative name, for messages.
fn full(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
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

fn errno(e: Errno) -> io::Error {
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

    fn write_error(&self, name: &[u8], e: Errno) -> Error {
        Error::write(full(&self.root, name), errno(e))
    }

    /// `parent[..end]` is the part of the entry's parent path at fault.
    fn parent_error(
        &self,
        e: &Entry<'_>,
        parent: &[u8],
        end: usize,
        problem: ParentProblem,
    ) -> Error {
        match problem {
            ParentProblem::Symlink => self.unsafe_entry(
                e,
                format!(
                    "its parent '{}' is a symlink; writing through it could leave the target directory",
                    String::from_utf8_lossy(&parent[..end])
                ),
            ),
            ParentProblem::NotDirectory => self.unsafe_entry(
                e,
                format!(
                    "its parent '{}' is not a directory",
                    String::from_utf8_lossy(&parent[..end])
                ),
            ),
            ParentProblem::Io(err) => Error::write(full(&self.root, &parent[..end]), err),
        }
    }

    /// Removes what is at `base` in `dir` unless it already has type `want`
    /// (the kernel's clean_path()).
    fn clean(
        &self,
        dir: &OwnedFd,
        base: &[u8],
        name: &[u8],
        want: Option<FileType>,
    ) -> Result<(), Error> {
        let st = match rustix::fs::statat(dir, base, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::write(full(&self.root, name), errno(e))),
        };
        let ft = rustix::fs::FileType::from_raw_mode(st.st_mode);
        let same = match want {
            Some(FileType::Directory) => ft == rustix::fs::FileType::Directory,
            Some(FileType::Regular) => ft == rustix::fs::FileType::RegularFile,
            _ => false,
        };
        if same {
            return Ok(());
        }
        // A directory removed here is a child of the entry's parent, so no
        // open parent descriptor refers to it.
        let flags = if ft == rustix::fs::FileType::Directory {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rustix::fs::unlinkat(dir, base, flags)
            .map_err(|e| Error::write(full(&self.root, name), errno(e)))
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
    fn maybe_link(
        &mut self,
        h: &Header,
        dir: &OwnedFd,
        base: &[u8],
        name: &[u8],
    ) -> Result<bool, Error> {
        let Some(key) = Self::link_key(h) else {
            return Ok(false);
        };
        match self.links.get(&key) {
            Some(first) if **first != *name => {
                self.clean(dir, base, name, None)?;
                // Flags 0: a symlink at the first name is linked, not followed.
                rustix::fs::linkat(&*self.parents.root, &**first, dir, base, AtFlags::empty())
                    .map_err(|e| Error::write(full(&self.root, name), errno(e)))?;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => {
                self.links.insert(key, name.into());
                Ok(false)
            }
        }
    }

    /// Whether a file this process creates needs a chown to get `h`'s owner.
    fn needs_chown(&self, h: &Header) -> bool {
        self.opts.preserve_owner && (h.uid != self.euid || h.gid != self.egid)
    }

    fn set_owner_at(
        &self,
        dir: &OwnedFd,
        base: &[u8],
        name: &[u8],
        h: &Header,
    ) -> Result<(), Error> {
        if self.needs_chown(h) {
            rustix::fs::chownat(
                dir,
                base,
                Some(rustix::fs::Uid::from_raw(h.uid)),
                Some(rustix::fs::Gid::from_raw(h.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| Error::write(full(&self.root, name), errno(e)))?;
        }
        Ok(())
    }

    /// Opens the file for writing; also says whether it existed before.
    fn open_regular(
        &self,
        dir: &OwnedFd,
        base: &[u8],
        name: &[u8],
        h: &Header,
        linked: bool,
    ) -> Result<(File, bool), Error> {
        let open = |extra: OFlags| {
            rustix::fs::openat(
                dir,
                base,
                OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | extra,
                Mode::from_raw_mode(h.mode & 0o7777),
            )
            .map(File::from)
        };
        let write_error = |e: Errno| self.write_error(name, e);
        if linked {
            return match open(OFlags::empty()) {
                Ok(f) => Ok((f, true)),
                Err(_) => {
                    self.clean(dir, base, name, Some(FileType::Regular))?;
                    open(OFlags::TRUNC).map(|f| (f, true)).map_err(write_error)
                }
            };
        }
        // Fresh name first (the common case); otherwise the kernel's
        // clean_path(): replace anything that is not a regular file, then
        // truncate.
        match open(OFlags::EXCL) {
            Ok(f) => Ok((f, false)),
            Err(Errno::EXIST) => {
                self.clean(dir, base, name, Some(FileType::Regular))?;
                open(OFlags::TRUNC).map(|f| (f, true)).map_err(write_error)
            }
            Err(e) => Err(write_error(e)),
        }
    }

    fn finish_file(&mut self) -> Result<(), Error> {
        let Some(f) = self.current.take() else {
            return Ok(());
        };
        let h = f.header;
        let fd = &f.file;
        let write_error = |e: Errno| self.write_error(&self.name, e);
        // open() applied the mode less the umask; only fix it up when the
        // umask took bits away (or the file existed already).
        if h.mode & 0o7777 & self.umask != 0 || f.existed {
            rustix::fs::fchmod(fd, Mode::from_raw_mode(h.mode & 0o7777)).map_err(write_error)?;
        }
        if self.needs_chown(&h) {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(h.uid)),
                Some(rustix::fs::Gid::from_raw(h.gid)),
            )
            .map_err(write_error)?;
            // chown clears set-id bits; set the mode again.
            if h.mode & 0o6000 != 0 {
                rustix::fs::fchmod(fd, Mode::from_raw_mode(h.mode & 0o7777))
                    .map_err(write_error)?;
            }
        }
        rustix::fs::futimens(fd, &ts(h.mtime)).map_err(write_error)?;
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<(), Error> {
        // Deepest first, as the kernel's dir_utime() (reverse of creation).
        let root = &*self.parents.root;
        for d in self.dirs.iter().rev() {
            let name = &self.dir_names[d.name.clone()];
            let write_error = |e: Errno| self.write_error(name, e);
            // The directory may have been replaced by a later entry.
            let st = match rustix::fs::statat(root, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st)
                    if rustix::fs::FileType::from_raw_mode(st.st_mode)
                        == rustix::fs::FileType::Directory =>
                {
                    st
                }
                _ => continue,
            };
            if self.opts.preserve_owner && (st.st_uid != d.uid || st.st_gid != d.gid) {
                rustix::fs::chownat(
                    root,
                    name,
                    Some(rustix::fs::Uid::from_raw(d.uid)),
                    Some(rustix::fs::Gid::from_raw(d.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(write_error)?;
            }
            if st.st_mode & 0o7777 != d.mode & 0o7777 {
                rustix::fs::chmodat(
                    root,
                    name,
                    Mode::from_raw_mode(d.mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(write_error)?;
            }
            rustix::fs::utimensat(root, name, &ts(d.mtime), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(write_error)?;
        }
        self.dirs.clear();
        self.dir_names.clear();
        Ok(())
    }

    /// [`Visitor::entry`] with the entry's normalized name (taken out of
    /// `self.name` for the duration).
    fn entry_named(&mut self, e: &Entry<'_>, name: &[u8]) -> Result<bool, Error> {
        let (parent, base) = split_name(name);
        let dir = self
            .parents
            .get(parent)
            .map_err(|(end, p)| self.parent_error(e, parent, end, p))?;
        let h = *e.header;
        self.report.entries += 1;
        match e.file_type() {
            FileType::Regular => {
                let linked = self.maybe_link(&h, &dir, base, name)?;
                let (file, existed) = self.open_regular(&dir, base, name, &h, linked)?;
                if linked {
                    // Opened without O_TRUNC: the kernel sizes the shared
                    // inode to this entry's data.
                    file.set_len(u64::from(h.filesize))
                        .map_err(|err| Error::write(full(&self.root, name), err))?;
                }
                self.current = Some(OpenFile {
                    existed,
                    file,
                    header: h,
                });
                return Ok(true);
            }
            FileType::Directory => {
                // Try first: in a fresh directory nothing is in the way.
                let mkdir = || rustix::fs::mkdirat(&*dir, base, Mode::from_raw_mode(0o777));
                match mkdir() {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        self.clean(&dir, base, name, Some(FileType::Directory))?;
                        match mkdir() {
                            Ok(()) | Err(Errno::EXIST) => {}
                            Err(err) => return Err(self.write_error(name, err)),
                        }
                    }
                    Err(err) => return Err(self.write_error(name, err)),
                }
                let start = self.dir_names.len();
                self.dir_names.extend_from_slice(name);
                self.dirs.push(DirMeta {
                    name: start..self.dir_names.len(),
                    mode: h.mode,
                    uid: h.uid,
                    gid: h.gid,
                    mtime: h.mtime,
                });
            }
            FileType::Symlink => {
                let target = e.link_target.unwrap_or_default();
                if target.contains(&0) {
                    // As std's symlink() says it.
                    return Err(Error::write(
                        full(&self.root, name),
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "file name contained an unexpected NUL byte",
                        ),
                    ));
                }
                match rustix::fs::symlinkat(target, &*dir, base) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        self.clean(&dir, base, name, None)?;
                        rustix::fs::symlinkat(target, &*dir, base)
                            .map_err(|err| self.write_error(name, err))?;
                    }
                    Err(err) => return Err(self.write_error(name, err)),
                }
                self.set_owner_at(&dir, base, name, &h)?;
                rustix::fs::utimensat(&*dir, base, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| self.write_error(name, err))?;
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
                if self.maybe_link(&h, &dir, base, name)? {
                    return Ok(false);
                }
                self.clean(&dir, base, name, None)?;
                let kind = match t {
                    FileType::CharDevice => rustix::fs::FileType::CharacterDevice,
                    FileType::BlockDevice => rustix::fs::FileType::BlockDevice,
                    FileType::Fifo => rustix::fs::FileType::Fifo,
                    _ => rustix::fs::FileType::Socket,
                };
                let dev = rustix::fs::makedev(h.rdev_major, h.rdev_minor);
                rustix::fs::mknodat(&*dir, base, kind, Mode::from_raw_mode(h.mode & 0o7777), dev)
                    .map_err(|err| self.write_error(name, err))?;
                self.set_owner_at(&dir, base, name, &h)?;
                rustix::fs::chmodat(
                    &*dir,
                    base,
                    Mode::from_raw_mode(h.mode & 0o7777),
                    AtFlags::empty(),
                )
                .map_err(|err| self.write_error(name, err))?;
                rustix::fs::utimensat(&*dir, base, &ts(h.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|err| self.write_error(name, err))?;
            }
            FileType::Unknown => {
                self.report.entries -= 1;
                self.skip(e, "unknown file type (the kernel ignores it too)");
            }
        }
        Ok(false)
    }
}

impl Visitor for Extractor<'_> {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        if !(self.filter)(e.segment, e.name) {
            return Ok(false);
        }
        let mut name = std::mem::take(&mut self.name);
        if let Err(problem) = normalize(e.name, &mut name) {
            return Err(self.unsafe_entry(e, problem));
        }
        let result = if name.is_empty() {
            // "." (the root): its mode is the target directory's.
            Ok(false)
        } else {
            self.entry_named(e, &name)
        };
        self.name = name;
        result
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some(f) = self.current.as_mut() {
            f.file
                .write_all(chunk)
                .map_err(|e| Error::write(full(&self.root, &self.name), e))?;
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
