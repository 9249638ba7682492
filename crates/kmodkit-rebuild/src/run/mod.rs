//! One rebuild run: decide, per (package, kernel), what is needed — nothing
//! (excluded, up to date, or another kernel's build loads there), a cached
//! build, or a build — then build concurrently under one jobserver,
//! finish (strip, sign, compress) and install each kernel's set with its
//! index as one step, and link compatible builds through weak-updates.
//!
//! Decisions come from the inputs, never from version strings: a build's
//! cache key covers the source tree's content, the evaluated recipe, the
//! kernel's `.config`, `Module.symvers` and compiler, and the keys of the
//! builds it links against; "another kernel's build loads there" is
//! [`kmodkit_abi::check`], the loader's own checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use kmodkit_module::compression::Compression;
use serde::Serialize;

use crate::conf::{ConfError, EvalContext, ModuleSpec, Recipe, Source};
use crate::digest::{tree_digest, Digest};
use crate::install;
use crate::kernel::KernelEnv;
use crate::record::{self, InstalledModule, Record};

mod cache;
mod execute;

use cache::{cache_entry, cached_products};
use execute::{install_all, run_builds};

/// Bumped when kmodkit changes what a build produces from the same inputs.
const BUILD_FORMAT: &str = "kmodkit-rebuild-1";

/// Signs one stripped module for a kernel (the CLI's key); `None` signs
/// nothing.
pub type SignFn<'a> = dyn Fn(&[u8], &KernelEnv) -> Result<Vec<u8>, String> + Sync + 'a;
/// Compresses a module file as the kernel's own (`Compression::None`
/// returns the input).
pub type CompressFn<'a> = dyn Fn(&[u8], Compression) -> Result<Vec<u8>, String> + Sync + 'a;

pub struct Options<'a> {
    pub root: PathBuf,
    pub sources: Vec<Source>,
    pub kernels: Vec<String>,
    /// `uname -m` of the targets.
    pub arch: String,
    pub jobs: usize,
    /// Rebuild even where another kernel's build would load.
    pub force: bool,
    pub dry_run: bool,
    /// Reuse builds with the same inputs (`--no-cache` turns it off).
    pub use_cache: bool,
    pub cache_dir: PathBuf,
    /// Scratch space for the builds (removed at the end).
    pub work_dir: PathBuf,
    /// Build logs are kept here.
    pub log_dir: PathBuf,
    /// Where modules go under `lib/modules/K` (`updates/dkms`).
    pub dest_dir: String,
    pub sign: Option<&'a SignFn<'a>>,
    pub compress: &'a CompressFn<'a>,
    /// Offer new builds to other kernels through weak-updates, and link
    /// compatible builds there.
    pub weak_links: bool,
    pub depmod_cache: Option<PathBuf>,
}

/// What was done for one (package, kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `BUILD_EXCLUSIVE_*` does not match the kernel: a reported skip.
    Excluded,
    /// Installed and built from the same inputs already.
    UpToDate,
    /// Another kernel's build loads on this one: linked, not rebuilt.
    Compatible,
    /// Same inputs as an earlier build: installed from the build cache.
    Cached,
    Built,
    Failed,
    /// `--dry-run`: what would be done.
    WouldBuild,
    WouldLink,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub package: String,
    pub version: String,
    pub kernel: String,
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// The build log (kept) of a build, failed or not.
    pub log: Option<PathBuf>,
    pub seconds: Option<f64>,
    /// The modules as installed (empty when nothing was installed).
    pub modules: Vec<InstalledModule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Progress of a run, for a terminal or a log.
pub trait Progress: Sync {
    fn decided(&self, _outcome: &Outcome) {}
    fn build_started(&self, _package: &str, _kernel: &str, _log: &Path) {}
    fn build_finished(&self, _outcome: &Outcome) {}
    fn installed(&self, _kernel: &str, _modules: usize) {}
}

pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kernel(#[from] crate::kernel::KernelError),
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("build dependencies form a cycle: {0}")]
    Cycle(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("installing for {kernel}: {source}")]
    Install {
        kernel: String,
        #[source]
        source: install::InstallError,
    },
    #[error("weak-updates of {kernel}: {source}")]
    Weak {
        kernel: String,
        #[source]
        source: kmodkit_abi::weak::WeakError,
    },
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub outcomes: Vec<Outcome>,
    /// Module names whose file changed, per kernel (for the initramfs).
    pub changed: BTreeMap<String, BTreeSet<String>>,
    /// Other kernels whose weak-updates links changed.
    pub weak_updated: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| o.action == Action::Failed)
    }
}

struct Job {
    kernel: usize,
    recipe: Recipe,
    key: String,
    work: PathBuf,
    outcome: Outcome,
    /// Files this package has for the kernel once decided (for the ABI
    /// check of packages that depend on it).
    files: Vec<PathBuf>,
    /// `Module.symvers` of build dependencies installed by earlier runs
    /// (those of this run are taken from their jobs once built).
    installed_dep_symvers: Vec<PathBuf>,
    /// `Module.symvers` of the build this kernel uses.
    symvers: Option<PathBuf>,
    /// Built or cached: the stripped modules to finish and install.
    products: Vec<(ModuleSpec, PathBuf)>,
    /// An installed build of another kernel that loads here.
    compatible_from: Option<Record>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn outcome(recipe: &Recipe, action: Action, reason: String) -> Outcome {
    Outcome {
        package: recipe.name.clone(),
        version: recipe.version.clone(),
        kernel: recipe.kernel.clone(),
        action,
        reason,
        log: None,
        seconds: None,
        modules: Vec::new(),
        error: None,
    }
}

/// Kernel modules in dependency order: packages whose BUILD_DEPENDS are
/// placed first. Returns source indices.
fn dependency_order(names: &[String], depends: &[Vec<String>]) -> Result<Vec<usize>, RunError> {
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut placed = vec![false; names.len()];
    let mut order = Vec::new();
    while order.len() < names.len() {
        let before = order.len();
        for i in 0..names.len() {
            if placed[i] {
                continue;
            }
            let ready = depends[i]
                .iter()
                .all(|d| index.get(d.as_str()).is_none_or(|&j| placed[j]));
            if ready {
                placed[i] = true;
                order.push(i);
            }
        }
        if order.len() == before {
            let left: Vec<&str> = (0..names.len())
                .filter(|&i| !placed[i])
                .map(|i| names[i].as_str())
                .collect();
            return Err(RunError::Cycle(left.join(", ")));
        }
    }
    Ok(order)
}

/// The first refusal of a set of verdicts, in words.
fn refusal(verdicts: &[kmodkit_abi::Verdict]) -> Option<String> {
    verdicts.iter().find(|v| !v.compatible).map(|v| {
        let r = v
            .reasons
            .iter()
            .find(|r| !matches!(r, kmodkit_abi::Reason::Dependency { .. }))
            .or(v.reasons.first())
            .map(|r| r.to_string())
            .unwrap_or_else(|| "refused".into());
        format!("{}: {r}", v.name)
    })
}

pub fn run(opts: &Options<'_>, progress: &dyn Progress) -> Result<Report, RunError> {
    let root = opts.root.as_path();
    let envs: Vec<KernelEnv> = opts
        .kernels
        .iter()
        .map(|k| KernelEnv::open(root, k))
        .collect::<Result<_, _>>()?;

    // Recipes: one per (source, kernel), evaluated with the build's own
    // DKMS tree (recipes name it in MAKE).
    let mut jobs: Vec<Job> = Vec::new();
    let mut source_names: Vec<String> = Vec::new();
    let mut source_depends: Vec<Vec<String>> = Vec::new();
    let mut digests: Vec<String> = Vec::new();
    for (si, source) in opts.sources.iter().enumerate() {
        let digest = tree_digest(&source.dir).map_err(io_err(&source.dir))?;
        digests.push(digest);
        for (ki, env) in envs.iter().enumerate() {
            let work = opts.work_dir.join(format!("s{si}-k{ki}"));
            let cx = EvalContext {
                root,
                kernel: &env.release,
                arch: &opts.arch,
                kernel_source_dir: &env.headers,
                dkms_tree: &work,
            };
            let recipe = Recipe::evaluate(source, &cx)?;
            if ki == 0 {
                source_names.push(recipe.name.clone());
                source_depends.push(recipe.build_depends.clone());
            }
            let o = outcome(&recipe, Action::Built, String::new());
            jobs.push(Job {
                kernel: ki,
                recipe,
                key: String::new(),
                work,
                outcome: o,
                files: Vec::new(),
                symvers: None,
                products: Vec::new(),
                compatible_from: None,
                installed_dep_symvers: Vec::new(),
            });
        }
    }
    let order = dependency_order(&source_names, &source_depends)?;
    let job_of = |si: usize, ki: usize| si * envs.len() + ki;
    let name_index: HashMap<String, usize> = source_names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();

    // Decide, in dependency order.
    let targets: BTreeMap<usize, kmodkit_abi::Target> = BTreeMap::new();
    let mut targets = targets;
    for ki in 0..envs.len() {
        for &si in &order {
            let j = job_of(si, ki);
            let env = &envs[ki];
            let recipe = jobs[j].recipe.clone();
            // The key: everything the build's output depends on.
            let mut d = Digest::new();
            d.field("format", BUILD_FORMAT.as_bytes());
            d.field("source", digests[si].as_bytes());
            let work = jobs[j].work.display().to_string();
            let portable = |s: &str| s.replace(&work, "@DKMS_TREE@");
            d.field("make", portable(&recipe.make).as_bytes());
            d.field(
                "modules",
                serde_json::to_string(&recipe.modules)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            d.field("patches", recipe.patches.join("\n").as_bytes());
            d.field("pre", recipe.pre_build.as_deref().unwrap_or("").as_bytes());
            d.field(
                "post",
                recipe.post_build.as_deref().unwrap_or("").as_bytes(),
            );
            d.field("kernel", env.release.as_bytes());
            d.field("identity", env.identity.as_bytes());
            d.field("arch", opts.arch.as_bytes());

            if let Some(why) = &recipe.excluded {
                jobs[j].outcome = outcome(&recipe, Action::Excluded, why.clone());
                progress.decided(&jobs[j].outcome);
                continue;
            }
            // Build dependencies: in this run, or installed for the kernel.
            let mut dep_failed = None;
            let mut dep_rebuilt = None;
            let mut dep_files = Vec::new();
            let mut dep_symvers = Vec::new();
            for dep in &recipe.build_depends {
                if let Some(&di) = name_index.get(dep) {
                    let dj = &jobs[job_of(di, ki)];
                    d.field("depends", dj.key.as_bytes());
                    match dj.outcome.action {
                        Action::Failed | Action::Excluded => {
                            dep_failed = Some(format!(
                                "its build dependency {dep} was not built for {}: {}",
                                env.release, dj.outcome.reason
                            ))
                        }
                        Action::Built | Action::Cached | Action::WouldBuild => {
                            dep_rebuilt = Some(dep.clone())
                        }
                        _ => {}
                    }
                    dep_files.extend(dj.files.iter().cloned());
                } else {
                    // Installed earlier by a run that had it.
                    let installed = std::fs::read_dir(record::records_dir(root).join(dep))
                        .into_iter()
                        .flatten()
                        .flatten()
                        .find_map(|v| {
                            Record::load(root, dep, &v.file_name().to_string_lossy(), &env.release)
                        });
                    match installed {
                        Some(r) => {
                            d.field("depends", r.key.as_bytes());
                            dep_files.extend(r.files(root).unwrap_or_default());
                            let s = record::symvers_path(root, &r.package, &r.version, &r.kernel);
                            if s.is_file() {
                                dep_symvers.push(s);
                            }
                        }
                        None => {
                            dep_failed = Some(format!(
                                "BUILD_DEPENDS names {dep}, which is neither a package of this run nor installed for {} (add its source with --src, e.g. {}/usr/src/{dep}-VERSION)",
                                env.release,
                                root.display()
                            ))
                        }
                    }
                }
            }
            let key = d.hex();
            jobs[j].key = key.clone();
            if let Some(why) = dep_failed {
                let mut o = outcome(&recipe, Action::Failed, why.clone());
                o.error = Some(why);
                jobs[j].outcome = o;
                progress.decided(&jobs[j].outcome);
                continue;
            }
            jobs[j].symvers = None;
            // Up to date: installed from these very inputs.
            if let Some(r) = Record::load(root, &recipe.name, &recipe.version, &env.release) {
                if r.key == key
                    && r.built_for.as_deref() == Some(env.release.as_str())
                    && !opts.force
                {
                    if let Some(files) = r.files(root) {
                        jobs[j].files = files;
                        let s =
                            record::symvers_path(root, &recipe.name, &recipe.version, &env.release);
                        jobs[j].symvers = s.is_file().then_some(s);
                        let mut o = outcome(&recipe, Action::UpToDate, "installed, built from the same source, recipe and kernel (.config, Module.symvers, compiler)".into());
                        o.modules = r.modules.clone();
                        jobs[j].outcome = o;
                        progress.decided(&jobs[j].outcome);
                        continue;
                    }
                }
            }
            // Another kernel's build that this kernel's loader accepts.
            let mut refused = Vec::new();
            if !opts.force && dep_rebuilt.is_none() && !recipe.discover_modules {
                for r in Record::all_of(root, &recipe.name, &recipe.version) {
                    if r.kernel == env.release || r.built_for.as_deref() != Some(r.kernel.as_str())
                    {
                        continue;
                    }
                    let Some(files) = r.files(root) else { continue };
                    if let std::collections::btree_map::Entry::Vacant(slot) = targets.entry(ki) {
                        match kmodkit_abi::Target::load_with_config(
                            root,
                            &env.release,
                            None,
                            &kmodkit_depmod::config::root_config_dirs(root),
                        ) {
                            Ok(t) => {
                                slot.insert(t);
                            }
                            Err(e) => {
                                refused.push(format!("cannot check against {}: {e}", env.release));
                                break;
                            }
                        }
                    }
                    let target = &targets[&ki];
                    let mut set = files.clone();
                    set.extend(dep_files.iter().cloned());
                    let verdicts = kmodkit_abi::check(target, &set, "weak-updates");
                    let own = &verdicts[..files.len()];
                    // Accepted but shadowed: through weak-updates the kernel's
                    // own module of that name would load (RHEL's and kmod's
                    // default search order rank weak-updates below built-in),
                    // so only a native build replaces it.
                    let why_not = refusal(own).or_else(|| {
                        own.iter().find_map(|v| {
                            v.shadowed_by.as_ref().map(|by| {
                                format!(
                                    "{}: loads, but through weak-updates the in-tree {by} shadows it under this root's depmod.d search order",
                                    v.name
                                )
                            })
                        })
                    });
                    match why_not {
                        None => {
                            jobs[j].files = files.clone();
                            let s = record::symvers_path(root, &r.package, &r.version, &r.kernel);
                            jobs[j].symvers = s.is_file().then_some(s);
                            let action = if opts.dry_run {
                                Action::WouldLink
                            } else {
                                Action::Compatible
                            };
                            jobs[j].outcome = outcome(
                                &recipe,
                                action,
                                format!(
                                    "compatible, not rebuilt: the build for {} loads on {} (struct module size, vermagic and every symbol's CRC match)",
                                    r.kernel, env.release
                                ),
                            );
                            jobs[j].compatible_from = Some(r.clone());
                            break;
                        }
                        Some(why) => refused.push(format!(
                            "the build for {} does not serve {}: {why}",
                            r.kernel, env.release
                        )),
                    }
                }
                if jobs[j].compatible_from.is_some() {
                    progress.decided(&jobs[j].outcome);
                    continue;
                }
            }
            let reason = if opts.force {
                "--force".to_string()
            } else if let Some(dep) = &dep_rebuilt {
                format!("its build dependency {dep} is rebuilt for {}", env.release)
            } else if let Some(first) = refused.first() {
                first.clone()
            } else if Record::load(root, &recipe.name, &recipe.version, &env.release).is_some() {
                "the inputs changed since it was installed (source, recipe or kernel build identity)".into()
            } else {
                format!(
                    "no build of {} for {} or any kernel it could share one with",
                    recipe.id(),
                    env.release
                )
            };
            let cached = opts
                .use_cache
                .then(|| cached_products(&opts.cache_dir, &key, &recipe))
                .flatten();
            let action = match (&cached, opts.dry_run) {
                (_, true) => Action::WouldBuild,
                (Some(_), false) => Action::Cached,
                (None, false) => Action::Built,
            };
            jobs[j].outcome = outcome(&recipe, action, reason);
            if let Some(products) = cached {
                jobs[j].products = products;
                let s = cache_entry(&opts.cache_dir, &key).join("Module.symvers");
                jobs[j].symvers = s.is_file().then_some(s);
            }
            jobs[j].outcome.log = Some(opts.log_dir.join(format!(
                "{}-{}-{}.log",
                recipe.name, recipe.version, env.release
            )));
            // Build dependencies installed by an earlier run: their symbols.
            jobs[j].installed_dep_symvers = dep_symvers;
            progress.decided(&jobs[j].outcome);
        }
    }

    let mut report = Report::default();
    if opts.dry_run {
        report.outcomes = jobs.into_iter().map(|j| j.outcome).collect();
        return Ok(report);
    }

    run_builds(opts, &envs, &mut jobs, &name_index, progress)?;
    install_all(opts, &envs, &mut jobs, &mut report, progress)?;
    report.outcomes = jobs.into_iter().map(|j| j.outcome).collect();
    Ok(report)
}
