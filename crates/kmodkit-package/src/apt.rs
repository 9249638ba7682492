//! An apt repository over a directory of `.deb` files: what
//! `apt-ftparchive packages` + `apt-ftparchive release` (or reprepro)
//! write, signed for `Signed-By:`.
//!
//! Layout (the Debian repository format, wiki.debian.org/DebianRepository/Format):
//!
//! ```text
//! DIR/pool/…/*.deb                                the packages (anywhere but dists/)
//! DIR/dists/SUITE/COMPONENT/binary-ARCH/Packages  one stanza per package:
//!                                                 its control fields, then
//!                                                 Filename (relative to DIR),
//!                                                 Size, MD5sum, SHA256
//!                                   …/Packages.gz, Packages.xz  the same, compressed
//! DIR/dists/SUITE/Release      Origin, Label, Suite, Codename, Date, Architectures,
//!                              Components, Acquire-By-Hash, then MD5Sum: and SHA256:
//!                              lines ` HASH SIZE PATH` for every index file
//! DIR/dists/SUITE/Release.gpg  detached armored signature of Release
//! DIR/dists/SUITE/InRelease    Release, cleartext-signed (what apt reads first)
//! DIR/.kmodkit-apt-cache.json  this writer's cache (below); not part of the repository
//! ```
//!
//! `Architecture: all` packages are listed in every `binary-ARCH/Packages`
//! and `all` is not named in `Architectures:`, as reprepro and
//! apt-ftparchive's generate mode do (apt then needs no `binary-all`); a
//! repository of only `all` packages gets `Architectures: all` and a
//! `binary-all/Packages`. An index directory of an architecture no
//! package has any more is left in place, unlisted (apt reads only what
//! the Release names).
//!
//! Every file is replaced atomically ([`kmodkit_commit::replace_file`]):
//! the indices first, then `Release`, `Release.gpg` and `InRelease` last,
//! so a client that sees the new `InRelease` finds every file it names.
//!
//! The cache maps each `.deb`'s path (relative to DIR) to the size,
//! modification and status-change times (nanoseconds) it had when it was
//! read, and what was read: the control text and the checksums. A rerun
//! reads only the `.deb` files whose entry does not match (a new or
//! replaced file: a rename changes the ctime even when the mtime was kept);
//! a missing or unreadable cache means every file is read.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::deb::{ar_members, decompress, gzip, hex, rfc2822, tar_files, xz};
use crate::pgp::{PgpError, RepoKey};

/// How the repository is written.
#[derive(Debug, Clone)]
pub struct AptOptions<'a> {
    /// Signs `Release` (`Release.gpg`, `InRelease`); `None` leaves the
    /// repository unsigned (apt then refuses it unless told `trusted=yes`).
    pub key: Option<&'a RepoKey>,
    /// `Date:` and the signatures' time.
    pub time: u64,
    /// `Suite:` and `Codename:` (`stable`, `bookworm`).
    pub suite: String,
    /// The one component (`main`).
    pub component: String,
}

/// What [`write_repository`] did.
#[derive(Debug, Clone)]
pub struct AptReport {
    /// Stanzas (one per `.deb`).
    pub packages: usize,
    /// `.deb` files read this run.
    pub read: usize,
    /// `.deb` files whose cache entry was used.
    pub reused: usize,
    /// `Architectures:` of the Release.
    pub architectures: Vec<String>,
    /// `dists/SUITE/Release`.
    pub release: PathBuf,
    /// `InRelease` and `Release.gpg` were written.
    pub signed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AptError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Commit(#[from] kmodkit_commit::CommitError),
    #[error("{}: not a Debian package apt can index: {what}", path.display())]
    BadPackage { path: PathBuf, what: String },
    #[error("{field} {value:?}: {why}")]
    BadOption {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("cannot compress {}: {cause}", path.display())]
    Compress {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot sign {}: {cause}", path.display())]
    Sign { path: PathBuf, cause: PgpError },
}

/// The cache file, relative to the repository directory.
pub const CACHE_FILE: &str = ".kmodkit-apt-cache.json";
const CACHE_FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct CacheEntry {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// The control file as in the package.
    control: String,
    md5: String,
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    format: u32,
    packages: BTreeMap<String, CacheEntry>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AptError + '_ {
    move |cause| AptError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Every `*.deb` under `dir` except in `dists/` and hidden directories,
/// as paths relative to `dir` with `/` separators, sorted.
fn find_debs(dir: &Path) -> Result<Vec<String>, AptError> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), AptError> {
        let here = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        for entry in std::fs::read_dir(&here).map_err(io_err(&here))? {
            let entry = entry.map_err(io_err(&here))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let path = entry.path();
            // Follows symbolic links, as apt-ftparchive does.
            let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
            if meta.is_dir() {
                if !(rel.is_empty() && name == "dists") {
                    walk(base, &child, out)?;
                }
            } else if meta.is_file() && name.ends_with(".deb") {
                out.push(child);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

/// The `control` file of a `.deb`.
fn read_control(path: &Path, bytes: &[u8]) -> Result<String, AptError> {
    let bad = |what: String| AptError::BadPackage {
        path: path.to_path_buf(),
        what,
    };
    let members = ar_members(bytes).map_err(bad)?;
    match members.first() {
        Some((name, data)) if name == "debian-binary" && data.starts_with(b"2.") => {}
        _ => return Err(bad("the first ar member is not debian-binary 2.x".into())),
    }
    let (name, data) = members
        .iter()
        .find(|(n, _)| n.starts_with("control.tar"))
        .ok_or_else(|| bad("no control.tar member".into()))?;
    let tar = decompress(name, data).map_err(bad)?;
    let files = tar_files(&tar).map_err(|e| bad(format!("{name}: {e}")))?;
    let (_, control) = files
        .into_iter()
        .find(|(n, _)| n == "control")
        .ok_or_else(|| bad(format!("{name} has no ./control")))?;
    let text = String::from_utf8(control).map_err(|_| bad("control is not UTF-8".into()))?;
    Ok(text)
}

/// A control paragraph as `(field, value)`; the value keeps its
/// continuation lines (`"x\n more"`).
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if out.is_empty() {
                continue;
            }
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push('\n');
                v.push_str(line);
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.to_string(), v.trim().to_string()));
        }
    }
    out
}

struct Stanza {
    package: String,
    arch: String,
    filename: String,
    text: String,
}

/// The `Packages` stanza: the control fields in the package's order, the
/// file's `Filename`/`Size`/`MD5sum`/`SHA256`, then `Description` last
/// (apt-ftparchive's order for these fields).
fn stanza(path: &Path, rel: &str, e: &CacheEntry) -> Result<Stanza, AptError> {
    let f = fields(&e.control);
    let get = |name: &str| {
        f.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| AptError::BadPackage {
                path: path.to_path_buf(),
                what: format!("control has no {name} field"),
            })
    };
    let package = get("Package")?;
    get("Version")?;
    let arch = get("Architecture")?;
    let mut text = String::new();
    let mut description = None;
    for (k, v) in &f {
        let line = if v.starts_with('\n') || v.is_empty() {
            format!("{k}:{v}\n")
        } else {
            format!("{k}: {v}\n")
        };
        if k.eq_ignore_ascii_case("Description") {
            description = Some(line);
        } else if !["Filename", "Size", "MD5sum", "SHA256"]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k))
        {
            text.push_str(&line);
        }
    }
    text.push_str(&format!(
        "Filename: {rel}\nSize: {}\nMD5sum: {}\nSHA256: {}\n",
        e.size, e.md5, e.sha256
    ));
    if let Some(d) = description {
        text.push_str(&d);
    }
    Ok(Stanza {
        package,
        arch,
        filename: rel.to_string(),
        text,
    })
}

fn check_option(field: &'static str, value: &str) -> Result<(), AptError> {
    if value.is_empty()
        || value == "."
        || value == ".."
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c))
    {
        return Err(AptError::BadOption {
            field,
            value: value.to_string(),
            why: "must be letters, digits and . _ + - ~ (one path component)",
        });
    }
    Ok(())
}

fn time_ns(secs: i64, nsec: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsec)
}

/// Reads one package: its control file and checksums, hashing MD5 and
/// SHA-256 in one pass over the bytes.
fn read_package(path: &Path, mtime_ns: i128, ctime_ns: i128) -> Result<CacheEntry, AptError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (mut md5, mut sha256) = (Md5::new(), Sha256::new());
    for chunk in bytes.chunks(1 << 16) {
        md5.update(chunk);
        sha256.update(chunk);
    }
    Ok(CacheEntry {
        size: bytes.len() as u64,
        mtime_ns,
        ctime_ns,
        control: read_control(path, &bytes)?,
        md5: hex(&md5.finalize()),
        sha256: hex(&sha256.finalize()),
    })
}

/// The packages `todo` indexes in `found`, read on up to 8 threads (a
/// pool of large driver packages is bound by hashing); results in the
/// order of `todo`.
fn read_packages(
    dir: &Path,
    found: &[(String, Option<CacheEntry>, i128, i128)],
    todo: &[usize],
) -> Vec<Result<CacheEntry, AptError>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
        .min(todo.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<Result<CacheEntry, AptError>>> =
        (0..todo.len()).map(|_| None).collect();
    let results = std::sync::Mutex::new(&mut slots);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { break };
                let (rel, _, mtime_ns, ctime_ns) = &found[i];
                let r = read_package(&dir.join(rel), *mtime_ns, *ctime_ns);
                if let Ok(mut slots) = results.lock() {
                    slots[k] = Some(r);
                }
            });
        }
    });
    slots
        .into_iter()
        .zip(todo)
        .map(|(r, &i)| {
            r.unwrap_or_else(|| {
                Err(AptError::Io {
                    path: dir.join(&found[i].0),
                    cause: std::io::Error::other("a reader thread stopped"),
                })
            })
        })
        .collect()
}

/// Writes `dists/SUITE/…` for every `.deb` under `dir` (see the module
/// documentation), reading only the packages the cache does not know.
pub fn write_repository(dir: &Path, opts: &AptOptions<'_>) -> Result<AptReport, AptError> {
    check_option("suite", &opts.suite)?;
    check_option("component", &opts.component)?;
    let cache_path = dir.join(CACHE_FILE);
    let old: Cache = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Cache>(&b).ok())
        .filter(|c| c.format == CACHE_FORMAT)
        .unwrap_or_default();
    let mut cache = Cache {
        format: CACHE_FORMAT,
        packages: BTreeMap::new(),
    };
    // (path relative to DIR, what the cache knows or None: read it).
    let mut found: Vec<(String, Option<CacheEntry>, i128, i128)> = Vec::new();
    for rel in find_debs(dir)? {
        let path = dir.join(&rel);
        let meta = std::fs::metadata(&path).map_err(io_err(&path))?;
        let (size, mtime_ns, ctime_ns) = (
            meta.len(),
            time_ns(meta.mtime(), meta.mtime_nsec()),
            time_ns(meta.ctime(), meta.ctime_nsec()),
        );
        let known = old
            .packages
            .get(&rel)
            .filter(|e| e.size == size && e.mtime_ns == mtime_ns && e.ctime_ns == ctime_ns)
            .cloned();
        found.push((rel, known, mtime_ns, ctime_ns));
    }
    let todo: Vec<usize> = (0..found.len()).filter(|&i| found[i].1.is_none()).collect();
    let read = todo.len();
    let reused = found.len() - read;
    for (i, entry) in todo.iter().zip(read_packages(dir, &found, &todo)) {
        found[*i].1 = Some(entry?);
    }
    let mut stanzas = Vec::new();
    for (rel, entry, _, _) in found {
        let Some(entry) = entry else { continue };
        stanzas.push(stanza(&dir.join(&rel), &rel, &entry)?);
        cache.packages.insert(rel, entry);
    }
    stanzas.sort_by(|a, b| (&a.package, &a.filename).cmp(&(&b.package, &b.filename)));

    let concrete: BTreeSet<String> = stanzas
        .iter()
        .filter(|s| s.arch != "all")
        .map(|s| s.arch.clone())
        .collect();
    let architectures: Vec<String> = if concrete.is_empty() && !stanzas.is_empty() {
        vec!["all".to_string()]
    } else {
        concrete.into_iter().collect()
    };

    let suite_dir = dir.join("dists").join(&opts.suite);
    // (path relative to dists/SUITE, bytes), sorted by path.
    let mut indices: Vec<(String, Vec<u8>)> = Vec::new();
    for arch in &architectures {
        let text: String = stanzas
            .iter()
            .filter(|s| &s.arch == arch || s.arch == "all")
            .map(|s| format!("{}\n", s.text))
            .collect();
        let base = format!("{}/binary-{arch}/Packages", opts.component);
        let compress_err = |cause| AptError::Compress {
            path: suite_dir.join(&base),
            cause,
        };
        let gz = gzip(text.as_bytes()).map_err(compress_err)?;
        let xz = xz(text.as_bytes()).map_err(compress_err)?;
        indices.push((base.clone(), text.into_bytes()));
        indices.push((format!("{base}.gz"), gz));
        indices.push((format!("{base}.xz"), xz));
    }
    indices.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, bytes) in &indices {
        let path = suite_dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        kmodkit_commit::replace_file(&path, bytes, Some(0o644))?;
    }

    let release = release_text(opts, &architectures, &indices);
    let release_path = suite_dir.join("Release");
    std::fs::create_dir_all(&suite_dir).map_err(io_err(&suite_dir))?;
    kmodkit_commit::replace_file(&release_path, release.as_bytes(), Some(0o644))?;
    if let Some(key) = opts.key {
        let sign_err = |path: PathBuf| move |cause| AptError::Sign { path, cause };
        let gpg_path = suite_dir.join("Release.gpg");
        let detached = key
            .sign_detached(release.as_bytes(), opts.time)
            .map_err(sign_err(gpg_path.clone()))?;
        kmodkit_commit::replace_file(&gpg_path, detached.as_bytes(), Some(0o644))?;
        let in_path = suite_dir.join("InRelease");
        let clear = key
            .sign_cleartext(&release, opts.time)
            .map_err(sign_err(in_path.clone()))?;
        kmodkit_commit::replace_file(&in_path, clear.as_bytes(), Some(0o644))?;
    } else {
        // An old signature would no longer match: remove it.
        for name in ["InRelease", "Release.gpg"] {
            let p = suite_dir.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
    }

    let json = serde_json::to_vec(&cache).map_err(|e| AptError::Io {
        path: cache_path.clone(),
        cause: std::io::Error::other(e),
    })?;
    kmodkit_commit::replace_file(&cache_path, &json, Some(0o644))?;
    Ok(AptReport {
        packages: stanzas.len(),
        read,
        reused,
        architectures,
        release: release_path,
        signed: opts.key.is_some(),
    })
}

/// The `Release` text: apt-ftparchive's field order and its checksum
/// line format (` HASH SIZE(right-aligned in 16) PATH`).
fn release_text(
    opts: &AptOptions<'_>,
    architectures: &[String],
    files: &[(String, Vec<u8>)],
) -> String {
    let mut out = format!(
        "Origin: kmodkit\nLabel: kmodkit\nSuite: {s}\nCodename: {s}\nDate: {}\n\
         Architectures: {}\nComponents: {}\nDescription: kmodkit driver packages\n\
         Acquire-By-Hash: no\n",
        rfc2822(opts.time, "UTC"),
        architectures.join(" "),
        opts.component,
        s = opts.suite,
    );
    out.push_str("MD5Sum:\n");
    for (path, bytes) in files {
        out.push_str(&format!(
            " {} {:>16} {path}\n",
            hex(&Md5::digest(bytes)),
            bytes.len()
        ));
    }
    out.push_str("SHA256:\n");
    for (path, bytes) in files {
        out.push_str(&format!(
            " {} {:>16} {path}\n",
            hex(&Sha256::digest(bytes)),
            bytes.len()
        ));
    }
    out
}

/// A deb822 `.sources` file for the repository at `url`, trusted through
/// the key at `keyring_path` only (`Signed-By:`, no `trusted=yes`).
pub fn sources_file(url: &str, suite: &str, component: &str, keyring_path: &str) -> String {
    format!(
        "Types: deb\nURIs: {url}\nSuites: {suite}\nComponents: {component}\nSigned-By: {keyring_path}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_continuations() {
        let f = fields("Package: a\nDescription: short\n long\n .\n more\n\nIgnored: x\n");
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].1, "short\n long\n .\n more");
    }

    #[test]
    fn options_are_one_path_component() {
        assert!(check_option("suite", "bookworm").is_ok());
        assert!(check_option("suite", "../x").is_err());
        assert!(check_option("component", "").is_err());
    }
}
