//! [`ModuleTree`]: the modules of one `/lib/modules/<kver>` directory, which
//! file provides each module name, which module provides each symbol, and
//! the dependency graph with kmod's topological order — computed exactly as
//! kmod 30's `tools/depmod.c` does, so the indexes written from it are
//! byte-identical to kmod's.
//!
//! Steps, each mirroring a depmod.c function, each in its own module:
//! 1. scan and order ([`crate::scan`]: `depmod_modules_search`,
//!    `depmod_modules_build_array`, `depmod_modules_sort`);
//! 2. load (`depmod_load_modules`, here): exported symbols, `.modinfo` and
//!    the symbols each module needs — parsed on all cores, or taken from
//!    the cache when a file is unchanged;
//! 3. resolve ([`crate::symbols`]: `depmod_load_dependencies`): each
//!    needed symbol to its provider (a later module in array order replaces
//!    an earlier one and vmlinux), with the `-e`/`-E` warnings;
//! 4. sort ([`crate::graph`]: `depmod_calculate_dependencies`):
//!    topological order, cycles reported.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Instant;

use rayon::prelude::*;

use crate::cache::{CacheKey, ModuleCache};
use crate::config::DepmodConfig;
use crate::graph;
use crate::scan::{as_path, Found};
use crate::symbols::{ResolveRules, SymbolTable};
use crate::DepmodError;

// The types of every step, where callers have always found them.
pub use crate::diagnostic::{strerror, Diagnostic};
pub use crate::options::{KernelSymbols, StepTime, TreeOptions};
pub use crate::record::ModuleRecord;
pub use crate::scan::TreeScan;
pub use crate::symbols::SymbolProvider;

/// One module of the tree.
#[derive(Debug, Clone)]
pub struct TreeModule {
    /// Normalised module name (`path_to_modname`: bytes, as kmod keeps
    /// them).
    pub name: Vec<u8>,
    /// Full path (module directory joined with the relative path).
    pub path: PathBuf,
    /// Path relative to the module directory, when inside it.
    pub relpath: Option<PathBuf>,
    pub record: ModuleRecord,
    /// Direct dependencies (indexes into the module array), sorted by
    /// topological index, as kmod keeps them.
    pub deps: Vec<usize>,
    /// Position in the topological order (modules without users first).
    pub dep_sort_idx: usize,
}

impl TreeModule {
    /// The path written to modules.dep, as bytes: relative when inside the
    /// tree.
    pub fn index_path(&self) -> &[u8] {
        self.relpath
            .as_deref()
            .unwrap_or(&self.path)
            .as_os_str()
            .as_bytes()
    }

    /// The module name as text, for messages (a name that is not UTF-8 is
    /// shown with replacement characters).
    pub fn display_name(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.name)
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
    pub symbols: SymbolTable,
    pub diagnostics: Vec<Diagnostic>,
    /// How long each step took (scan, load, resolve).
    pub timings: Vec<StepTime>,
    by_name: HashMap<Vec<u8>, usize>,
}

impl ModuleTree {
    /// Scans, loads and resolves a module tree.
    pub fn load(options: TreeOptions) -> Result<ModuleTree, DepmodError> {
        Self::from_scan(Self::scan(options)?)
    }

    /// Finds the module files and their order, without reading any module
    /// (see [`TreeScan::new`]).
    pub fn scan(options: TreeOptions) -> Result<TreeScan, DepmodError> {
        TreeScan::new(options)
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
            mut diagnostics,
            mut timings,
            ..
        } = scan;
        let t = Instant::now();
        let records = load_records(&options, &dir, &found, keys.as_deref().unwrap_or(&[]))?;
        timings.push(StepTime::since("load records", t));

        let t = Instant::now();
        let mut symbols = SymbolTable::new(options.symbol_prefix);
        if let Some(source) = &options.kernel_symbols {
            symbols.add_kernel_symbols(source, &mut diagnostics)?;
        }
        for (i, r) in records.iter().enumerate() {
            symbols.add_exports(i, &r.exports);
        }
        let rules = ResolveRules {
            check_crc: matches!(options.kernel_symbols, Some(KernelSymbols::Symvers(_))),
            report: options.report_unresolved && options.kernel_symbols.is_some(),
        };
        let deps = resolve_found(&symbols, &found, &records, rules, &mut diagnostics);
        let order = match graph::topological_order(&deps) {
            Ok(order) => order,
            Err(users) => {
                let cycles = graph::describe_cycles(&deps, &users, |i| {
                    String::from_utf8_lossy(&found[i].name).into_owned()
                });
                return Err(DepmodError::Cycles {
                    count: users.iter().filter(|&&u| u > 0).count(),
                    cycles,
                });
            }
        };
        let modules: Vec<TreeModule> = found
            .into_iter()
            .zip(records)
            .zip(deps)
            .enumerate()
            .map(|(i, ((f, record), mut deps))| {
                deps.sort_by_key(|&d| order[d]);
                TreeModule {
                    name: f.name,
                    path: as_path(&f.path).to_path_buf(),
                    relpath: f.relpath.map(|r| as_path(&r).to_path_buf()),
                    record,
                    deps,
                    dep_sort_idx: order[i],
                }
            })
            .collect();
        timings.push(StepTime::since("resolve and sort", t));
        let by_name = modules
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Ok(ModuleTree {
            options,
            dir,
            config,
            modules,
            symbols,
            diagnostics,
            timings,
            by_name,
        })
    }

    /// `depmod_symbol_find`: a leading '.' (PPC64) and the prefix are ignored.
    pub fn find_symbol(&self, name: &str) -> Option<&SymbolProvider> {
        self.symbols.find(name)
    }

    /// Index of a module by name (`-` and `_` are the same).
    pub fn module_index(&self, name: impl AsRef<[u8]>) -> Option<usize> {
        let name: Vec<u8> = name
            .as_ref()
            .iter()
            .map(|&c| if c == b'-' { b'_' } else { c })
            .collect();
        self.by_name.get(&name).copied()
    }

    /// All modules `idx` needs, directly or not, in modules.dep order.
    pub fn dependency_closure(&self, idx: usize) -> Vec<usize> {
        graph::closure(
            self.modules.len(),
            |i| self.modules[i].deps.as_slice(),
            |i| self.modules[i].dep_sort_idx,
            idx,
        )
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

/// [`crate::symbols::resolve`] over the scanned files; problems are
/// reported under each file's full path, as kmod does.
fn resolve_found(
    symbols: &SymbolTable,
    found: &[Found],
    records: &[ModuleRecord],
    rules: ResolveRules,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Vec<usize>> {
    crate::symbols::resolve(
        symbols,
        found
            .iter()
            .zip(records)
            .map(|(f, r)| (String::from_utf8_lossy(&f.path).into_owned(), r)),
        rules,
        diagnostics,
    )
}

/// Parses every module (in parallel), reusing cached records for files
/// whose path, size, mtime and inode are unchanged.
fn load_records(
    options: &TreeOptions,
    dir: &str,
    found: &[Found],
    keys: &[CacheKey],
) -> Result<Vec<ModuleRecord>, DepmodError> {
    let cache = options
        .cache
        .as_ref()
        .map(|cache_dir| ModuleCache::open(cache_dir, dir));
    let limit = options.decompress_limit;
    // Largest files first, so one big module (amdgpu) does not finish
    // alone on one core at the end; results go back in array order.
    let mut schedule: Vec<usize> = (0..found.len()).collect();
    schedule.sort_by_key(|&i| std::cmp::Reverse(keys[i].size));
    type Loaded = Result<(ModuleRecord, bool), DepmodError>;
    let mut scheduled: Vec<(usize, Loaded)> = schedule
        .par_iter()
        .with_max_len(1)
        .map(|&i| (i, load_one(cache.as_ref(), &found[i], &keys[i], limit)))
        .collect();
    scheduled.sort_by_key(|(i, _)| *i);
    let results = scheduled.into_iter().map(|(_, r)| r);
    let mut records = Vec::with_capacity(results.len());
    let mut fresh = Vec::new();
    for ((f, r), key) in found.iter().zip(results).zip(keys) {
        let (rec, parsed) = r?;
        if parsed && cache.is_some() {
            // The cache is keyed by text; a path that is not UTF-8 is
            // parsed every time instead.
            if let Ok(path) = std::str::from_utf8(&f.path) {
                fresh.push((path.to_string(), *key, rec.clone()));
            }
        }
        records.push(rec);
    }
    if let Some(mut cache) = cache {
        if !fresh.is_empty() || cache.len() != found.len() {
            let keep: Vec<&str> = found
                .iter()
                .filter_map(|f| std::str::from_utf8(&f.path).ok())
                .collect();
            cache.update(fresh, &keep);
            // A cache that cannot be written only costs speed next time.
            let _ = cache.save();
        }
    }
    Ok(records)
}

/// One module's record: from the cache when its identity is unchanged,
/// else parsed (true in the second field).
fn load_one(
    cache: Option<&ModuleCache>,
    found: &Found,
    key: &CacheKey,
    limit: u64,
) -> Result<(ModuleRecord, bool), DepmodError> {
    let cached = found.read_path().to_str().and_then(|p| cache?.get(p, key));
    if let Some(rec) = cached {
        return Ok((rec, false));
    }
    Ok((ModuleRecord::read(found.read_path(), limit)?, true))
}
