//! What the CLI reads of the running system, in one place: the libraries
//! are given these values, never look them up themselves.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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
