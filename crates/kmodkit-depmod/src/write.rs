//! Replacing a module directory's index files as one set.
//!
//! kmod renames each file into place on its own (tools/depmod.c
//! `depmod_output`), so a crash can leave a `modules.dep` from the new run
//! beside a `modules.alias.bin` from the old one. kmodkit stages the whole
//! set in `.kmodkit-depmod.staging/` inside the module directory and rolls
//! forward: see [`kmodkit_commit::StagedSet`] for the protocol. Before
//! touching anything, [`recover`] finishes a committed staging directory
//! left by a crash or discards an uncommitted one.

use std::fs::{self, File};
use std::path::Path;

use kmodkit_commit::{CommitError, Recovery, StagedSet};

use crate::output::OutputFile;
use crate::DepmodError;

/// The staging directory's name; kept from earlier releases so their
/// leftovers recover.
pub const STAGING_DIR: &str = ".kmodkit-depmod.staging";

/// `DepmodError::Io` carries the OS error in its message: the step goes
/// there too ("cannot rename the new file into place: ...").
fn commit_err(e: CommitError) -> DepmodError {
    let cause = std::io::Error::new(
        e.source.kind(),
        format!("cannot {}: {}", e.action, e.source),
    );
    DepmodError::Io {
        path: e.path,
        cause,
    }
}

/// Finishes or discards a staging directory left by an interrupted run.
/// Returns true when a committed set was rolled forward.
pub fn recover(module_dir: &Path) -> Result<bool, DepmodError> {
    let r = kmodkit_commit::recover_set(module_dir, &module_dir.join(STAGING_DIR))
        .map_err(commit_err)?;
    Ok(r == Recovery::RolledForward)
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
    let mut set =
        StagedSet::begin(module_dir, &module_dir.join(STAGING_DIR)).map_err(commit_err)?;
    for f in files {
        set.write_file(f.name, &f.contents).map_err(commit_err)?;
    }
    set.commit().map_err(commit_err)
}
