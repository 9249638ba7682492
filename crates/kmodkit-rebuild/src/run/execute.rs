//! Running the builds a run decided on and installing the results.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::cache::{cached_products, store_cache};
use super::{io_err, Action, Job, Options, Progress, Report, RunError};
use crate::build::{self, BuildError, BuildRequest};
use crate::install::{self, PackageFiles};
use crate::jobserver::Jobserver;
use crate::kernel::KernelEnv;
use crate::record::{self, InstalledModule, Record};

/// Runs every build that is not cached: each starts once the builds it
/// depends on (same kernel) are done, all under one jobserver.
pub(super) fn run_builds(
    opts: &Options<'_>,
    envs: &[KernelEnv],
    jobs: &mut [Job],
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
                let mut extra: Vec<PathBuf> = deps[&j]
                    .iter()
                    .filter_map(|d| jobs[*d].symvers.clone())
                    .collect();
                extra.extend(jobs[j].installed_dep_symvers.iter().cloned());
                let recipe = jobs[j].recipe.clone();
                let env = &envs[jobs[j].kernel];
                let work = jobs[j].work.clone();
                let log = jobs[j]
                    .outcome
                    .log
                    .clone()
                    .unwrap_or_else(|| opts.log_dir.join("build.log"));
                progress.build_started(&recipe.name, &env.release, &log);
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
pub(super) fn install_all(
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
