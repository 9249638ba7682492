//! Will a module built for one kernel load on another? Decided the way the
//! target kernel's loader decides (`kernel/module/main.c`, `version.c`),
//! before anything is installed.
//!
//! The loader's checks, in its order:
//! 1. `.gnu.linkonce.this_module` must be `sizeof(struct module)` of the
//!    running kernel (`elf_validity_cache_copy`);
//! 2. the CRC of `module_layout` (`check_modstruct_version`);
//! 3. vermagic (`check_modinfo` / `same_magic`): with a `__versions`
//!    section only the part after the first space must match;
//! 4. every undefined symbol (`simplify_symbols` → `resolve_symbol`): a
//!    provider must exist (else "Unknown symbol", unless weak), GPL-only
//!    exports are invisible to non-GPL-compatible licenses, the CRC the
//!    module recorded in `__versions` (or the extended tables) must equal
//!    the provider's ("disagrees about version of symbol"), and a
//!    namespaced export needs `import_ns=` in `.modinfo`.
//!
//! Without a `__versions` section the kernel force-loads (Debian and RHEL
//! set `CONFIG_MODULE_FORCE_LOAD`): no CRC is checked and vermagic must
//! match in full. A missing `vermagic` is force-loaded too.
//!
//! Providers come from the target, as it would really resolve them: the
//! vmlinux rows and in-tree module rows of its `Module.symvers`/`symvers.gz`,
//! with modules of the checked set replacing in-tree modules of the same
//! name only where the target's depmod.d priorities let them.

pub mod symvers;
pub mod target;
pub mod weak;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use kmodkit_module::Module;
pub use symvers::{Export, SymbolTable};
pub use target::{Target, TargetError};

/// Who provides a symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Owner {
    Vmlinux,
    /// An in-tree module of the target, by module name.
    InTree(String),
    /// A module of the checked set, by index.
    Set(usize),
}

/// Why a module would be refused. Variants follow the kernel's messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// "section size must match the kernel's built struct module size"
    StructModuleSize { module: Option<u64>, kernel: u64 },
    /// "version magic '...' should be '...'"
    Vermagic { module: String, kernel: String },
    /// "disagrees about version of symbol X"
    Crc {
        symbol: String,
        #[serde(serialize_with = "kmodkit_module::crc_hex::serialize")]
        expected: u64,
        #[serde(serialize_with = "kmodkit_module::crc_hex::serialize")]
        found: u32,
        provider: String,
    },
    /// "Unknown symbol X (err -2)"
    UnknownSymbol { symbol: String },
    /// A GPL-only export used by a module whose license is not GPL-compatible.
    GplOnly {
        symbol: String,
        license: String,
        provider: String,
    },
    /// "module uses symbol X from namespace NS, but does not import it"
    Namespace {
        symbol: String,
        namespace: String,
        provider: String,
    },
    /// A module of the set this one needs is itself refused.
    Dependency { module: String, path: String },
    /// The file could not be read as a module.
    Unreadable { error: String },
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::StructModuleSize { module: Some(m), kernel } => write!(
                f,
                "struct module is {m} bytes in the module, {kernel} in the kernel (\"section size must match the kernel's built struct module size\")"
            ),
            Reason::StructModuleSize { module: None, kernel } => {
                write!(f, "no .gnu.linkonce.this_module section (kernel expects {kernel} bytes)")
            }
            Reason::Vermagic { module, kernel } => write!(f, "version magic '{module}' should be '{kernel}'"),
            Reason::Crc {
                symbol,
                expected,
                found,
                provider,
            } => write!(
                f,
                "disagrees about version of symbol {symbol}: module expects {expected:#010x}, {provider} has {found:#010x}"
            ),
            Reason::UnknownSymbol { symbol } => write!(f, "unknown symbol {symbol}: nothing in the target exports it"),
            Reason::GplOnly {
                symbol,
                license,
                provider,
            } => write!(
                f,
                "symbol {symbol} from {provider} is GPL-only and the module's license \"{license}\" is not GPL-compatible"
            ),
            Reason::Namespace {
                symbol,
                namespace,
                provider,
            } => write!(
                f,
                "uses symbol {symbol} from namespace {namespace} ({provider}) but does not import it"
            ),
            Reason::Dependency { module, path } => write!(f, "needs module {module} ({path}), which is refused"),
            Reason::Unreadable { error } => write!(f, "{error}"),
        }
    }
}

/// The verdict for one module of the set.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub path: PathBuf,
    pub name: String,
    pub compatible: bool,
    /// Every reason, in the order the loader checks them.
    pub reasons: Vec<Reason>,
    /// Accepted with a warning (e.g. "no symbol version for X").
    pub warnings: Vec<String>,
    /// Set when the target's depmod.d priorities keep an in-tree module of
    /// the same name, so modprobe would not load this one.
    pub shadowed_by: Option<String>,
    /// Modules of the set this one needs (by name).
    pub needs: Vec<String>,
}

/// `license_is_gpl_compatible` (include/linux/license.h).
pub fn license_is_gpl_compatible(license: &str) -> bool {
    matches!(
        license,
        "GPL"
            | "GPL v2"
            | "GPL and additional rights"
            | "Dual BSD/GPL"
            | "Dual MIT/GPL"
            | "Dual MPL/GPL"
    )
}

/// `same_magic`: with CRCs, compare from the first space on.
pub fn same_magic(module: &str, kernel: &str, has_crcs: bool) -> bool {
    if has_crcs {
        let tail = |s: &str| s.find(' ').map_or("", |i| &s[i..]).to_string();
        tail(module) == tail(kernel)
    } else {
        module == kernel
    }
}

/// A parsed member of the set.
struct Candidate {
    path: PathBuf,
    name: String,
    module: Result<Module, String>,
}

/// A module file or directory of the set that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}", path.display())]
pub struct CollectError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Collects module files from files and directories (recursively).
pub fn collect_modules(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, CollectError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), CollectError> {
        // d_type from readdir; only symlinks need a stat.
        let mut entries: Vec<(PathBuf, bool)> = std::fs::read_dir(dir)
            .map_err(|source| CollectError {
                path: dir.to_path_buf(),
                source,
            })?
            .flatten()
            .map(|e| {
                let p = e.path();
                let is_dir = match e.file_type() {
                    Ok(t) if t.is_symlink() => p.is_dir(),
                    Ok(t) => t.is_dir(),
                    Err(_) => false,
                };
                (p, is_dir)
            })
            .collect();
        entries.sort();
        for (p, is_dir) in entries {
            if is_dir {
                walk(&p, out)?;
            } else if is_module_path(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in inputs {
        let meta = std::fs::metadata(p).map_err(|source| CollectError {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

pub fn is_module_path(p: &Path) -> bool {
    kmodkit_index::name::is_module_file(p)
}

fn module_name(path: &Path) -> String {
    kmodkit_index::name::module_name_bytes(path)
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_default()
}

/// Checks every module of `set` against `target`.
///
/// `placement` is the subdirectory of the target's module directory the set
/// would be installed in (RHEL's `weak-updates`), which decides — under
/// the target's depmod.d priorities — whether a set module replaces an
/// in-tree module of the same name.
pub fn check(target: &Target, set: &[PathBuf], placement: &str) -> Vec<Verdict> {
    check_placed(target, set, |path| {
        let base = path
            .file_name()
            .map(|b| b.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{}/{}/{}", target.module_dir, placement, base)
    })
}

/// Checks a set already installed in the target's tree, each file where
/// it is (e.g. the modules `modprobe` would load now). A file that is its
/// name's provider in the tree is not shadowed by itself: kmod's priority
/// rule, asked about a path against the same path, ranks the old one as
/// `built-in` (it tests the old path only against entries the new one did
/// not match), which would make a `weak-updates` file lose to itself.
pub fn check_installed(target: &Target, set: &[PathBuf]) -> Vec<Verdict> {
    check_placed(target, set, |path| path.display().to_string())
}

/// [`check`] with each module placed at the path `placed` gives.
fn check_placed(
    target: &Target,
    set: &[PathBuf],
    placed_at: impl Fn(&Path) -> String,
) -> Vec<Verdict> {
    let candidates: Vec<Candidate> = set
        .par_iter()
        .map(|p| Candidate {
            path: p.clone(),
            name: module_name(p),
            module: kmodkit_module::read_module_mapped(
                p,
                kmodkit_module::compression::DEFAULT_LIMIT,
            )
            .map_err(|e| e.to_string()),
        })
        .collect();

    // Which set modules the target would use instead of its own.
    let mut first_of_name: HashMap<&str, usize> = HashMap::new();
    let mut shadowed: Vec<Option<String>> = vec![None; candidates.len()];
    let mut replaces: Vec<bool> = vec![false; candidates.len()];
    for (i, c) in candidates.iter().enumerate() {
        if first_of_name.contains_key(c.name.as_str()) {
            shadowed[i] = Some(
                candidates[first_of_name[c.name.as_str()]]
                    .path
                    .display()
                    .to_string(),
            );
            continue;
        }
        first_of_name.insert(&c.name, i);
        let placed = placed_at(&c.path);
        match target.scan.provider_path(&c.name) {
            Some(existing)
                if existing != Path::new(&placed) && !target.scan.would_replace(&placed) =>
            {
                shadowed[i] = Some(existing.display().to_string())
            }
            _ => replaces[i] = true,
        }
    }

    // Symbol table: the target's, with replaced in-tree modules' exports
    // swapped for the set's.
    let replaced_names: std::collections::HashSet<&str> = candidates
        .iter()
        .zip(&replaces)
        .filter(|(_, r)| **r)
        .map(|(c, _)| c.name.as_str())
        .collect();
    let mut providers: HashMap<&str, (Owner, &Export)> = HashMap::new();
    for (name, e) in &target.symbols.exports {
        let owner = match e.module.as_deref() {
            None => Owner::Vmlinux,
            Some(m) => {
                if replaced_names.contains(m) {
                    continue;
                }
                Owner::InTree(m.to_string())
            }
        };
        providers.insert(name.as_str(), (owner, e));
    }
    let set_exports: Vec<Vec<Export>> = candidates
        .iter()
        .map(|c| match &c.module {
            Ok(m) => m
                .exports
                .iter()
                .map(|x| Export {
                    crc: x.crc,
                    gpl_only: x.gpl_only,
                    namespace: x.namespace.clone(),
                    module: Some(c.name.clone()),
                })
                .collect(),
            Err(_) => Vec::new(),
        })
        .collect();
    for (i, exports) in set_exports.iter().enumerate() {
        if !replaces[i] {
            continue;
        }
        let Ok(m) = &candidates[i].module else {
            continue;
        };
        for (x, e) in m.exports.iter().zip(exports) {
            providers.insert(x.name.as_str(), (Owner::Set(i), e));
        }
    }

    let describe = |owner: &Owner| -> String {
        match owner {
            Owner::Vmlinux => "vmlinux".to_string(),
            Owner::InTree(n) => target
                .scan
                .provider_path(n)
                .map_or_else(|| n.clone(), |p| p.display().to_string()),
            Owner::Set(j) => candidates[*j].path.display().to_string(),
        }
    };

    let mut verdicts: Vec<Verdict> = Vec::with_capacity(candidates.len());
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); candidates.len()];
    for (i, c) in candidates.iter().enumerate() {
        let mut v = Verdict {
            path: c.path.clone(),
            name: c.name.clone(),
            compatible: true,
            reasons: Vec::new(),
            warnings: Vec::new(),
            shadowed_by: shadowed[i].clone(),
            needs: Vec::new(),
        };
        match &c.module {
            Err(e) => v.reasons.push(Reason::Unreadable { error: e.clone() }),
            Ok(m) => check_module(target, m, &providers, &describe, &mut v, &mut edges[i]),
        }
        v.needs = edges[i]
            .iter()
            .map(|&j| candidates[j].name.clone())
            .collect();
        v.compatible = v.reasons.is_empty();
        verdicts.push(v);
    }

    // A module needing a refused module of the set is refused too.
    loop {
        let mut changed = false;
        for i in 0..verdicts.len() {
            if !verdicts[i].compatible {
                continue;
            }
            if let Some(&j) = edges[i].iter().find(|&&j| !verdicts[j].compatible) {
                let (name, path) = (
                    verdicts[j].name.clone(),
                    verdicts[j].path.display().to_string(),
                );
                verdicts[i]
                    .reasons
                    .push(Reason::Dependency { module: name, path });
                verdicts[i].compatible = false;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    verdicts
}

/// The loader's checks for one module.
fn check_module(
    target: &Target,
    m: &Module,
    providers: &HashMap<&str, (Owner, &Export)>,
    describe: &dyn Fn(&Owner) -> String,
    v: &mut Verdict,
    edges: &mut Vec<usize>,
) {
    // 1. struct module size.
    if m.this_module_size != Some(target.struct_module_size) {
        v.reasons.push(Reason::StructModuleSize {
            module: m.this_module_size,
            kernel: target.struct_module_size,
        });
    }
    // CRCs the module recorded: the extended tables replace __versions.
    let versions = m.extended_versions.as_ref().unwrap_or(&m.versions);
    let has_crcs = m.has_versions_section || m.extended_versions.is_some();
    let mut recorded: HashMap<&str, u64> = HashMap::with_capacity(versions.len());
    for sv in versions {
        recorded.entry(sv.name.as_str()).or_insert(sv.crc);
    }
    let check_crc = |symbol: &str,
                     provider_crc: Option<u32>,
                     owner: &Owner|
     -> Result<Option<String>, Reason> {
        let Some(found) = provider_crc else {
            return Ok(None); // exporter without CRC: accepted
        };
        if !has_crcs {
            return Ok(None); // force-loaded: nothing to compare
        }
        match recorded.get(symbol) {
            Some(&expected) if expected == u64::from(found) => Ok(None),
            Some(&expected) => Err(Reason::Crc {
                symbol: symbol.to_string(),
                expected,
                found,
                provider: describe(owner),
            }),
            None => Ok(Some(format!("no symbol version for {symbol}"))),
        }
    };
    // 2. module_layout.
    if let Some((owner, e)) = providers.get("module_layout") {
        match check_crc("module_layout", e.crc, owner) {
            Err(r) => v.reasons.push(r),
            Ok(Some(w)) => v.warnings.push(w),
            Ok(None) => {}
        }
    }
    // 3. vermagic.
    match m.modinfo_first("vermagic") {
        Some(magic) if !same_magic(&magic, &target.vermagic, has_crcs) => {
            v.reasons.push(Reason::Vermagic {
                module: magic,
                kernel: target.vermagic.clone(),
            })
        }
        Some(_) => {}
        None => v
            .warnings
            .push("no vermagic: the kernel force-loads it (taint)".into()),
    }
    // 4. symbols.
    let license = m.modinfo_first("license").unwrap_or_default();
    let gpl_ok = license_is_gpl_compatible(&license);
    let imports: Vec<String> = m
        .modinfo_values("import_ns")
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect();
    for u in &m.undefined {
        let found = providers
            .get(u.name.as_str())
            .filter(|(_, e)| gpl_ok || !e.gpl_only);
        let Some((owner, e)) = found else {
            if let Some((owner, _)) = providers.get(u.name.as_str()) {
                if !u.weak {
                    v.reasons.push(Reason::GplOnly {
                        symbol: u.name.clone(),
                        license: license.clone(),
                        provider: describe(owner),
                    });
                }
            } else if !u.weak {
                v.reasons.push(Reason::UnknownSymbol {
                    symbol: u.name.clone(),
                });
            }
            continue;
        };
        match check_crc(&u.name, e.crc, owner) {
            Err(r) => {
                v.reasons.push(r);
                continue;
            }
            Ok(Some(w)) => v.warnings.push(w),
            Ok(None) => {}
        }
        if let Some(ns) = &e.namespace {
            if !imports.iter().any(|i| i == ns) {
                v.reasons.push(Reason::Namespace {
                    symbol: u.name.clone(),
                    namespace: ns.clone(),
                    provider: describe(owner),
                });
                continue;
            }
        }
        if let Owner::Set(j) = owner {
            if !edges.contains(j) {
                edges.push(*j);
            }
        }
    }
}
