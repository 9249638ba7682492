//! Replacing a file on a user's system: nothing lost, nothing left behind.
//!
//! [`Staged`] is how kmodkit writes a file that replaces another:
//!
//! 1. the new content goes to `.NAME.kmodkit-PID.tmp` in the target's
//!    directory (same filesystem, so the rename below is atomic);
//! 2. [`Staged::commit`] fsyncs it, keeps the replaced file as a backup
//!    when asked (a hard link to the old inode named `NAME.bak`, or the
//!    next free `NAME.bak.N`: an existing backup is never overwritten),
//!    renames the temporary over the target and fsyncs the directory.
//!
//! Until the rename the target is untouched. The temporary (and a backup
//! made for a commit that did not happen) is removed when the `Staged` is
//! dropped uncommitted — every error path — and, once the program has
//! called [`cleanup_on_signals`], when SIGINT, SIGTERM or SIGHUP stop the
//! process. What kill -9 or a power cut leaves (a temporary whose process
//! is gone) is removed by the next `Staged` for the same target.
//!
//! The shape follows gitoxide's `gix-tempfile`/`gix-lock`: a registry of
//! paths to remove, emptied by a signal handler, and commit by rename.
//! The rename and the registry update happen under one lock that the
//! signal handler takes too, so a signal either stops a commit before its
//! rename (everything removed, the old file in place) or after it
//! (everything done).
//!
//! The same crate holds the two other shapes of "replace, never half":
//! [`StagedSet`] replaces several entries of one directory as one step
//! (staging directory, commit marker, roll-forward [`recover_set`]), and
//! [`ScratchDir`] is a private working directory that no run leaves
//! behind. Every temporary name kmodkit uses is defined here, next to the
//! cleaner that relies on it.

mod fault;
mod scratch;
mod set;
mod signals;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use fault::fault_point;
pub use scratch::{remove_stale_scratch, ScratchDir};
pub use set::{
    hoist_subdir, recover as recover_set, Recovery, StagedSet, COMMIT_MARKER, GENERATION_FILE,
};
pub use signals::{cleanup_on_signals, remove_dir_on_signal, Registration};

/// What failed, on which path; the OS error is the source.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot {action}", path = .path.display())]
pub struct CommitError {
    pub path: PathBuf,
    pub action: &'static str,
    #[source]
    pub source: io::Error,
}

/// For callers whose errors are `io::Error`s: the kind is the OS error's,
/// the message names the path and the step.
impl From<CommitError> for io::Error {
    fn from(e: CommitError) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

fn err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> CommitError + 'a {
    move |source| CommitError {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Whether [`Staged::commit`] keeps the file it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    None,
    /// Keep the replaced file as `NAME.bak` (or `NAME.bak.N` when that is
    /// taken by an older backup). Nothing is kept when there was no file.
    Keep,
}

/// The result of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub path: PathBuf,
    /// Where the replaced file is kept.
    pub backup: Option<PathBuf>,
    /// False when `backup` already held the replaced file (same inode),
    /// made by an earlier run.
    pub backup_is_new: bool,
}

/// A new version of `target`, written beside it. Writes go to the
/// temporary file; nothing is visible at `target` until [`Staged::commit`].
#[derive(Debug)]
pub struct Staged {
    file: File,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    registration: Option<Registration>,
}

/// The directory of `path` (`.` for a bare name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(path: &Path) -> Result<&OsStr, CommitError> {
    path.file_name().ok_or_else(|| CommitError {
        path: path.to_path_buf(),
        action: "replace it",
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
    })
}

/// `.NAME.kmodkit-PID.tmp`: the naming contract the stale-temporary
/// cleaner relies on.
fn temporary_name(name: &OsStr, pid: u32) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!(".kmodkit-{pid}.tmp"));
    s
}

impl Staged {
    /// Creates the temporary for `target` (mode 0644 before the umask;
    /// see [`Staged::set_mode`]), after removing the temporaries that
    /// killed earlier runs left for it.
    pub fn new(target: &Path) -> Result<Staged, CommitError> {
        let dir = parent_dir(target);
        let name = file_name(target)?;
        remove_stale_temporaries(&dir, name);
        let tmp = dir.join(temporary_name(name, std::process::id()));
        // Registered before it exists: a signal right after the open still
        // finds it.
        let registration = signals::register_file(&tmp);
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(err(&tmp, "create a temporary file"))?;
        let staged = Staged {
            file,
            tmp,
            target: target.to_path_buf(),
            dir,
            registration: Some(registration),
        };
        fault_point("commit-staged");
        Ok(staged)
    }

    /// The temporary file, for writing.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Where the new content is until the commit.
    pub fn temporary_path(&self) -> &Path {
        &self.tmp
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Sets the permission bits the file will have at its target.
    pub fn set_mode(&mut self, mode: u32) -> Result<(), CommitError> {
        self.file
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(err(&self.tmp, "set the mode of"))
    }

    /// fsyncs the new content, keeps the old file as asked, renames the new
    /// one into place and fsyncs the directory. On error the target is the
    /// old file and nothing new is left (a backup made for this commit is
    /// removed again).
    pub fn commit(mut self, backup: Backup) -> Result<Committed, CommitError> {
        self.file
            .flush()
            .and_then(|()| self.file.sync_all())
            .map_err(err(&self.tmp, "write"))?;
        fault_point("commit-synced");
        let kept = match backup {
            Backup::Keep => keep_backup(&self.target)?,
            Backup::None => None,
        };
        fault_point("commit-backup");
        let registration = self.registration.take();
        let renamed = signals::with_registry_locked(|registry| {
            let r = fs::rename(&self.tmp, &self.target);
            if r.is_ok() {
                // Under the lock: a signal from now on finds nothing of
                // this commit to remove.
                registry.forget(registration.as_ref());
                if let Some(k) = &kept {
                    registry.forget(k.registration.as_ref());
                }
            }
            r
        });
        if let Err(e) = renamed {
            self.registration = registration;
            if let Some(k) = kept {
                k.discard();
            }
            return Err(err(&self.target, "rename the new file into place")(e));
        }
        if let Some(r) = registration {
            r.disarm();
        }
        fault_point("commit-renamed");
        // The rename is done: an error here must not be reported as "the
        // old file is in place". Filesystems that cannot fsync a directory
        // (some FUSE and network ones) refuse it; the rename still holds.
        let _ = fsync_dir(&self.dir);
        let (backup, backup_is_new) = match kept {
            Some(k) => {
                let is_new = k.registration.is_some();
                if let Some(r) = k.registration {
                    r.disarm();
                }
                (Some(k.path), is_new)
            }
            None => (None, false),
        };
        Ok(Committed {
            path: self.target.clone(),
            backup,
            backup_is_new,
        })
    }
}

impl Staged {
    /// Like [`Staged::commit`], for a file that must not exist yet (a new
    /// private key): the rename is a no-replace rename, so an existing
    /// `target` — made by anyone, even between a check and this call — is
    /// left alone and the error's source is `AlreadyExists`.
    pub fn commit_new(mut self) -> Result<Committed, CommitError> {
        self.file
            .flush()
            .and_then(|()| self.file.sync_all())
            .map_err(err(&self.tmp, "write"))?;
        let registration = self.registration.take();
        let renamed = signals::with_registry_locked(|registry| {
            let r = rustix::fs::renameat_with(
                rustix::fs::CWD,
                &self.tmp,
                rustix::fs::CWD,
                &self.target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(io::Error::from);
            if r.is_ok() {
                registry.forget(registration.as_ref());
            }
            r
        });
        if let Err(e) = renamed {
            self.registration = registration;
            return Err(err(&self.target, "create the new file (never replaced)")(e));
        }
        if let Some(r) = registration {
            r.disarm();
        }
        let _ = fsync_dir(&self.dir);
        Ok(Committed {
            path: self.target.clone(),
            backup: None,
            backup_is_new: false,
        })
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        fault_point("commit-write");
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Not committed (committing takes the registration).
        if self.registration.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `target` with `contents` through a [`Staged`] (no backup;
/// the mode is `mode`, or 0644 before the umask).
pub fn replace_file(
    target: &Path,
    contents: &[u8],
    mode: Option<u32>,
) -> Result<Committed, CommitError> {
    let mut staged = Staged::new(target)?;
    if let Some(mode) = mode {
        staged.set_mode(mode)?;
    }
    staged
        .file()
        .write_all(contents)
        .map_err(err(&staged.tmp, "write"))?;
    staged.commit(Backup::None)
}

/// fsyncs a directory, so a rename in it survives a power cut.
pub fn fsync_dir(dir: &Path) -> Result<(), CommitError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err(dir, "sync the directory"))
}

/// `NAME.bak` for n = 0, `NAME.bak.N` after.
pub fn backup_path(target: &Path, n: u32) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".bak");
    if n > 0 {
        s.push(format!(".{n}"));
    }
    PathBuf::from(s)
}

/// A backup made (or found) for one commit.
struct KeptBackup {
    path: PathBuf,
    /// Set when this commit made it: removed on signal until the commit is
    /// done.
    registration: Option<Registration>,
}

impl KeptBackup {
    fn discard(self) {
        if let Some(r) = self.registration {
            let _ = fs::remove_file(&self.path);
            drop(r);
        }
    }
}

/// Keeps `target` as its first free backup name, or finds the backup that
/// already is it (same inode: an earlier run kept it and nothing replaced
/// `target` since). Existing backups are never replaced: the new name is
/// made with link(2) or a no-replace rename, both of which fail on an
/// existing name.
fn keep_backup(target: &Path) -> Result<Option<KeptBackup>, CommitError> {
    let meta = match fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(target, "read")(e)),
    };
    let mut n = 0;
    loop {
        let path = backup_path(target, n);
        match fs::metadata(&path) {
            Ok(b) if b.dev() == meta.dev() && b.ino() == meta.ino() => {
                return Ok(Some(KeptBackup {
                    path,
                    registration: None,
                }))
            }
            Ok(_) => {
                n += 1;
                continue;
            }
            Err(_) => {}
        }
        let made = signals::with_registry_locked(|registry| {
            fs::hard_link(target, &path).map(|()| registry.add(&path, false))
        });
        match made {
            Ok(registration) => {
                return Ok(Some(KeptBackup {
                    path,
                    registration: Some(registration),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            // No hard links here (vfat /boot/efi, some network
            // filesystems): a copy, staged and moved to a free name.
            Err(_) => return copy_backup(target, n, meta.permissions().mode()).map(Some),
        }
    }
}

fn copy_backup(target: &Path, mut n: u32, mode: u32) -> Result<KeptBackup, CommitError> {
    let probe = backup_path(target, n);
    let mut staged = Staged::new(&probe)?;
    let mut src = File::open(target).map_err(err(target, "read"))?;
    io::copy(&mut src, staged.file()).map_err(err(&staged.tmp, "write"))?;
    staged.set_mode(mode & 0o7777)?;
    staged.file.sync_all().map_err(err(&staged.tmp, "write"))?;
    loop {
        let path = backup_path(target, n);
        let moved = signals::with_registry_locked(|registry| {
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &staged.tmp,
                rustix::fs::CWD,
                &path,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(io::Error::from)
            .map(|()| {
                registry.forget(staged.registration.as_ref());
                registry.add(&path, false)
            })
        });
        match moved {
            Ok(registration) => {
                if let Some(r) = staged.registration.take() {
                    r.disarm();
                }
                return Ok(KeptBackup {
                    path,
                    registration: Some(registration),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(err(&path, "keep the backup")(e)),
        }
    }
}

/// Removes what killed runs left beside `NAME` in `dir`: their staged
/// temporaries (`.NAME.kmodkit-PID.tmp`, also for `NAME.bak[.N]`) and the
/// backup temporaries of kmodkit before this crate (`NAME.bak.PID.tmp`),
/// when process PID is gone (or is this process, which has not made them).
pub fn remove_stale_temporaries(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let name = name.as_bytes();
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = stale_pid(file.as_bytes(), name) else {
            continue;
        };
        let path = e.path();
        let gone = if pid == std::process::id() {
            !signals::is_registered(&path)
        } else {
            !process_alive(pid)
        };
        if gone {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The PID in a temporary's name made for `name`, if `file` is one.
fn stale_pid(file: &[u8], name: &[u8]) -> Option<u32> {
    let digits = |s: &[u8]| -> Option<u32> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    // NAME.bak.PID.tmp (older kmodkit).
    if let Some(rest) = file
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix(b".bak."))
        .and_then(|r| r.strip_suffix(b".tmp"))
    {
        return digits(rest);
    }
    let rest = file.strip_prefix(b".")?.strip_prefix(name)?;
    let rest = match rest.strip_prefix(b".bak") {
        Some(r) => strip_backup_number(r),
        None => rest,
    };
    digits(rest.strip_prefix(b".kmodkit-")?.strip_suffix(b".tmp")?)
}

/// `.N` of `NAME.bak.N`, if present.
fn strip_backup_number(r: &[u8]) -> &[u8] {
    if let Some(after_dot) = r.strip_prefix(b".") {
        let n = after_dot.iter().take_while(|b| b.is_ascii_digit()).count();
        if n > 0 {
            return &after_dot[n..];
        }
    }
    r
}

pub(crate) fn process_alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    // kill(pid, 0): EPERM means it exists under another user.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_names_are_recognised() {
        assert_eq!(stale_pid(b".img.kmodkit-42.tmp", b"img"), Some(42));
        assert_eq!(stale_pid(b".img.bak.kmodkit-42.tmp", b"img"), Some(42));
        assert_eq!(stale_pid(b".img.bak.3.kmodkit-42.tmp", b"img"), Some(42));
        assert_eq!(stale_pid(b"img.bak.42.tmp", b"img"), Some(42));
        assert_eq!(stale_pid(b".img2.kmodkit-42.tmp", b"img"), None);
        assert_eq!(stale_pid(b".img.kmodkit-x.tmp", b"img"), None);
        assert_eq!(stale_pid(b"img.bak", b"img"), None);
        assert_eq!(stale_pid(b"img", b"img"), None);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_new_never_replaces() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("key.pem");
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"first").unwrap();
        s.commit_new().unwrap();
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"second").unwrap();
        let e = s.commit_new().unwrap_err();
        assert_eq!(e.source.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&t).unwrap(), b"first");
        // The refused temporary is gone with the Staged.
        assert_eq!(names(d.path()), ["key.pem"]);
    }

    #[test]
    fn backups_are_numbered_never_replaced() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("img");
        fs::write(&t, b"original").unwrap();
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"first").unwrap();
        let c = s.commit(Backup::Keep).unwrap();
        assert_eq!(c.backup.as_deref(), Some(&*backup_path(&t, 0)));
        assert!(c.backup_is_new);
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"second").unwrap();
        let c = s.commit(Backup::Keep).unwrap();
        assert_eq!(c.backup.as_deref(), Some(&*backup_path(&t, 1)));
        assert_eq!(fs::read(&t).unwrap(), b"second");
        assert_eq!(fs::read(backup_path(&t, 0)).unwrap(), b"original");
        assert_eq!(fs::read(backup_path(&t, 1)).unwrap(), b"first");
        assert_eq!(names(d.path()), ["img", "img.bak", "img.bak.1"]);
    }

    #[test]
    fn a_dropped_stage_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("img");
        fs::write(&t, b"original").unwrap();
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"partial").unwrap();
        drop(s);
        assert_eq!(names(d.path()), ["img"]);
        assert_eq!(fs::read(&t).unwrap(), b"original");
    }

    #[test]
    fn a_failed_rename_removes_the_new_backup() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("img");
        fs::write(&t, b"original").unwrap();
        let mut s = Staged::new(&t).unwrap();
        s.write_all(b"new").unwrap();
        // rename(2) fails once the temporary is gone: after the backup was
        // linked, which must go too.
        fs::remove_file(s.temporary_path()).unwrap();
        assert!(s.commit(Backup::Keep).is_err());
        assert_eq!(names(d.path()), ["img"]);
        assert_eq!(fs::read(&t).unwrap(), b"original");
    }

    #[test]
    fn temporaries_of_dead_processes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path().join("img");
        fs::write(&t, b"original").unwrap();
        // A PID that cannot be alive (above pid_max's ceiling of 2^22).
        let dead = d.path().join(".img.kmodkit-9999999.tmp");
        fs::write(&dead, b"left by kill -9").unwrap();
        let own = d
            .path()
            .join(format!(".img.kmodkit-{}.tmp", std::process::id()));
        fs::write(&own, b"left by an earlier process with our pid").unwrap();
        let alive = d.path().join(".img.kmodkit-1.tmp");
        fs::write(&alive, b"init's").unwrap();
        let s = Staged::new(&t).unwrap();
        drop(s);
        assert_eq!(names(d.path()), [".img.kmodkit-1.tmp", "img"]);
    }
}
