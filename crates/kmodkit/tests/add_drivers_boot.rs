//! The kernel decides: images changed by `kmodkit initrd add-drivers` boot
//! in qemu (TCG, virtio NIC on qemu's user network) and scripts/qemu-probe
//! reads from the console what the image's own machinery did. The probe
//! never loads a module nor configures an interface, so every module in
//! /proc/modules was loaded by the image (udev, conf/modules,
//! modules-load.d, rd.driver.pre) and every lease was obtained by its own
//! DHCP client. The expected module set is kmod's: the union of
//! `modprobe --show-depends` over the requested drivers.

mod initrd_common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use initrd_common::{
    fixture_root, kmodkit, real_images, require, run, RealImage, Scratch, ISSUE_DRIVERS as DRIVERS,
};

fn find_image(file: &str) -> RealImage {
    real_images()
        .into_iter()
        .find(|i| i.path.file_name().is_some_and(|n| n == file))
        .unwrap_or_else(|| panic!("{file} missing; run scripts/initrd-fixtures"))
}

/// kmod's closure of the drivers for `kver` in the fixture root.
fn kmod_closure(kver: &str) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for d in DRIVERS {
        let out = run(Command::new("modprobe")
            .arg("-d")
            .arg(fixture_root())
            .args(["-S", kver, "--show-depends", d]));
        for line in String::from_utf8_lossy(&out).lines() {
            if let Some(p) = line.strip_prefix("insmod ") {
                let base = p
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap();
                all.insert(base.split('.').next().unwrap().replace('-', "_"));
            }
        }
    }
    all
}

fn probe(image: &Path) -> serde_json::Value {
    require("qemu-system-x86_64", "qemu-system-x86");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/qemu-probe");
    let out = Command::new(script)
        .args(["--timeout", "240"])
        .arg(image)
        .stderr(Stdio::piped())
        .output()
        .expect("scripts/qemu-probe runs");
    assert!(
        out.status.success(),
        "qemu-probe failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("qemu-probe prints JSON")
}

fn injected_image_boots(file: &str, mode: &str) {
    let img = find_image(file);
    let scratch = Scratch::new("boot");
    let path = scratch.join("initrd.img");
    std::fs::copy(&img.path, &path).unwrap();
    run(kmodkit()
        .args(["initrd", "add-drivers", mode, "--net", "dhcp", "--root"])
        .arg(fixture_root())
        .arg(&path)
        .args(DRIVERS));
    let report = probe(&path);
    assert_eq!(report["complete"], true, "{report}");
    let loaded: BTreeSet<String> = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    let expected = kmod_closure(&img.kver);
    assert!(
        expected.len() > DRIVERS.len(),
        "closure too small: {expected:?}"
    );
    let missing: Vec<&String> = expected.difference(&loaded).collect();
    assert!(
        missing.is_empty(),
        "{file} {mode}: not in /proc/modules: {missing:?} (log {})",
        report["log"]
    );
    let leases: Vec<&serde_json::Value> = report["net"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["dhcp"] == true && n["iface"] != "lo")
        .collect();
    assert!(
        !leases.is_empty(),
        "{file} {mode}: the initrd stage got no DHCP lease: {} (log {})",
        report["net"],
        report["log"]
    );
    // The NIC with the lease is the virtio one qemu gave it.
    let iface = leases[0]["iface"].as_str().unwrap();
    let link = report["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["iface"] == iface)
        .expect("link of the leased interface");
    assert_eq!(link["type"], 1, "{link}");
}

#[test]
fn initramfs_tools_6_1_append_boots_with_drivers_and_lease() {
    injected_image_boots("mkinitramfs-gzip.img", "--append");
}

#[test]
fn initramfs_tools_6_1_rebuild_boots_with_drivers_and_lease() {
    injected_image_boots("mkinitramfs-gzip.img", "--rebuild");
}

#[test]
fn dracut_6_1_append_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-net.img", "--append");
}

#[test]
fn dracut_6_1_rebuild_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-net.img", "--rebuild");
}

#[test]
fn initramfs_tools_6_12_with_early_segment_boots_with_drivers_and_lease() {
    injected_image_boots("mkinitramfs-xz-early.img", "--append");
}
