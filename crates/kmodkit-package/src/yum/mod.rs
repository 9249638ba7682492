//! `repodata/` for dnf and yum, as `createrepo_c DIR` writes it, signed
//! with `repomd.xml.asc` for `repo_gpgcheck=1`.
//!
//! The layout (createrepo_c's default "unique metadata file names"):
//!
//! ```text
//! DIR/**/*.rpm                              the packages (location href relative to DIR)
//! DIR/repodata/<sha256>-primary.xml.gz      NEVRA, checksums, sizes, dependencies, primary files
//! DIR/repodata/<sha256>-filelists.xml.gz    every file and directory
//! DIR/repodata/<sha256>-other.xml.gz        changelogs (the newest 10)
//! DIR/repodata/repomd.xml                   the index: checksum, open-checksum, size, open-size,
//!                                           timestamp of each file; revision
//! DIR/repodata/repomd.xml.asc               detached armored signature of repomd.xml
//! DIR/.kmodkit-yum-cache.json               parsed entries for the next run (see below)
//! ```
//!
//! `<sha256>` is the checksum of the compressed file, so a changed file
//! always gets a new name. No sqlite databases: dnf (libsolv) reads only the
//! XML; `createrepo_c --no-database` writes the same set.
//!
//! # Order of writing, and what a concurrent client sees
//!
//! 1. the new metadata files, each atomically (`kmodkit_commit`), under new
//!    names beside the old ones: a client still working from the old
//!    repomd.xml finds every file it names;
//! 2. `repomd.xml.asc`, then
//! 3. `repomd.xml`, the commit point: from here on a client gets the new
//!    index, its signature and its files. Signature first means a client
//!    that reads the new repomd.xml always gets its signature; only one
//!    that fetched the old repomd.xml before step 3 and its `.asc` after
//!    step 2 sees a mismatch, and dnf refuses that metadata and tries again
//!    on its next refresh (with two files no order closes that window);
//! 4. the old metadata files the new repomd.xml no longer names are
//!    removed (and a stale `.asc` when the repository is now unsigned);
//! 5. the cache.
//!
//! An error before step 3 leaves the old repository intact.
//!
//! # Reproducible
//!
//! Packages are sorted by (name, EVR, arch, location); gzip carries no
//! name or time; repomd's revision and timestamps are [`YumOptions::time`];
//! the signature's time too (Ed25519 and RSA PKCS#1 v1.5 signatures are
//! deterministic). `<time file>` is the package file's mtime, as
//! createrepo_c: the same files with the same mtimes give the same bytes.
//!
//! # Incremental
//!
//! [`CACHE_FILE`] keeps each package's entry keyed by its relative path,
//! size, mtime and ctime (ns), inode and device (module `cache`): a rerun
//! reads only new or changed packages.

mod cache;
mod package;
mod xml;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

pub use cache::CACHE_FILE;
use cache::{Cache, FileKey};
use package::{Package, ReadError};

/// How a repository is written.
#[derive(Debug, Clone, Copy)]
pub struct YumOptions<'a> {
    /// repomd.xml's `revision`, every `timestamp`, the signature time.
    pub time: u64,
    /// Sign repomd.xml (`repomd.xml.asc`).
    pub key: Option<&'a crate::pgp::RepoKey>,
}

/// What [`write_repository`] did.
#[derive(Debug, Clone)]
pub struct YumReport {
    /// Packages in the repository.
    pub packages: usize,
    /// Packages read (parsed and hashed) in this run.
    pub read: usize,
    /// Packages whose entries came from the cache.
    pub reused: usize,
    /// `DIR/repodata/repomd.xml`.
    pub repomd: PathBuf,
    /// `DIR/repodata/repomd.xml.asc` when signed.
    pub signature: Option<PathBuf>,
}

/// Why a repository could not be written; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum YumError {
    #[error("{}: cannot {action}: {cause}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Commit(#[from] kmodkit_commit::CommitError),
    #[error("{}: not a readable RPM package ({cause}); remove it from the repository or rebuild it", path.display())]
    Package { path: PathBuf, cause: String },
    #[error("{}: its {field} holds ASCII control characters, which XML cannot carry (createrepo_c refuses the package too): {value:?}", path.display())]
    ControlChars {
        path: PathBuf,
        field: &'static str,
        value: String,
    },
    #[error("{}: the path is not UTF-8; a repository location must be", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot sign {}: {cause}", path.display())]
    Sign {
        path: PathBuf,
        cause: crate::pgp::PgpError,
    },
    #[error("{}: cannot write the cache: {cause}", path.display())]
    Cache {
        path: PathBuf,
        cause: serde_json::Error,
    },
}

fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> YumError + 'a {
    move |cause| YumError::Io {
        path: path.to_path_buf(),
        action,
        cause,
    }
}

/// A package file found under DIR.
struct Found {
    path: PathBuf,
    href: String,
    key: FileKey,
    mtime: u64,
}

/// Every `*.rpm` under `dir`, `repodata/` left out. Symlinks to files are
/// followed (as createrepo_c); symlinked directories are not entered (a
/// loop would never end).
fn find_packages(dir: &Path) -> Result<Vec<Found>, YumError> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(io_err(&d, "list the directory"))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&d, "list the directory"))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                if name.as_encoded_bytes().ends_with(b".rpm") {
                    return Err(YumError::NotUtf8 { path });
                }
                continue;
            };
            let href = format!("{prefix}{name}");
            let ft = entry.file_type().map_err(io_err(&path, "stat"))?;
            if ft.is_dir() {
                if !(prefix.is_empty() && name == "repodata") {
                    stack.push((path, format!("{href}/")));
                }
                continue;
            }
            if !name.ends_with(".rpm") {
                continue;
            }
            let meta = std::fs::metadata(&path).map_err(io_err(&path, "stat"))?;
            if !meta.is_file() {
                continue;
            }
            let mtime = u64::try_from(std::os::unix::fs::MetadataExt::mtime(&meta)).unwrap_or(0);
            found.push(Found {
                path,
                href,
                key: FileKey::of(&meta),
                mtime,
            });
        }
    }
    found.sort_by(|a, b| a.href.cmp(&b.href));
    Ok(found)
}

fn read_one(f: &Found) -> Result<Package, YumError> {
    let file = std::fs::File::open(&f.path).map_err(io_err(&f.path, "open"))?;
    package::read_package(file, &f.href, f.mtime).map_err(|e| match e {
        ReadError::Io(cause) => YumError::Io {
            path: f.path.clone(),
            action: "read",
            cause,
        },
        ReadError::Rpm(cause) => YumError::Package {
            path: f.path.clone(),
            cause,
        },
        ReadError::ControlChars(field, value) => YumError::ControlChars {
            path: f.path.clone(),
            field,
            value,
        },
    })
}

/// Reads `todo` on a few threads (parsing is CPU-bound: sha256 of every
/// byte and the header).
fn read_all(todo: &[&Found]) -> Result<Vec<Package>, YumError> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8)
        .min(todo.len().max(1));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Package, YumError>>>> =
        Mutex::new((0..todo.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = todo.get(i) else { break };
                let r = read_one(f);
                let failed = r.is_err();
                if let Ok(mut all) = results.lock() {
                    all[i] = Some(r);
                }
                if failed {
                    // Stop the others early: the run fails anyway.
                    next.store(todo.len(), Ordering::Relaxed);
                    break;
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut out = Vec::with_capacity(todo.len());
    // The first error in path order, whichever thread hit it.
    for r in results.into_iter().flatten() {
        out.push(r?);
    }
    Ok(out)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    // No file name, mtime 0: the bytes depend on the content only.
    let mut enc = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    package::hex(&sha2::Sha256::digest(data))
}

/// A name createrepo_c (or this module) gives a metadata file of the base
/// set: `[<hex>-](primary|filelists|filelists-ext|other).(xml|sqlite)[.*]`.
fn is_base_metadata(name: &str) -> bool {
    let base = match name.split_once('-') {
        Some((h, rest)) if h.len() >= 32 && h.bytes().all(|b| b.is_ascii_hexdigit()) => rest,
        _ => name,
    };
    ["primary.", "filelists.", "filelists-ext.", "other."]
        .iter()
        .any(|p| {
            base.strip_prefix(p)
                .is_some_and(|rest| rest.starts_with("xml") || rest.starts_with("sqlite"))
        })
}

/// The sort key: name, EVR (rpm's comparison), arch, location.
fn package_order(a: &Package, b: &Package) -> std::cmp::Ordering {
    a.name
        .cmp(&b.name)
        .then_with(|| {
            let ea =
                rpm_version::Evr::new(a.epoch.as_str(), a.version.as_str(), a.release.as_str());
            let eb =
                rpm_version::Evr::new(b.epoch.as_str(), b.version.as_str(), b.release.as_str());
            ea.cmp(&eb)
        })
        .then_with(|| a.arch.cmp(&b.arch))
        .then_with(|| a.href.cmp(&b.href))
}

/// Writes `dir/repodata/` for every `*.rpm` under `dir` (see the module
/// documentation for the layout, the order of writing and the cache).
pub fn write_repository(dir: &Path, opts: &YumOptions<'_>) -> Result<YumReport, YumError> {
    let repodata = dir.join("repodata");
    let cache_path = dir.join(CACHE_FILE);
    let found = find_packages(dir)?;
    let cache = Cache::load(&cache_path);

    let mut entries: Vec<(usize, Package)> = Vec::with_capacity(found.len());
    let mut todo: Vec<&Found> = Vec::new();
    let mut todo_index: Vec<usize> = Vec::new();
    for (i, f) in found.iter().enumerate() {
        match cache.get(&f.href, &f.key) {
            Some(p) => entries.push((i, p.clone())),
            None => {
                todo.push(f);
                todo_index.push(i);
            }
        }
    }
    let reused = entries.len();
    let read = todo.len();
    entries.extend(todo_index.into_iter().zip(read_all(&todo)?));
    entries.sort_by(|(_, a), (_, b)| package_order(a, b));
    let packages: Vec<Package> = entries.iter().map(|(_, p)| p.clone()).collect();

    // 1. The metadata files.
    std::fs::create_dir_all(&repodata).map_err(io_err(&repodata, "create the directory"))?;
    let docs = xml::documents(&packages);
    let mut records = Vec::with_capacity(3);
    let mut keep = std::collections::HashSet::new();
    for (kind, doc) in [
        ("primary", &docs.primary),
        ("filelists", &docs.filelists),
        ("other", &docs.other),
    ] {
        let gz = gzip(doc.as_bytes());
        let checksum = sha256_hex(&gz);
        let name = format!("{checksum}-{kind}.xml.gz");
        kmodkit_commit::replace_file(&repodata.join(&name), &gz, Some(0o644))?;
        records.push(xml::Record {
            kind,
            open_checksum: sha256_hex(doc.as_bytes()),
            href: format!("repodata/{name}"),
            size: gz.len() as u64,
            open_size: doc.len() as u64,
            checksum,
        });
        keep.insert(name);
    }
    let repomd_text = xml::repomd(opts.time, opts.time, &records);
    let repomd = repodata.join("repomd.xml");
    let asc = repodata.join("repomd.xml.asc");

    // 2. The signature, 3. the index.
    let signature = match opts.key {
        Some(key) => {
            let armored = key
                .sign_detached(repomd_text.as_bytes(), opts.time)
                .map_err(|cause| YumError::Sign {
                    path: repomd.clone(),
                    cause,
                })?;
            kmodkit_commit::replace_file(&asc, armored.as_bytes(), Some(0o644))?;
            Some(asc.clone())
        }
        None => None,
    };
    kmodkit_commit::replace_file(&repomd, repomd_text.as_bytes(), Some(0o644))?;

    // 4. What the new index no longer names.
    let listing = std::fs::read_dir(&repodata).map_err(io_err(&repodata, "list the directory"))?;
    let mut removed = false;
    for entry in listing {
        let entry = entry.map_err(io_err(&repodata, "list the directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = (is_base_metadata(name) && !keep.contains(name))
            || (name == "repomd.xml.asc" && signature.is_none());
        if stale {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(io_err(&path, "remove the old metadata file"))?;
            removed = true;
        }
    }
    if removed {
        kmodkit_commit::fsync_dir(&repodata)?;
    }

    // 5. The cache.
    let keyed: Vec<(FileKey, &Package)> = entries
        .iter()
        .zip(&packages)
        .map(|((i, _), p)| (found[*i].key.clone(), p))
        .collect();
    let bytes = cache::serialize(&keyed).map_err(|cause| YumError::Cache {
        path: cache_path.clone(),
        cause,
    })?;
    kmodkit_commit::replace_file(&cache_path, &bytes, Some(0o644))?;

    Ok(YumReport {
        packages: packages.len(),
        read,
        reused,
        repomd,
        signature,
    })
}

/// A dnf/yum `.repo` stanza for a repository at `baseurl`. With a key URL
/// both packages (`gpgcheck=1`) and metadata (`repo_gpgcheck=1`,
/// `repomd.xml.asc`) are checked against it; without one neither is.
pub fn repo_file(id: &str, name: &str, baseurl: &str, gpgkey_url: Option<&str>) -> String {
    let mut s = format!("[{id}]\nname={name}\nbaseurl={baseurl}\nenabled=1\n");
    match gpgkey_url {
        Some(key) => s.push_str(&format!("gpgcheck=1\nrepo_gpgcheck=1\ngpgkey={key}\n")),
        None => s.push_str("gpgcheck=0\nrepo_gpgcheck=0\n"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_metadata_names() {
        let h = "0ec0ffd5a63379085393a7443508b67f4ce505923333296cca5daa2e6be3c549";
        assert!(is_base_metadata(&format!("{h}-other.xml.gz")));
        assert!(is_base_metadata(&format!("{h}-primary.sqlite.bz2")));
        assert!(is_base_metadata("filelists.xml.gz"));
        assert!(!is_base_metadata(&format!("{h}-comps.xml")));
        assert!(!is_base_metadata("repomd.xml"));
        assert!(!is_base_metadata("repomd.xml.asc"));
    }

    #[test]
    fn repo_stanza() {
        let s = repo_file("k", "K", "file:///r", Some("file:///k.asc"));
        assert!(s.contains("gpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file:///k.asc\n"));
        assert!(repo_file("k", "K", "file:///r", None).contains("gpgcheck=0"));
    }
}
