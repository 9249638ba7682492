//! `kmodkit initrd add-drivers` and `kmodkit initrd modules` on the real
//! images of scripts/initrd-fixtures, checked against kmod (modprobe
//! --show-depends for what a name means and in which order modules load,
//! depmod for the image's regenerated index) and GNU cpio (reading the
//! result). The qemu boots are in add_drivers_boot.rs.

mod initrd_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use initrd_common::{
    busybox_image, find_image, fixture_root, image, kmodkit, real_images, require, run,
    segment_cpio, segments, sh, RealImage, Scratch,
};

/// The manual's list (seed 002), verbatim.
const SEED_LIST: &[&str] = &[
    "ib_addr",
    "ib_core",
    "ib_mad",
    "ib_sa",
    "ib_cm",
    "ib_uverbs",
    "ib_ucm",
    "ib_umad",
    "iw_cm",
    "rdma_cm",
    "rdma_ucm",
    "mlx4_core",
    "mlx4_ib",
    "ib_mthca",
    "ipoib_helper",
    "ib_ipoib",
];

/// What kmod's modprobe says about a name in the fixture root.
#[derive(Debug, PartialEq, Eq)]
enum Kmod {
    NotFound,
    Builtin,
    /// Module names in insmod order (dependencies first).
    Insmods(Vec<String>),
}

fn modprobe_show_depends(kver: &str, name: &str) -> Kmod {
    let mut cmd = Command::new("modprobe");
    cmd.arg("-d").arg(fixture_root());
    // The configuration kmodkit reads: the fixture root's modprobe.d
    // directories (a missing one keeps kmod off the host's).
    for d in [
        "etc/modprobe.d",
        "run/modprobe.d",
        "usr/local/lib/modprobe.d",
        "usr/lib/modprobe.d",
        "lib/modprobe.d",
    ] {
        cmd.arg("-C").arg(fixture_root().join(d));
    }
    let out = cmd
        .args(["-S", kver, "--show-depends", name])
        .stderr(Stdio::piped())
        .output()
        .expect("modprobe runs");
    if !out.status.success() {
        return Kmod::NotFound;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if text.lines().all(|l| l.starts_with("builtin ")) && !text.is_empty() {
        return Kmod::Builtin;
    }
    Kmod::Insmods(
        text.lines()
            .filter_map(|l| l.strip_prefix("insmod "))
            .map(|p| module_name(p.split_whitespace().next().unwrap()))
            .collect(),
    )
}

fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap();
    base.split('.').next().unwrap().replace('-', "_")
}

fn copy_image(img: &RealImage, scratch: &Scratch) -> PathBuf {
    let dst = scratch.join("initrd.img");
    std::fs::copy(&img.path, &dst).unwrap();
    dst
}

fn add_drivers_json(args: &[&str], image: &Path) -> serde_json::Value {
    let out = run(kmodkit()
        .args(["initrd", "add-drivers", "--json", "--root"])
        .arg(fixture_root())
        .arg(image)
        .args(args));
    serde_json::from_slice(&out).unwrap()
}

fn plan_modules(report: &serde_json::Value) -> Vec<String> {
    report["plan"]["resolution"]["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// The modules the image loads explicitly, in order.
fn load_list(report: &serde_json::Value) -> Vec<String> {
    report["plan"]["load_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Every name of the manual's list is either a module (added with kmod's
/// dependency closure, in an order kmod agrees with), built in, or a
/// legacy name that is explained; kmod decides which.
#[test]
fn seed_list_given_verbatim_is_explained_and_resolved() {
    let img = image("initramfs-tools", "gzip");
    let scratch = Scratch::new("seed");
    let path = copy_image(&img, &scratch);
    let mut args: Vec<&str> = vec!["--dry-run"];
    args.extend(SEED_LIST);
    args.push("ipv6");
    let report = add_drivers_json(&args, &path);
    let notes = report["plan"]["resolution"]["notes"].as_array().unwrap();
    let note_of = |name: &str| notes.iter().find(|n| n["name"] == name);
    let modules = plan_modules(&report);
    let position: BTreeMap<&str, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let mut legacy_seen = 0;
    // Pairs (dependency, module) whose order was compared with kmod's.
    let mut ordered_pairs = 0;
    for name in SEED_LIST.iter().chain(&["ipv6"]) {
        match modprobe_show_depends(&img.kver, name) {
            Kmod::NotFound => {
                let n = note_of(name).unwrap_or_else(|| {
                    panic!("{name}: kmod does not know it, kmodkit says nothing")
                });
                assert_eq!(n["kind"], "legacy", "{name}: {n}");
                assert!(!n["fate"].as_str().unwrap().is_empty());
                if let Some(r) = n["replacement"].as_str() {
                    if modprobe_show_depends(&img.kver, r) != Kmod::NotFound {
                        assert!(
                            position.contains_key(r),
                            "{name}: replacement {r} not added"
                        );
                    }
                }
                legacy_seen += 1;
            }
            Kmod::Builtin => {
                let n = note_of(name)
                    .unwrap_or_else(|| panic!("{name}: built in, kmodkit says nothing"));
                assert_eq!(n["kind"], "built_in");
            }
            Kmod::Insmods(order) => {
                // kmod's whole closure is in the plan, each module after
                // everything kmod inserts before it.
                for (i, m) in order.iter().enumerate() {
                    let p = position
                        .get(m.as_str())
                        .unwrap_or_else(|| panic!("{name}: {m} missing from {modules:?}"));
                    for before in &order[..i] {
                        let deps_of_m = modprobe_show_depends(&img.kver, m);
                        if let Kmod::Insmods(d) = deps_of_m {
                            if d.contains(before) {
                                assert!(
                                    position[before.as_str()] < *p,
                                    "{before} must load before {m}"
                                );
                                ordered_pairs += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        legacy_seen >= 4,
        "this kernel still has most old names? {legacy_seen}"
    );
    assert!(
        ordered_pairs > 0,
        "no dependency order was compared with kmod's"
    );
    // And nothing else: the plan is exactly the union of kmod's closures of
    // what it loads explicitly.
    let load_list = load_list(&report);
    let mut union = BTreeSet::new();
    for m in &load_list {
        match modprobe_show_depends(&img.kver, m) {
            Kmod::Insmods(o) => union.extend(o),
            other => panic!("{m} is loaded but kmod says {other:?}"),
        }
    }
    assert_eq!(union, modules.iter().cloned().collect::<BTreeSet<_>>());
    // Hidden relations come with an explanation.
    let why_of = |name: &str| {
        report["plan"]["resolution"]["modules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["why"].clone())
    };
    let en = why_of("mlx4_en").expect("mlx4_en comes with mlx4_core");
    assert_eq!(en["kind"], "companion");
    assert!(en["why"].as_str().unwrap().contains("request_module"));
    // Dry run: the image is untouched and no backup was made.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&img.path).unwrap()
    );
    assert!(!scratch.join("initrd.img.bak").exists());
}

#[test]
fn unknown_names_and_parameters_are_errors_with_the_real_choices() {
    let img = image("initramfs-tools", "gzip");
    let scratch = Scratch::new("unknown");
    let path = copy_image(&img, &scratch);
    let fail = |args: &[&str]| {
        let out = kmodkit()
            .args(["initrd", "add-drivers", "--root"])
            .arg(fixture_root())
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fail(&["mlx4_eth"]);
    assert!(
        err.contains("no module named mlx4_eth") && err.contains("mlx4_en"),
        "{err}"
    );
    // The parameters kmod's modinfo lists for ib_ipoib.
    let parms = run(Command::new("modinfo")
        .arg("-b")
        .arg(fixture_root())
        .args(["-k", &img.kver, "-F", "parm", "ib_ipoib"]));
    let names: Vec<String> = String::from_utf8_lossy(&parms)
        .lines()
        .filter_map(|l| l.split(':').next().map(str::to_string))
        .collect();
    assert!(!names.is_empty());
    assert!(
        !names.contains(&"lro".to_string()),
        "ib_ipoib has lro again: change the test's bad parameter"
    );
    let err = fail(&["ib_ipoib", "--option", "ib_ipoib:lro=0"]);
    for n in &names {
        assert!(err.contains(n.as_str()), "{n} not listed: {err}");
    }
    // An IPoIB client identifier cannot be sent by klibc's ipconfig.
    let err = fail(&[
        "ib_ipoib",
        "--net",
        "dhcp",
        "--iface",
        "00:02:c9:03:00:00:10:39",
        "--client-id",
        "flexboot",
    ]);
    assert!(
        err.contains("ipconfig") && err.contains("InfiniBand"),
        "{err}"
    );
    // Nothing was written by any of them.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&img.path).unwrap()
    );
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 1);
}

#[test]
fn dracut_image_without_network_module_says_so() {
    // scripts/initrd-fixtures builds this one with every network stack
    // omitted; the guard knows each stack's own files, so a fixture that
    // took one in fails here instead of passing for the wrong reason.
    let img = find_image("dracut-zstd.img");
    let facts = run(kmodkit().args(["initrd", "ls"]).arg(&img.path));
    let listing = String::from_utf8_lossy(&facts);
    let stack_files = [
        "sbin/dhclient",
        "sbin/ifup",
        "sbin/NetworkManager",
        "nm-initrd-generator",
        "systemd/systemd-networkd",
        "systemd/systemd-network-generator",
        "bin/ipconfig",
    ];
    if let Some(l) = listing
        .lines()
        .find(|l| stack_files.iter().any(|f| l.ends_with(f)))
    {
        panic!(
            "{} has a network stack ({l}); scripts/initrd-fixtures must omit them all",
            img.path.display()
        );
    }
    let out = kmodkit()
        .args(["initrd", "add-drivers", "--dry-run", "--root"])
        .arg(fixture_root())
        .arg(&img.path)
        .args(["virtio_net", "--net", "dhcp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no network stack") && err.contains("--add network"),
        "{err}"
    );
}

/// dracut's modsign module (in whenever keyctl is installed, as on RHEL;
/// scripts/initrd-fixtures adds it to every dracut image) keeps the
/// module-signing certificates in lib/modules/keys. That directory is no
/// kernel's: add-drivers finds the image's one kernel and, in both modes,
/// writes an image where GNU cpio still finds the directory.
#[test]
fn dracut_modsign_keys_directory_is_carried_not_taken_for_a_kernel() {
    require("cpio", "cpio");
    let img = find_image("dracut-net.img");
    let scratch = Scratch::new("modsign");
    let before = scratch.join("before");
    unpack_with_gnu_cpio(&img.path, &before, &scratch);
    assert!(
        before.join("usr/lib/modules/keys").is_dir(),
        "{} has no usr/lib/modules/keys: scripts/initrd-fixtures adds dracut's modsign module",
        img.path.display()
    );
    for mode in ["--append", "--rebuild"] {
        let path = copy_image(&img, &scratch);
        let report = add_drivers_json(&[mode, "--no-backup", "rdma_rxe"], &path);
        assert_eq!(
            report["plan"]["image_kernel"],
            img.kver.as_str(),
            "{report:#}"
        );
        let after = scratch.join(&format!("after{mode}"));
        unpack_with_gnu_cpio(&path, &after, &scratch);
        assert!(
            after.join("usr/lib/modules/keys").is_dir(),
            "{mode} lost usr/lib/modules/keys"
        );
    }
}

/// Unpacks every segment in order with GNU cpio (later files replace
/// earlier ones, as in the kernel).
fn unpack_with_gnu_cpio(image: &Path, dir: &Path, scratch: &Scratch) {
    std::fs::create_dir_all(dir).unwrap();
    for seg in segments(image) {
        let cpio = scratch.join(&format!("seg{}.cpio", seg.index));
        segment_cpio(image, &seg, &cpio);
        sh(&format!(
            "cd '{}' && cpio -idmu --quiet --no-absolute-filenames < '{}'",
            dir.display(),
            cpio.display()
        ));
        std::fs::remove_file(&cpio).unwrap();
    }
}

/// The index files in an unpacked image, then kmod's depmod run on the
/// same tree: they must be equal.
fn assert_index_matches_kmod(tree: &Path, kver: &str) {
    let dir = tree.join("usr/lib/modules").join(kver);
    let dir = if dir.is_dir() {
        dir
    } else {
        tree.join("lib/modules").join(kver)
    };
    let files = [
        "modules.dep",
        "modules.dep.bin",
        "modules.alias",
        "modules.alias.bin",
        "modules.softdep",
        "modules.symbols",
        "modules.symbols.bin",
        "modules.builtin.bin",
        "modules.builtin.alias.bin",
        "modules.devname",
    ];
    let ours: Vec<Option<Vec<u8>>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).ok())
        .collect();
    run(Command::new("depmod").arg("-b").arg(tree).arg(kver));
    for (f, mine) in files.iter().zip(ours) {
        let kmod = std::fs::read(dir.join(f)).ok();
        assert!(
            mine == kmod,
            "{f} in the image differs from kmod's depmod on the unpacked image"
        );
    }
}

/// Append and rebuild on the initramfs-tools gzip image: GNU cpio reads
/// the result, the original bytes stay (append), the image's index is what
/// kmod's depmod makes of the new module set, and `initrd modules` reports
/// the load order kmod's modprobe computes inside the image.
#[test]
fn append_and_rebuild_give_an_image_kmod_agrees_with() {
    require("depmod", "kmod");
    require("cpio", "cpio");
    let img = image("initramfs-tools", "gzip");
    // ohci_pci for softdeps: ehci_pci from modules.softdep, ehci_hcd from
    // the image's own modprobe.d (kmod's aliases.conf).
    let drivers: Vec<&str> = initrd_common::ISSUE_DRIVERS
        .iter()
        .copied()
        .chain(["ohci_pci"])
        .collect();
    for mode in ["--append", "--rebuild"] {
        let scratch = Scratch::new("mode");
        let path = copy_image(&img, &scratch);
        let mut args = vec![
            mode,
            "--net",
            "dhcp",
            "--option",
            "ib_ipoib:send_queue_size=256",
        ];
        args.extend(&drivers);
        let report = add_drivers_json(&args, &path);
        assert_eq!(report["written"]["mode"], mode.trim_start_matches("--"));
        let original = std::fs::read(&img.path).unwrap();
        let backup = std::fs::read(scratch.join("initrd.img.bak")).expect("backup kept");
        assert_eq!(backup, original, "{mode}: backup is not the original");
        let new = std::fs::read(&path).unwrap();
        let segs = segments(&path);
        if mode == "--append" {
            assert!(
                new.starts_with(&original),
                "append changed the original bytes"
            );
            assert_eq!(segs.len(), 2);
        } else {
            assert_eq!(segs.len(), 1);
            assert_eq!(segs[0].compression, "gzip");
        }
        let tree = scratch.join("tree");
        unpack_with_gnu_cpio(&path, &tree, &scratch);
        let conf = std::fs::read_to_string(tree.join("conf/modules")).unwrap();
        for &d in &drivers {
            assert!(
                conf.lines().any(|l| l == d),
                "{mode}: {d} not in conf/modules:\n{conf}"
            );
        }
        assert!(
            std::fs::read_to_string(tree.join("etc/modprobe.d/kmodkit.conf"))
                .unwrap()
                .contains("options ib_ipoib send_queue_size=256")
        );
        assert!(
            std::fs::read_to_string(tree.join("conf/conf.d/kmodkit-network"))
                .unwrap()
                .contains("IP=dhcp")
        );
        let order = std::fs::read_to_string(tree.join("scripts/init-premount/ORDER")).unwrap();
        assert!(order.contains("/scripts/init-premount/kmodkit-network"));
        // The lib -> usr/lib symlink of the image survived.
        assert!(std::fs::symlink_metadata(tree.join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        let carried: BTreeSet<String> =
            String::from_utf8_lossy(&sh(&format!("find '{}' -name '*.ko*'", tree.display())))
                .lines()
                .map(module_name)
                .collect();
        for m in plan_modules(&report) {
            assert!(carried.contains(&m), "{mode}: {m} not in the image");
        }
        // kmod inside the image: the load order of `initrd modules` is what
        // modprobe --show-depends gives for each loaded name, in turn.
        let mods: serde_json::Value = serde_json::from_slice(&run(kmodkit()
            .args(["initrd", "modules", "--json"])
            .arg(&path)))
        .unwrap();
        let mut expected: Vec<String> = Vec::new();
        for l in mods["loads"].as_array().unwrap() {
            let m = l["module"].as_str().unwrap();
            // kmod with the image's own index and configuration.
            let mut modprobe = Command::new("modprobe");
            modprobe.arg("-d").arg(&tree);
            for d in ["etc/modprobe.d", "usr/lib/modprobe.d"] {
                modprobe.arg("-C").arg(tree.join(d));
            }
            let out = run(modprobe.args(["-S", &img.kver, "--show-depends", m]));
            for line in String::from_utf8_lossy(&out).lines() {
                if let Some(p) = line.strip_prefix("insmod ") {
                    let n = module_name(p.split_whitespace().next().unwrap());
                    if !expected.contains(&n) {
                        expected.push(n);
                    }
                }
            }
        }
        let got: Vec<String> = mods["load_order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            got, expected,
            "{mode}: load order differs from modprobe's in the image"
        );
        assert_index_matches_kmod(&tree, &img.kver);
    }
}

/// Killed while writing, at each step: the image is the original, byte for
/// byte; the next run cleans up and succeeds.
#[test]
fn killed_mid_write_leaves_the_original() {
    let img = image("initramfs-tools", "gzip");
    let scratch = Scratch::new("fault");
    let path = copy_image(&img, &scratch);
    let original = std::fs::read(&path).unwrap();
    // kmodkit's own scratch space, to see that killed runs' leftovers go.
    let tmp = Scratch::new("fault-tmp");
    for point in ["add-drivers-write", "add-drivers-written"] {
        for mode in ["--append", "--rebuild"] {
            let out = kmodkit()
                .env("TMPDIR", tmp.path())
                .env("KMODKIT_FAULT", format!("{point}:1"))
                .args(["initrd", "add-drivers", "--no-backup", mode, "--root"])
                .arg(fixture_root())
                .arg(&path)
                .arg("rdma_rxe")
                .output()
                .unwrap();
            assert!(
                !out.status.success(),
                "{point} {mode}: the fault point was not reached"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                original,
                "{point} {mode}: image changed"
            );
            // The original still reads completely.
            run(kmodkit().args(["initrd", "examine"]).arg(&path));
        }
    }
    assert!(
        std::fs::read_dir(scratch.path()).unwrap().count() > 1,
        "the killed runs left no temporary file?"
    );
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().count() > 0,
        "the killed runs left no scratch directory?"
    );
    run(kmodkit()
        .env("TMPDIR", tmp.path())
        .args(["initrd", "add-drivers", "--no-backup", "--root"])
        .arg(fixture_root())
        .arg(&path)
        .arg("rdma_rxe"));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "scratch directories of killed runs left behind"
    );
    let left: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        vec!["initrd.img".to_string()],
        "temporary files left behind"
    );
    assert!(std::fs::read(&path).unwrap().starts_with(&original));
}

/// Modules of another kernel: the ABI guard refuses what the image's kernel
/// would refuse, with the kernel's reason, and writes nothing; kmod's
/// `modprobe --dump-modversions` and the image kernel's Module.symvers
/// confirm each CRC it names. With --force they go to updates/kmodkit/.
#[test]
fn modules_of_another_abi_are_refused_with_the_reason() {
    let img = image("initramfs-tools", "gzip");
    let other = kmodkit_fixtures::kernels()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k != &img.kver && k.starts_with("6.1."))
        .expect("a second 6.1 kernel");
    let scratch = Scratch::new("abi");
    let path = copy_image(&img, &scratch);
    let out = kmodkit()
        .args(["initrd", "add-drivers", "--source-kernel", &other, "--root"])
        .arg(fixture_root())
        .arg(&path)
        .arg("mlx4_en")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let symvers = std::fs::read_to_string(
        fixture_root().join(format!("usr/src/linux-headers-{}/Module.symvers", img.kver)),
    )
    .unwrap();
    if out.status.success() {
        panic!(
            "{other} -> {}: nothing refused; the fixture kernels have the same ABI? {err}",
            img.kver
        );
    }
    assert!(err.contains("would refuse"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        std::fs::read(&img.path).unwrap()
    );
    // Each "disagrees about version of symbol S: module expects A, P has B"
    // checked against kmod and Module.symvers.
    let mut checked = 0;
    for line in err
        .lines()
        .filter(|l| l.contains("disagrees about version of symbol"))
    {
        let (module_part, _) = line.trim().split_once(' ').unwrap();
        let file = line.split('(').nth(1).unwrap().split(')').next().unwrap();
        let dump = String::from_utf8_lossy(&run(
            Command::new("modprobe").args(["--dump-modversions", file])
        ))
        .into_owned();
        for reason in line
            .split("; ")
            .filter(|r| r.contains("disagrees about version of symbol"))
        {
            let sym = reason
                .split("symbol ")
                .nth(1)
                .unwrap()
                .split(':')
                .next()
                .unwrap();
            let expects = reason
                .split("module expects ")
                .nth(1)
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            let has = reason.rsplit(" has ").next().unwrap().trim();
            let want = u64::from_str_radix(expects.trim_start_matches("0x"), 16).unwrap();
            let got = u64::from_str_radix(has.trim_start_matches("0x"), 16).unwrap();
            assert!(
                dump.lines().any(|l| l.ends_with(&format!("\t{sym}"))
                    && u64::from_str_radix(
                        l.split('\t').next().unwrap().trim_start_matches("0x"),
                        16
                    )
                    .unwrap()
                        == want),
                "{module_part}: kmod does not show {sym} at {expects} in {file}"
            );
            if let Some(row) = symvers.lines().find(|l| l.split('\t').nth(1) == Some(sym)) {
                let crc = u64::from_str_radix(
                    row.split('\t').next().unwrap().trim_start_matches("0x"),
                    16,
                )
                .unwrap();
                assert_eq!(
                    crc, got,
                    "{sym}: Module.symvers of {} says {crc:#x}",
                    img.kver
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no CRC reason to check in: {err}");
    // Forced: written, in updates/kmodkit/ of the image's own kernel.
    run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--force",
            "--no-backup",
            "--source-kernel",
            &other,
            "--root",
        ])
        .arg(fixture_root())
        .arg(&path)
        .arg("mlx4_en"));
    let listing =
        String::from_utf8_lossy(&run(kmodkit().args(["initrd", "ls"]).arg(&path))).into_owned();
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(&format!("modules/{}/updates/kmodkit/mlx4_en.ko", img.kver))),
        "forced module not in updates/kmodkit"
    );
}

/// A plain /init image (busybox, made here): the hook line goes into
/// /init, the load script insmods every module after its dependencies
/// (kmod's order), and the kernel loads them (qemu).
#[test]
fn plain_init_image_gets_a_hook_and_loads_in_kmods_order() {
    let img = image("initramfs-tools", "gzip");
    let scratch = Scratch::new("plain");
    let path = busybox_image(
        &scratch,
        "plain.img",
        &img.kver,
        &["sh", "cat", "mount", "echo", "grep", "poweroff"],
        "#!/bin/sh\nmount -t proc proc /proc\necho KMKPLAIN-BEGIN\ncat /proc/modules\necho KMKPLAIN-END\necho o > /proc/sysrq-trigger\n",
    );
    let drivers = ["rdma_rxe", "virtio_net"];
    let report: serde_json::Value = serde_json::from_slice(&run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--json",
            "--kernel",
            &img.kver,
            "--root",
        ])
        .arg(fixture_root())
        .arg(&path)
        .args(drivers)))
    .unwrap();
    let load_list = load_list(&report);
    assert!(
        load_list.len() > drivers.len(),
        "rdma_rxe brings the RDMA upper layers"
    );
    let init = String::from_utf8_lossy(&run(kmodkit()
        .args(["initrd", "cat"])
        .arg(&path)
        .arg("init")))
    .into_owned();
    assert_eq!(
        init.lines().nth(1),
        Some("/etc/kmodkit/load-drivers.sh # kmodkit initrd add-drivers")
    );
    // The script's insmod order is kmod's, module by module.
    let script = String::from_utf8_lossy(&run(kmodkit()
        .args(["initrd", "cat"])
        .arg(&path)
        .arg("etc/kmodkit/load-drivers.sh")))
    .into_owned();
    let got: Vec<String> = script
        .lines()
        .filter_map(|l| l.split(" insmod ").nth(1))
        .map(|rest| module_name(rest.split_whitespace().next().unwrap()))
        .collect();
    let mut want: Vec<String> = Vec::new();
    for d in &load_list {
        if let Kmod::Insmods(o) = modprobe_show_depends(&img.kver, d) {
            for m in o {
                if !want.contains(&m) {
                    want.push(m);
                }
            }
        }
    }
    assert!(!want.is_empty(), "kmod inserts none of {load_list:?}");
    assert_eq!(got, want);
    // `initrd modules` reads kmodkit's own loader: every module of the
    // script, named by it.
    let modules: serde_json::Value = serde_json::from_slice(&run(kmodkit()
        .args(["initrd", "modules", "--json"])
        .arg(&path)))
    .unwrap();
    let loads: Vec<(String, String)> = modules["loads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["module"].as_str().unwrap().to_string(),
                l["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let from_loader: Vec<&String> = loads
        .iter()
        .filter(|(_, src)| src == "etc/kmodkit/load-drivers.sh")
        .map(|(m, _)| m)
        .collect();
    assert_eq!(from_loader, want.iter().collect::<Vec<_>>(), "{modules}");
    // Booted: the kernel has them all.
    require("qemu-system-x86_64", "qemu-system-x86");
    let kernel = fixture_root().join(format!("boot/vmlinuz-{}", img.kver));
    let out = Command::new("timeout")
        .args([
            "180",
            "qemu-system-x86_64",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(&kernel)
        .arg("-initrd")
        .arg(&path)
        .args(["-append", "console=ttyS0 panic=-1"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    let begin = log
        .find("KMKPLAIN-BEGIN")
        .unwrap_or_else(|| panic!("no marker: {log}"));
    let loaded: BTreeSet<String> = log[begin..]
        .lines()
        .skip(1)
        .take_while(|l| !l.contains("KMKPLAIN-END"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    for m in &want {
        assert!(loaded.contains(m), "{m} not loaded: {loaded:?}");
    }
}

/// IPoIB on dracut: ip= and rd.neednet=1 in etc/cmdline.d, and dhclient
/// (the image's own client, run with -cf /etc/dhclient.conf) sends the
/// FlexBoot-style client identifier of the manual's example GUID instead
/// of its `= hardware` default.
#[test]
fn ipoib_client_id_goes_into_the_images_dhclient_conf() {
    let img = real_images()
        .into_iter()
        .find(|i| i.path.file_name().is_some_and(|n| n == "dracut-net.img"))
        .expect("dracut-net.img; run scripts/initrd-fixtures");
    let scratch = Scratch::new("clientid");
    let path = copy_image(&img, &scratch);
    run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--no-backup",
            "--net",
            "dhcp",
            "--iface",
            "00:02:c9:03:00:00:10:39",
            "--client-id",
            "flexboot",
            "--root",
        ])
        .arg(fixture_root())
        .arg(&path)
        .args(["mlx4_ib", "ib_ipoib"]));
    let cat = |p: &str| {
        String::from_utf8_lossy(&run(kmodkit().args(["initrd", "cat"]).arg(&path).arg(p)))
            .into_owned()
    };
    // The port is found by its GUID: a udev rule names it bootib, and both
    // ip= and dhclient's interface block name that interface.
    let rule = cat("etc/udev/rules.d/70-kmodkit-bootib.rules");
    assert!(
        rule.lines().any(|l| l.starts_with("SUBSYSTEM==\"net\"")
            && l.contains("ATTR{type}==\"32\"")
            && l.contains("ATTR{address}==\"?*:00:02:c9:03:00:00:10:39\"")
            && l.ends_with("NAME=\"bootib\"")),
        "{rule}"
    );
    let conf = cat("etc/dhclient.conf");
    let block: Vec<&str> = conf
        .lines()
        .skip_while(|l| *l != "interface \"bootib\" {")
        .take_while(|l| *l != "}")
        .collect();
    assert_eq!(
        block,
        vec![
            "interface \"bootib\" {",
            "    send dhcp-client-identifier ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:00:10:39;"
        ],
        "{conf}"
    );
    let cmdline = cat("etc/cmdline.d/50-kmodkit-net.conf");
    assert_eq!(cmdline.trim(), "ip=bootib:dhcp rd.neednet=1");
    let drivers = cat("etc/cmdline.d/50-kmodkit-drivers.conf");
    assert!(
        drivers.starts_with("rd.driver.pre=") && drivers.contains("ib_ipoib"),
        "{drivers}"
    );
}

/// Firmware the modules name (kmod's `modinfo -F firmware`) is added from
/// ROOT/lib/firmware, compressed variants too; what is missing is a
/// warning; --no-firmware adds none.
#[test]
fn firmware_named_by_the_modules_is_added() {
    let img = image("initramfs-tools", "gzip");
    let scratch = Scratch::new("firmware");
    let root = scratch.join("root");
    std::fs::create_dir_all(root.join("lib/modules")).unwrap();
    std::os::unix::fs::symlink(
        fixture_root().join("lib/modules").join(&img.kver),
        root.join("lib/modules").join(&img.kver),
    )
    .unwrap();
    let names = String::from_utf8_lossy(&run(Command::new("modinfo")
        .arg("-b")
        .arg(fixture_root())
        .args(["-k", &img.kver, "-F", "firmware", "e100"])))
    .lines()
    .map(str::to_string)
    .collect::<Vec<_>>();
    assert!(names.len() >= 2, "e100 names its microcode: {names:?}");
    // The first as is, the second xz-compressed, the rest missing.
    let fw = root.join("lib/firmware");
    std::fs::create_dir_all(fw.join(Path::new(&names[0]).parent().unwrap())).unwrap();
    std::fs::write(fw.join(&names[0]), b"plain firmware").unwrap();
    std::fs::write(fw.join(format!("{}.xz", names[1])), b"xz firmware").unwrap();
    let path = copy_image(&img, &scratch);
    let out = kmodkit()
        .args(["initrd", "add-drivers", "--no-backup", "--root"])
        .arg(&root)
        .arg(&path)
        .arg("e100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    for missing in &names[2..] {
        assert!(
            err.contains(missing.as_str()),
            "no warning for {missing}: {err}"
        );
    }
    let cat = |p: String| run(kmodkit().args(["initrd", "cat"]).arg(&path).arg(p));
    assert_eq!(
        cat(format!("usr/lib/firmware/{}", names[0])),
        b"plain firmware"
    );
    assert_eq!(
        cat(format!("usr/lib/firmware/{}.xz", names[1])),
        b"xz firmware"
    );
    // --no-firmware: none.
    let path2 = scratch.join("second.img");
    std::fs::copy(&img.path, &path2).unwrap();
    run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--no-backup",
            "--no-firmware",
            "--root",
        ])
        .arg(&root)
        .arg(&path2)
        .arg("e100"));
    let listing = String::from_utf8_lossy(&run(kmodkit()
        .args(["initrd", "ls", "--segment", "2"])
        .arg(&path2)))
    .into_owned();
    assert!(!listing.contains("firmware"), "{listing}");
}

/// For single drivers, the plan's order is exactly kmod's
/// `modprobe --show-depends` order, softdeps (given by alias, on the
/// module and on its dependencies) included: every module with a softdep
/// in the tree plus a sample of network drivers.
#[test]
fn order_equals_modprobe_show_depends_including_softdeps() {
    let img = image("initramfs-tools", "gzip");
    let softdep = std::fs::read_to_string(
        fixture_root()
            .join("lib/modules")
            .join(&img.kver)
            .join("modules.softdep"),
    )
    .unwrap();
    let mut names: Vec<String> = softdep
        .lines()
        .filter(|l| l.starts_with("softdep ") && (l.contains("pre:") || l.contains("post:")))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    names.dedup();
    assert!(
        names.iter().any(|n| n == "ext4"),
        "ext4's crc32c softdep is the case to cover"
    );
    names.extend(["mlx5_ib", "bnxt_re", "ib_srp", "nvme_rdma", "e1000e"].map(String::from));
    // Names kmod resolves to module files (built-ins have no order).
    let mut compared = Vec::new();
    let mut skipped = Vec::new();
    for name in names {
        let Kmod::Insmods(want) = modprobe_show_depends(&img.kver, &name) else {
            skipped.push(name);
            continue;
        };
        let mut dedup: Vec<String> = Vec::new();
        for m in want {
            if !dedup.contains(&m) {
                dedup.push(m);
            }
        }
        let report = add_drivers_json(&["--dry-run", "--no-companions", &name], &img.path);
        assert_eq!(plan_modules(&report), dedup, "{name}");
        compared.push(name);
    }
    // ext4 (crc32c softdep) and the five drivers are modules on every
    // fixture kernel: at least those were compared.
    assert!(
        compared.len() >= 6 && compared.iter().any(|n| n == "ext4"),
        "compared {compared:?}, skipped (not modules) {skipped:?}"
    );
}

/// The `.` entries of an image, in order: (mode, uid, gid, mtime).
fn root_entries(image: &Path) -> Vec<(u64, u64, u64, u64)> {
    let list: serde_json::Value =
        serde_json::from_slice(&run(kmodkit().args(["initrd", "ls", "--json"]).arg(image)))
            .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"] == ".")
        .map(|e| {
            let n = |k: &str| e[k].as_u64().unwrap();
            (n("mode"), n("uid"), n("gid"), n("mtime"))
        })
        .collect()
}

/// --rebuild keeps the image's own `.` entry (the kernel applies it to /);
/// directories --append adds (the InfiniBand tree, which the image lacks)
/// carry SOURCE_DATE_EPOCH, not 0.
#[test]
fn rebuild_keeps_the_root_entry_and_append_dates_its_directories() {
    let img = image("initramfs-tools", "gzip");
    let original = root_entries(&img.path);
    assert!(!original.is_empty(), "mkinitramfs writes a . entry");
    let scratch = Scratch::new("dot");
    let path = copy_image(&img, &scratch);
    run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--rebuild",
            "--no-backup",
            "--root",
        ])
        .arg(fixture_root())
        .arg(&path)
        .arg("mlx4_en"));
    assert_eq!(root_entries(&path), vec![*original.last().unwrap()]);

    let path = copy_image(&img, &scratch);
    let epoch = 1_234_567_890u64;
    run(kmodkit()
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .args(["initrd", "add-drivers", "--no-backup", "--root"])
        .arg(fixture_root())
        .arg(&path)
        .arg("rdma_rxe"));
    let list: serde_json::Value =
        serde_json::from_slice(&run(kmodkit().args(["initrd", "ls", "--json"]).arg(&path)))
            .unwrap();
    let last_segment = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["segment"].as_u64().unwrap())
        .max()
        .unwrap();
    let dirs: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["segment"].as_u64() == Some(last_segment) && e["type"] == "directory")
        .collect();
    assert!(!dirs.is_empty(), "the appended segment adds directories");
    for d in dirs {
        assert_eq!(d["mtime"].as_u64(), Some(epoch), "{d}");
    }
}

/// `--option` values must parse as the parameter's type (kmod's modinfo
/// gives the types); options for a module the image already carries are
/// checked against the image's copy; with --json, a failure is a JSON
/// error object on stdout.
#[test]
fn options_are_checked_against_the_parameter_type_and_the_images_modules() {
    let img = image("initramfs-tools", "gzip");
    let parmtype = |m: &str| -> Vec<(String, String)> {
        String::from_utf8_lossy(&run(Command::new("modinfo")
            .arg("-b")
            .arg(fixture_root())
            .args(["-k", &img.kver, "-F", "parmtype", m])))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
    };
    let add = |extra: &[&str]| {
        kmodkit()
            .args(["initrd", "add-drivers", "--dry-run", "--json", "--root"])
            .arg(fixture_root())
            .arg(&img.path)
            .arg("mlx4_en")
            .args(extra)
            .output()
            .unwrap()
    };
    // An int parameter of a module being added, given a word.
    let (int_param, _) = parmtype("mlx4_core")
        .into_iter()
        .find(|(_, t)| t == "int")
        .expect("mlx4_core has an int parameter");
    let out = add(&["--option", &format!("mlx4_core:{int_param}=many")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{int_param} is of type int")),
        "{err}"
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON error object");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is of type int")),
        "{doc}"
    );
    let out = add(&["--option", &format!("mlx4_core:{int_param}=-1")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A module the image has and the request does not add: its uint
    // parameter is checked against the image's copy.
    let listing =
        String::from_utf8_lossy(&run(kmodkit().args(["initrd", "ls"]).arg(&img.path))).into_owned();
    assert!(
        listing.lines().any(|l| l.ends_with("/e1000.ko")),
        "the image has e1000"
    );
    let (uint_param, _) = parmtype("e1000")
        .into_iter()
        .find(|(_, t)| t == "uint")
        .expect("e1000 has a uint parameter");
    let out = add(&["--option", &format!("e1000:{uint_param}=-3")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("out of range for uint") && err.contains("e1000.ko"),
        "{err}"
    );
    let out = add(&["--option", &format!("e1000:{uint_param}=256")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --kernel names the image's kernel; another is an error saying so.
    let other = kmodkit_fixtures::kernels()
        .into_iter()
        .map(|(k, _)| k)
        .find(|k| k != &img.kver)
        .unwrap();
    let out = add(&["--kernel", &other]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("--source-kernel {other}")),
        "{err}"
    );
}

/// What the arguments alone rule out is a usage error (exit 2), said
/// before the image is read.
#[test]
fn impossible_network_arguments_are_usage_errors() {
    let img = image("dracut", "zstd");
    let run_with = |net: &[&str]| {
        kmodkit()
            .args(["initrd", "add-drivers", "--dry-run", "--root"])
            .arg(fixture_root())
            .arg(&img.path)
            .arg("virtio_net")
            .args(net)
            .output()
            .unwrap()
    };
    // FlexBoot's identifier is built from the port GUID.
    let out = run_with(&["--net", "dhcp", "--iface", "ib0", "--client-id", "flexboot"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port GUID"));
    // A static address belongs to one interface.
    let out = run_with(&["--net", "10.0.2.77/24"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--iface"));
}
