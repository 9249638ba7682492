//! For a package and every installed kernel: which file modprobe would
//! load for each of the package's modules, whether that kernel would accept
//! it, and what has to happen before a reload can work.
//!
//! The MLNX_EN manual's restart prints "Module rdma_cm belong to kernel
//! which is not a part of MLNX, skipping" *after* it unloaded the stack:
//! the in-tree module had priority over the vendor build. This check tells
//! that beforehand, kernel by kernel.
//!
//! Which file wins is decided by kmodkit-depmod's [`TreeScan`] with the
//! root's own depmod.d (kmod 30's `depmod_module_is_higher_priority`), the
//! file the root's `modules.dep` names after a depmod run and therefore
//! the one `modprobe -d ROOT -S K` loads. Acceptance is
//! [`kmodkit_abi::check`] against the kernel's [`Target`], the loader's
//! own checks (`kernel/module/main.c`, `version.c`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kmodkit_abi::weak::{compare_releases, resolve_link};
use kmodkit_abi::{check, check_installed, Target, Verdict};
use serde::Serialize;

/// What to look at: every path and list is given by the caller.
#[derive(Debug, Clone)]
pub struct StatusRequest<'a> {
    /// The system root (`/` or an image/chroot).
    pub root: &'a Path,
    /// Kernel releases, each with a module directory under the root.
    pub kernels: &'a [String],
    /// The package's module names (as `modprobe` takes them).
    pub modules: &'a [String],
    /// depmod.d directories of the root
    /// (`kmodkit_depmod::config::root_config_dirs`).
    pub config_dirs: &'a [PathBuf],
}

/// The file `modprobe` would load for a module name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Loads {
    /// A vendor build in the kernel's own tree (`updates/`, `extra/`, ...).
    Vendor { path: PathBuf },
    /// A weak-updates link to a build made for another kernel.
    WeakLink { path: PathBuf, target: PathBuf },
    /// The kernel's own module of that name (`kernel/...`).
    InTree { path: PathBuf },
    /// No file of that name in the tree.
    Nothing,
}

/// What has to happen for the package's module to load on that kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    /// A build for another kernel would be accepted: link it into
    /// weak-updates (`kmodkit weak-modules --add-kernel K`).
    WeakLink,
    Rebuild,
    /// The kernel could not be checked (e.g. no symbol versions).
    Unknown,
}

/// One module on one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleStatus {
    pub name: String,
    pub loads: Loads,
    /// Vendor files of this name in the kernel's tree that lose to
    /// [`ModuleStatus::loads`] under the depmod.d priorities.
    pub shadowed: Vec<PathBuf>,
    /// Whether the kernel accepts the file that loads; `None` when nothing
    /// loads, for the kernel's own module, or when it could not be checked.
    pub accepted: Option<bool>,
    /// The loader's reasons for refusing it, in its order.
    pub reasons: Vec<String>,
    pub action: Action,
    /// The build a weak link would point at ([`Action::WeakLink`]).
    pub weak_link_from: Option<PathBuf>,
    /// One sentence: why this action.
    pub why: String,
}

/// The package on one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct KernelStatus {
    pub kernel: String,
    /// Set when the kernel could not be checked (its modules' actions are
    /// then [`Action::Unknown`]).
    pub error: Option<String>,
    pub modules: Vec<ModuleStatus>,
}

impl KernelStatus {
    pub fn needs_action(&self) -> bool {
        self.modules.iter().any(|m| m.action != Action::None)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no module names given for the package; name its modules or its dkms.conf")]
    NoModules,
    #[error("no kernels to check under {}", root.display())]
    NoKernels { root: PathBuf },
    #[error("{0}")]
    NotInstalled(String),
}

/// The module name of a file (`path_to_modname`: `-` read as `_`).
fn name_of(path: &Path) -> Option<String> {
    kmodkit_index::name::module_name_from_path(path)
}

/// Module names as modprobe compares them.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Vendor files (everything outside `kernel/`, and outside the `build`
/// and `source` links depmod skips too) of the given module names in one
/// module directory, by name, in path order.
fn vendor_files(module_dir: &Path, names: &BTreeSet<String>) -> BTreeMap<String, Vec<PathBuf>> {
    fn walk(dir: &Path, names: &BTreeSet<String>, out: &mut BTreeMap<String, Vec<PathBuf>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            // Follows links, as depmod's fstatat does (weak-updates).
            match std::fs::metadata(&p) {
                Ok(m) if m.is_dir() => walk(&p, names, out),
                Ok(m) if m.is_file() && kmodkit_index::name::is_module_file(&p) => {
                    if let Some(n) = name_of(&p).filter(|n| names.contains(n)) {
                        out.entry(n).or_default().push(p);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(module_dir) else {
        return out;
    };
    let mut tops: Vec<PathBuf> = rd
        .flatten()
        .filter(|e| !matches!(e.file_name().to_str(), Some("kernel" | "build" | "source")))
        .map(|e| e.path())
        .collect();
    tops.sort();
    for t in tops {
        match std::fs::metadata(&t) {
            Ok(m) if m.is_dir() => walk(&t, names, &mut out),
            Ok(m) if m.is_file() && kmodkit_index::name::is_module_file(&t) => {
                if let Some(n) = name_of(&t).filter(|n| names.contains(n)) {
                    out.entry(n).or_default().push(t);
                }
            }
            _ => {}
        }
    }
    out
}

fn is_symlink(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// What kind of file `path` is in `module_dir`.
fn classify(root: &Path, module_dir: &Path, path: &Path) -> Loads {
    let rel = path.strip_prefix(module_dir).unwrap_or(path);
    if rel.starts_with("kernel") {
        return Loads::InTree {
            path: path.to_path_buf(),
        };
    }
    if is_symlink(path) {
        let target = std::fs::read_link(path)
            .map(|t| resolve_link(root, path, &t))
            .unwrap_or_else(|_| path.to_path_buf());
        return Loads::WeakLink {
            path: path.to_path_buf(),
            target,
        };
    }
    Loads::Vendor {
        path: path.to_path_buf(),
    }
}

fn reasons_of(v: &Verdict) -> Vec<String> {
    v.reasons.iter().map(|r| r.to_string()).collect()
}

/// The package's builds made for each kernel (regular files, not weak
/// links), by kernel then module name.
type Builds = BTreeMap<String, BTreeMap<String, PathBuf>>;

/// Checks the package on every kernel of the request.
pub fn status(req: &StatusRequest<'_>) -> Result<Vec<KernelStatus>, StatusError> {
    if req.modules.is_empty() {
        return Err(StatusError::NoModules);
    }
    if req.kernels.is_empty() {
        return Err(StatusError::NoKernels {
            root: req.root.to_path_buf(),
        });
    }
    for k in req.kernels {
        if let Some(msg) = kmodkit_depmod::installed::not_installed(req.root, k) {
            return Err(StatusError::NotInstalled(msg));
        }
    }
    let mut names: Vec<String> = Vec::new();
    for m in req.modules {
        let n = normalize(m);
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let name_set: BTreeSet<String> = names.iter().cloned().collect();
    let module_dir = |k: &str| req.root.join("lib/modules").join(k);

    let files: BTreeMap<String, BTreeMap<String, Vec<PathBuf>>> = req
        .kernels
        .iter()
        .map(|k| (k.clone(), vendor_files(&module_dir(k), &name_set)))
        .collect();
    // Builds offered to other kernels: the first regular file of each name.
    let builds: Builds = files
        .iter()
        .map(|(k, by_name)| {
            let native = by_name
                .iter()
                .filter_map(|(n, paths)| {
                    paths
                        .iter()
                        .find(|p| !is_symlink(p))
                        .map(|p| (n.clone(), p.clone()))
                })
                .collect();
            (k.clone(), native)
        })
        .collect();

    let mut out = Vec::new();
    for k in req.kernels {
        out.push(kernel_status(req, k, &names, &files[k], &builds));
    }
    Ok(out)
}

fn kernel_status(
    req: &StatusRequest<'_>,
    kernel: &str,
    names: &[String],
    files: &BTreeMap<String, Vec<PathBuf>>,
    builds: &Builds,
) -> KernelStatus {
    let module_dir = req.root.join("lib/modules").join(kernel);
    let target = match Target::load_with_config(req.root, kernel, None, req.config_dirs) {
        Ok(t) => t,
        Err(e) => {
            let error = e.to_string();
            let modules = names
                .iter()
                .map(|n| ModuleStatus {
                    name: n.clone(),
                    loads: Loads::Nothing,
                    shadowed: Vec::new(),
                    accepted: None,
                    reasons: Vec::new(),
                    action: Action::Unknown,
                    weak_link_from: None,
                    why: format!("cannot check kernel {kernel}: {error}"),
                })
                .collect();
            return KernelStatus {
                kernel: kernel.to_string(),
                error: Some(error),
                modules,
            };
        }
    };

    let loads: Vec<Loads> = names
        .iter()
        .map(|n| match target.scan.provider_path(n) {
            Some(p) => classify(req.root, &module_dir, p),
            None => Loads::Nothing,
        })
        .collect();

    // The vendor files that load are checked together: the package's
    // modules use each other's exports (jool needs jool_common).
    let winners: Vec<PathBuf> = loads
        .iter()
        .filter_map(|l| match l {
            Loads::Vendor { path } | Loads::WeakLink { path, .. } => Some(path.clone()),
            _ => None,
        })
        .collect();
    let verdicts: Vec<Verdict> = check_installed(&target, &winners);

    let mut modules = Vec::new();
    for (name, loaded) in names.iter().zip(loads) {
        let winner = match &loaded {
            Loads::Vendor { path } | Loads::WeakLink { path, .. } | Loads::InTree { path } => {
                Some(path.clone())
            }
            Loads::Nothing => None,
        };
        let shadowed: Vec<PathBuf> = files
            .get(name)
            .into_iter()
            .flatten()
            .filter(|p| Some(*p) != winner.as_ref())
            .cloned()
            .collect();
        let mut st = ModuleStatus {
            name: name.clone(),
            loads: loaded.clone(),
            shadowed,
            accepted: None,
            reasons: Vec::new(),
            action: Action::None,
            weak_link_from: None,
            why: String::new(),
        };
        match &loaded {
            Loads::Vendor { path } | Loads::WeakLink { path, .. } => {
                let v = verdicts.iter().find(|v| &v.path == path);
                let accepted = v.is_some_and(|v| v.compatible);
                st.accepted = Some(accepted);
                st.reasons = v.map(reasons_of).unwrap_or_default();
                let what = match &loaded {
                    Loads::WeakLink { target: t, .. } => {
                        format!(
                            "the weak-updates link {} (to {})",
                            path.display(),
                            t.display()
                        )
                    }
                    _ => format!("the vendor build {}", path.display()),
                };
                if accepted {
                    st.why = format!("modprobe loads {what}; {kernel} accepts it");
                } else {
                    st.action = Action::Rebuild;
                    st.why = format!(
                        "modprobe loads {what}, which {kernel} refuses: {}",
                        st.reasons.first().map_or("", String::as_str)
                    );
                }
            }
            Loads::InTree { path } if !st.shadowed.is_empty() => {
                st.action = Action::Rebuild;
                st.why = format!(
                    "the vendor build {} for {kernel} is shadowed by the in-tree {} under this root's depmod.d search order; modprobe loads the kernel's own module",
                    st.shadowed[0].display(),
                    path.display()
                );
            }
            Loads::InTree { .. } | Loads::Nothing => {
                other_builds(&target, kernel, name, &loaded, builds, &mut st);
            }
        }
        modules.push(st);
    }
    KernelStatus {
        kernel: kernel.to_string(),
        error: None,
        modules,
    }
}

/// No vendor file of `name` in `kernel`'s tree: would a build made for
/// another kernel serve it through weak-updates? Newest kernel first, as
/// weak-modules picks; each build checked with its package siblings.
fn other_builds(
    target: &Target,
    kernel: &str,
    name: &str,
    loaded: &Loads,
    builds: &Builds,
    st: &mut ModuleStatus,
) {
    let mut others: Vec<&String> = builds
        .keys()
        .filter(|k| k.as_str() != kernel && builds[*k].contains_key(name))
        .collect();
    others.sort_by(|a, b| compare_releases(b, a));
    let now = match loaded {
        Loads::InTree { path } => format!("modprobe loads the in-tree {}", path.display()),
        _ => format!("no file named {name} in {kernel}'s tree"),
    };
    let mut refusals = Vec::new();
    for other in others {
        let set: Vec<PathBuf> = builds[other].values().cloned().collect();
        let verdicts = check(target, &set, "weak-updates");
        let Some(v) = verdicts.iter().find(|v| v.name == name) else {
            continue;
        };
        if v.compatible && v.shadowed_by.is_none() {
            st.action = Action::WeakLink;
            st.weak_link_from = Some(v.path.clone());
            st.why = format!(
                "{now}; {kernel} accepts the build for {other} ({}): link it into weak-updates",
                v.path.display()
            );
            return;
        }
        let why = match (&v.shadowed_by, v.reasons.first()) {
            (_, Some(r)) => format!("{other}'s build {}: {r}", v.path.display()),
            (Some(s), None) => format!(
                "{other}'s build {} would be accepted but a weak link loses to {s} under this root's depmod.d search order",
                v.path.display()
            ),
            (None, None) => continue,
        };
        refusals.push(why);
    }
    st.action = Action::Rebuild;
    st.why = if refusals.is_empty() {
        format!("{now}; no build of {name} for any other kernel under this root")
    } else {
        format!(
            "{now}; no build loads on this kernel: {}",
            refusals.join("; ")
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_kernel_is_an_error_naming_what_is_installed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-1-amd64")).unwrap();
        let kernels = ["6.1.0-9-amd64".to_string()];
        let modules = ["jool".to_string()];
        let req = StatusRequest {
            root: d.path(),
            kernels: &kernels,
            modules: &modules,
            config_dirs: &[],
        };
        let e = status(&req).unwrap_err().to_string();
        assert!(
            e.contains("6.1.0-9-amd64") && e.contains("installed: 6.1.0-1-amd64"),
            "{e}"
        );
    }
}
