//! A private working directory that does not outlive its process.
//!
//! Naming contract: `BASE/PREFIX<pid>.<n>` (mode 0700), e.g.
//! `/dev/shm/kmodkit-add-drivers.4242.0` — the prefix ends in a
//! separator of the caller's choice, the pid is the creating process's and
//! `n` tells apart the directories one process makes. Directories of this
//! shape made by releases before this module (`PREFIX<pid>.<random>`, made
//! with the `tempfile` crate) match it too.
//!
//! A [`ScratchDir`] is removed on drop and, once the program called
//! [`crate::cleanup_on_signals`], on SIGINT, SIGTERM and SIGHUP. What kill
//! -9 leaves is removed by the next [`ScratchDir::new`] with the same base
//! and prefix: every `PREFIX<pid>.*` whose process is gone. The base is the
//! caller's choice (a program reads `TMPDIR` and the like; this library
//! reads no process state).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::signals::{self, Registration};
use crate::{err, process_alive, CommitError};

/// A scratch directory, removed with everything in it on drop.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    _registration: Registration,
}

impl ScratchDir {
    /// Removes the scratch directories of dead processes under `base` made
    /// with `prefix`, then creates this process's next one.
    pub fn new(base: &Path, prefix: &str) -> Result<ScratchDir, CommitError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        remove_stale_scratch(base, prefix);
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("{prefix}{pid}.{n}"));
            // Registered before it exists: a signal right after the mkdir
            // still finds it.
            let registration = signals::remove_dir_on_signal(&path);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    return Ok(ScratchDir {
                        path,
                        _registration: registration,
                    })
                }
                // A directory of an earlier process with our pid (or one
                // still being removed): take the next number.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Not ours: keep the signal cleanup off it.
                    drop(registration);
                }
                Err(e) => {
                    // Off the list before it could remove someone else's
                    // directory of that name.
                    drop(registration);
                    return Err(err(&path, "create the scratch directory")(e));
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The pid in `name` if it is `PREFIX<pid>.<anything>`.
fn scratch_pid(name: &[u8], prefix: &[u8]) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let end = rest.iter().position(|&b| b == b'.')?;
    let digits = &rest[..end];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Removes `BASE/PREFIX<pid>.*` directories whose process is gone (or is
/// this one, for a directory this process does not hold: an earlier
/// process had its pid).
pub fn remove_stale_scratch(base: &Path, prefix: &str) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(rd) = fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = scratch_pid(e.file_name().as_bytes(), prefix.as_bytes()) else {
            continue;
        };
        let path = e.path();
        let stale = if pid == std::process::id() {
            !signals::is_registered(&path)
        } else {
            !process_alive(pid)
        };
        // Only directories: a file of that name is not ours. Best effort:
        // another run may be removing it at the same time.
        if stale && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = fs::remove_dir_all(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_recognised() {
        let p = b"kmodkit-add-drivers.";
        assert_eq!(scratch_pid(b"kmodkit-add-drivers.42.0", p), Some(42));
        assert_eq!(scratch_pid(b"kmodkit-add-drivers.42.XyZ12", p), Some(42));
        assert_eq!(scratch_pid(b"kmodkit-add-drivers.42", p), None);
        assert_eq!(scratch_pid(b"kmodkit-add-drivers..0", p), None);
        assert_eq!(scratch_pid(b"kmodkit-modules.42.0", p), None);
    }

    #[test]
    fn a_scratch_dir_goes_on_drop_and_dead_ones_on_the_next_run() {
        let base = tempfile::tempdir().unwrap();
        let prefix = "kmodkit-test.";
        // kill -9 leftovers: a dead pid (above pid_max's ceiling of 2^22)
        // in the current and in the old tempfile-made shape; a live one.
        for name in ["kmodkit-test.9999999.0", "kmodkit-test.9999998.aB3xY"] {
            fs::create_dir_all(base.path().join(name).join("sub")).unwrap();
        }
        fs::create_dir(base.path().join("kmodkit-test.1.0")).unwrap();
        fs::write(base.path().join("kmodkit-test.9999997.0"), b"a file").unwrap();
        let s = ScratchDir::new(base.path(), prefix).unwrap();
        assert!(s.path().is_dir());
        let name = s.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("kmodkit-test.{}.", std::process::id())));
        // A second one of this process is left alone by the first's sweep.
        let t = ScratchDir::new(base.path(), prefix).unwrap();
        assert!(s.path().is_dir());
        fs::write(s.path().join("f"), b"x").unwrap();
        drop(s);
        drop(t);
        let mut left: Vec<String> = fs::read_dir(base.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["kmodkit-test.1.0", "kmodkit-test.9999997.0"]);
    }
}
