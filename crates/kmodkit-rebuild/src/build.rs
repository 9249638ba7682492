//! One build: a package's source compiled with Kbuild for one kernel, in a
//! private directory, the way DKMS's `prepare_build`/`actual_build` do it —
//! copy the source to `DKMS_TREE/NAME/VERSION/build`, apply `PATCH`es, run
//! `PRE_BUILD`, the make command, `POST_BUILD` — but never in a directory
//! another build uses (DKMS shares one `build/` per package version, so
//! it cannot build two kernels at once) and with the make joining the
//! run's jobserver.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::conf::{ModuleSpec, Recipe};
use crate::jobserver::Jobserver;
use crate::kernel::KernelEnv;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "{package} for {kernel}: {step} failed ({status}); first error: {first_error}; log: {log}"
    )]
    Failed {
        package: String,
        kernel: String,
        step: String,
        status: String,
        first_error: String,
        log: PathBuf,
    },
    #[error("{package} for {kernel}: the build did not produce {missing} (dkms.conf BUILT_MODULE_NAME/LOCATION); log: {log}")]
    MissingModule {
        package: String,
        kernel: String,
        missing: PathBuf,
        log: PathBuf,
    },
    #[error("{package} for {kernel}: {path}: {source}")]
    Io {
        package: String,
        kernel: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    pub fn log(&self) -> Option<&Path> {
        match self {
            BuildError::Failed { log, .. } | BuildError::MissingModule { log, .. } => Some(log),
            BuildError::Io { .. } => None,
        }
    }
}

/// What a build needs besides the recipe and kernel.
#[derive(Debug)]
pub struct BuildRequest<'a> {
    pub recipe: &'a Recipe,
    pub kernel: &'a KernelEnv,
    /// `Module.symvers` of the builds this one depends on (same kernel),
    /// given to Kbuild as `KBUILD_EXTRA_SYMBOLS`.
    pub extra_symbols: Vec<PathBuf>,
    /// A private, empty directory: DKMS's tree for this build.
    pub work: &'a Path,
    /// Where the build's log goes (kept).
    pub log: &'a Path,
    /// Building for a root other than `/`: the root's module directory of
    /// the kernel, shown to the build at `/lib/modules/K` (see
    /// [`RootView`]).
    pub root_view: Option<RootView>,
}

/// Recipes that name `/lib/modules/$kernelver/build` instead of
/// `$kernel_source_dir` (digimend-dkms' `MAKE[0]`, many vendor Makefiles'
/// `KDIR ?= /lib/modules/$(KVER)/build`) must find the root's kernel
/// there, never the host's (DKMS issue #605). The build's processes get a
/// private mount namespace in which `/lib/modules` is an empty tmpfs with
/// only the root's `K/` bound into it. Needs CAP_SYS_ADMIN (the build of a
/// system image runs as root); without it the build runs unchanged.
#[derive(Debug, Clone)]
pub struct RootView {
    pub module_dir: PathBuf,
    pub kernel: String,
}

impl RootView {
    fn apply(&self, cmd: &mut Command) {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let c = |b: &[u8]| CString::new(b).ok();
        let (Some(src), Some(dst), Some(base), Some(tmpfs), Some(slash), Some(opts)) = (
            c(self.module_dir.as_os_str().as_bytes()),
            c(format!("/lib/modules/{}", self.kernel).as_bytes()),
            c(b"/lib/modules"),
            c(b"tmpfs"),
            c(b"/"),
            c(b"mode=0755"),
        ) else {
            return;
        };
        // SAFETY: only async-signal-safe syscalls on strings allocated
        // before the fork; an error leaves the child as it was (the build
        // then sees the host's /lib/modules, as DKMS's would).
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Ok(());
                }
                let none = std::ptr::null();
                if libc::mount(
                    none,
                    slash.as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    none.cast(),
                ) != 0
                {
                    return Ok(());
                }
                if libc::mount(
                    tmpfs.as_ptr(),
                    base.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    opts.as_ptr().cast(),
                ) != 0
                {
                    return Ok(());
                }
                libc::mkdir(dst.as_ptr(), 0o755);
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    none.cast(),
                );
                Ok(())
            });
        }
    }
}

/// A module a build produced.
#[derive(Debug, Clone)]
pub struct BuiltModule {
    pub spec: ModuleSpec,
    pub path: PathBuf,
}

#[derive(Debug)]
pub struct BuildOutput {
    pub modules: Vec<BuiltModule>,
    /// The build's `Module.symvers` (its exports, for dependents).
    pub symvers: Option<PathBuf>,
    pub seconds: f64,
}

/// The first line of a build log that says what went wrong: a compiler or
/// make error, else the last non-empty line.
pub fn first_error(log: &Path) -> String {
    let Ok(f) = File::open(log) else {
        return "(no log)".into();
    };
    let mut last = String::new();
    for line in BufReader::new(f).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).into_owned();
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        if l.contains("error:")
            || l.contains("Error:")
            || l.starts_with("ERROR:")
            || l.contains("#error")
            || l.contains("*** ")
            || l.contains("undefined!")
        {
            return l.to_string();
        }
        last = l.to_string();
    }
    if last.is_empty() {
        "(empty log)".into()
    } else {
        last
    }
}

/// `cp -a SRC/. DST/`: files, directories and symlinks, modes kept.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)? {
        let e = e?;
        let ft = e.file_type()?;
        let to = dst.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &to)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path())?, &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

fn discover(dir: &Path, base: &Path, out: &mut Vec<BuiltModule>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            discover(&p, base, out);
        } else if ft.is_file() && p.extension().is_some_and(|x| x == "ko") {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let loc = p
                .parent()
                .and_then(|d| d.strip_prefix(base).ok())
                .map(|d| {
                    let s = d.to_string_lossy().into_owned();
                    if s.is_empty() {
                        s
                    } else {
                        format!("{s}/")
                    }
                })
                .unwrap_or_default();
            out.push(BuiltModule {
                spec: ModuleSpec {
                    built_name: name.clone(),
                    built_location: loc,
                    dest_name: name,
                    dest_location: "/updates".into(),
                    strip: true,
                },
                path: p,
            });
        }
    }
}

/// Runs one build. Blocks until the jobserver gives a slot for the make.
pub fn run(req: &BuildRequest<'_>, jobserver: &Jobserver) -> Result<BuildOutput, BuildError> {
    let r = req.recipe;
    let package = r.id();
    let kernel = req.kernel.release.clone();
    let io = |path: &Path| {
        let package = package.clone();
        let kernel = kernel.clone();
        let path = path.to_path_buf();
        move |source| BuildError::Io {
            package,
            kernel,
            path,
            source,
        }
    };
    let started = Instant::now();
    let build_dir = req.work.join(&r.name).join(&r.version).join("build");
    copy_tree(&r.source.dir, &build_dir).map_err(io(&build_dir))?;
    if let Some(parent) = req.log.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let log = File::create(req.log).map_err(io(req.log))?;
    let failed = |step: &str, status: String| BuildError::Failed {
        package: package.clone(),
        kernel: kernel.clone(),
        step: step.to_string(),
        status,
        first_error: first_error(req.log),
        log: req.log.to_path_buf(),
    };
    let shell = |script: &str, with_jobs: bool| -> Result<std::process::ExitStatus, BuildError> {
        let out = log.try_clone().map_err(io(req.log))?;
        let err = log.try_clone().map_err(io(req.log))?;
        let mut cmd = Command::new("bash");
        cmd.arg("--noprofile")
            .arg("--norc")
            .arg("-c")
            .arg(script)
            .current_dir(&build_dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("LC_ALL", "C")
            .env("kernelver", &req.kernel.release)
            .env("kernel_source_dir", &req.kernel.headers)
            .env("dkms_tree", req.work);
        for v in [
            "ARCH",
            "CROSS_COMPILE",
            "KBUILD_OUTPUT",
            "KERNELRELEASE",
            "MAKEFLAGS",
            "MAKELEVEL",
            "MFLAGS",
            "BASH_ENV",
            "ENV",
        ] {
            cmd.env_remove(v);
        }
        if let Some(cc) = &req.kernel.cc {
            cmd.env("CC", cc);
        }
        if !req.extra_symbols.is_empty() {
            let list: Vec<String> = req
                .extra_symbols
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            cmd.env("KBUILD_EXTRA_SYMBOLS", list.join(" "));
        }
        if with_jobs {
            jobserver.configure(&mut cmd);
        }
        if let Some(view) = &req.root_view {
            view.apply(&mut cmd);
        }
        cmd.status().map_err(io(Path::new("bash")))
    };
    for p in &r.patches {
        let patch = build_dir.join("patches").join(p);
        if !patch.is_file() {
            return Err(BuildError::Failed {
                package,
                kernel,
                step: format!("PATCH {p}"),
                status: "missing".into(),
                first_error: format!("{} does not exist", patch.display()),
                log: req.log.to_path_buf(),
            });
        }
        let status = shell(&format!("patch -p1 < ./patches/{}", shell_quote(p)), false)?;
        if !status.success() {
            return Err(failed(&format!("PATCH {p}"), status.to_string()));
        }
    }
    for (step, script) in [("PRE_BUILD", &r.pre_build)] {
        if let Some(s) = script {
            let status = shell(&format!("./{s}"), false)?;
            if !status.success() {
                return Err(failed(step, status.to_string()));
            }
        }
    }
    {
        // The make's free first job is one of the run's slots.
        let slot = jobserver.acquire().map_err(io(Path::new("jobserver")))?;
        let status = shell(&r.make, true)?;
        drop(slot);
        if !status.success() {
            return Err(failed("make", status.to_string()));
        }
    }
    if let Some(s) = &r.post_build {
        let status = shell(&format!("./{s}"), false)?;
        if !status.success() {
            return Err(failed("POST_BUILD", status.to_string()));
        }
    }
    let mut modules = Vec::new();
    if r.discover_modules {
        discover(&build_dir, &build_dir, &mut modules);
        if modules.is_empty() {
            return Err(failed("make", "produced no .ko file".into()));
        }
    } else {
        for spec in &r.modules {
            let path = build_dir
                .join(&spec.built_location)
                .join(format!("{}.ko", spec.built_name));
            if !path.is_file() {
                return Err(BuildError::MissingModule {
                    package,
                    kernel,
                    missing: path,
                    log: req.log.to_path_buf(),
                });
            }
            modules.push(BuiltModule {
                spec: spec.clone(),
                path,
            });
        }
    }
    // Kbuild writes Module.symvers next to the modules' Makefile (M=);
    // with several M= directories (jool) there are several.
    let symvers = find_symvers(&build_dir);
    Ok(BuildOutput {
        modules,
        symvers,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Every `Module.symvers` under the build directory, concatenated into one
/// at the build root (a dependent gets one file per package).
fn find_symvers(build_dir: &Path) -> Option<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![build_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if e.file_name() == "Module.symvers" {
                found.push(p);
            }
        }
    }
    found.sort();
    let mut all = Vec::new();
    for p in &found {
        if let Ok(b) = std::fs::read(p) {
            all.extend_from_slice(&b);
            if !all.ends_with(b"\n") && !all.is_empty() {
                all.push(b'\n');
            }
        }
    }
    let out = build_dir.join(".kmodkit-Module.symvers");
    std::fs::write(&out, all).ok()?;
    Some(out)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `strip -g` (DKMS `actual_build`; the kernel's `INSTALL_MOD_STRIP=1` is
/// `--strip-debug`, the same): debug sections go, symbols and the
/// sections the loader needs stay.
pub fn strip_debug(path: &Path) -> std::io::Result<()> {
    let out = Command::new("strip")
        .arg("-g")
        .arg(path)
        .stdin(Stdio::null())
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "strip -g {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
