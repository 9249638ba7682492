//! Shared helpers for tests that run against real Debian kernels fetched by
//! `scripts/fixtures` and compare with real oracles (kmod).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fetched kernel.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    /// "6.1" or "6.12".
    pub series: String,
}

/// The fixture root (`$KMODKIT_CACHE/root`) and its kernels. Panics with the
/// command to run when the fixtures are missing: a test that silently skips
/// would prove nothing.
pub struct Fixtures {
    pub root: PathBuf,
    pub kernels: Vec<Kernel>,
}

impl Fixtures {
    pub fn load() -> Fixtures {
        let root = kmodkit_fixtures::fixture_root();
        let list = root.join("kernels.list");
        let kernels: Vec<Kernel> = kmodkit_fixtures::kernels()
            .into_iter()
            .map(|(release, series)| Kernel { release, series })
            .collect();
        assert!(
            kernels.iter().any(|k| k.series == "6.1") && kernels.iter().any(|k| k.series == "6.12"),
            "{} must list a 6.1 and a 6.12 kernel; rerun scripts/fixtures",
            list.display()
        );
        Fixtures { root, kernels }
    }

    pub fn module_dir(&self, k: &Kernel) -> PathBuf {
        self.root.join("lib/modules").join(&k.release)
    }

    /// Every module file under `kernel/` of a tree, sorted.
    pub fn module_files(&self, k: &Kernel) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.module_dir(k).join("kernel"), &mut out);
        out.retain(|p| {
            let s = p.to_string_lossy();
            s.ends_with(".ko")
                || s.ends_with(".ko.xz")
                || s.ends_with(".ko.zst")
                || s.ends_with(".ko.gz")
        });
        out.sort();
        out
    }

    pub fn module_symvers(&self, k: &Kernel) -> PathBuf {
        self.root
            .join("usr/src")
            .join(format!("linux-headers-{}", k.release))
            .join("Module.symvers")
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// A scratch module tree for kernel `k` under `root`: `lib/modules/K/kernel`
/// links to the fixture tree, the metadata files depmod reads are copied
/// beside it. Returns the module directory.
pub fn link_tree(fx: &Fixtures, k: &Kernel, root: &Path) -> PathBuf {
    let dir = root.join("lib/modules").join(&k.release);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(fx.module_dir(k).join("kernel"), dir.join("kernel")).unwrap();
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        std::fs::copy(fx.module_dir(k).join(f), dir.join(f)).unwrap();
    }
    dir
}

/// [`link_tree`] plus the headers' `Module.symvers` where a distribution
/// puts it (`/usr/src/linux-headers-K/`), as on a node image.
pub fn link_tree_with_headers(fx: &Fixtures, k: &Kernel, root: &Path) -> PathBuf {
    let dir = link_tree(fx, k, root);
    let hdr = root
        .join("usr/src")
        .join(format!("linux-headers-{}", k.release));
    std::fs::create_dir_all(&hdr).unwrap();
    std::fs::copy(fx.module_symvers(k), hdr.join("Module.symvers")).unwrap();
    dir
}

pub fn kmodkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmodkit"))
}

/// Runs a command and returns stdout, panicking with stderr on failure to
/// start. The exit status is returned too: kmod and kmodkit must agree on it.
pub fn output(cmd: &mut Command) -> (Vec<u8>, bool) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.stdout, out.status.success())
}

/// Asserts that an oracle tool exists, naming the package to install.
pub fn require_tool(tool: &str, package: &str) {
    kmodkit_fixtures::require_tool(tool, package)
}
