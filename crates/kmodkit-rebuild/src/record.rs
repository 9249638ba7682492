//! What a run installed, per (package, version, kernel): the record later
//! runs decide "up to date" and "compatible, not rebuilt" from, and that
//! `status` and `reload` read. Kept at
//! `ROOT/var/lib/kmodkit/rebuild/NAME/VERSION/KERNEL.json`, with the
//! build's `Module.symvers` beside it (`KERNEL.symvers`) for packages that
//! build against this one later (`KBUILD_EXTRA_SYMBOLS`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledModule {
    /// The module's name (`jool_common`).
    pub name: String,
    /// Where it is, as the system under the root names it
    /// (`/lib/modules/K/updates/dkms/jool_common.ko.xz`).
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub package: String,
    pub version: String,
    pub kernel: String,
    /// The build cache key of the inputs (source, recipe, kernel identity,
    /// dependencies).
    pub key: String,
    /// `None` when this kernel's modules are another kernel's build
    /// reached through weak-updates.
    pub built_for: Option<String>,
    pub modules: Vec<InstalledModule>,
}

pub fn records_dir(root: &Path) -> PathBuf {
    root.join("var/lib/kmodkit/rebuild")
}

pub fn record_path(root: &Path, package: &str, version: &str, kernel: &str) -> PathBuf {
    records_dir(root)
        .join(package)
        .join(version)
        .join(format!("{kernel}.json"))
}

pub fn symvers_path(root: &Path, package: &str, version: &str, kernel: &str) -> PathBuf {
    records_dir(root)
        .join(package)
        .join(version)
        .join(format!("{kernel}.symvers"))
}

impl Record {
    pub fn load(root: &Path, package: &str, version: &str, kernel: &str) -> Option<Record> {
        let text = std::fs::read(record_path(root, package, version, kernel)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Every record of one package version, any kernel.
    pub fn all_of(root: &Path, package: &str, version: &str) -> Vec<Record> {
        let dir = records_dir(root).join(package).join(version);
        let mut out: Vec<Record> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a: &Record, b: &Record| {
            kmodkit_abi::weak::compare_releases(&b.kernel, &a.kernel)
        });
        out
    }

    /// The module files, on this machine, when all still exist.
    pub fn files(&self, root: &Path) -> Option<Vec<PathBuf>> {
        self.modules
            .iter()
            .map(|m| {
                let p = root.join(m.path.trim_start_matches('/'));
                p.is_file().then_some(p)
            })
            .collect()
    }

    /// Writes the record (atomically; the directory is created).
    pub fn store(&self, root: &Path) -> Result<(), kmodkit_commit::CommitError> {
        let path = record_path(root, &self.package, &self.version, &self.kernel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| kmodkit_commit::CommitError {
                path: dir.to_path_buf(),
                action: "create",
                source,
            })?;
        }
        let mut text = serde_json::to_vec_pretty(self).unwrap_or_default();
        text.push(b'\n');
        kmodkit_commit::replace_file(&path, &text, Some(0o644)).map(|_| ())
    }
}
