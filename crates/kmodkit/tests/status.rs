//! `kmodkit status` on a root after a kernel update, against kmod's
//! `modprobe -d ROOT -S K --show-depends NAME` (the file it would insmod)
//! and against `kmodkit abi check` for acceptance.
//!
//! The root (real Debian kernels from `scripts/fixtures`, RHEL's
//! `search updates extra built-in weak-updates`): jool's real builds for
//! kernel B (`scripts/oot-fixtures`) in `B/extra/jool/`, plus a copy of
//! B's in-tree `dummy.ko` in `B/extra/` (a vendor module replacing an
//! in-tree one, as the RDMA vendor packages ship); weak-updates links for
//! S, a kernel with B's CRCs, made by `kmodkit weak-modules`; nothing for
//! O, a kernel with another ABI. On S the in-tree dummy outranks the
//! weak link: shadowed.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, Fixtures, Kernel};

const JOOL: [&str; 3] = ["jool_common", "jool", "jool_siit"];
const SHADOWED: &str = "dummy";

fn symvers_map(fx: &Fixtures, k: &Kernel) -> BTreeMap<String, String> {
    std::fs::read_to_string(fx.module_symvers(k))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() > 2).then(|| (f[1].to_string(), f[0].to_string()))
        })
        .collect()
}

/// jool's built modules for each kernel, from the oot fixture manifest.
fn jool_builds() -> BTreeMap<String, BTreeMap<String, PathBuf>> {
    let manifest = kmodkit_fixtures::cache_dir().join("oot/manifest");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", manifest.display()));
    let mut out: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 && JOOL.contains(&f[1]) {
            out.entry(f[0].to_string())
                .or_default()
                .insert(f[1].to_string(), PathBuf::from(f[2]));
        }
    }
    out
}

/// (B with jool builds, S with B's CRCs, O with another module_layout).
fn pick(fx: &Fixtures) -> (Kernel, Kernel, Kernel) {
    let builds = jool_builds();
    let sixone: Vec<&Kernel> = fx.kernels.iter().filter(|k| k.series == "6.1").collect();
    for b in sixone
        .iter()
        .filter(|k| builds.get(&k.release).is_some_and(|m| m.len() == 3))
    {
        let mb = symvers_map(fx, b);
        let same = sixone
            .iter()
            .find(|k| k.release != b.release && symvers_map(fx, k) == mb);
        let other = sixone
            .iter()
            .find(|k| symvers_map(fx, k).get("module_layout") != mb.get("module_layout"));
        if let (Some(s), Some(o)) = (same, other) {
            return ((*b).clone(), (*s).clone(), (*o).clone());
        }
    }
    panic!("need a 6.1 kernel with jool builds, one with its CRCs and one with another ABI; rerun scripts/fixtures and scripts/oot-fixtures");
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_root(fx: &Fixtures, b: &Kernel, s: &Kernel, o: &Kernel, root: &Path) {
    for k in [b, s, o] {
        common::link_tree_with_headers(fx, k, root);
    }
    std::fs::create_dir_all(root.join("etc/depmod.d")).unwrap();
    std::fs::write(
        root.join("etc/depmod.d/dist.conf"),
        "search updates extra built-in weak-updates\n",
    )
    .unwrap();
    let extra = root.join("lib/modules").join(&b.release).join("extra");
    std::fs::create_dir_all(extra.join("jool")).unwrap();
    for (name, path) in &jool_builds()[&b.release] {
        std::fs::copy(path, extra.join("jool").join(format!("{name}.ko"))).unwrap();
    }
    std::fs::copy(
        fx.module_dir(b).join("kernel/drivers/net/dummy.ko"),
        extra.join("dummy.ko"),
    )
    .unwrap();
    for k in [b, s, o] {
        run_ok(kmodkit().args(["depmod", "-b"]).arg(root).arg(&k.release));
    }
    run_ok(
        kmodkit()
            .args(["weak-modules", "--basedir"])
            .arg(root)
            .args(["--add-kernel", &s.release]),
    );
    // The oracle's own index, with the root's depmod.d.
    for k in [b, s, o] {
        run_ok(
            Command::new("depmod")
                .arg("-b")
                .arg(root)
                .arg("-C")
                .arg(root.join("etc/depmod.d"))
                .arg(&k.release),
        );
    }
}

/// The file kmod's modprobe would insmod for `name`, `None` when it finds
/// no such module.
fn modprobe_file(root: &Path, k: &Kernel, name: &str) -> Option<PathBuf> {
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(root)
        .args(["-S", &k.release, "--show-depends", name])
        .output()
        .expect("modprobe (kmod)");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last()?;
    last.split_whitespace().nth(1).map(PathBuf::from)
}

/// `kmodkit abi check --json` verdicts (path → compatible) for the loader
/// alone: placed in `updates/`, which outranks everything, so depmod.d
/// priorities (modprobe's part, checked against modprobe) play no role.
fn abi_check(root: &Path, k: &Kernel, files: &[PathBuf]) -> BTreeMap<PathBuf, bool> {
    let out = kmodkit()
        .args(["abi", "check", "--json", "--root"])
        .arg(root)
        .args(["--kernel", &k.release, "--placement", "updates"])
        .args(files)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                PathBuf::from(v["path"].as_str().unwrap()),
                v["compatible"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn status_agrees_with_modprobe_and_shows_the_shadowing_in_tree_module() {
    common::require_tool("modprobe", "kmod");
    common::require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let (b, s, o) = pick(&fx);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    build_root(&fx, &b, &s, &o, root);

    let mut cmd = kmodkit();
    cmd.args(["status", "--json", "--root"]).arg(root);
    for m in JOOL.iter().chain([&SHADOWED]) {
        cmd.args(["--module", m]);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kernels = doc["kernels"].as_array().unwrap();
    assert_eq!(kernels.len(), 3);

    let mut seen = 0;
    for ks in kernels {
        let release = ks["kernel"].as_str().unwrap();
        let k = [&b, &s, &o]
            .into_iter()
            .find(|k| k.release == release)
            .unwrap();
        let mut winners = Vec::new();
        for m in ks["modules"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let loads = &m["loads"];
            let ours = loads["path"].as_str().map(PathBuf::from);
            assert_eq!(
                ours,
                modprobe_file(root, k, name),
                "{release} {name}: kmodkit status and modprobe --show-depends disagree: {m}"
            );
            if matches!(loads["kind"].as_str(), Some("vendor" | "weak_link")) {
                winners.push((
                    name.to_string(),
                    ours.unwrap(),
                    m["accepted"].as_bool().unwrap(),
                ));
            }
            seen += 1;
        }
        // Acceptance as `abi check` judges the same files together.
        if !winners.is_empty() {
            let files: Vec<PathBuf> = winners.iter().map(|w| w.1.clone()).collect();
            let verdicts = abi_check(root, k, &files);
            for (name, path, accepted) in &winners {
                if let Some(v) = verdicts.get(path) {
                    assert_eq!(
                        v, accepted,
                        "{release} {name}: status and abi check disagree"
                    );
                }
            }
        }
    }
    assert_eq!(seen, 12);

    let find = |k: &Kernel, name: &str| -> serde_json::Value {
        kernels
            .iter()
            .find(|ks| ks["kernel"] == k.release.as_str())
            .and_then(|ks| {
                ks["modules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == name)
            })
            .cloned()
            .unwrap()
    };
    for m in JOOL {
        let on_b = find(&b, m);
        assert_eq!(
            (on_b["loads"]["kind"].as_str(), on_b["action"].as_str()),
            (Some("vendor"), Some("none")),
            "{on_b}"
        );
        let on_s = find(&s, m);
        assert_eq!(on_s["loads"]["kind"], "weak_link", "{on_s}");
        assert_eq!(
            (on_s["accepted"].as_bool(), on_s["action"].as_str()),
            (Some(true), Some("none")),
            "{on_s}"
        );
        let on_o = find(&o, m);
        assert_eq!(
            (on_o["loads"]["kind"].as_str(), on_o["action"].as_str()),
            (Some("nothing"), Some("rebuild")),
            "{on_o}"
        );
        assert!(
            on_o["why"]
                .as_str()
                .unwrap()
                .contains("disagrees about version of symbol"),
            "{on_o}"
        );
    }
    let d = find(&s, SHADOWED);
    assert_eq!(d["loads"]["kind"], "in_tree", "{d}");
    assert_eq!(d["action"], "rebuild", "{d}");
    assert!(
        d["shadowed"][0]
            .as_str()
            .unwrap()
            .ends_with("weak-updates/dummy.ko")
            && d["why"]
                .as_str()
                .unwrap()
                .contains("shadowed by the in-tree"),
        "{d}"
    );
    assert_eq!(find(&b, SHADOWED)["loads"]["kind"], "vendor");

    // Only B: nothing to do, exit 0; the module names from jool's dkms.conf.
    let conf = kmodkit_fixtures::cache_dir().join("oot/src/jool-dkms/usr/src/jool-dkms-4.1.9");
    let out = kmodkit()
        .args(["status", "--root"])
        .arg(root)
        .args(["--kernel", &b.release])
        .arg(&conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for m in JOOL {
        assert!(
            text.lines().any(|l| l.split_whitespace().nth(1) == Some(m)),
            "{m} missing:\n{text}"
        );
    }
}

#[test]
fn no_module_names_is_a_usage_error() {
    let out = kmodkit()
        .args(["status", "--root", "/nonexistent"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
