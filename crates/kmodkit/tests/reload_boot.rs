//! `kmodkit reload` inside a qemu guest of the kernel the package was
//! built for: the kernel decides. One boot of a Debian 6.1 kernel with a
//! busybox initrd holding the kmodkit under test (with its libraries), jool's real builds for that
//! kernel (`scripts/oot-fixtures`) in `updates/jool/`, their in-tree
//! dependencies (`modprobe --show-depends`, kmod) and an index made by
//! kmod's depmod. /init reloads the package three times:
//! 1. nothing loaded yet: every module loads, OK;
//! 2. all loaded: unloaded users first, loaded again, OK;
//! 3. jool_common replaced by its build for another ABI (refused by this
//!    kernel, as `kmodkit abi check` confirms first): FAILED naming it with
//!    the kernel's own log line, the other modules still reported.

mod initrd_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use initrd_common::{busybox_image, fixture_root, kmodkit, require, run, Scratch};

const JOOL: [&str; 3] = ["jool_common", "jool", "jool_siit"];

/// jool's builds per kernel, from the oot fixture manifest.
fn jool_builds(kver: &str) -> Vec<(String, PathBuf)> {
    let manifest = kmodkit_fixtures::cache_dir().join("oot/manifest");
    let text = std::fs::read_to_string(&manifest)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", manifest.display()));
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[0] == kver && JOOL.contains(&f[1]))
                .then(|| (f[1].to_string(), PathBuf::from(f[2])))
        })
        .collect()
}

/// The kmodkit under test and what it needs to run in the guest: the
/// shared libraries and the dynamic loader `ldd` names, at the same paths
/// (what dracut's `inst_binary` does), so the guest runs the very binary
/// the other tests run (no second, static build).
fn install_kmodkit(tree: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_kmodkit"));
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy(bin, tree.join("bin/kmodkit")).unwrap();
    let out = Command::new("ldd").arg(bin).output().expect("run ldd");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let path = line
            .split("=>")
            .last()
            .and_then(|r| r.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        let Some(path) = path else { continue };
        let to = tree.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        // The file, not the symlink: the guest has no other copy.
        std::fs::copy(path, &to).unwrap();
    }
}

/// Module files (relative to the module directory) kmod's modprobe loads
/// before `name` on the fixture tree.
fn in_tree_closure(kver: &str, deps: &[&str]) -> Vec<String> {
    let dir = fixture_root().join("lib/modules").join(kver);
    let mut out = Vec::new();
    for d in deps {
        let text = run(Command::new("modprobe")
            .arg("-d")
            .arg(fixture_root())
            .args(["-S", kver, "--show-depends", d]));
        for l in String::from_utf8_lossy(&text).lines() {
            if let Some(p) = l
                .strip_prefix("insmod ")
                .and_then(|r| r.split_whitespace().next())
            {
                let rel = Path::new(p)
                    .strip_prefix(&dir)
                    .unwrap()
                    .display()
                    .to_string();
                if !out.contains(&rel) {
                    out.push(rel);
                }
            }
        }
    }
    out
}

/// The JSON documents /init printed between `KMK-RELOAD-BEGIN n` and
/// `KMK-RELOAD-END n rc=R`, with R.
fn reports(console: &str) -> Vec<(serde_json::Value, i32)> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        // The first marker may follow the firmware's terminal escapes on one line.
        if line.ends_with("KMK-RELOAD-BEGIN") {
            cur = Some(String::new());
        } else if let Some(rc) = line.strip_prefix("KMK-RELOAD-END rc=") {
            let doc = cur.take().unwrap_or_default();
            let v = serde_json::from_str(&doc)
                .unwrap_or_else(|e| panic!("report not JSON ({e}):\n{doc}"));
            out.push((v, rc.trim().parse().unwrap()));
        } else if let Some(c) = cur.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    out
}

fn step<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["report"]["loaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("{name} not reported: {report}"))
}

#[test]
fn reload_in_the_guest_reports_the_kernels_reasons() {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("modprobe", "kmod");
    require("depmod", "kmod");
    let kernels = kmodkit_fixtures::kernels();
    // The 6.1 kernel with jool builds, and another 6.1 build it refuses.
    let mut pick = None;
    for (k, series) in kernels.iter().filter(|(_, s)| s == "6.1") {
        let _ = series;
        if jool_builds(k).len() != 3 || !fixture_root().join(format!("boot/vmlinuz-{k}")).is_file()
        {
            continue;
        }
        for (o, _) in kernels.iter().filter(|(o, s)| s == "6.1" && o != k) {
            let Some((_, other)) = jool_builds(o).into_iter().find(|(n, _)| n == "jool_common")
            else {
                continue;
            };
            let refused = !kmodkit()
                .args(["abi", "check", "--root"])
                .arg(fixture_root())
                .args(["--kernel", k])
                .arg(&other)
                .output()
                .unwrap()
                .status
                .success();
            if refused {
                pick = Some((k.clone(), other));
                break;
            }
        }
        if pick.is_some() {
            break;
        }
    }
    let (kver, foreign) = pick.expect("a 6.1 kernel with jool builds and another ABI's build it refuses; rerun scripts/fixtures and scripts/oot-fixtures");

    let scratch = Scratch::new("reload-boot");
    // The package's tree: in-tree dependencies, jool in updates/, kmod's index.
    let tree = scratch.join("pkg.tree");
    let mdir = tree.join("lib/modules").join(&kver);
    let fixture_dir = fixture_root().join("lib/modules").join(&kver);
    for rel in in_tree_closure(&kver, &["x_tables", "nf_defrag_ipv4", "nf_defrag_ipv6"]) {
        let dst = mdir.join(&rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(fixture_dir.join(&rel), dst).unwrap();
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        std::fs::copy(fixture_dir.join(f), mdir.join(f)).unwrap();
    }
    std::fs::create_dir_all(mdir.join("updates/jool")).unwrap();
    for (name, path) in jool_builds(&kver) {
        std::fs::copy(path, mdir.join(format!("updates/jool/{name}.ko"))).unwrap();
    }
    run(Command::new("depmod").arg("-b").arg(&tree).arg(&kver));
    std::fs::create_dir_all(tree.join("foreign")).unwrap();
    std::fs::copy(&foreign, tree.join("foreign/jool_common.ko")).unwrap();
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    install_kmodkit(&tree);

    let reload = "/bin/kmodkit reload --json --module jool_common --module jool --module jool_siit";
    let init = format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
         for n in 1 2; do echo KMK-RELOAD-BEGIN; {reload}; echo \"KMK-RELOAD-END rc=$?\"; done\n\
         cp /foreign/jool_common.ko /lib/modules/{kver}/updates/jool/jool_common.ko\n\
         echo KMK-RELOAD-BEGIN; {reload}; echo \"KMK-RELOAD-END rc=$?\"\n\
         poweroff -f\n"
    );
    let base = busybox_image(
        &scratch,
        "base.img",
        &kver,
        &["sh", "mount", "cp", "poweroff"],
        &init,
    );
    let pkg = scratch.join("pkg.img");
    run(kmodkit()
        .args(["initrd", "create", "--compress", "gzip", "-o"])
        .arg(&pkg)
        .arg(&tree));
    // Two segments: the kernel unpacks them in order into one rootfs.
    let img = scratch.join("initrd.img");
    let mut bytes = std::fs::read(&base).unwrap();
    bytes.extend(std::fs::read(&pkg).unwrap());
    std::fs::write(&img, bytes).unwrap();

    let out = Command::new("timeout")
        .args([
            "--kill-after=5",
            "240",
            "nice",
            "-n",
            "10",
            "qemu-system-x86_64",
        ])
        .args([
            "-machine",
            "accel=tcg",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(fixture_root().join(format!("boot/vmlinuz-{kver}")))
        .arg("-initrd")
        .arg(&img)
        // loglevel=1: the kernel's messages stay in its log (where reload
        // reads them) instead of interleaving with the reports.
        .args(["-append", "console=ttyS0 panic=-1 loglevel=1"])
        .stdin(Stdio::null())
        .output()
        .expect("qemu runs");
    let console = String::from_utf8_lossy(&out.stdout).into_owned();
    // Kept for a failure's post-mortem (the scratch directory is removed).
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reload-boot-console.log");
    let _ = std::fs::write(&log, &console);
    let r = reports(&console);
    let tail: Vec<&str> = console.lines().rev().take(40).collect();
    assert_eq!(
        r.len(),
        3,
        "three reports expected; console tail:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );

    // 1 and 2: the good set loads; the second run unloaded it first.
    for (i, (doc, rc)) in r[..2].iter().enumerate() {
        assert_eq!(*rc, 0, "run {}: {doc}", i + 1);
        for m in JOOL {
            assert_eq!(step(doc, m)["ok"], true, "run {}: {m}: {doc}", i + 1);
        }
    }
    let unloaded: Vec<&str> = r[1].0["report"]["unloaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(unloaded.len(), 3, "{}", r[1].0);
    assert_eq!(
        unloaded.last(),
        Some(&"jool_common"),
        "users before jool_common: {unloaded:?}"
    );

    // 3: jool_common refused with the kernel's reason; the others reported.
    let (doc, rc) = &r[2];
    assert_eq!(*rc, 1, "{doc}");
    let common = step(doc, "jool_common");
    assert_eq!(common["ok"], false, "{doc}");
    let reason = common["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("jool_common: ")
            && [
                "disagrees about version of symbol",
                "version magic",
                "section size must match"
            ]
            .iter()
            .any(|m| reason.contains(m)),
        "not the kernel's reason: {reason}"
    );
    for m in ["jool", "jool_siit"] {
        let s = step(doc, m);
        assert!(
            s["ok"].is_boolean() && s["reason"].is_string() != s["ok"].as_bool().unwrap(),
            "{m}: {s}"
        );
    }
}
