//! [`ModuleTree`]: the modules of one `/lib/modules/<kver>` directory, which
//! file provides each module name, which module provides each symbol, and
//! the dependency graph with kmod's topological order — computed exactly as
//! kmod 30's `tools/depmod.c` does, so the indexes written from it are
//! byte-identical to kmod's.
//!
//! Steps, each mirroring a depmod.c function:
//! 1. scan (`depmod_modules_search`): walk the directory and the
//!    `external` directories in `readdir` order; when two files give the
//!    same module name, depmod.d priority decides
//!    (`depmod_module_is_higher_priority`);
//! 2. order (`depmod_modules_build_array`, `depmod_modules_sort`): the
//!    module-name hash table's iteration order, then a stable sort by line
//!    number in `modules.order` (modules not listed come after);
//! 3. load (`depmod_load_modules`): exported symbols, `.modinfo` and the
//!    symbols each module needs — parsed on all cores, or taken from the
//!    cache when a file is unchanged;
//! 4. resolve (`depmod_load_dependencies`): each needed symbol to its
//!    provider (a later module in array order replaces an earlier one and
//!    vmlinux), with the `-e`/`-E` warnings;
//! 5. sort (`depmod_calculate_dependencies`): topological order, cycles
//!    reported.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::cache::{CacheKey, ModuleCache};
use crate::config::{DepmodConfig, Search};
use crate::kmod_hash;
use crate::DepmodError;

/// Extensions depmod treats as modules (upstream kmod with every
/// decompressor enabled).
const MODULE_EXTENSIONS: [&str; 4] = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"];

/// Where vmlinux's exported symbols come from.
#[derive(Debug, Clone)]
pub enum KernelSymbols {
    /// `Module.symvers` / `symvers` (`-E`): names and CRCs of the `vmlinux`
    /// rows.
    Symvers(PathBuf),
    /// `System.map` (`-F`): names from `__ksymtab_*` lines, no CRCs.
    SystemMap(PathBuf),
}

/// What to index and how.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// The image root (`-b`), `None` for `/`.
    pub basedir: Option<String>,
    pub kernel_release: String,
    /// depmod.d directories or files replacing the defaults (`-C`).
    pub config_paths: Vec<PathBuf>,
    pub kernel_symbols: Option<KernelSymbols>,
    /// `-e`: report unknown symbols and CRC mismatches.
    pub report_unresolved: bool,
    /// `-P`: architecture symbol prefix.
    pub symbol_prefix: Option<u8>,
    /// Explicit module files (absolute) instead of scanning the tree.
    pub modules: Vec<PathBuf>,
    /// Reuse parsed modules across runs (keyed by path, size, mtime, inode).
    pub cache: Option<PathBuf>,
    /// Scan a staged directory in place of one top-level subdirectory:
    /// (`weak-updates`, `/lib/modules/K/.staging/weak-updates`). Paths in
    /// the index are those the subdirectory will have once the staged one
    /// is renamed into place; files are read from the staged location.
    /// Lets a link set and its index be prepared before either is visible.
    pub staged_subdir: Option<(String, PathBuf)>,
    /// Ceiling for one decompressed module.
    pub decompress_limit: u64,
}

impl TreeOptions {
    pub fn new(basedir: Option<String>, kernel_release: impl Into<String>) -> Self {
        TreeOptions {
            basedir,
            kernel_release: kernel_release.into(),
            config_paths: Vec::new(),
            kernel_symbols: None,
            report_unresolved: false,
            symbol_prefix: None,
            modules: Vec::new(),
            cache: None,
            staged_subdir: None,
            decompress_limit: kmodkit_module::compression::DEFAULT_LIMIT,
        }
    }

    /// `ROOT/lib/modules/KVER`, built by string concatenation as kmod does
    /// (paths in the indexes and messages depend on it byte for byte).
    pub fn module_dir(&self) -> String {
        format!(
            "{}/lib/modules/{}",
            self.basedir.as_deref().unwrap_or(""),
            self.kernel_release
        )
    }
}

/// What depmod needs of one module file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleRecord {
    /// Exported symbols with CRCs (`kmod_elf_get_symbols`).
    pub exports: Vec<(String, u64)>,
    /// `.modinfo` entries depmod uses: `alias` and `softdep`, in file order.
    pub info: Vec<(String, String)>,
    /// Symbols the module needs: (name, expected CRC, weak).
    pub needs: Vec<(String, u64, bool)>,
}

/// One module of the tree.
#[derive(Debug, Clone)]
pub struct TreeModule {
    /// Normalised module name.
    pub name: String,
    /// Full path (module directory joined with the relative path).
    pub path: String,
    /// Path relative to the module directory, when inside it.
    pub relpath: Option<String>,
    pub record: ModuleRecord,
    /// Direct dependencies (indexes into the module array), sorted by
    /// topological index, as kmod keeps them.
    pub deps: Vec<usize>,
    /// Position in the topological order (modules without users first).
    pub dep_sort_idx: usize,
}

impl TreeModule {
    /// The path written to modules.dep: relative when inside the tree.
    pub fn index_path(&self) -> &str {
        self.relpath.as_deref().unwrap_or(&self.path)
    }
}

/// A provider of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolProvider {
    /// Module index, or `None` for vmlinux / a fake loader symbol.
    pub owner: Option<usize>,
    pub crc: u64,
}

/// A problem depmod reports and continues past (`-e` warnings, config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnostic {
    /// `<path> needs unknown symbol <sym>`
    UnknownSymbol { module: String, symbol: String },
    /// `<path> disagrees about version of symbol <sym>`
    VersionMismatch {
        module: String,
        symbol: String,
        expected: u64,
        found: u64,
    },
    /// A line kmod prints with `ERROR:` and skips.
    Error(String),
    /// A line kmod prints with `WARNING:`.
    Warning(String),
    /// kmod's `dfdopen` warning for a metadata file it reads if present
    /// (`modules.order`, `modules.builtin`, `modules.builtin.modinfo`):
    /// `could not open FILE at DIR: strerror`.
    CannotOpen {
        file: &'static str,
        dir: String,
        reason: String,
    },
}

/// `strerror(errno)` as kmod's `%m` prints it: the OS text without Rust's
/// ` (os error N)` suffix.
pub fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diagnostic::UnknownSymbol { module, symbol } => {
                write!(f, "{module} needs unknown symbol {symbol}")
            }
            Diagnostic::VersionMismatch { module, symbol, .. } => {
                write!(f, "{module} disagrees about version of symbol {symbol}")
            }
            Diagnostic::Error(s) | Diagnostic::Warning(s) => f.write_str(s),
            Diagnostic::CannotOpen { file, dir, reason } => {
                write!(f, "could not open {file} at {dir}: {reason}")
            }
        }
    }
}

impl Diagnostic {
    /// kmod's severity word for this line.
    pub fn severity(&self) -> &'static str {
        match self {
            Diagnostic::Error(_) => "ERROR",
            _ => "WARNING",
        }
    }
}

/// The resolved module tree.
#[derive(Debug)]
pub struct ModuleTree {
    pub options: TreeOptions,
    /// `ROOT/lib/modules/KVER`.
    pub dir: String,
    pub config: DepmodConfig,
    /// Modules in kmod's array order (the order of modules.dep).
    pub modules: Vec<TreeModule>,
    /// Every known symbol and its provider.
    pub symbols: HashMap<String, SymbolProvider>,
    pub diagnostics: Vec<Diagnostic>,
    by_name: HashMap<String, usize>,
}

/// The result of [`ModuleTree::scan`]: which files will be indexed, in
/// kmod's array order, with their on-disk identities.
#[derive(Debug)]
pub struct TreeScan {
    pub options: TreeOptions,
    pub dir: String,
    pub config: DepmodConfig,
    found: Vec<Found>,
    /// File identities, read on first need (fingerprint, loading).
    keys: Option<Vec<CacheKey>>,
    by_name: HashMap<String, usize>,
    pub diagnostics: Vec<Diagnostic>,
}

impl TreeScan {
    /// Number of module files found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// The file providing each module name, in kmod's array order.
    pub fn modules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.found
            .iter()
            .map(|f| (f.name.as_str(), f.path.as_str()))
    }

    /// The file that provides module `name`, if any.
    pub fn provider_path(&self, name: &str) -> Option<&str> {
        self.found
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.as_str())
    }

    /// Whether a module file at `path` (a full path, normally inside the
    /// module directory) would replace the current provider of its module
    /// name under this tree's depmod.d priorities; `true` when no module of
    /// that name exists. Ties keep the current file, as when the new file
    /// is found later in the directory walk.
    pub fn would_replace(&self, path: &str) -> bool {
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let name = modname_of(file_name);
        let Some(old) = self.by_name.get(&name).map(|&i| &self.found[i]) else {
            return true;
        };
        let baselen = path.rfind('/').unwrap_or(0);
        !existing_wins(&self.dir, &self.config, old, baselen + 1, name.len(), path)
    }

    /// A digest of everything the index files depend on: options, the
    /// configuration, the kernel symbol file, the tree's metadata files and
    /// every module file's path and identity (size, mtime, inode, device).
    /// Equal fingerprints mean equal output.
    /// Stats every module file (in parallel), once.
    fn ensure_keys(&mut self) -> Result<(), DepmodError> {
        if self.keys.is_none() {
            let keys = self
                .found
                .par_iter()
                .map(|f| {
                    CacheKey::of(Path::new(f.read_path())).map_err(|cause| DepmodError::Io {
                        path: PathBuf::from(&f.path),
                        cause,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            self.keys = Some(keys);
        }
        Ok(())
    }

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

/// A candidate module found while scanning.
#[derive(Debug)]
struct Found {
    name: String,
    path: String,
    /// Where the file really is, when it differs from `path` (staged).
    source: Option<String>,
    /// Length of the directory part of `path`, excluding the last '/'.
    baselen: usize,
    relpath: Option<String>,
    /// relpath truncated to `dir/<modname length>.ko`, to match
    /// modules.order lines.
    uncrelpath: Option<String>,
}

/// `path_make_absolute_cwd`.
pub fn make_absolute(p: &str) -> String {
    if p.starts_with('/') {
        return p.to_string();
    }
    let cwd = std::env::var("PWD")
        .ok()
        .filter(|pwd| {
            let (Ok(a), Ok(b)) = (std::fs::metadata(pwd), std::fs::metadata(".")) else {
                return false;
            };
            a.dev() == b.dev() && a.ino() == b.ino()
        })
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .map(|d| d.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    format!("{cwd}/{p}")
}

fn modname_of(file_name: &str) -> String {
    file_name.split('.').next().unwrap_or("").replace('-', "_")
}

fn is_module_file(name: &str) -> bool {
    MODULE_EXTENSIONS
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
}

impl ModuleTree {
    /// Scans, loads and resolves a module tree.
    pub fn load(options: TreeOptions) -> Result<ModuleTree, DepmodError> {
        Self::from_scan(Self::scan(options)?)
    }

    /// Finds the module files (step 1 and 2) and their identities, without
    /// reading any module.
    pub fn scan(options: TreeOptions) -> Result<TreeScan, DepmodError> {
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
        let t0 = std::time::Instant::now();
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
                .map(|(n, p)| (n.clone(), p.display().to_string()));
            scanner.scan(&mut diagnostics)?
        } else {
            explicit_modules(&dir, &options.modules)?
        };
        let found = order_modules(&dir, found, &mut diagnostics);
        profile("scan and order", t0);
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
        })
    }

    /// Reads the scanned modules and resolves symbols and dependencies.
    pub fn from_scan(mut scan: TreeScan) -> Result<ModuleTree, DepmodError> {
        scan.ensure_keys()?;
        let TreeScan {
            options,
            dir,
            config,
            found,
            keys,
            diagnostics,
            ..
        } = scan;
        let mut tree = ModuleTree {
            dir,
            config,
            modules: Vec::new(),
            symbols: HashMap::new(),
            diagnostics,
            by_name: HashMap::new(),
            options,
        };
        let t = std::time::Instant::now();
        let records = tree.load_records(&found, keys.as_deref().unwrap_or(&[]))?;
        profile("load records", t);
        tree.modules = found
            .into_iter()
            .zip(records)
            .map(|(f, record)| TreeModule {
                name: f.name,
                path: f.path,
                relpath: f.relpath,
                record,
                deps: Vec::new(),
                dep_sort_idx: usize::MAX,
            })
            .collect();
        tree.by_name = tree
            .modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let t = std::time::Instant::now();
        tree.load_kernel_symbols()?;
        tree.resolve();
        tree.sort_dependencies()?;
        profile("resolve and sort", t);
        Ok(tree)
    }

    /// Parses every module (in parallel), reusing cached records for files
    /// whose path, size, mtime and inode are unchanged.
    fn load_records(
        &self,
        found: &[Found],
        keys: &[CacheKey],
    ) -> Result<Vec<ModuleRecord>, DepmodError> {
        let cache = self
            .options
            .cache
            .as_ref()
            .map(|dir| ModuleCache::open(dir, &self.dir));
        let limit = self.options.decompress_limit;
        // Largest files first, so one big module (amdgpu) does not finish
        // alone on one core at the end; results go back in array order.
        let mut schedule: Vec<usize> = (0..found.len()).collect();
        schedule.sort_by_key(|&i| std::cmp::Reverse(keys[i].size));
        type Loaded = Result<(ModuleRecord, bool), DepmodError>;
        let mut scheduled: Vec<(usize, Loaded)> = schedule
            .par_iter()
            .with_max_len(1)
            .map(|&i| {
                (
                    i,
                    load_one(cache.as_ref(), found[i].read_path(), &keys[i], limit),
                )
            })
            .collect();
        scheduled.sort_by_key(|(i, _)| *i);
        let results = scheduled.into_iter().map(|(_, r)| r);
        let mut records = Vec::with_capacity(results.len());
        let mut fresh = Vec::new();
        for ((f, r), key) in found.iter().zip(results).zip(keys) {
            let (rec, parsed) = r?;
            if parsed && cache.is_some() {
                fresh.push((f.path.clone(), *key, rec.clone()));
            }
            records.push(rec);
        }
        if let Some(mut cache) = cache {
            if !fresh.is_empty() || cache.len() != found.len() {
                let keep: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
                cache.update(fresh, &keep);
                // A cache that cannot be written only costs speed next time.
                let _ = cache.save();
            }
        }
        Ok(records)
    }

    fn add_symbol(&mut self, name: &str, prefix_skipped: bool, crc: u64, owner: Option<usize>) {
        let mut name = name;
        if !prefix_skipped {
            if let Some(p) = self.options.symbol_prefix {
                if name.as_bytes().first() == Some(&p) {
                    name = &name[1..];
                }
            }
        }
        self.symbols
            .insert(name.to_string(), SymbolProvider { owner, crc });
    }

    /// `depmod_symbol_find`: a leading '.' (PPC64) and the prefix are ignored.
    pub fn find_symbol(&self, name: &str) -> Option<&SymbolProvider> {
        let mut name = name.strip_prefix('.').unwrap_or(name);
        if let Some(p) = self.options.symbol_prefix {
            if name.as_bytes().first() == Some(&p) {
                name = &name[1..];
            }
        }
        self.symbols.get(name)
    }

    fn add_fake_symbols(&mut self) {
        // __this_module is inserted by the kernel loader; the others are
        // architecture linker symbols (s390, PowerPC64 ABIv2).
        self.add_symbol("__this_module", true, 0, None);
        self.add_symbol("_GLOBAL_OFFSET_TABLE_", true, 0, None);
        if self.find_symbol("TOC.").is_none() {
            self.add_symbol("TOC.", true, 0, None);
        }
    }

    /// vmlinux symbols first (`-E` or `-F`), then every module's exports in
    /// array order, a later provider replacing an earlier one.
    fn load_kernel_symbols(&mut self) -> Result<(), DepmodError> {
        match self.options.kernel_symbols.clone() {
            Some(KernelSymbols::Symvers(path)) => {
                let text = read_text(&path)?;
                for (n, line) in text.split_inclusive('\n').enumerate() {
                    let mut it = line.split([' ', '\t']).filter(|w| !w.is_empty());
                    let (Some(ver), Some(sym), Some(place)) = (it.next(), it.next(), it.next())
                    else {
                        continue;
                    };
                    if place != "vmlinux" {
                        continue;
                    }
                    match parse_strtoull_hex(ver) {
                        Some(crc) => self.add_symbol(sym, false, crc, None),
                        None => self.diagnostics.push(Diagnostic::Error(format!(
                            "{}:{} Invalid symbol version {ver}: Success",
                            path.display(),
                            n + 1
                        ))),
                    }
                }
                self.add_fake_symbols();
            }
            Some(KernelSymbols::SystemMap(path)) => {
                let text = read_text(&path)?;
                for (n, line) in text.split_inclusive('\n').enumerate() {
                    let rest = line
                        .split_once(' ')
                        .and_then(|(_, r)| r.split_once(' '))
                        .map(|(_, r)| r);
                    let Some(mut p) = rest else {
                        self.diagnostics.push(Diagnostic::Error(format!(
                            "{}:{}: invalid line: {line}",
                            path.display(),
                            n + 1
                        )));
                        continue;
                    };
                    if let Some(pre) = self.options.symbol_prefix {
                        if p.as_bytes().first() == Some(&pre) {
                            p = &p[1..];
                        }
                    }
                    let Some(sym) = p.strip_prefix("__ksymtab_") else {
                        continue;
                    };
                    let sym = sym.split('\n').next().unwrap_or("");
                    self.add_symbol(sym, true, 0, None);
                }
                self.add_fake_symbols();
            }
            None => {}
        }
        for i in 0..self.modules.len() {
            let exports = std::mem::take(&mut self.modules[i].record.exports);
            for (name, crc) in &exports {
                self.add_symbol(name, false, *crc, Some(i));
            }
            self.modules[i].record.exports = exports;
        }
        Ok(())
    }

    /// `depmod_load_dependencies`.
    fn resolve(&mut self) {
        let check_crc = matches!(self.options.kernel_symbols, Some(KernelSymbols::Symvers(_)));
        let report = self.options.report_unresolved && self.options.kernel_symbols.is_some();
        for i in 0..self.modules.len() {
            let mut deps: Vec<usize> = Vec::new();
            for (name, crc, weak) in &self.modules[i].record.needs {
                let Some(sym) = self.find_symbol(name) else {
                    if report && !weak {
                        self.diagnostics.push(Diagnostic::UnknownSymbol {
                            module: self.modules[i].path.clone(),
                            symbol: name.clone(),
                        });
                    }
                    continue;
                };
                let sym = *sym;
                if check_crc && sym.crc != *crc && !weak && report {
                    self.diagnostics.push(Diagnostic::VersionMismatch {
                        module: self.modules[i].path.clone(),
                        symbol: name.clone(),
                        expected: *crc,
                        found: sym.crc,
                    });
                }
                if let Some(owner) = sym.owner {
                    if !deps.contains(&owner) {
                        deps.push(owner);
                    }
                }
            }
            self.modules[i].deps = deps;
        }
    }

    /// `depmod_calculate_dependencies`: kmod's exact topological order.
    fn sort_dependencies(&mut self) -> Result<(), DepmodError> {
        let n = self.modules.len();
        let mut users = vec![0usize; n];
        for m in &self.modules {
            for &d in &m.deps {
                users[d] += 1;
            }
        }
        let mut roots: Vec<usize> = (0..n).filter(|&i| users[i] == 0).collect();
        let mut sorted = 0usize;
        while let Some(src) = roots.pop() {
            self.modules[src].dep_sort_idx = sorted;
            sorted += 1;
            for k in 0..self.modules[src].deps.len() {
                let dst = self.modules[src].deps[k];
                users[dst] -= 1;
                if users[dst] == 0 {
                    roots.push(dst);
                }
            }
        }
        if sorted < n {
            let cycles = self.describe_cycles(&users);
            return Err(DepmodError::Cycles {
                count: users.iter().filter(|&&u| u > 0).count(),
                cycles,
            });
        }
        let idx: Vec<usize> = self.modules.iter().map(|m| m.dep_sort_idx).collect();
        for m in &mut self.modules {
            m.deps.sort_by_key(|&d| idx[d]);
        }
        Ok(())
    }

    /// One "a -> b -> a" line per cycle among the modules left unsorted.
    fn describe_cycles(&self, users: &[usize]) -> Vec<String> {
        let in_cycle: Vec<bool> = users.iter().map(|&u| u > 0).collect();
        let mut reported = vec![false; users.len()];
        let mut out = Vec::new();
        for start in 0..users.len() {
            if !in_cycle[start] || reported[start] {
                continue;
            }
            // Follow edges inside the unsorted set until a module repeats.
            let mut path = vec![start];
            let mut seen = HashMap::from([(start, 0usize)]);
            let mut cur = start;
            while let Some(&next) = self.modules[cur].deps.iter().find(|&&d| in_cycle[d]) {
                if let Some(&pos) = seen.get(&next) {
                    let cycle: Vec<&str> = path[pos..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&i| self.modules[i].name.as_str())
                        .collect();
                    if path[pos..].iter().all(|&i| !reported[i]) {
                        out.push(cycle.join(" -> "));
                    }
                    for &i in &path[pos..] {
                        reported[i] = true;
                    }
                    break;
                }
                seen.insert(next, path.len());
                path.push(next);
                cur = next;
            }
        }
        out
    }

    /// Index of a module by normalised name.
    pub fn module_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(&name.replace('-', "_")).copied()
    }

    /// All modules `idx` needs, directly or not, in modules.dep order.
    pub fn dependency_closure(&self, idx: usize) -> Vec<usize> {
        let mut seen = vec![false; self.modules.len()];
        let mut stack: Vec<usize> = self.modules[idx].deps.clone();
        let mut out = Vec::new();
        while let Some(d) = stack.pop() {
            if seen[d] {
                continue;
            }
            seen[d] = true;
            out.push(d);
            stack.extend(self.modules[d].deps.iter().copied());
        }
        out.sort_by_key(|&d| self.modules[d].dep_sort_idx);
        out
    }

    /// A load order for a set of modules and everything they need:
    /// dependencies before their users (reverse topological order), the
    /// order modprobe would insert them in.
    pub fn load_order(&self, set: &[usize]) -> Vec<usize> {
        let mut all: Vec<usize> = Vec::new();
        let mut seen = vec![false; self.modules.len()];
        for &m in set {
            for d in std::iter::once(m).chain(self.dependency_closure(m)) {
                if !seen[d] {
                    seen[d] = true;
                    all.push(d);
                }
            }
        }
        all.sort_by_key(|&d| std::cmp::Reverse(self.modules[d].dep_sort_idx));
        all
    }
}

/// One module's record: from the cache when its identity is unchanged,
/// else parsed (true in the second field).
fn load_one(
    cache: Option<&ModuleCache>,
    path: &str,
    key: &CacheKey,
    limit: u64,
) -> Result<(ModuleRecord, bool), DepmodError> {
    if let Some(rec) = cache.and_then(|c| c.get(path, key)) {
        return Ok((rec, false));
    }
    let module = kmodkit_module::read_module_mapped(path, limit).map_err(DepmodError::Module)?;
    let record = ModuleRecord {
        exports: module
            .depmod_exports
            .iter()
            .map(|s| (s.name.clone(), s.crc))
            .collect(),
        info: module
            .modinfo
            .iter()
            .filter(|e| e.key == b"alias" || e.key == b"softdep")
            .map(|e| (e.key_str().into_owned(), e.value_str().into_owned()))
            .collect(),
        needs: module
            .dependency_symbols()
            .into_iter()
            .map(|d| (d.name, d.crc, d.weak))
            .collect(),
    };
    Ok((record, true))
}

/// With `KMODKIT_PROFILE` set, prints how long a step took (stderr).
pub fn profile(step: &str, since: std::time::Instant) {
    if std::env::var_os("KMODKIT_PROFILE").is_some() {
        eprintln!(
            "profile: {step}: {:.1} ms",
            since.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Reads a symbol file; a compressed one (RHEL's `/boot/symvers-K.gz`,
/// `symvers.xz`) is expanded first.
fn read_text(path: &Path) -> Result<String, DepmodError> {
    let bytes = kmodkit_module::compression::read_maybe_compressed(path).map_err(|source| {
        DepmodError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `strtoull(s, &end, 16)` requiring the whole token to be consumed.
fn parse_strtoull_hex(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() {
        return if s.trim_start().trim_start_matches('+') == "0x" {
            Some(0)
        } else {
            None
        };
    }
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u64::from_str_radix(t, 16).unwrap_or(u64::MAX))
}

/// The readdir walk and priority rules of `depmod_modules_search`.
struct Scanner<'a> {
    dir: &'a str,
    config: &'a DepmodConfig,
    staged: Option<(String, String)>,
    found: Vec<Option<Found>>,
    by_name: HashMap<String, usize>,
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
        let dir = self.dir.to_string();
        self.walk(&dir, &dir, diags)
            .map_err(|cause| DepmodError::Io {
                path: PathBuf::from(&dir),
                cause,
            })?;
        // A staged subdirectory that does not exist yet in the tree is
        // walked after the rest (where a newly created entry would appear).
        if let Some((name, actual)) = self.staged.clone() {
            if !Path::new(&format!("{dir}/{name}")).exists() {
                let virtual_base = format!("{dir}/{name}");
                if let Err(e) = self.walk(&virtual_base, &actual, diags) {
                    diags.push(Diagnostic::Error(format!("failed {actual}: {e}")));
                }
            }
        }
        for ext in self.config.externals.clone() {
            // A missing external directory is ignored.
            if let Err(e) = self.walk(&ext, &ext, diags) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    diags.push(Diagnostic::Error(format!(
                        "could not open directory {ext}: {e}"
                    )));
                }
            }
        }
        Ok(self.found.into_iter().flatten().collect())
    }

    fn excluded(&self, name: &str) -> bool {
        name == "."
            || name == ".."
            || name == "build"
            || name == "source"
            || self.config.excludes.iter().any(|e| e == name)
    }

    /// Walks `actual`, recording paths as if it were `base`.
    fn walk(
        &mut self,
        base: &str,
        actual: &str,
        diags: &mut Vec<Diagnostic>,
    ) -> std::io::Result<()> {
        let rd = std::fs::read_dir(actual)?;
        for entry in rd {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    diags.push(Diagnostic::Error(format!("readdir {base}: {e}")));
                    continue;
                }
            };
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.excluded(&name) {
                continue;
            }
            let path = format!("{base}/{name}");
            let mut source = format!("{actual}/{name}");
            if base == self.dir {
                if let Some((staged_name, staged_actual)) = &self.staged {
                    if *staged_name == name {
                        source = staged_actual.clone();
                    }
                }
            }
            let ft = if source == format!("{actual}/{name}") {
                entry.file_type()?
            } else {
                std::fs::symlink_metadata(&source)?.file_type()
            };
            let is_dir = if ft.is_dir() {
                true
            } else if ft.is_file() {
                false
            } else {
                // Symlinks (weak-updates) and unknown types: follow, as
                // kmod's fstatat does.
                match std::fs::metadata(&source) {
                    Ok(m) if m.is_dir() => true,
                    Ok(m) if m.is_file() => false,
                    Ok(_) => {
                        diags.push(Diagnostic::Error(format!("unsupported file type {path}")));
                        continue;
                    }
                    Err(e) => {
                        diags.push(Diagnostic::Error(format!("fstatat({path}): {e}")));
                        continue;
                    }
                }
            };
            if is_dir {
                if let Err(e) = self.walk(&path, &source, diags) {
                    diags.push(Diagnostic::Error(format!("failed {path}: {e}")));
                }
            } else if is_module_file(&name) {
                let source = (source != path).then_some(source);
                self.add_file(base, &name, path, source);
            }
        }
        Ok(())
    }

    fn relative(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(self.dir)?;
        rest.strip_prefix('/').map(str::to_string)
    }

    fn add_file(&mut self, base: &str, file_name: &str, path: String, source: Option<String>) {
        let name = modname_of(file_name);
        let baselen = base.len();
        if let Some(&existing) = self.by_name.get(&name) {
            let old = self.found[existing]
                .as_ref()
                .expect("indexed module exists");
            if existing_wins(self.dir, self.config, old, baselen + 1, name.len(), &path) {
                return;
            }
            self.found[existing] = None;
        }
        let relpath = self.relative(&path);
        let uncrelpath = relpath.as_ref().map(|r| {
            let dirlen = baselen - self.dir.len() - 1 + 1;
            let end = (dirlen + name.len() + 3).min(r.len());
            r[..end].to_string()
        });
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

impl Found {
    fn read_path(&self) -> &str {
        self.source.as_deref().unwrap_or(&self.path)
    }
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
    newpath: &str,
) -> bool {
    let cfg = config;
    let dirlen = dir.len();
    let newlen = new_baselen + modnamelen;
    let oldlen = old.baselen + old.name.len() + 1;
    let newpath_b = newpath.as_bytes();
    let oldpath_b = old.path.as_bytes();
    let relnew: Option<&[u8]> = if newpath_b.starts_with(dir.as_bytes()) {
        newpath_b.get(dirlen + 1..newlen.min(newpath_b.len()).max(dirlen + 1))
    } else {
        None
    };
    let relold: Option<&[u8]> = if oldpath_b.starts_with(dir.as_bytes()) {
        oldpath_b.get(dirlen + 1..oldlen.min(oldpath_b.len()).max(dirlen + 1))
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
                    if starts_with_dir(newpath_b, newlen, ext) {
                        newprio = i;
                    }
                    if starts_with_dir(oldpath_b, oldlen, ext) {
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
        let path = p.to_string_lossy().into_owned();
        if !path.starts_with('/') {
            return Err(DepmodError::NotAbsolute(p.clone()));
        }
        std::fs::metadata(&path).map_err(|cause| DepmodError::Io {
            path: p.clone(),
            cause,
        })?;
        let file_name = path.rsplit('/').next().unwrap_or("");
        let name = modname_of(file_name);
        if out.iter().any(|f| f.name == name) {
            return Err(DepmodError::DuplicateModule {
                name,
                path: p.clone(),
            });
        }
        let baselen = path.rfind('/').unwrap_or(0);
        let relpath = path
            .strip_prefix(dir)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string);
        let uncrelpath = relpath.as_ref().map(|r| {
            let dirlen = r.rfind('/').map_or(0, |n| n + 1);
            r[..(dirlen + name.len() + 3).min(r.len())].to_string()
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
    kmod_hash::sort_in_iteration_order(&mut found, 512, |f| f.name.as_bytes());
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
    let text = String::from_utf8_lossy(&bytes);
    // kmod reads with fgets into PATH_MAX buffers; every line must end in
    // a newline or the file is ignored.
    if !text.is_empty() && !text.ends_with('\n') {
        let n = text.split('\n').count();
        diags.push(Diagnostic::Error(format!(
            "{order_path}:{n} corrupted line misses '\\n'"
        )));
        return found;
    }
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    let total = lines.len() as i64 + 1;
    let mut position: HashMap<&str, i64> = HashMap::new();
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
