//! Replacing a module directory's index files as one set.
//!
//! kmod renames each file into place on its own, so a crash can leave a
//! `modules.dep` from the new run beside a `modules.alias.bin` from the old
//! one. kmodkit stages the whole set first and rolls forward:
//!
//! 1. write every file into `.kmodkit-depmod.staging/` in the module
//!    directory, fsync each file and the directory;
//! 2. create `COMMITTED` there (fsync) — from now on the new set is
//!    decided;
//! 3. rename each file into the module directory, fsync it, remove the
//!    staging directory.
//!
//! Before touching anything, [`recover`] finishes a committed staging
//! directory left by a crash (step 3 again) or discards an uncommitted one.
//! At every instant the files a reader finds are the old set or the new
//! set once recovery has run; nothing partial is ever renamed into place.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::output::OutputFile;
use crate::DepmodError;

pub const STAGING_DIR: &str = ".kmodkit-depmod.staging";
const COMMIT_MARKER: &str = "COMMITTED";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DepmodError + '_ {
    move |cause| DepmodError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), DepmodError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Finishes or discards a staging directory left by an interrupted run.
/// Returns true when a committed set was rolled forward.
pub fn recover(module_dir: &Path) -> Result<bool, DepmodError> {
    let staging = module_dir.join(STAGING_DIR);
    if !staging.exists() {
        return Ok(false);
    }
    if staging.join(COMMIT_MARKER).exists() {
        install(module_dir, &staging)?;
        Ok(true)
    } else {
        fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        Ok(false)
    }
}

/// Moves every staged file into place, then removes the staging directory.
fn install(module_dir: &Path, staging: &Path) -> Result<(), DepmodError> {
    let mut names: Vec<PathBuf> = fs::read_dir(staging)
        .map_err(io_err(staging))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != COMMIT_MARKER))
        .collect();
    names.sort();
    for src in names {
        let dst = module_dir.join(src.file_name().unwrap_or_default());
        fault_point("rename");
        fs::rename(&src, &dst).map_err(io_err(&dst))?;
    }
    fsync_dir(module_dir)?;
    fault_point("cleanup");
    fs::remove_dir_all(staging).map_err(io_err(staging))?;
    fsync_dir(module_dir)
}

/// Writes `files` into `module_dir` as one set (see the module docs).
pub fn write_set(module_dir: &Path, files: &[OutputFile]) -> Result<(), DepmodError> {
    recover(module_dir)?;
    // Already installed, byte for byte: nothing to replace. modules.dep
    // still gets a fresh mtime, which `depmod -A` compares against.
    let unchanged = files
        .iter()
        .all(|f| fs::read(module_dir.join(f.name)).is_ok_and(|old| old == f.contents));
    if unchanged {
        let dep = module_dir.join("modules.dep");
        if let Ok(file) = File::options().append(true).open(&dep) {
            let _ = file.set_modified(std::time::SystemTime::now());
        }
        return Ok(());
    }
    let staging = module_dir.join(STAGING_DIR);
    fs::create_dir(&staging).map_err(io_err(&staging))?;
    for f in files {
        let path = staging.join(f.name);
        fault_point("write");
        let mut out = File::create(&path).map_err(io_err(&path))?;
        out.write_all(&f.contents).map_err(io_err(&path))?;
        out.sync_all().map_err(io_err(&path))?;
    }
    fsync_dir(&staging)?;
    fault_point("commit");
    let marker = staging.join(COMMIT_MARKER);
    File::create(&marker)
        .and_then(|f| f.sync_all())
        .map_err(io_err(&marker))?;
    fsync_dir(&staging)?;
    install(module_dir, &staging)
}

/// Test hook: with `KMODKIT_FAULT=<point>:<n>`, the process exits abruptly
/// (as if killed) the n-th time it reaches that point. Lets the
/// fault-injection tests stop a run between any two steps.
pub fn fault_point(point: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("KMODKIT_FAULT") else {
        return;
    };
    let Some((name, n)) = spec.split_once(':') else {
        return;
    };
    if name != point && name != "any" {
        return;
    }
    let hit = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse::<usize>().ok() == Some(hit) {
        std::process::abort();
    }
}
