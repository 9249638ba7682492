//! Reloading a package's modules on the running kernel: the manual's last
//! step ("verify that the driver can be reloaded"), with the kernel's own
//! reason for every module it refuses.
//!
//! Order, as `modprobe -r` and `modprobe` would do it by hand:
//! 1. unload the package's loaded modules and every module using them
//!    (their holders, `/sys/module/NAME/holders`, recursively), users
//!    first: the kernel refuses to remove a module with holders
//!    (`delete_module` → EWOULDBLOCK, `kernel/module/main.c`);
//! 2. load the package's modules in dependency order, each after the
//!    modules it depends on (the installed index's `modules.dep`, the
//!    closure kmod's depmod writes, so in-tree dependencies come first as
//!    modprobe loads them), then reload the users that were unloaded.
//!
//! Every step is tried and reported; a refusal does not stop the others
//! (a module needing a refused one is then refused by the kernel too,
//! with its own reason). The kernel interface is the [`Kernel`] trait so
//! the planning is tested without a kernel; [`SystemKernel`] is the real
//! one (delete_module(2), finit_module(2)/init_module(2), /proc/modules,
//! /sys/module, /dev/kmsg).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A module the kernel has loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedModule {
    pub name: String,
    /// Modules using this one.
    pub holders: Vec<String>,
}

/// What the kernel answered to one load or unload.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The errno text when the call failed.
    pub error: Option<String>,
    /// Kernel log lines logged during the call.
    pub log: Vec<String>,
}

/// The running kernel, as far as reloading needs it.
pub trait Kernel {
    /// The loaded modules, newest first (`/proc/modules` order).
    fn loaded(&mut self) -> Result<Vec<LoadedModule>, ReloadError>;
    fn unload(&mut self, name: &str) -> Outcome;
    fn load(&mut self, path: &Path) -> Outcome;
}

/// Where a module comes from in the installed index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub path: PathBuf,
    /// Every module it needs (modules.dep lists the whole closure).
    pub deps: Vec<String>,
}

/// The installed index of the running kernel's module directory.
pub trait DependencyIndex {
    fn entry(&self, name: &str) -> Result<Option<IndexEntry>, ReloadError>;
}

/// `modules.dep.bin` of a module directory, read as modprobe reads it.
pub struct InstalledIndex {
    dir: kmodkit_index::lookup::ModuleDirectory,
}

impl InstalledIndex {
    /// `module_dir` is `/lib/modules/$(uname -r)` (given by the caller).
    pub fn new(module_dir: &Path) -> InstalledIndex {
        InstalledIndex {
            dir: kmodkit_index::lookup::ModuleDirectory::new(module_dir.display().to_string()),
        }
    }
}

impl DependencyIndex for InstalledIndex {
    fn entry(&self, name: &str) -> Result<Option<IndexEntry>, ReloadError> {
        let line = self.dir.dep_line(name).map_err(|e| ReloadError::Index {
            dir: PathBuf::from(self.dir.dir()),
            detail: e.to_string(),
        })?;
        let Some(line) = line else {
            return Ok(None);
        };
        let join = |rel: &str| {
            if rel.starts_with('/') {
                PathBuf::from(rel)
            } else {
                Path::new(self.dir.dir()).join(rel)
            }
        };
        let (file, deps) = line.split_once(':').unwrap_or((line.as_str(), ""));
        Ok(Some(IndexEntry {
            path: join(file),
            deps: deps
                .split_whitespace()
                .filter_map(|d| kmodkit_index::name::module_name_from_path(Path::new(d)))
                .collect(),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{}: cannot read the module index ({detail}); run depmod for the running kernel", dir.display())]
    Index { dir: PathBuf, detail: String },
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("no module names given for the package; name its modules or its dkms.conf")]
    NoModules,
}

/// Why a module is in the load list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One of the package's modules.
    Package,
    /// A module a package module or a user needs that is not loaded.
    Dependency,
    /// A module that used the package and was unloaded for the reload.
    User,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadStep {
    pub name: String,
    pub role: Role,
    /// `None` when the index has no such module.
    pub path: Option<PathBuf>,
}

/// What a reload will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// In unload order (users first).
    pub unload: Vec<String>,
    /// In load order (dependencies first).
    pub load: Vec<LoadStep>,
}

/// Plans the reload of `package` (module names) given what is loaded.
pub fn plan(
    package: &[String],
    loaded: &[LoadedModule],
    index: &dyn DependencyIndex,
) -> Result<Plan, ReloadError> {
    if package.is_empty() {
        return Err(ReloadError::NoModules);
    }
    let mut names: Vec<String> = Vec::new();
    for p in package {
        let n = p.replace('-', "_");
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let by_name: BTreeMap<&str, &LoadedModule> =
        loaded.iter().map(|m| (m.name.as_str(), m)).collect();

    // The package's loaded modules and, recursively, their holders.
    let mut doomed: BTreeSet<String> = BTreeSet::new();
    let mut queue: Vec<String> = names
        .iter()
        .filter(|n| by_name.contains_key(n.as_str()))
        .cloned()
        .collect();
    while let Some(n) = queue.pop() {
        if !doomed.insert(n.clone()) {
            continue;
        }
        if let Some(m) = by_name.get(n.as_str()) {
            queue.extend(m.holders.iter().cloned());
        }
    }
    // Users first: a module goes once none of its holders is still
    // loaded; among those, /proc/modules order (newest first).
    let mut unload = Vec::new();
    let mut left: Vec<&str> = loaded
        .iter()
        .map(|m| m.name.as_str())
        .filter(|n| doomed.contains(*n))
        .collect();
    // Holders not in /proc/modules (a race) cannot be unloaded by us.
    left.extend(
        doomed
            .iter()
            .map(String::as_str)
            .filter(|n| !by_name.contains_key(n)),
    );
    while !left.is_empty() {
        let pos = left
            .iter()
            .position(|n| {
                by_name
                    .get(n)
                    .is_none_or(|m| m.holders.iter().all(|h| !left.contains(&h.as_str())))
            })
            // A holder cycle cannot happen in the kernel; take the first.
            .unwrap_or(0);
        unload.push(left.remove(pos).to_string());
    }

    // What to load: the package, then its unloaded users, each after the
    // modules it needs that will not be loaded then (a depth-first walk
    // of modules.dep, so the package's own order is kept where the
    // dependencies allow).
    let still_loaded = |n: &str| by_name.contains_key(n) && !doomed.contains(n);
    let mut wanted: Vec<String> = names.clone();
    wanted.extend(unload.iter().filter(|u| !names.contains(u)).cloned());
    let mut load: Vec<LoadStep> = Vec::new();
    let mut visited: BTreeSet<String> = BTreeSet::new();
    // An explicit stack: (module, its entry, next dependency to visit).
    for w in wanted {
        if !visited.insert(w.clone()) {
            continue;
        }
        let mut stack: Vec<(String, Option<IndexEntry>, usize)> =
            vec![(w.clone(), index.entry(&w)?, 0)];
        while let Some((n, e, i)) = stack.pop() {
            let next = e.as_ref().and_then(|e| e.deps.get(i)).cloned();
            match next {
                Some(d) => {
                    stack.push((n, e, i + 1));
                    if !still_loaded(&d) && visited.insert(d.clone()) {
                        let de = index.entry(&d)?;
                        stack.push((d, de, 0));
                    }
                }
                None => {
                    let role = if names.contains(&n) {
                        Role::Package
                    } else if unload.contains(&n) {
                        Role::User
                    } else {
                        Role::Dependency
                    };
                    load.push(LoadStep {
                        path: e.map(|e| e.path),
                        name: n,
                        role,
                    });
                }
            }
        }
    }
    Ok(Plan { unload, load })
}

/// One reported step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepResult {
    pub name: String,
    pub ok: bool,
    /// The kernel's reason: its log line about the module when it logged
    /// one, else the errno text.
    pub reason: Option<String>,
    pub path: Option<PathBuf>,
    pub role: Option<Role>,
    /// Everything the kernel logged during the call.
    pub log: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub unloaded: Vec<StepResult>,
    pub loaded: Vec<StepResult>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.unloaded.iter().chain(&self.loaded).all(|s| s.ok)
    }
}

/// The kernel's line about `name` (it prefixes them with `name: `), or
/// the first line, or the errno text.
fn reason(name: &str, o: &Outcome) -> Option<String> {
    let error = o.error.as_ref()?;
    let prefix = format!("{name}: ");
    let line = o
        .log
        .iter()
        .find(|l| l.starts_with(&prefix))
        .or_else(|| o.log.first());
    Some(match line {
        Some(l) => format!("{l} ({error})"),
        None => error.clone(),
    })
}

/// Runs `plan` on `kernel`; every step is tried.
pub fn execute(plan: &Plan, kernel: &mut dyn Kernel) -> Report {
    let mut unloaded = Vec::new();
    let mut stuck: BTreeSet<String> = BTreeSet::new();
    for n in &plan.unload {
        let o = kernel.unload(n);
        if o.error.is_some() {
            stuck.insert(n.clone());
        }
        unloaded.push(StepResult {
            name: n.clone(),
            ok: o.error.is_none(),
            reason: reason(n, &o),
            path: None,
            role: None,
            log: o.log,
        });
    }
    let mut loaded = Vec::new();
    for s in &plan.load {
        let (ok, reason_text, log) = match (&s.path, stuck.contains(&s.name)) {
            (_, true) => (
                false,
                Some("still loaded: its unload failed, so it was not reloaded".to_string()),
                Vec::new(),
            ),
            (None, false) => (
                false,
                Some(format!(
                    "{} is not in the installed index (modules.dep); run depmod",
                    s.name
                )),
                Vec::new(),
            ),
            (Some(p), false) => {
                let o = kernel.load(p);
                (o.error.is_none(), reason(&s.name, &o), o.log)
            }
        };
        loaded.push(StepResult {
            name: s.name.clone(),
            ok,
            reason: reason_text,
            path: s.path.clone(),
            role: Some(s.role),
            log,
        });
    }
    Report { unloaded, loaded }
}

/// The running kernel through its system calls and files; the paths are
/// given by the caller (normally `/proc/modules`, `/sys/module`,
/// `/dev/kmsg`).
pub struct SystemKernel {
    pub proc_modules: PathBuf,
    pub sys_module: PathBuf,
    pub kmsg: PathBuf,
}

impl SystemKernel {
    /// Opens the kernel log positioned at its end, so reading it after a
    /// call returns what the call logged (`Documentation/ABI/testing/
    /// dev-kmsg`: SEEK_END moves to the end of the buffer). `None` when the
    /// log cannot be read (then no reasons beyond the errno).
    fn kmsg_at_end(&self) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.kmsg)
            .ok()?;
        // SAFETY: lseek on a file descriptor we own.
        unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_END) };
        Some(f)
    }

    /// The records logged since [`Self::kmsg_at_end`]: one record per
    /// read(2), `PRIO,SEQ,USEC,FLAGS;TEXT\n` then ` KEY=VALUE` lines.
    fn drain(f: Option<std::fs::File>) -> Vec<String> {
        use std::io::Read;
        let Some(mut f) = f else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = String::from_utf8_lossy(&buf[..n]);
                    let text = rec.split_once(';').map_or(&*rec, |(_, t)| t);
                    let line = text.split('\n').next().unwrap_or("");
                    out.push(line.to_string());
                }
                // EPIPE: records were overwritten; the next read goes on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(_) => break, // EAGAIN: nothing more
            }
        }
        out
    }
}

fn errno_text() -> String {
    std::io::Error::last_os_error().to_string()
}

impl Kernel for SystemKernel {
    fn loaded(&mut self) -> Result<Vec<LoadedModule>, ReloadError> {
        let text =
            std::fs::read_to_string(&self.proc_modules).map_err(|cause| ReloadError::Io {
                path: self.proc_modules.clone(),
                cause,
            })?;
        // `NAME SIZE REFCOUNT USERS STATE ADDR` (kernel/module/procfs.c);
        // USERS is `a,b,` or `-`. The holders directory also lists users
        // that do not take a reference in USERS' way; both are merged.
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?.to_string();
                let users = f.nth(2).unwrap_or("-");
                let mut holders: Vec<String> = users
                    .split(',')
                    .filter(|u| !u.is_empty() && *u != "-")
                    .map(str::to_string)
                    .collect();
                if let Ok(rd) = std::fs::read_dir(self.sys_module.join(&name).join("holders")) {
                    for e in rd.flatten() {
                        let h = e.file_name().to_string_lossy().into_owned();
                        if !holders.contains(&h) {
                            holders.push(h);
                        }
                    }
                }
                Some(LoadedModule { name, holders })
            })
            .collect())
    }

    fn unload(&mut self, name: &str) -> Outcome {
        let Ok(cname) = std::ffi::CString::new(name) else {
            return Outcome {
                error: Some("module name holds a NUL byte".to_string()),
                log: Vec::new(),
            };
        };
        let log = self.kmsg_at_end();
        // O_NONBLOCK as rmmod: fail with EWOULDBLOCK while in use instead
        // of waiting for the last reference.
        // SAFETY: a NUL-terminated name and flags, as delete_module(2) takes.
        let rc =
            unsafe { libc::syscall(libc::SYS_delete_module, cname.as_ptr(), libc::O_NONBLOCK) };
        let error = (rc != 0).then(errno_text);
        Outcome {
            error,
            log: Self::drain(log),
        }
    }

    fn load(&mut self, path: &Path) -> Outcome {
        use std::os::unix::io::AsRawFd;
        let fail = |e: String| Outcome {
            error: Some(e),
            log: Vec::new(),
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        };
        let params = c"";
        let mut head = [0u8; 6];
        let n = {
            use std::os::unix::fs::FileExt;
            file.read_at(&mut head, 0).unwrap_or(0)
        };
        let format = kmodkit_module::compression::Compression::detect(&head[..n]);
        if format == kmodkit_module::compression::Compression::None {
            let log = self.kmsg_at_end();
            // SAFETY: an open descriptor and a NUL-terminated parameter string.
            let rc = unsafe {
                libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0)
            };
            let error = (rc != 0).then(errno_text);
            return Outcome {
                error,
                log: Self::drain(log),
            };
        }
        // Compressed: expanded here and passed with init_module(2), as
        // kmod does for kernels without CONFIG_MODULE_DECOMPRESS (Debian's
        // 6.1 has none).
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        };
        let image = match kmodkit_module::compression::decompress(
            format,
            &bytes,
            kmodkit_module::compression::DEFAULT_LIMIT,
        ) {
            Ok(i) => i,
            Err(e) => return fail(format!("{}: {e}", path.display())),
        };
        let log = self.kmsg_at_end();
        // SAFETY: a buffer with its length and a NUL-terminated string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len() as libc::c_ulong,
                params.as_ptr(),
            )
        };
        let error = (rc != 0).then(errno_text);
        Outcome {
            error,
            log: Self::drain(log),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index given as `name: dep dep` lines.
    struct Lines(BTreeMap<String, IndexEntry>);

    impl Lines {
        fn new(lines: &[&str]) -> Lines {
            Lines(
                lines
                    .iter()
                    .map(|l| {
                        let (n, d) = l.split_once(':').unwrap();
                        (
                            n.to_string(),
                            IndexEntry {
                                path: PathBuf::from(format!("/m/{n}.ko")),
                                deps: d.split_whitespace().map(str::to_string).collect(),
                            },
                        )
                    })
                    .collect(),
            )
        }
    }

    impl DependencyIndex for Lines {
        fn entry(&self, name: &str) -> Result<Option<IndexEntry>, ReloadError> {
            Ok(self.0.get(name).cloned())
        }
    }

    fn loaded(spec: &[(&str, &[&str])]) -> Vec<LoadedModule> {
        spec.iter()
            .map(|(n, h)| LoadedModule {
                name: n.to_string(),
                holders: h.iter().map(|s| s.to_string()).collect(),
            })
            .collect()
    }

    fn names(p: &Plan) -> Vec<&str> {
        p.load.iter().map(|s| s.name.as_str()).collect()
    }

    /// Like jool: jool and jool_siit use jool_common, which is loaded
    /// with a user from outside the package (ext).
    fn jool_index() -> Lines {
        Lines::new(&[
            "jool_common:",
            "jool: x_tables jool_common nf_defrag_ipv6 nf_defrag_ipv4",
            "jool_siit: x_tables jool_common",
            "x_tables:",
            "nf_defrag_ipv6:",
            "nf_defrag_ipv4:",
            "ext: jool_common",
        ])
    }

    #[test]
    fn users_go_first_and_come_back_after_the_package() {
        let l = loaded(&[
            ("ext", &[]),
            ("jool_siit", &[]),
            ("jool_common", &["jool_siit", "ext"]),
            ("x_tables", &["jool_siit"]),
        ]);
        let pkg = ["jool_common", "jool", "jool_siit"].map(String::from);
        let p = plan(&pkg, &l, &jool_index()).unwrap();
        assert_eq!(p.unload, ["ext", "jool_siit", "jool_common"]);
        // x_tables stays loaded; jool's other dependencies are loaded first.
        assert_eq!(
            names(&p),
            [
                "jool_common",
                "nf_defrag_ipv6",
                "nf_defrag_ipv4",
                "jool",
                "jool_siit",
                "ext"
            ]
        );
        for (i, s) in p.load.iter().enumerate() {
            for d in &jool_index().0[&s.name].deps {
                if let Some(j) = p.load.iter().position(|t| &t.name == d) {
                    assert!(j < i, "{} before its dependency {d}", s.name);
                }
            }
        }
        assert_eq!(p.load[4].role, Role::Package);
        assert_eq!(p.load[5].role, Role::User);
        assert_eq!(p.load[1].role, Role::Dependency);
    }

    #[test]
    fn nothing_loaded_unloads_nothing() {
        let pkg = ["jool-common".to_string()];
        let p = plan(&pkg, &[], &jool_index()).unwrap();
        assert!(p.unload.is_empty());
        assert_eq!(names(&p), ["jool_common"]);
    }

    /// A kernel that refuses one module and records the calls.
    struct Fake {
        refuse: &'static str,
        calls: Vec<String>,
    }

    impl Kernel for Fake {
        fn loaded(&mut self) -> Result<Vec<LoadedModule>, ReloadError> {
            Ok(Vec::new())
        }
        fn unload(&mut self, name: &str) -> Outcome {
            self.calls.push(format!("rm {name}"));
            Outcome::default()
        }
        fn load(&mut self, path: &Path) -> Outcome {
            let n = path.file_stem().unwrap().to_string_lossy().into_owned();
            self.calls.push(format!("ins {n}"));
            if n == self.refuse {
                Outcome {
                    error: Some("Invalid argument (os error 22)".into()),
                    log: vec![
                        "other: noise".into(),
                        format!("{n}: disagrees about version of symbol module_layout"),
                    ],
                }
            } else {
                Outcome::default()
            }
        }
    }

    #[test]
    fn a_refusal_is_reported_with_the_kernels_line_and_the_rest_goes_on() {
        let pkg = ["jool_common", "jool_siit", "missing"].map(String::from);
        let p = plan(&pkg, &[], &jool_index()).unwrap();
        let mut k = Fake {
            refuse: "jool_common",
            calls: Vec::new(),
        };
        let r = execute(&p, &mut k);
        assert!(!r.all_ok());
        let common = r.loaded.iter().find(|s| s.name == "jool_common").unwrap();
        assert_eq!(
            common.reason.as_deref(),
            Some("jool_common: disagrees about version of symbol module_layout (Invalid argument (os error 22))")
        );
        assert!(r.loaded.iter().find(|s| s.name == "jool_siit").unwrap().ok);
        let missing = r.loaded.iter().find(|s| s.name == "missing").unwrap();
        assert!(
            !missing.ok
                && missing
                    .reason
                    .as_deref()
                    .unwrap()
                    .contains("not in the installed index")
        );
        assert_eq!(
            k.calls,
            ["ins jool_common", "ins x_tables", "ins jool_siit"]
        );
    }
}
