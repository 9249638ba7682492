//! Where `scripts/fixtures` keeps the real kernels the tests use:
//! `${KMODKIT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kmodkit}/root`, with
//! `kernels.list` naming each kernel and its series ("6.1", "6.12").
//! Missing fixtures are a test failure with the command to run, never a
//! silent skip.

pub mod hostile;

use std::path::PathBuf;

/// The cache directory (`$KMODKIT_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KMODKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("kmodkit")
        })
}

/// The fixture root (`<cache>/root`).
pub fn fixture_root() -> PathBuf {
    cache_dir().join("root")
}

/// (kernel release, series) for every fetched kernel; panics with the
/// command to run when the fixtures are missing.
pub fn kernels() -> Vec<(String, String)> {
    let list = fixture_root().join("kernels.list");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "real-kernel fixtures missing ({}: {e}); run scripts/fixtures first (the README's test command does)",
            list.display()
        )
    });
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// The newest kernel of a series ("6.1", "6.12") in `kernels.list`, by
/// version order (6.1.0-57 after 6.1.0-9): the rebuild's "newest 6.1 ABI
/// in the archive", which scripts/fixtures follows without a pin.
pub fn newest_kernel(series: &str) -> String {
    kernels()
        .into_iter()
        .filter(|(_, s)| s == series)
        .map(|(k, _)| k)
        .max_by(|a, b| version_key(a).cmp(&version_key(b)))
        .unwrap_or_else(|| panic!("kernels.list names no {series} kernel; rerun scripts/fixtures"))
}

/// Numeric runs compared as numbers, the rest as text (what `sort -V`
/// does for kernel releases).
fn version_key(release: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut rest = release;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let (num, tail) = rest.split_at(digits);
        let text_len = tail.len() - tail.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
        let (text, tail) = tail.split_at(text_len);
        out.push((num.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    out
}

/// Where `scripts/oot-fixtures` keeps out-of-tree sources, builds and
/// Kbuild environments (`<cache>/oot`).
pub fn oot_dir() -> PathBuf {
    cache_dir().join("oot")
}

/// The `.ko` files scripts/oot-fixtures built from one Debian `*-dkms`
/// package for one kernel (`oot/<kernel>/<package>/`), sorted; panics
/// naming the script when they are missing.
pub fn oot_modules(kernel: &str, package: &str) -> Vec<PathBuf> {
    let dir = oot_dir().join(kernel).join(package);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{}: no modules; run scripts/oot-fixtures",
        dir.display()
    );
    files
}

/// Lines of a list that `scripts/oot-fixtures` writes under [`oot_dir`];
/// panics with the command to run when it is missing.
fn oot_list(name: &str) -> Vec<Vec<String>> {
    let list = oot_dir().join(name);
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "out-of-tree fixtures missing ({}: {e}); run scripts/oot-fixtures first (scripts/test does)",
            list.display()
        )
    });
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|f| f.len() >= 2)
        .collect()
}

/// (kernel release, headers directory) of every unpacked Kbuild
/// environment (`oot/kbuild.list`): the ABI tests' bases (6.1.0-53, -55)
/// and the rebuild targets (6.1.0-56, the newest 6.1 ABI, 6.12). The
/// headers directory is what DKMS calls `kernel_source_dir`:
/// `make -C <dir> M=<src>` builds against it.
pub fn kbuild_environments() -> Vec<(String, PathBuf)> {
    oot_list("kbuild.list")
        .into_iter()
        .map(|mut f| (f.swap_remove(0), PathBuf::from(&f[0])))
        .collect()
}

/// The headers directory of one kernel's Kbuild environment.
pub fn kbuild_environment(release: &str) -> PathBuf {
    kbuild_environments()
        .into_iter()
        .find(|(k, _)| k == release)
        .map(|(_, dir)| dir)
        .unwrap_or_else(|| {
            panic!("no Kbuild environment for {release} in oot/kbuild.list; add it to scripts/oot-fixtures' targets")
        })
}

/// Source directories (`oot/src/<deb>/usr/src/NAME-VER`, each with its
/// `dkms.conf`) of the Debian `*-dkms` packages the ABI tests build
/// (openvpn-dco, jool, v4l2loopback, acpi-call).
pub fn dkms_sources() -> Vec<PathBuf> {
    sources_of_set("abi")
}

/// Source directories (`oot/src/<deb>-trixie/usr/src/NAME-VER`) of Debian
/// trixie's versions of the same packages, for the `kmodkit rebuild` tests:
/// each builds for 6.1 and for 6.12, which bookworm's jool, openvpn-dco and
/// v4l2loopback do not (scripts/oot-fixtures' header says what was checked).
/// Unpacked only; nothing builds them ahead of the tests.
pub fn rebuild_sources() -> Vec<PathBuf> {
    sources_of_set("rebuild")
}

/// Source directories of Debian `*-dkms` packages whose modules carry the
/// names of in-tree modules, as the RDMA vendor stacks' do: digimend-dkms
/// (hid-kye, hid-uclogic, hid-viewsonic). It builds for 6.1 but not for
/// 6.12 (6.12 made `report_fixup` return `const __u8 *`).
pub fn in_tree_replacing_sources() -> Vec<PathBuf> {
    sources_of_set("replaces")
}

fn sources_of_set(set: &str) -> Vec<PathBuf> {
    oot_list("sources.list")
        .into_iter()
        .filter(|f| f.get(2).map(String::as_str) == Some(set))
        .map(|f| PathBuf::from(&f[1]))
        .collect()
}

/// Asserts that an oracle tool is on PATH, naming the package to install.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "oracle '{tool}' not installed: apt-get install {package} (scripts/fixtures does)"
    );
}

/// The static kmodkit-init as it ships — `+crt-static` (glibc), release,
/// symbols stripped — built once per test process with the cargo that runs
/// the tests, in its own target directory `<cache>/init-target` (the shared
/// target dir keeps its dynamic build; a second one avoids rebuilding
/// either on every switch). The first build takes ~1.5 min on 2 cores.
pub fn static_kmodkit_init() -> &'static std::path::Path {
    use std::process::Command;
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = cache_dir().join("init-target");
        let manifest =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmodkit-init/Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "kmodkit-init",
                "--bin",
                "kmodkit-init",
            ])
            .args(["--target", "x86_64-unknown-linux-gnu", "--manifest-path"])
            .arg(&manifest)
            .env("CARGO_TARGET_DIR", &target_dir)
            .env(
                "RUSTFLAGS",
                "-C target-feature=+crt-static -C strip=symbols",
            )
            .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("cannot run cargo");
        assert!(status.success(), "static build of kmodkit-init failed");
        let binary = target_dir.join("x86_64-unknown-linux-gnu/release/kmodkit-init");
        if let Ok(out) = Command::new("file").arg(&binary).output() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("statically linked") || text.contains("static-pie"),
                "{text}"
            );
        }
        binary
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_is_numeric() {
        assert!(version_key("6.1.0-57-amd64") > version_key("6.1.0-9-amd64"));
        assert!(version_key("6.12.117+deb12-amd64") > version_key("6.1.0-57-amd64"));
    }

    /// The lists scripts/oot-fixtures wrote name real trees: each Kbuild
    /// environment has the files `make -C` needs, each source a dkms.conf,
    /// and the newest 6.1 kernel has an environment.
    #[test]
    fn oot_lists_name_real_trees() {
        let envs = kbuild_environments();
        for (k, dir) in &envs {
            for f in ["Makefile", "Module.symvers", ".config", "scripts"] {
                assert!(dir.join(f).exists(), "{k}: {} has no {f}", dir.display());
            }
        }
        let newest = newest_kernel("6.1");
        assert!(
            envs.iter().any(|(k, _)| *k == newest),
            "no Kbuild environment for {newest}"
        );
        let sources: Vec<_> = dkms_sources()
            .into_iter()
            .chain(in_tree_replacing_sources())
            .collect();
        assert!(!sources.is_empty());
        for s in sources {
            assert!(
                s.join("dkms.conf").is_file(),
                "{}: no dkms.conf",
                s.display()
            );
        }
    }
}
