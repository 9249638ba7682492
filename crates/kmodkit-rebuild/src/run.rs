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
use std::sync::mpsc;

use kmodkit_module::compression::Compression;
use serde::Serialize;

use crate::build::{self, BuildError, BuildRequest};
use crate::conf::{ConfError, EvalContext, ModuleSpec, Recipe, Source};
use crate::digest::{tree_digest, Digest};
use crate::install::{self, PackageFiles};
use crate::jobserver::Jobserver;
use crate::kernel::KernelEnv;
use crate::record::{self, InstalledModule, Record};

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

/// The build cache: `CACHE/KEY/` holds the stripped modules
/// (`DEST_NAME.ko`), the build's `Module.symvers` and the log.
fn cache_entry(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(key)
}

fn cached_products(
    cache_dir: &Path,
    key: &str,
    recipe: &Recipe,
) -> Option<Vec<(ModuleSpec, PathBuf)>> {
    let dir = cache_entry(cache_dir, key);
    let specs: Vec<ModuleSpec> = if recipe.discover_modules {
        let text = std::fs::read_to_string(dir.join("modules")).ok()?;
        text.lines()
            .map(|n| ModuleSpec {
                built_name: n.to_string(),
                built_location: String::new(),
                dest_name: n.to_string(),
                dest_location: "/updates".into(),
                strip: true,
            })
            .collect()
    } else {
        recipe.modules.clone()
    };
    specs
        .into_iter()
        .map(|s| {
            let p = dir.join(format!("{}.ko", s.dest_name));
            p.is_file().then_some((s, p))
        })
        .collect()
}

/// Stores a finished build in the cache (a complete directory renamed
/// into place, so a reader never sees half of one).
fn store_cache(
    cache_dir: &Path,
    key: &str,
    products: &[(ModuleSpec, PathBuf)],
    symvers: Option<&Path>,
    log: &Path,
) -> Result<PathBuf, RunError> {
    std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let final_dir = cache_entry(cache_dir, key);
    let tmp = cache_dir.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let mut names = String::new();
    for (spec, path) in products {
        let to = tmp.join(format!("{}.ko", spec.dest_name));
        std::fs::copy(path, &to).map_err(io_err(&to))?;
        names.push_str(&spec.dest_name);
        names.push('\n');
    }
    std::fs::write(tmp.join("modules"), names).map_err(io_err(&tmp))?;
    if let Some(s) = symvers {
        std::fs::copy(s, tmp.join("Module.symvers")).map_err(io_err(s))?;
    }
    let _ = std::fs::copy(log, tmp.join("build.log"));
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    Ok(final_dir)
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
                    dep_symvers.extend(dj.symvers.iter().cloned());
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
            // Dependents check and build against this build's symbols.
            let _ = dep_symvers;
            progress.decided(&jobs[j].outcome);
        }
    }

    let mut report = Report::default();
    if opts.dry_run {
        report.outcomes = jobs.into_iter().map(|j| j.outcome).collect();
        return Ok(report);
    }

    run_builds(opts, &envs, &mut jobs, &order, &name_index, progress)?;
    install_all(opts, &envs, &mut jobs, &mut report, progress)?;
    report.outcomes = jobs.into_iter().map(|j| j.outcome).collect();
    Ok(report)
}

/// Runs every build that is not cached: each starts once the builds it
/// depends on (same kernel) are done, all under one jobserver.
fn run_builds(
    opts: &Options<'_>,
    envs: &[KernelEnv],
    jobs: &mut [Job],
    _order: &[usize],
    name_index: &HashMap<String, usize>,
    progress: &dyn Progress,
) -> Result<(), RunError> {
    let to_build: Vec<usize> = (0..jobs.len())
        .filter(|&j| jobs[j].outcome.action == Action::Built)
        .collect();
    if to_build.is_empty() {
        return Ok(());
    }
    let jobserver = Jobserver::new(opts.jobs).map_err(io_err(Path::new("jobserver pipe")))?;
    let per_kernel = envs.len();
    let deps_of = |j: usize| -> Vec<usize> {
        jobs[j]
            .recipe
            .build_depends
            .iter()
            .filter_map(|d| name_index.get(d))
            .map(|&si| si * per_kernel + jobs[j].kernel)
            .collect()
    };
    let deps: BTreeMap<usize, Vec<usize>> = to_build.iter().map(|&j| (j, deps_of(j))).collect();
    let mut pending: BTreeSet<usize> = to_build.iter().copied().collect();
    let mut running = 0usize;
    std::thread::scope(|scope| -> Result<(), RunError> {
        let (tx, rx) = mpsc::channel::<(usize, Result<build::BuildOutput, BuildError>)>();
        loop {
            // Start every build whose dependencies are settled.
            let ready: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|j| {
                    deps[j]
                        .iter()
                        .all(|d| !pending.contains(d) && !is_running(jobs, *d))
                })
                .collect();
            for j in ready {
                pending.remove(&j);
                // A dependency that failed fails this one too.
                if let Some(d) = deps[&j]
                    .iter()
                    .find(|d| jobs[**d].outcome.action == Action::Failed)
                {
                    let why = format!(
                        "its build dependency {} failed for {}",
                        jobs[*d].recipe.name, jobs[j].recipe.kernel
                    );
                    jobs[j].outcome.action = Action::Failed;
                    jobs[j].outcome.error = Some(why.clone());
                    jobs[j].outcome.reason = why;
                    progress.build_finished(&jobs[j].outcome);
                    continue;
                }
                let extra: Vec<PathBuf> = deps[&j]
                    .iter()
                    .filter_map(|d| jobs[*d].symvers.clone())
                    .collect();
                let recipe = jobs[j].recipe.clone();
                let env = &envs[jobs[j].kernel];
                let work = jobs[j].work.clone();
                let log = jobs[j]
                    .outcome
                    .log
                    .clone()
                    .unwrap_or_else(|| opts.log_dir.join("build.log"));
                progress.build_started(&recipe.name, &env.release, &log);
                jobs[j].outcome.reason.push_str(""); // keep
                mark_running(jobs, j);
                running += 1;
                let tx = tx.clone();
                let js = &jobserver;
                scope.spawn(move || {
                    let req = BuildRequest {
                        recipe: &recipe,
                        kernel: env,
                        extra_symbols: extra,
                        work: &work,
                        log: &log,
                        root_view: (opts.root != Path::new("/")).then(|| build::RootView {
                            module_dir: env.module_dir.clone(),
                            kernel: env.release.clone(),
                        }),
                    };
                    let r = build::run(&req, js);
                    let _ = tx.send((j, r));
                });
            }
            if running == 0 {
                if pending.is_empty() {
                    break;
                }
                // Nothing can start (cannot happen: the order has no cycle).
                return Err(RunError::Cycle("builds waiting on each other".into()));
            }
            let Ok((j, result)) = rx.recv() else { break };
            running -= 1;
            unmark_running(jobs, j);
            let log = jobs[j].outcome.log.clone();
            match result.and_then(|out| check_modpost(&jobs[j], out, log.as_deref())) {
                Ok(out) => {
                    jobs[j].outcome.seconds = Some(out.seconds);
                    let mut products = Vec::new();
                    let mut failure = None;
                    for m in &out.modules {
                        if m.spec.strip {
                            if let Err(e) = build::strip_debug(&m.path) {
                                failure = Some(e.to_string());
                            }
                        }
                        products.push((m.spec.clone(), m.path.clone()));
                    }
                    if let Some(e) = failure {
                        fail(&mut jobs[j], e);
                    } else {
                        let stored = store_cache(
                            &opts.cache_dir,
                            &jobs[j].key,
                            &products,
                            out.symvers.as_deref(),
                            log.as_deref().unwrap_or(Path::new("/dev/null")),
                        )?;
                        jobs[j].products =
                            cached_products(&opts.cache_dir, &jobs[j].key, &jobs[j].recipe)
                                .unwrap_or_else(|| {
                                    products
                                        .iter()
                                        .map(|(s, _)| {
                                            (s.clone(), stored.join(format!("{}.ko", s.dest_name)))
                                        })
                                        .collect()
                                });
                        if jobs[j].recipe.discover_modules {
                            jobs[j].products = products
                                .iter()
                                .map(|(s, _)| {
                                    (s.clone(), stored.join(format!("{}.ko", s.dest_name)))
                                })
                                .collect();
                        }
                        let s = stored.join("Module.symvers");
                        jobs[j].symvers = s.is_file().then_some(s);
                    }
                }
                Err(e) => fail(&mut jobs[j], e.to_string()),
            }
            progress.build_finished(&jobs[j].outcome);
        }
        Ok(())
    })?;
    Ok(())
}

// Running builds are marked by a sentinel in `seconds` (-1) while they run.
fn mark_running(jobs: &mut [Job], j: usize) {
    jobs[j].outcome.seconds = Some(-1.0);
}
fn unmark_running(jobs: &mut [Job], j: usize) {
    jobs[j].outcome.seconds = None;
}
fn is_running(jobs: &[Job], j: usize) -> bool {
    jobs[j].outcome.seconds == Some(-1.0)
}

fn fail(job: &mut Job, error: String) {
    job.outcome.action = Action::Failed;
    job.outcome.error = Some(error);
}

/// modpost's "undefined!" warnings: the kernel would refuse the module
/// ("Unknown symbol"), so the build failed even though make did not.
fn check_modpost(
    job: &Job,
    out: build::BuildOutput,
    log: Option<&Path>,
) -> Result<build::BuildOutput, BuildError> {
    let Some(log) = log else { return Ok(out) };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if let Some(line) = text
        .lines()
        .find(|l| l.contains("WARNING: modpost:") && l.contains("undefined!"))
    {
        return Err(BuildError::Failed {
            package: job.recipe.id(),
            kernel: job.recipe.kernel.clone(),
            step: "modpost".into(),
            status: "symbols no kernel or build dependency exports".into(),
            first_error: line.trim().to_string(),
            log: log.to_path_buf(),
        });
    }
    Ok(out)
}

/// Finishes (sign, compress) and installs each kernel's built packages as
/// one step, then links compatible builds through weak-updates.
fn install_all(
    opts: &Options<'_>,
    envs: &[KernelEnv],
    jobs: &mut [Job],
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<(), RunError> {
    let root = opts.root.as_path();
    let mut weak_kernels: BTreeSet<usize> = BTreeSet::new();
    for (ki, env) in envs.iter().enumerate() {
        let mine: Vec<usize> = (0..jobs.len())
            .filter(|&j| {
                jobs[j].kernel == ki
                    && matches!(jobs[j].outcome.action, Action::Built | Action::Cached)
            })
            .collect();
        if jobs
            .iter()
            .any(|j| j.kernel == ki && j.outcome.action == Action::Compatible)
            // or links that a native build may now replace
            || env.module_dir.join("weak-updates").is_dir()
        {
            weak_kernels.insert(ki);
        }
        if mine.is_empty() {
            continue;
        }
        let mut packages = Vec::new();
        let mut installed_jobs = Vec::new();
        for &j in &mine {
            let mut files = Vec::new();
            let mut failure = None;
            for (spec, path) in &jobs[j].products {
                let finished = std::fs::read(path)
                    .map_err(|e| format!("{}: {e}", path.display()))
                    .and_then(|raw| match opts.sign {
                        Some(sign) => sign(&raw, env),
                        None => Ok(raw),
                    })
                    .and_then(|signed| (opts.compress)(&signed, env.compression));
                match finished {
                    Ok(bytes) => files.push((spec.dest_name.clone(), env.module_suffix(), bytes)),
                    Err(e) => {
                        failure = Some(format!("{}: {e}", spec.dest_name));
                        break;
                    }
                }
            }
            match failure {
                Some(e) => fail(&mut jobs[j], e),
                None => {
                    packages.push(PackageFiles {
                        package: jobs[j].recipe.name.clone(),
                        modules: files,
                    });
                    installed_jobs.push(j);
                }
            }
        }
        if packages.is_empty() {
            continue;
        }
        let installed = install::install(
            root,
            &env.release,
            &opts.dest_dir,
            &packages,
            opts.depmod_cache.as_deref(),
        )
        .map_err(|source| RunError::Install {
            kernel: env.release.clone(),
            source,
        })?;
        progress.installed(&env.release, installed.iter().map(Vec::len).sum());
        for (j, modules) in installed_jobs.into_iter().zip(installed) {
            let job = &mut jobs[j];
            report
                .changed
                .entry(env.release.clone())
                .or_default()
                .extend(modules.iter().map(|m| m.name.clone()));
            let rec = Record {
                package: job.recipe.name.clone(),
                version: job.recipe.version.clone(),
                kernel: env.release.clone(),
                key: job.key.clone(),
                built_for: Some(env.release.clone()),
                modules: modules.clone(),
            };
            rec.store(root).map_err(|e| RunError::Io {
                path: record::record_path(root, &rec.package, &rec.version, &rec.kernel),
                source: e.into(),
            })?;
            if let Some(s) = &job.symvers {
                let to = record::symvers_path(root, &rec.package, &rec.version, &rec.kernel);
                let bytes = std::fs::read(s).map_err(io_err(s))?;
                kmodkit_commit::replace_file(&to, &bytes, Some(0o644)).map_err(|e| {
                    RunError::Io {
                        path: to.clone(),
                        source: e.into(),
                    }
                })?;
            }
            job.outcome.modules = modules;
        }
    }

    // Compatible builds: weak-updates links, decided by the same check.
    let dest = opts.dest_dir.as_str();
    let all_builds = kmodkit_abi::weak::builds_in(root, dest, &BTreeSet::new());
    let targets: Vec<usize> = if opts.weak_links {
        weak_kernels.into_iter().collect()
    } else {
        Vec::new()
    };
    // New builds are offered to the root's other kernels too (what
    // weak-modules --add-modules does after a DKMS install), unless a
    // package asks for none (NO_WEAK_MODULES).
    let offered = jobs.iter().any(|j| {
        matches!(j.outcome.action, Action::Built | Action::Cached) && !j.recipe.no_weak_modules
    });
    if opts.weak_links && offered {
        let ours: BTreeSet<&str> = envs.iter().map(|e| e.release.as_str()).collect();
        for other in kmodkit_abi::weak::installed_kernels(root) {
            if ours.contains(other.as_str()) {
                continue;
            }
            // A kernel whose symbol versions are not under the root cannot
            // be checked: it keeps what it has.
            let Ok(plan) = kmodkit_abi::weak::plan_in(root, &other, &all_builds, dest) else {
                continue;
            };
            if plan.is_change() {
                kmodkit_abi::weak::apply(root, &plan, opts.depmod_cache.as_deref()).map_err(
                    |source| RunError::Weak {
                        kernel: other.clone(),
                        source,
                    },
                )?;
                report
                    .changed
                    .entry(other.clone())
                    .or_default()
                    .extend(plan.changed_modules());
                report.weak_updated.push(other);
            }
        }
    }
    for ki in targets {
        let env = &envs[ki];
        let plan = kmodkit_abi::weak::plan_in(root, &env.release, &all_builds, dest).map_err(
            |source| RunError::Weak {
                kernel: env.release.clone(),
                source,
            },
        )?;
        if plan.is_change() {
            kmodkit_abi::weak::apply(root, &plan, opts.depmod_cache.as_deref()).map_err(
                |source| RunError::Weak {
                    kernel: env.release.clone(),
                    source,
                },
            )?;
            report
                .changed
                .entry(env.release.clone())
                .or_default()
                .extend(plan.changed_modules());
        }
        let linked: BTreeMap<String, PathBuf> = plan.links.clone();
        for job in jobs
            .iter_mut()
            .filter(|j| j.kernel == ki && j.outcome.action == Action::Compatible)
        {
            let Some(from) = job.compatible_from.clone() else {
                continue;
            };
            let mut modules = Vec::new();
            for m in &from.modules {
                let file = Path::new(&m.path)
                    .file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if linked.contains_key(&file) {
                    modules.push(InstalledModule {
                        name: m.name.clone(),
                        path: format!("/lib/modules/{}/weak-updates/{file}", env.release),
                    });
                }
            }
            if modules.len() != from.modules.len() {
                let why = "the weak-updates plan did not link every module of the compatible build (a module of the same name ships with the kernel?)".to_string();
                fail(job, why);
                continue;
            }
            let rec = Record {
                package: job.recipe.name.clone(),
                version: job.recipe.version.clone(),
                kernel: env.release.clone(),
                key: job.key.clone(),
                built_for: None,
                modules: modules.clone(),
            };
            rec.store(root).map_err(|e| RunError::Io {
                path: record::record_path(root, &rec.package, &rec.version, &rec.kernel),
                source: e.into(),
            })?;
            job.outcome.modules = modules;
        }
    }
    Ok(())
}
