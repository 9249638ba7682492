//! Installing built modules into a kernel's module directory together with
//! the index that lists them, as one step.
//!
//! The distribution's directory for out-of-tree modules (`updates/dkms`
//! on Debian, `extra` on RHEL) lies under one top-level subdirectory of
//! `lib/modules/K`. That subdirectory is staged whole — the files there now
//! hard-linked, the package's old files of the same module names left out,
//! the new ones written and fsynced — and the index is computed by depmod
//! in-process from the staged tree; both go through one
//! [`kmodkit_commit::StagedSet`] (the subdirectory swapped in with
//! `RENAME_EXCHANGE`, the index files renamed, roll-forward after a
//! crash). A kill at any point leaves the old modules with the old index,
//! or the new modules with the new index once recovery has run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kmodkit_commit::{fault_point, CommitError, StagedSet, GENERATION_FILE};
use kmodkit_depmod::config::root_config_dirs;
use kmodkit_depmod::{output, ModuleTree, TreeOptions};

use crate::record::InstalledModule;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error("regenerating the module index of {kernel}: {source}")]
    Index {
        kernel: String,
        #[source]
        source: kmodkit_depmod::DepmodError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("destination directory {0:?} must be relative, under lib/modules/K, without ..")]
    BadDestination(String),
}

/// One package's files for one kernel.
#[derive(Debug)]
pub struct PackageFiles {
    pub package: String,
    /// (module name as installed without suffix, file suffix, bytes).
    pub modules: Vec<(String, &'static str, Vec<u8>)>,
}

/// The staging directory of kernel K's installs: beside `K/`.
pub fn staging_dir(root: &Path, kernel: &str) -> PathBuf {
    root.join("lib/modules")
        .join(format!(".kmodkit-rebuild-{kernel}.staging"))
}

/// Completes or discards what an interrupted install of `kernel` left.
pub fn recover(root: &Path, kernel: &str) -> Result<bool, CommitError> {
    let module_dir = root.join("lib/modules").join(kernel);
    Ok(
        kmodkit_commit::recover_set(&module_dir, &staging_dir(root, kernel))?
            == kmodkit_commit::Recovery::RolledForward,
    )
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Hard-links the tree `src` into `dst` (which exists), leaving out the
/// files `skip` says to.
fn link_tree(src: &Path, dst: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<(), InstallError> {
    let Ok(rd) = std::fs::read_dir(src) else {
        return Ok(());
    };
    for e in rd {
        let e = e.map_err(io(src))?;
        let from = e.path();
        let to = dst.join(e.file_name());
        let ft = e.file_type().map_err(io(&from))?;
        if e.file_name() == GENERATION_FILE || skip(&from) {
            continue;
        }
        if ft.is_dir() {
            std::fs::create_dir(&to).map_err(io(&to))?;
            link_tree(&from, &to, skip)?;
        } else if ft.is_symlink() {
            let text = std::fs::read_link(&from).map_err(io(&from))?;
            std::os::unix::fs::symlink(text, &to).map_err(io(&to))?;
        } else {
            std::fs::hard_link(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

/// Installs the packages' modules for `kernel` under `dest_dir` (relative
/// to `ROOT/lib/modules/K`), replacing any file of the same module name
/// there, and regenerates the index; returns what each package has there.
pub fn install(
    root: &Path,
    kernel: &str,
    dest_dir: &str,
    packages: &[PackageFiles],
    depmod_cache: Option<&Path>,
) -> Result<Vec<Vec<InstalledModule>>, InstallError> {
    let dest = Path::new(dest_dir);
    let mut parts = dest.components();
    let top = match parts.next() {
        Some(std::path::Component::Normal(t)) => t.to_string_lossy().into_owned(),
        _ => return Err(InstallError::BadDestination(dest_dir.into())),
    };
    if dest
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(InstallError::BadDestination(dest_dir.into()));
    }
    let module_dir = root.join("lib/modules").join(kernel);
    recover(root, kernel)?;
    let mut set = StagedSet::begin(&module_dir, &staging_dir(root, kernel))?;
    let staged_top = set.stage_dir(&top)?;
    let new_names: BTreeSet<&str> = packages
        .iter()
        .flat_map(|p| p.modules.iter().map(|m| m.0.as_str()))
        .collect();
    let live_dest = module_dir.join(dest);
    let skip = |p: &Path| {
        p.parent() == Some(live_dest.as_path())
            && p.file_name()
                .and_then(|n| kmodkit_index::name::module_name_from_path(Path::new(n)))
                .is_some_and(|n| {
                    new_names.contains(n.as_str())
                        || new_names.contains(n.replace('_', "-").as_str())
                })
    };
    link_tree(&module_dir.join(&top), &staged_top, &skip)?;
    let staged_dest = staged_top.join(dest.strip_prefix(&top).unwrap_or(Path::new("")));
    std::fs::create_dir_all(&staged_dest).map_err(io(&staged_dest))?;
    let mut installed = Vec::new();
    for p in packages {
        let mut mine = Vec::new();
        for (name, suffix, bytes) in &p.modules {
            let file = format!("{name}{suffix}");
            fault_point("install-module");
            write_synced(&staged_dest.join(&file), bytes)?;
            mine.push(InstalledModule {
                name: name.replace('-', "_"),
                path: format!("/lib/modules/{kernel}/{dest_dir}/{file}"),
            });
        }
        installed.push(mine);
    }
    kmodkit_commit::fsync_dir(&staged_dest)?;

    let root_s = root.display().to_string();
    let basedir = (root_s != "/").then(|| root_s.trim_end_matches('/').to_string());
    let mut options = TreeOptions::new(basedir, kernel.to_string());
    options.staged_subdir = Some((top.clone(), staged_top.clone()));
    options.config_paths = root_config_dirs(root);
    options.cache = depmod_cache.map(Path::to_path_buf);
    let index_err = |source| InstallError::Index {
        kernel: kernel.to_string(),
        source,
    };
    let tree = ModuleTree::load(options).map_err(index_err)?;
    let (files, _) = output::render_all(&tree).map_err(index_err)?;
    for f in &files {
        set.write_file(f.name, &f.contents)?;
    }
    fault_point("install-commit");
    set.commit()?;
    Ok(installed)
}
