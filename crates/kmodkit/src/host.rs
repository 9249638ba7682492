//! What the CLI reads of the running system, in one place: the libraries
//! are given these values, never look them up themselves.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The running kernel's release (`uname -r`), for commands whose kernel
/// argument is optional. `instead` says what to pass when it cannot be
/// read (a container without /proc, say).
pub fn running_kernel_release(instead: &str) -> Result<String> {
    const SOURCE: &str = "/proc/sys/kernel/osrelease";
    let s = std::fs::read_to_string(SOURCE).with_context(|| {
        format!("cannot read the running kernel's release from {SOURCE}; {instead}")
    })?;
    Ok(s.trim_end().to_string())
}

/// The process umask, from /proc/self/status (reading it with umask(2)
/// would change it); every bit when it cannot be read, so extraction sets
/// each mode explicitly.
pub fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o7777)
}

/// The current directory as glibc's `get_current_dir_name` reports it:
/// `$PWD` when it names the same directory (so a path through a symlink
/// prints as the user typed it, as kmod's do), else the real path.
pub fn current_dir_name() -> String {
    let real = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if let Ok(pwd) = std::env::var("PWD") {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(&real)) {
            if a.dev() == b.dev() && a.ino() == b.ino() {
                return pwd;
            }
        }
    }
    real.to_string_lossy().into_owned()
}

/// kmod's `path_make_absolute_cwd`: a relative path joined to
/// [`current_dir_name`].
pub fn make_absolute(p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    format!("{}/{p}", current_dir_name())
}

/// Where scratch directories go: `TMPDIR` when set; else `/dev/shm` when
/// it is a world-writable directory (memory-backed: unpacking an image's
/// hundreds of module files costs far more on a disk-backed /tmp); else
/// the system's temporary directory.
pub fn scratch_base() -> PathBuf {
    if let Some(t) = std::env::var_os("TMPDIR").filter(|t| !t.is_empty()) {
        return PathBuf::from(t);
    }
    let shm = Path::new("/dev/shm");
    if std::fs::metadata(shm).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o002 != 0) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A scratch directory under [`scratch_base`], removed on drop and on
/// signals; those of killed runs with the same prefix are removed first.
pub fn scratch_dir(prefix: &str) -> Result<kmodkit_commit::ScratchDir> {
    let base = scratch_base();
    kmodkit_commit::ScratchDir::new(&base, prefix).with_context(|| {
        format!(
            "cannot make a scratch directory in {}; set TMPDIR to a writable directory",
            base.display()
        )
    })
}
