//! The parse cache: `DIR/.kmodkit-yum-cache.json` keeps each package's
//! entry with the identity of the file it was read from, so a rerun after
//! adding one package reads only that one.
//!
//! A file is the same when its path (relative to DIR), size, modification
//! and status-change times (nanoseconds), inode and device all match. The
//! change time cannot be set from user space, so a file rewritten in place
//! with its old size and mtime restored is still read again (createrepo_c's
//! `--update` compares mtime and size only). A missing, unreadable or older
//! format cache is ignored: the run reads every package.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::package::Package;

/// The cache's name in the repository directory.
pub const CACHE_FILE: &str = ".kmodkit-yum-cache.json";

/// Bumped whenever [`Package`] or the rules that fill it change.
const FORMAT: u32 = 1;

/// The identity of a package file on disk.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileKey {
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub ctime: i64,
    pub ctime_nsec: i64,
    pub ino: u64,
    pub dev: u64,
}

impl FileKey {
    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    href: String,
    key: FileKey,
    package: Package,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    entries: Vec<Entry>,
}

/// The cache as read: href -> (identity, entry).
#[derive(Default)]
pub(crate) struct Cache {
    entries: HashMap<String, (FileKey, Package)>,
}

impl Cache {
    pub fn load(path: &Path) -> Cache {
        let Ok(bytes) = std::fs::read(path) else {
            return Cache::default();
        };
        match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(file) if file.format == FORMAT => Cache {
                entries: file
                    .entries
                    .into_iter()
                    .map(|e| (e.href, (e.key, e.package)))
                    .collect(),
            },
            _ => Cache::default(),
        }
    }

    /// The cached entry of `href` when the file is still the one it was
    /// read from.
    pub fn get(&self, href: &str, key: &FileKey) -> Option<&Package> {
        self.entries
            .get(href)
            .filter(|(k, _)| k == key)
            .map(|(_, p)| p)
    }
}

/// The cache for this run's packages (sorted, so the file is
/// reproducible too).
pub(crate) fn serialize(packages: &[(FileKey, &Package)]) -> Result<Vec<u8>, serde_json::Error> {
    let file = CacheFile {
        format: FORMAT,
        entries: packages
            .iter()
            .map(|(key, p)| Entry {
                href: p.href.clone(),
                key: key.clone(),
                package: (*p).clone(),
            })
            .collect(),
    };
    serde_json::to_vec(&file)
}
