//! Finding the module files of a tree, in kmod 30's array order
//! (`tools/depmod.c`): the `readdir` walk of `depmod_modules_search` over
//! the module directory and the depmod.d `external` directories, the
//! depmod.d priority rules of `depmod_module_is_higher_priority` when two
//! files give one module name, then `depmod_modules_build_array` (the
//! module-name hash table's order) and `depmod_modules_sort`
//! (`modules.order`).
//!
//! kmod works on the bytes of file names (`path_ends_with_kmod_ext`,
//! `path_to_modname`) and writes them to the indexes unchanged; so does
//! this module: a path here is bytes, never text.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use kmodkit_index::name::{module_name_bytes, module_suffix};
use rayon::prelude::*;

use crate::cache::CacheKey;
use crate::config::{DepmodConfig, Search};
use crate::diagnostic::{strerror, Diagnostic};
use crate::kmod_hash;
use crate::options::{KernelSymbols, StepTime, TreeOptions};
use crate::DepmodError;

/// The path a byte string names.
pub(crate) fn as_path(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The result of [`TreeScan::new`]: which files will be indexed, in
/// kmod's array order, with their on-disk identities.
#[derive(Debug)]
pub struct TreeScan {
    pub options: TreeOptions,
    pub dir: String,
    pub config: DepmodConfig,
    pub(crate) found: Vec<Found>,
    /// File identities, read on first need (fingerprint, loading).
    pub(crate) keys: Option<Vec<CacheKey>>,
    by_name: HashMap<Vec<u8>, usize>,
    pub diagnostics: Vec<Diagnostic>,
    /// How long the scan took.
    pub timings: Vec<StepTime>,
}

/// A candidate module found while scanning.
#[derive(Debug)]
pub(crate) struct Found {
    /// Module name (`path_to_modname`).
    pub(crate) name: Vec<u8>,
    pub(crate) path: Vec<u8>,
    /// Where the file really is, when it differs from `path` (staged).
    source: Option<Vec<u8>>,
    /// Length of the directory part of `path`, excluding the last '/'.
    baselen: usize,
    pub(crate) relpath: Option<Vec<u8>>,
    /// relpath truncated to `dir/<modname length>.ko`, to match
    /// modules.order lines (kmod's `uncrelpath`; on bytes, so the cut may
    /// fall inside a multi-byte character, as in kmod).
    uncrelpath: Option<Vec<u8>>,
}

impl Found {
    pub(crate) fn read_path(&self) -> &Path {
        as_path(self.source.as_deref().unwrap_or(&self.path))
    }
}

/// kmod's `uncrelpath`: `relpath` up to its last '/' (exclusive of
/// nothing when there is none), then as many bytes as the module name
/// plus `.ko` take.
fn uncompressed_relpath(relpath: &[u8], dirlen: usize, name: &[u8]) -> Vec<u8> {
    let end = (dirlen + name.len() + 3).min(relpath.len());
    relpath[..end].to_vec()
}

impl TreeScan {
    /// Finds the module files and orders them, without reading any module.
    pub fn new(options: TreeOptions) -> Result<TreeScan, DepmodError> {
        let dir = options.module_dir();
        let meta = std::fs::metadata(&dir).map_err(|source| DepmodError::MissingTree {
            dir: PathBuf::from(&dir),
            source,
        })?;
        if !meta.is_dir() {
            return Err(DepmodError::MissingTree {
                dir: PathBuf::from(&dir),
                source: std::io::Error::other("not a directory"),
            });
        }
        let t0 = Instant::now();
        let scanning = options.modules.is_empty();
        let config = if scanning {
            DepmodConfig::load(&options.config_paths, &options.kernel_release)?
        } else {
            DepmodConfig::default()
        };
        let mut diagnostics: Vec<Diagnostic> = config
            .diagnostics
            .iter()
            .cloned()
            .map(Diagnostic::Error)
            .collect();
        let found = if scanning {
            let mut scanner = Scanner::new(&dir, &config);
            scanner.staged = options
                .staged_subdir
                .as_ref()
                .map(|(n, p)| (n.as_bytes().to_vec(), p.as_os_str().as_bytes().to_vec()));
            scanner.scan(&mut diagnostics)?
        } else {
            explicit_modules(&dir, &options.modules)?
        };
        let found = order_modules(&dir, found, &mut diagnostics);
        let by_name = found
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        Ok(TreeScan {
            options,
            dir,
            config,
            found,
            keys: None,
            by_name,
            diagnostics,
            timings: vec![StepTime::since("scan and order", t0)],
        })
    }

    /// Number of module files found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The module name and file of each module, in kmod's array order.
    pub fn modules(&self) -> impl Iterator<Item = (&[u8], &Path)> {
        self.found
            .iter()
            .map(|f| (f.name.as_slice(), as_path(&f.path)))
    }

    /// The file that provides module `name`, if any.
    pub fn provider_path(&self, name: impl AsRef<[u8]>) -> Option<&Path> {
        self.by_name
            .get(name.as_ref())
            .map(|&i| as_path(&self.found[i].path))
    }

    /// Whether a module file at `path` (a full path, normally inside the
    /// module directory) would replace the current provider of its module
    /// name under this tree's depmod.d priorities; `true` when no module of
    /// that name exists. Ties keep the current file, as when the new file
    /// is found later in the directory walk.
    pub fn would_replace(&self, path: impl AsRef<OsStr>) -> bool {
        let path = path.as_ref().as_bytes();
        let Some(name) = module_name_bytes(OsStr::from_bytes(path)) else {
            return true;
        };
        let Some(old) = self.by_name.get(&name).map(|&i| &self.found[i]) else {
            return true;
        };
        let baselen = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
        !existing_wins(&self.dir, &self.config, old, baselen + 1, name.len(), path)
    }

    /// Stats every module file (in parallel), once.
    pub(crate) fn ensure_keys(&mut self) -> Result<(), DepmodError> {
        if self.keys.is_none() {
            let keys = self
                .found
                .par_iter()
                .map(|f| {
                    CacheKey::of(f.read_path()).map_err(|cause| DepmodError::Io {
                        path: as_path(&f.path).to_path_buf(),
                        cause,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.keys = Some(keys);
        }
        Ok(())
    }

    /// A digest of everything the index files depend on: options, the
    /// configuration, the kernel symbol file, the tree's metadata files and
    /// every module file's path and identity (size, mtime, inode, device).
    /// Equal fingerprints mean equal output.
    /// Stats every module file (in parallel), once.
    pub fn fingerprint(&mut self) -> Result<u64, DepmodError> {
        self.ensure_keys()?;
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let o = &self.options;
        (
            &self.dir,
            &o.kernel_release,
            o.symbol_prefix,
            o.report_unresolved,
        )
            .hash(&mut h);
        format!("{:?}", o.kernel_symbols).hash(&mut h);
        let file_key = |p: &Path| {
            CacheKey::of(p)
                .ok()
                .map(|k| (k.size, k.mtime_ns, k.inode, k.dev))
        };
        match &o.kernel_symbols {
            Some(KernelSymbols::Symvers(p)) | Some(KernelSymbols::SystemMap(p)) => {
                file_key(p).hash(&mut h)
            }
            None => {}
        }
        format!("{:?}", self.config).hash(&mut h);
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            file_key(&Path::new(&self.dir).join(f)).hash(&mut h);
        }
        for (f, k) in self.found.iter().zip(self.keys.as_deref().unwrap_or(&[])) {
            (
                &f.path, &f.relpath, &f.name, k.size, k.mtime_ns, k.inode, k.dev,
            )
                .hash(&mut h);
        }
        Ok(h.finish())
    }
}

/// The readdir walk and priority rules of `depmod_modules_search`.
struct Scanner<'a> {
    dir: &'a str,
    config: &'a DepmodConfig,
    /// (top-level subdirectory name, where its files really are).
    staged: Option<(Vec<u8>, Vec<u8>)>,
    found: Vec<Option<Found>>,
    by_name: HashMap<Vec<u8>, usize>,
}

fn join(base: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(base.len() + 1 + name.len());
    p.extend_from_slice(base);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl<'a> Scanner<'a> {
    fn new(dir: &'a str, config: &'a DepmodConfig) -> Self {
        Scanner {
            dir,
            config,
            staged: None,
            found: Vec::new(),
            by_name: HashMap::new(),
        }
    }

    fn scan(mut self, diags: &mut Vec<Diagnostic>) -> Result<Vec<Found>, DepmodError> {
        let dir = self.dir.as_bytes();
        self.walk(dir, dir, diags)
            .map_err(|cause| DepmodError::Io {
                path: PathBuf::from(self.dir),
                cause,
            })?;
        // A staged subdirectory that does not exist yet in the tree is
        // walked after the rest (where a newly created entry would appear).
        if let Some((name, actual)) = self.staged.clone() {
            let virtual_base = join(dir, &name);
            if !as_path(&virtual_base).exists() {
                if let Err(e) = self.walk(&virtual_base, &actual, diags) {
                    diags.push(Diagnostic::Error(format!(
                        "failed {}: {e}",
                        as_path(&actual).display()
                    )));
                }
            }
        }
        for ext in self.config.externals.clone() {
            // A missing external directory is ignored.
            if let Err(e) = self.walk(ext.as_bytes(), ext.as_bytes(), diags) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    diags.push(Diagnostic::Error(format!(
                        "could not open directory {ext}: {e}"
                    )));
                }
            }
        }
        Ok(self.found.into_iter().flatten().collect())
    }

    fn excluded(&self, name: &[u8]) -> bool {
        name == b"."
            || name == b".."
            || name == b"build"
            || name == b"source"
            || self.config.excludes.iter().any(|e| e.as_bytes() == name)
    }

    /// Walks `actual`, recording paths as if it were `base`.
    fn walk(
        &mut self,
        base: &[u8],
        actual: &[u8],
        diags: &mut Vec<Diagnostic>,
    ) -> std::io::Result<()> {
        let rd = std::fs::read_dir(as_path(actual))?;
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    diags.push(Diagnostic::Error(format!(
                        "readdir {}: {e}",
                        as_path(base).display()
                    )));
                    continue;
                }
            };
            let file_name = entry.file_name();
            let name = file_name.as_bytes();
            if self.excluded(name) {
                continue;
            }
            let path = join(base, name);
            let in_place = join(actual, name);
            let mut source = in_place.clone();
            if base == self.dir.as_bytes() {
                if let Some((staged_name, staged_actual)) = &self.staged {
                    if staged_name.as_slice() == name {
                        source = staged_actual.clone();
                    }
                }
            }
            let shown = as_path(&path).display();
            let ft = if source == in_place {
                entry.file_type()?
            } else {
                std::fs::symlink_metadata(as_path(&source))?.file_type()
            };
            let is_dir = if ft.is_dir() {
                true
            } else if ft.is_file() {
                false
            } else {
                // Symlinks (weak-updates) and unknown types: follow, as
                // kmod's fstatat does.
                match std::fs::metadata(as_path(&source)) {
                    Ok(m) if m.is_dir() => true,
                    Ok(m) if m.is_file() => false,
                    Ok(_) => {
                        diags.push(Diagnostic::Error(format!("unsupported file type {shown}")));
                        continue;
                    }
                    Err(e) => {
                        diags.push(Diagnostic::Error(format!("fstatat({shown}): {e}")));
                        continue;
                    }
                }
            };
            if is_dir {
                if let Err(e) = self.walk(&path, &source, diags) {
                    diags.push(Diagnostic::Error(format!("failed {shown}: {e}")));
                }
            } else if module_suffix(name).is_some() {
                let source = (source != path).then_some(source);
                self.add_file(base, name, path, source);
            }
        }
        Ok(())
    }

    fn add_file(&mut self, base: &[u8], file_name: &[u8], path: Vec<u8>, source: Option<Vec<u8>>) {
        let Some(name) = module_name_bytes(OsStr::from_bytes(file_name)) else {
            return;
        };
        let baselen = base.len();
        if let Some(&existing) = self.by_name.get(&name) {
            if let Some(old) = self.found[existing].as_ref() {
                if existing_wins(self.dir, self.config, old, baselen + 1, name.len(), &path) {
                    return;
                }
            }
            self.found[existing] = None;
        }
        let relpath = relative(self.dir, &path);
        let uncrelpath = relpath
            .as_ref()
            .map(|r| uncompressed_relpath(r, baselen - self.dir.len(), &name));
        self.by_name.insert(name.clone(), self.found.len());
        self.found.push(Some(Found {
            name,
            path,
            source,
            baselen,
            relpath,
            uncrelpath,
        }));
    }
}

/// `path` relative to the module directory, when inside it.
fn relative(dir: &str, path: &[u8]) -> Option<Vec<u8>> {
    let rest = path.strip_prefix(dir.as_bytes())?;
    rest.strip_prefix(b"/").map(<[u8]>::to_vec)
}

/// `depmod_module_is_higher_priority`, including its quirks: lengths
/// cover `dir/` plus the module-name length; the old path is only
/// tested against a search entry the new path did not match.
fn existing_wins(
    dir: &str,
    config: &DepmodConfig,
    old: &Found,
    new_baselen: usize,
    modnamelen: usize,
    newpath: &[u8],
) -> bool {
    let cfg = config;
    let dirlen = dir.len();
    let newlen = new_baselen + modnamelen;
    let oldlen = old.baselen + old.name.len() + 1;
    let oldpath = old.path.as_slice();
    let relnew: Option<&[u8]> = if newpath.starts_with(dir.as_bytes()) {
        newpath.get(dirlen + 1..newlen.min(newpath.len()).max(dirlen + 1))
    } else {
        None
    };
    let relold: Option<&[u8]> = if oldpath.starts_with(dir.as_bytes()) {
        oldpath.get(dirlen + 1..oldlen.min(oldpath.len()).max(dirlen + 1))
    } else {
        None
    };
    for ov in &cfg.overrides {
        if relnew == Some(ov.as_bytes()) {
            return false;
        }
        if relold == Some(ov.as_bytes()) {
            return true;
        }
    }
    let starts_with_dir = |path: &[u8], len: usize, prefix: &str| -> bool {
        let pl = prefix.len();
        len > pl && path.get(pl) == Some(&b'/') && path.get(..pl) == Some(prefix.as_bytes())
    };
    let (mut bprio, mut oldprio, mut newprio) = (-1i64, -1i64, -1i64);
    let mut i = 0i64;
    for se in &cfg.searches {
        match se {
            Search::BuiltIn => bprio = i,
            Search::External => {
                for ext in &cfg.externals {
                    if starts_with_dir(newpath, newlen, ext) {
                        newprio = i;
                    }
                    if starts_with_dir(oldpath, oldlen, ext) {
                        oldprio = i;
                    }
                    i += 1;
                }
            }
            Search::Path(p) => {
                let matches = |rel: Option<&[u8]>| {
                    rel.is_some_and(|r| {
                        r.len() > p.len() && r[p.len()] == b'/' && &r[..p.len()] == p.as_bytes()
                    })
                };
                if matches(relnew) {
                    newprio = i;
                } else if matches(relold) {
                    oldprio = i;
                }
            }
        }
        i += 1;
    }
    if newprio < 0 {
        newprio = bprio;
    }
    if oldprio < 0 {
        oldprio = bprio;
    }
    newprio <= oldprio
}

/// Modules named on the command line (`depmod KVER file...`).
fn explicit_modules(dir: &str, paths: &[PathBuf]) -> Result<Vec<Found>, DepmodError> {
    let mut out: Vec<Found> = Vec::new();
    for p in paths {
        let path = p.as_os_str().as_bytes().to_vec();
        if !path.starts_with(b"/") {
            return Err(DepmodError::NotAbsolute(p.clone()));
        }
        std::fs::metadata(p).map_err(|cause| DepmodError::Io {
            path: p.clone(),
            cause,
        })?;
        let Some(name) = module_name_bytes(p.as_os_str()) else {
            return Err(DepmodError::Io {
                path: p.clone(),
                cause: std::io::Error::other("no module name in the file name"),
            });
        };
        if out.iter().any(|f| f.name == name) {
            return Err(DepmodError::DuplicateModule {
                name: String::from_utf8_lossy(&name).into_owned(),
                path: p.clone(),
            });
        }
        let baselen = path.iter().rposition(|&c| c == b'/').unwrap_or(0);
        let relpath = relative(dir, &path);
        let uncrelpath = relpath.as_ref().map(|r| {
            let dirlen = r.iter().rposition(|&c| c == b'/').map_or(0, |n| n + 1);
            uncompressed_relpath(r, dirlen, &name)
        });
        out.push(Found {
            name,
            path,
            source: None,
            baselen,
            relpath,
            uncrelpath,
        });
    }
    Ok(out)
}

/// Module array order: kmod's module-name hash iteration order (512
/// buckets), then a stable sort by position in `modules.order`; modules
/// not listed there keep their relative order after the listed ones.
fn order_modules(dir: &str, mut found: Vec<Found>, diags: &mut Vec<Diagnostic>) -> Vec<Found> {
    kmod_hash::sort_in_iteration_order(&mut found, 512, |f| f.name.as_slice());
    let order_path = format!("{dir}/modules.order");
    let bytes = match std::fs::read(&order_path) {
        Ok(b) => b,
        Err(e) => {
            diags.push(Diagnostic::CannotOpen {
                file: "modules.order",
                dir: dir.to_string(),
                reason: strerror(&e),
            });
            return found;
        }
    };
    // kmod reads with fgets into PATH_MAX buffers; every line must end in
    // a newline or the file is ignored.
    if !bytes.is_empty() && !bytes.ends_with(b"\n") {
        let n = bytes.split(|&c| c == b'\n').count();
        diags.push(Diagnostic::Error(format!(
            "{order_path}:{n} corrupted line misses '\\n'"
        )));
        return found;
    }
    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .map(|b| b.split(|&c| c == b'\n').collect())
        .unwrap_or_default();
    let total = lines.len() as i64 + 1;
    let mut position: HashMap<&[u8], i64> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        position.insert(line, (i as i64 + 1) - total);
    }
    let key = |f: &Found| -> i64 {
        f.uncrelpath
            .as_deref()
            .and_then(|u| position.get(u).copied())
            .unwrap_or(1)
    };
    found.sort_by_key(key);
    found
}
