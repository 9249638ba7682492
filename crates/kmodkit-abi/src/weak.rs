//! weak-updates: letting modules built for one kernel serve another
//! (RHEL's `weak-modules`), decided by [`crate::check`] and applied
//! atomically with the kernel's module index.
//!
//! Layout: a module built for kernel A lives in `/lib/modules/A/extra/<rel>`;
//! for another kernel K it is offered as the symlink
//! `/lib/modules/K/weak-updates/<rel>` → that file. For every `<rel>` the
//! newest build (by kernel release) that K accepts wins; a build refused
//! because a module it needs was refused is retried with older builds, so
//! interdependent modules are accepted or refused together. A module K
//! ships itself in `K/extra/` is never linked.
//!
//! Applying a plan for K (see [`apply`]) changes the links and the index
//! as one step: the new link tree is built in a staging directory, the
//! index computed for it (depmod in-process, reading the staged links),
//! both are committed with a marker, then the link tree is swapped in with
//! `renameat2(RENAME_EXCHANGE)` and the index files renamed (the protocol
//! of [`kmodkit_commit::StagedSet`]). [`recover`]
//! completes a committed change or discards an uncommitted one, so after
//! any crash K has the old links with the old index or the new links with
//! the new index.
//!
//! Links are relative (`../../../A/extra/<rel>`), so they resolve the same
//! inside the root, from the staging directory (it sits at the same depth
//! as `K/`) and on a node booted from an image of the root. Decisions and
//! the index under a root other than `/` use the root's own depmod.d
//! ([`kmodkit_depmod::config::root_config_dirs`]), the configuration the
//! target system's depmod will read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kmodkit_commit::{
    fault_point, hoist_subdir, recover_set, CommitError, Recovery, StagedSet, COMMIT_MARKER,
};
use kmodkit_depmod::config::{root_config_dirs, DepmodConfig, Search};
use kmodkit_depmod::{output, ModuleTree, TreeOptions};

use crate::{check, Target, Verdict};

/// The staging directory of kernel K: beside `K/`, not inside it, so no
/// depmod run (ours or kmod's) ever indexes staged links.
pub fn staging_dir(root: &Path, kernel: &str) -> PathBuf {
    root.join("lib/modules")
        .join(format!(".kmodkit-weak-{kernel}.staging"))
}
/// Where releases before the set protocol staged the index files.
const LEGACY_INDEX_DIR: &str = "index";

#[derive(Debug, thiserror::Error)]
pub enum WeakError {
    // The OS error is in the message, not a source() (no doubled chain).
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Target(#[from] crate::TargetError),
    #[error(transparent)]
    Depmod(#[from] kmodkit_depmod::DepmodError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> WeakError + '_ {
    move |cause| WeakError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// A module build offered to other kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The kernel it was built for.
    pub kernel: String,
    pub path: PathBuf,
}

/// Compares kernel releases like `sort -V` (numbers numerically).
pub fn compare_releases(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(&cb) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                let (nx, ny) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
            }
            _ => x.1.cmp(y.1),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Kernel releases with a module directory under `root`.
pub fn installed_kernels(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    out.sort_by(|a, b| compare_releases(a, b));
    out
}

fn walk_modules(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        let meta = std::fs::symlink_metadata(&p);
        if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            walk_modules(&p, base, out);
        } else if meta.is_ok_and(|m| m.is_file()) && crate::is_module_path(&p) {
            let rel = p
                .strip_prefix(base)
                .unwrap_or(&p)
                .to_string_lossy()
                .into_owned();
            out.push((rel, p));
        }
    }
}

/// Every module under every kernel's `extra/`, by path relative to
/// `extra/`, newest kernel first; files in `exclude` are left out.
pub fn builds(root: &Path, exclude: &BTreeSet<PathBuf>) -> BTreeMap<String, Vec<Build>> {
    builds_in(root, "extra", exclude)
}

/// As [`builds`], for the distribution directory `subdir` of every kernel
/// (`extra` on RHEL, `updates/dkms` where DKMS installs on Debian).
pub fn builds_in(
    root: &Path,
    subdir: &str,
    exclude: &BTreeSet<PathBuf>,
) -> BTreeMap<String, Vec<Build>> {
    let mut out: BTreeMap<String, Vec<Build>> = BTreeMap::new();
    for k in installed_kernels(root).iter().rev() {
        let extra = root.join("lib/modules").join(k).join(subdir);
        let mut found = Vec::new();
        walk_modules(&extra, &extra, &mut found);
        for (rel, path) in found {
            if exclude.contains(&path) {
                continue;
            }
            out.entry(rel).or_default().push(Build {
                kernel: k.clone(),
                path,
            });
        }
    }
    out
}

/// What a kernel's weak-updates should hold, and why.
#[derive(Debug, Clone)]
pub struct Plan {
    pub kernel: String,
    /// `<rel>` → the module file the link points to.
    pub links: BTreeMap<String, PathBuf>,
    /// The links there now.
    pub current: BTreeMap<String, PathBuf>,
    /// The verdicts of the accepted builds.
    pub accepted: Vec<Verdict>,
    /// Builds tried and refused, with the verdict that refused them.
    pub refused: Vec<Verdict>,
    /// Paths K ships itself in extra/ (never linked).
    pub native: Vec<String>,
    /// The depmod.d configuration the decisions used (files, search order).
    pub config: DepmodConfig,
}

impl Plan {
    /// Module names whose link was added, removed or retargeted.
    pub fn changed_modules(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (rel, target) in self.links.iter().chain(&self.current) {
            if self.links.get(rel) != self.current.get(rel) {
                let base = rel.rsplit('/').next().unwrap_or(rel);
                out.insert(base.split('.').next().unwrap_or(base).replace('-', "_"));
                let _ = target;
            }
        }
        out
    }

    pub fn is_change(&self) -> bool {
        self.links != self.current
    }
}

/// Lexical normalisation: `a/b/../c` → `a/c` (links are not followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// The file a link's text names, as a path on this machine: relative
/// texts from the link's directory, absolute ones from `root`'s `/` (as
/// the target system will read them; RHEL's script writes those).
pub fn resolve_link(root: &Path, link: &Path, text: &Path) -> PathBuf {
    if let Ok(inside) = text.strip_prefix("/") {
        root.join(inside)
    } else {
        normalize(&link.parent().unwrap_or(Path::new("")).join(text))
    }
}

/// The relative link text from `link` to `target`, both under the same
/// root: valid inside the root whatever it is mounted as.
pub fn link_text(link: &Path, target: &Path) -> PathBuf {
    let from: Vec<_> = normalize(link.parent().unwrap_or(Path::new("")))
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let to: Vec<_> = normalize(target)
        .components()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// `path` as the system under `root` names it (`/lib/modules/...`).
pub fn in_root(root: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(root) {
        Ok(rel) => Path::new("/").join(rel),
        Err(_) => path.to_path_buf(),
    }
}

/// The symlinks now in `K/weak-updates` (relative path → the file each
/// names, see [`resolve_link`]).
pub fn current_links(root: &Path, module_dir: &Path) -> BTreeMap<String, PathBuf> {
    let base = module_dir.join("weak-updates");
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, base: &Path, out: &mut BTreeMap<String, PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => walk(root, &p, base, out),
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(t) = std::fs::read_link(&p) {
                        let rel = p
                            .strip_prefix(base)
                            .unwrap_or(&p)
                            .to_string_lossy()
                            .into_owned();
                        out.insert(rel, resolve_link(root, &p, &t));
                    }
                }
                _ => {}
            }
        }
    }
    walk(root, &base, &base, &mut out);
    out
}

/// Decides the weak-updates links of `kernel` from the available builds.
pub fn plan(
    root: &Path,
    kernel: &str,
    all_builds: &BTreeMap<String, Vec<Build>>,
) -> Result<Plan, WeakError> {
    plan_in(root, kernel, all_builds, "extra")
}

/// As [`plan`], for builds found by [`builds_in`] under `subdir`.
pub fn plan_in(
    root: &Path,
    kernel: &str,
    all_builds: &BTreeMap<String, Vec<Build>>,
    subdir: &str,
) -> Result<Plan, WeakError> {
    let module_dir = root.join("lib/modules").join(kernel);
    let target = Target::load_with_config(root, kernel, None, &root_config_dirs(root))?;
    // Builds for other kernels, minus what K ships itself.
    let mut native = Vec::new();
    let mut options: BTreeMap<&str, Vec<&Build>> = BTreeMap::new();
    for (rel, builds) in all_builds {
        if module_dir.join(subdir).join(rel).exists() {
            native.push(rel.clone());
            continue;
        }
        let others: Vec<&Build> = builds.iter().filter(|b| b.kernel != kernel).collect();
        if !others.is_empty() {
            options.insert(rel.as_str(), others);
        }
    }
    // choice[rel] = index of the build tried; None once all were refused.
    let mut choice: BTreeMap<&str, Option<usize>> = options.keys().map(|r| (*r, Some(0))).collect();
    let mut refused = Vec::new();
    let accepted = loop {
        let chosen: Vec<(&str, &Build)> = choice
            .iter()
            .filter_map(|(rel, c)| c.map(|i| (*rel, options[rel][i])))
            .collect();
        let paths: Vec<PathBuf> = chosen.iter().map(|(_, b)| b.path.clone()).collect();
        let verdicts = check(&target, &paths, "weak-updates");
        // Advance every build refused for its own reasons; builds refused
        // only because a dependency was refused wait for that to settle.
        let mut advanced = false;
        for ((rel, _), v) in chosen.iter().zip(&verdicts) {
            let own = v
                .reasons
                .iter()
                .any(|r| !matches!(r, crate::Reason::Dependency { .. }));
            if !v.compatible && own {
                refused.push(v.clone());
                let next = choice[rel]
                    .map(|i| i + 1)
                    .filter(|&i| i < options[rel].len());
                choice.insert(rel, next);
                advanced = true;
            }
        }
        if advanced {
            continue;
        }
        // Only dependency refusals left: those modules cannot be linked with
        // any build of what they need; try their older builds too.
        let mut dep_only = false;
        for ((rel, _), v) in chosen.iter().zip(&verdicts) {
            if !v.compatible {
                refused.push(v.clone());
                let next = choice[rel]
                    .map(|i| i + 1)
                    .filter(|&i| i < options[rel].len());
                choice.insert(rel, next);
                dep_only = true;
            }
        }
        if !dep_only {
            break verdicts;
        }
    };
    let links: BTreeMap<String, PathBuf> = choice
        .iter()
        .filter_map(|(rel, c)| c.map(|i| (rel.to_string(), options[rel][i].path.clone())))
        .collect();
    Ok(Plan {
        kernel: kernel.to_string(),
        links,
        current: current_links(root, &module_dir),
        accepted,
        refused,
        native,
        config: target.scan.config.clone(),
    })
}

/// Where weak-modules keeps its module cache under a root: parsed in-tree
/// modules are reused when the index is regenerated.
pub fn default_cache_dir(root: &Path) -> PathBuf {
    root.join("var/cache/kmodkit/depmod")
}

/// Applies a plan: links and index change together (see module docs).
/// `cache` keeps parsed modules between runs (see `kmodkit depmod --cache`).
pub fn apply(root: &Path, plan: &Plan, cache: Option<&Path>) -> Result<(), WeakError> {
    let module_dir = root.join("lib/modules").join(&plan.kernel);
    recover(root, &plan.kernel)?;
    let mut set = StagedSet::begin(&module_dir, &staging_dir(root, &plan.kernel))?;
    let staged_links = set.stage_dir("weak-updates")?;
    for (rel, target) in &plan.links {
        let link = staged_links.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        fault_point("link");
        // The text is computed for the live location; the staging directory
        // is at the same depth, so it resolves there too.
        let live_link = module_dir.join("weak-updates").join(rel);
        std::os::unix::fs::symlink(link_text(&live_link, target), &link).map_err(io(&link))?;
    }

    // The index the kernel will have with the new links, computed now.
    let root_s = root.display().to_string();
    let basedir = if root_s == "/" {
        None
    } else {
        Some(root_s.trim_end_matches('/').to_string())
    };
    let mut options = TreeOptions::new(basedir, plan.kernel.clone());
    options.staged_subdir = Some(("weak-updates".to_string(), staged_links.clone()));
    options.config_paths = root_config_dirs(root);
    options.cache = cache.map(Path::to_path_buf);
    let tree = ModuleTree::load(options)?;
    let (files, _) = output::render_all(&tree)?;
    for f in &files {
        set.write_file(f.name, &f.contents)?;
    }
    Ok(set.commit()?)
}

/// Completes a committed change left by a crash, or discards an
/// uncommitted one. Returns true when a change was completed.
pub fn recover(root: &Path, kernel: &str) -> Result<bool, WeakError> {
    let module_dir = root.join("lib/modules").join(kernel);
    let staging = staging_dir(root, kernel);
    // Releases before kmodkit-commit's StagedSet staged the index files in
    // `index/`; the set protocol wants them beside `weak-updates/`. Only
    // a committed set is worth moving (an uncommitted one is removed).
    if staging.join(COMMIT_MARKER).exists() {
        hoist_subdir(&staging, LEGACY_INDEX_DIR)?;
    }
    Ok(recover_set(&module_dir, &staging)? == Recovery::RolledForward)
}

/// Removes a kernel's weak-updates links (`--remove-kernel`).
pub fn remove_kernel_links(root: &Path, kernel: &str) -> Result<usize, WeakError> {
    let module_dir = root.join("lib/modules").join(kernel);
    recover(root, kernel)?;
    let links = current_links(root, &module_dir);
    let dir = module_dir.join("weak-updates");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    Ok(links.len())
}

/// The depmod.d drop-in kmodkit writes so the target's depmod uses the
/// weak-updates links over in-tree modules of the same name: kmod's own
/// default order (`updates`, then everything) with `weak-updates` between.
pub const DEPMOD_CONF_NAME: &str = "kmodkit-weak-updates.conf";
pub const DEPMOD_CONF: &str =
    "# Written by kmodkit weak-modules --write-depmod-conf: modules linked\n\
# into weak-updates/ (checked against this kernel's ABI) take precedence\n\
# over in-tree modules of the same name.\n\
search updates weak-updates built-in\n";

/// True when `config` ranks `weak-updates` above `built-in` (so a link
/// wins over an in-tree module of the same name).
pub fn weak_updates_ranked(config: &DepmodConfig) -> bool {
    // kmod's list is in reverse order of appearance: the last entry is the
    // first listed, the highest priority.
    let rank = |want: &dyn Fn(&Search) -> bool| config.searches.iter().rposition(want);
    match (
        rank(&|s| matches!(s, Search::Path(p) if p == "weak-updates")),
        rank(&|s| matches!(s, Search::BuiltIn)),
    ) {
        (Some(w), Some(b)) => w > b,
        (Some(_), None) => true,
        _ => false,
    }
}

/// Why the drop-in was not written.
#[derive(Debug, thiserror::Error)]
pub enum DepmodConfError {
    #[error("{} already sets the search order; add weak-updates before built-in to its search line instead of a second one", .0.display())]
    OtherSearch(PathBuf),
    #[error(transparent)]
    Io(#[from] WeakError),
}

/// Writes [`DEPMOD_CONF`] as `ROOT/etc/depmod.d/kmodkit-weak-updates.conf`
/// (temporary file renamed into place). Refused when another file already
/// holds a `search` line: two search lines would reorder that file's own
/// directories. Returns the path written.
pub fn write_depmod_conf(root: &Path, kernel: &str) -> Result<PathBuf, DepmodConfError> {
    let dir = root.join("etc/depmod.d");
    let path = dir.join(DEPMOD_CONF_NAME);
    let dirs = root_config_dirs(root);
    let config = DepmodConfig::load(&dirs, kernel)
        .map_err(|e| WeakError::Depmod(kmodkit_depmod::DepmodError::Config(e)))?;
    if let Some(other) = config
        .search_files
        .iter()
        .find(|f| f.file_name() != path.file_name())
    {
        return Err(DepmodConfError::OtherSearch(other.clone()));
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    kmodkit_commit::replace_file(&path, DEPMOD_CONF.as_bytes(), None).map_err(WeakError::from)?;
    Ok(path)
}
