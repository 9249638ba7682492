//! Replacing several entries of one directory as one step.
//!
//! kmod's depmod renames each index file into place on its own
//! (tools/depmod.c `depmod_output`), so a crash can leave a `modules.dep`
//! of the new run beside a `modules.alias.bin` of the old one. A
//! [`StagedSet`] stages the whole set first and rolls forward:
//!
//! 1. every entry is written into a staging directory on the target's
//!    filesystem (files fsynced as written; a staged directory gets a
//!    [`GENERATION_FILE`] holding the set's token);
//! 2. [`StagedSet::commit`] fsyncs the staging directory and creates
//!    [`COMMIT_MARKER`] in it (content: the token, fsynced) — from now on
//!    the new set is decided;
//! 3. each staged entry is moved to `TARGET/NAME`: a file by rename(2), a
//!    directory by `renameat2(RENAME_EXCHANGE)` when `TARGET/NAME` exists
//!    (the old tree lands in the staging directory), by rename otherwise;
//!    the target directory is fsynced and the staging directory removed.
//!
//! [`recover`] (run by [`StagedSet::begin`] before anything else) repeats
//! step 3 for a committed staging directory left by a crash or kill -9,
//! and removes an uncommitted one. Step 3 is idempotent: a moved file is
//! no longer in the staging directory, and a directory whose live
//! counterpart already carries the token was swapped. So at every instant
//! a reader finds the old set, or the new one once recovery has run.
//!
//! Until the marker exists the staging directory is removed on drop and,
//! once the program called [`crate::cleanup_on_signals`], on SIGINT,
//! SIGTERM and SIGHUP. The marker is created under the signal registry's
//! lock together with taking the directory off that list, so a signal
//! either discards an uncommitted set or leaves a committed one for
//! recovery.
//!
//! On-disk names are the ones kmodkit's depmod and weak-modules used
//! before this module existed (`COMMITTED`, `.kmodkit-generation`; an
//! empty marker from older depmod runs is accepted), so their leftovers
//! recover.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::signals::{self, Registration};
use crate::{err, fault_point, fsync_dir, CommitError};

/// Created in the staging directory when the set is decided.
pub const COMMIT_MARKER: &str = "COMMITTED";
/// Inside each staged directory: the token of the set that staged it.
pub const GENERATION_FILE: &str = ".kmodkit-generation";

/// What [`recover`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// No staging directory.
    Nothing,
    /// A committed set, now installed.
    RolledForward,
    /// An uncommitted set, now removed.
    Discarded,
}

/// A set of new entries for one directory, staged beside it.
#[derive(Debug)]
pub struct StagedSet {
    target_dir: PathBuf,
    staging: PathBuf,
    token: String,
    /// Present until the commit marker exists.
    registration: Option<Registration>,
}

impl StagedSet {
    /// Recovers what an interrupted run left at `staging` (see
    /// [`recover`]), then creates it empty. `staging` must be on the
    /// filesystem of `target_dir` (rename(2) does not cross them); a
    /// directory inside `target_dir`, or beside it when readers of
    /// `target_dir` must not see the staged entries.
    pub fn begin(target_dir: &Path, staging: &Path) -> Result<StagedSet, CommitError> {
        recover(target_dir, staging)?;
        let token = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        // Registered before it exists: a signal right after the mkdir still
        // finds it.
        let registration = signals::remove_dir_on_signal(staging);
        fs::create_dir(staging).map_err(err(staging, "create the staging directory"))?;
        Ok(StagedSet {
            target_dir: target_dir.to_path_buf(),
            staging: staging.to_path_buf(),
            token,
            registration: Some(registration),
        })
    }

    /// The staging directory.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    fn entry(&self, name: &str) -> Result<PathBuf, CommitError> {
        let plain = !name.is_empty()
            && name != COMMIT_MARKER
            && name != "."
            && name != ".."
            && !name.contains('/');
        if !plain {
            return Err(CommitError {
                path: self.staging.join(name),
                action: "stage it",
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        Ok(self.staging.join(name))
    }

    /// Stages `TARGET/NAME` with `contents` (written and fsynced now).
    pub fn write_file(&mut self, name: &str, contents: &[u8]) -> Result<(), CommitError> {
        let path = self.entry(name)?;
        fault_point("write");
        let mut out = File::create(&path).map_err(err(&path, "create"))?;
        out.write_all(contents)
            .and_then(|()| out.sync_all())
            .map_err(err(&path, "write"))
    }

    /// Stages the directory `TARGET/NAME`, replaced as a whole: returns the
    /// empty directory to fill. Its content is not fsynced by the set
    /// (symlinks and small trees; fsync what must survive a power cut).
    pub fn stage_dir(&mut self, name: &str) -> Result<PathBuf, CommitError> {
        let path = self.entry(name)?;
        fs::create_dir(&path).map_err(err(&path, "create"))?;
        let generation = path.join(GENERATION_FILE);
        fs::write(&generation, &self.token).map_err(err(&generation, "write"))?;
        Ok(path)
    }

    /// Decides the set (marker) and installs it. An error before the
    /// marker leaves the old entries and removes the staging directory;
    /// one after it leaves a committed set that [`recover`] completes.
    pub fn commit(mut self) -> Result<(), CommitError> {
        fsync_dir(&self.staging)?;
        fault_point("commit");
        let marker = self.staging.join(COMMIT_MARKER);
        let registration = self.registration.take();
        let marked = signals::with_registry_locked(|registry| {
            let r = File::create(&marker).and_then(|mut f| {
                f.write_all(self.token.as_bytes())?;
                f.sync_all()
            });
            if r.is_ok() {
                // Decided: a signal from now on leaves it for recovery.
                registry.forget(registration.as_ref());
            }
            r
        });
        if let Err(e) = marked {
            self.registration = registration;
            return Err(err(&marker, "write")(e));
        }
        if let Some(r) = registration {
            r.disarm();
        }
        fsync_dir(&self.staging)?;
        install(&self.target_dir, &self.staging, Some(&self.token))
    }
}

impl Drop for StagedSet {
    fn drop(&mut self) {
        // Not committed (committing takes the registration).
        if self.registration.is_some() {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Finishes a committed set left at `staging` by an interrupted run, or
/// removes an uncommitted one.
pub fn recover(target_dir: &Path, staging: &Path) -> Result<Recovery, CommitError> {
    if fs::symlink_metadata(staging).is_err() {
        return Ok(Recovery::Nothing);
    }
    match fs::read(staging.join(COMMIT_MARKER)) {
        Ok(token) => {
            // An empty marker (older kmodkit depmod) staged no directories.
            let token = String::from_utf8(token).ok().filter(|t| !t.is_empty());
            install(target_dir, staging, token.as_deref())?;
            Ok(Recovery::RolledForward)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::remove_dir_all(staging).map_err(err(staging, "remove"))?;
            Ok(Recovery::Discarded)
        }
        Err(e) => Err(err(staging, "read the commit marker of")(e)),
    }
}

/// Moves the files of `staging/SUBDIR` up into `staging` (an older layout
/// of a staging directory that a crash may have left; see weak-modules).
/// Idempotent; nothing happens when `staging/SUBDIR` is absent.
pub fn hoist_subdir(staging: &Path, subdir: &str) -> Result<(), CommitError> {
    let dir = staging.join(subdir);
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in rd {
        let e = e.map_err(err(&dir, "read"))?;
        let dst = staging.join(e.file_name());
        fs::rename(e.path(), &dst).map_err(err(&dst, "move"))?;
    }
    fs::remove_dir(&dir).map_err(err(&dir, "remove"))?;
    fsync_dir(staging)
}

/// Step 3 of the module docs. Idempotent, so recovery can repeat it.
fn install(target_dir: &Path, staging: &Path, token: Option<&str>) -> Result<(), CommitError> {
    let rd = fs::read_dir(staging).map_err(err(staging, "read"))?;
    let mut entries: Vec<(PathBuf, bool)> = Vec::new();
    for e in rd {
        let e = e.map_err(err(staging, "read"))?;
        if e.file_name() == COMMIT_MARKER {
            continue;
        }
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        entries.push((e.path(), is_dir));
    }
    entries.sort();
    for (src, is_dir) in entries {
        let Some(name) = src.file_name() else {
            continue;
        };
        let dst = target_dir.join(name);
        if is_dir {
            let live = fs::read_to_string(dst.join(GENERATION_FILE)).ok();
            if token.is_some() && live.as_deref() == token {
                // Swapped already: what is staged now is the old tree.
                continue;
            }
            fault_point("swap");
            if fs::symlink_metadata(&dst).is_ok() {
                exchange(&src, &dst).map_err(err(&dst, "swap in the new"))?;
            } else {
                fs::rename(&src, &dst).map_err(err(&dst, "rename the new directory into"))?;
            }
        } else {
            fault_point("rename");
            fs::rename(&src, &dst).map_err(err(&dst, "rename the new file into place"))?;
        }
    }
    fsync_dir(target_dir)?;
    fault_point("cleanup");
    fs::remove_dir_all(staging).map_err(err(staging, "remove"))?;
    // The staging directory's removal, where it sits beside the target.
    if let Some(parent) = staging.parent().filter(|p| *p != target_dir) {
        let _ = fsync_dir(parent);
    }
    let _ = fsync_dir(target_dir);
    Ok(())
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two directory entries
/// atomically (Linux 3.15).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(io::Error::from)
}
