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
    busybox_image, find_image, fixture_root, kmodkit, require, run, Scratch,
    ISSUE_DRIVERS as DRIVERS,
};

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
    probe_with(image, &[])
}

fn probe_with(image: &Path, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    require("qemu-system-x86_64", "qemu-system-x86");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/qemu-probe");
    let out = Command::new(script)
        .args(["--timeout", "240"])
        .args(extra)
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

/// The MAC qemu gives the first NIC.
const QEMU_MAC: &str = "52:54:00:12:34:56";

/// Adds the drivers with `net` (add-drivers' network flags), boots the
/// image and checks that every module of kmod's closure was loaded by the
/// image; returns the probe's report.
fn boot_with_drivers(file: &str, mode: &str, net: &[&str]) -> serde_json::Value {
    boot_with_drivers_captured(file, mode, net, None)
}

/// [`boot_with_drivers`], recording the NIC's packets in `pcap`.
fn boot_with_drivers_captured(
    file: &str,
    mode: &str,
    net: &[&str],
    pcap: Option<&Path>,
) -> serde_json::Value {
    let img = find_image(file);
    let scratch = Scratch::new("boot");
    let path = scratch.join("initrd.img");
    std::fs::copy(&img.path, &path).unwrap();
    run(kmodkit()
        .args(["initrd", "add-drivers", mode])
        .args(net)
        .arg("--root")
        .arg(fixture_root())
        .arg(&path)
        .args(DRIVERS));
    let report = match pcap {
        Some(p) => probe_with(&path, &["--pcap".as_ref(), p.as_os_str()]),
        None => probe(&path),
    };
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
    report
}

/// The link (from /sys/class/net) of an interface in the report.
fn link<'a>(report: &'a serde_json::Value, iface: &str) -> &'a serde_json::Value {
    report["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["iface"] == iface)
        .unwrap_or_else(|| panic!("no link {iface}: {}", report["links"]))
}

/// The interfaces with a DHCP lease, as the stack's own state shows it.
fn leases(report: &serde_json::Value) -> Vec<&serde_json::Value> {
    report["net"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["dhcp"] == true && n["iface"] != "lo")
        .collect()
}

fn injected_image_boots(file: &str, mode: &str) {
    let report = boot_with_drivers(file, mode, &["--net", "dhcp"]);
    let leases = leases(&report);
    assert!(
        !leases.is_empty(),
        "{file} {mode}: the initrd stage got no DHCP lease: {} (log {})",
        report["net"],
        report["log"]
    );
    // The NIC with the lease is the virtio one qemu gave it.
    let iface = leases[0]["iface"].as_str().unwrap();
    assert_eq!(link(&report, iface)["type"], 1, "{}", link(&report, iface));
}

/// A static address (one qemu's DHCP server would not give) on the NIC
/// chosen by its MAC: the address, its prefix and the default route are
/// there, and no lease.
fn static_address_is_set(file: &str) {
    let report = boot_with_drivers(
        file,
        "--append",
        &["--net", "10.0.2.77/24,10.0.2.2", "--iface", QEMU_MAC],
    );
    let addrs: Vec<&serde_json::Value> = report["net"].as_array().unwrap().iter().collect();
    let set = addrs
        .iter()
        .find(|n| n["addr"] == "10.0.2.77")
        .unwrap_or_else(|| {
            panic!(
                "{file}: no static address: {addrs:?} (log {})",
                report["log"]
            )
        });
    assert_eq!(set["prefix"], 24, "{set}");
    assert_eq!(set["dhcp"], false, "{set}");
    let iface = set["iface"].as_str().unwrap();
    assert_eq!(link(&report, iface)["mac"], QEMU_MAC);
    let routes: Vec<&str> = report["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r.as_str())
        .collect();
    assert!(
        routes
            .iter()
            .any(|r| r.starts_with(&format!("default via 10.0.2.2 dev {iface}"))),
        "{file}: no default route via the gateway: {routes:?} (log {})",
        report["log"]
    );
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
fn dracut_network_legacy_6_1_append_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-net.img", "--append");
}

#[test]
fn dracut_network_legacy_6_1_rebuild_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-net.img", "--rebuild");
}

#[test]
fn initramfs_tools_6_12_with_early_segment_boots_with_drivers_and_lease() {
    injected_image_boots("mkinitramfs-xz-early.img", "--append");
}

#[test]
fn dracut_systemd_networkd_6_12_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-networkd.img", "--append");
}

#[test]
fn dracut_network_manager_6_1_boots_with_drivers_and_lease() {
    injected_image_boots("dracut-nm.img", "--append");
}

#[test]
fn dracut_network_legacy_static_address_and_route() {
    static_address_is_set("dracut-net.img");
}

#[test]
fn dracut_systemd_networkd_static_address_and_route() {
    static_address_is_set("dracut-networkd.img");
}

#[test]
fn dracut_network_manager_static_address_and_route() {
    static_address_is_set("dracut-nm.img");
}

#[test]
fn initramfs_tools_static_address_and_route() {
    static_address_is_set("mkinitramfs-gzip.img");
}

/// An RFC 4361 client identifier (type 255, IAID 1, a DUID-EN of
/// Mellanox's enterprise number and the manual's port GUID) that every
/// stack able to send one can send: an IPoIB port needs one, and on
/// qemu's Ethernet NIC the same setting must reach the wire.
const CLIENT_ID: &str = "ff:00:00:00:01:00:02:00:00:02:c9:00:02:c9:03:00:00:10:39";

/// Option 61 of every DHCPDISCOVER and DHCPREQUEST in `pcap`, as tshark
/// reads it (hex, no separators).
fn client_ids_on_the_wire(pcap: &Path) -> Vec<String> {
    require("tshark", "tshark");
    let out = run(Command::new("tshark").arg("-r").arg(pcap).args([
        "-Y",
        "dhcp.option.dhcp == 1 || dhcp.option.dhcp == 3",
        "-T",
        "fields",
        "-e",
        "dhcp.option.type",
        "-e",
        "dhcp.option.value",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator= ",
    ]));
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&out).lines() {
        let (types, values) = line.split_once('\t').unwrap_or((line, ""));
        // Options without a value (end) come last, so the lists align.
        for (t, v) in types.split(' ').zip(values.split(' ')) {
            if t == "61" {
                ids.push(v.to_string());
            }
        }
    }
    ids
}

fn client_id_reaches_the_wire(file: &str) {
    let scratch = Scratch::new("pcap");
    let pcap = scratch.join("nic.pcap");
    let report = boot_with_drivers_captured(
        file,
        "--append",
        &[
            "--net",
            "dhcp",
            "--iface",
            QEMU_MAC,
            "--client-id",
            CLIENT_ID,
        ],
        Some(&pcap),
    );
    assert!(
        !leases(&report).is_empty(),
        "{file}: no DHCP lease with the client identifier: {} (log {})",
        report["net"],
        report["log"]
    );
    let ids = client_ids_on_the_wire(&pcap);
    let want = CLIENT_ID.replace(':', "");
    assert!(
        !ids.is_empty() && ids.iter().all(|i| *i == want),
        "{file}: client identifiers sent: {ids:?}, asked for {want} (log {})",
        report["log"]
    );
}

#[test]
fn dracut_network_legacy_sends_the_client_id() {
    client_id_reaches_the_wire("dracut-net.img");
}

#[test]
fn dracut_network_manager_sends_the_client_id() {
    client_id_reaches_the_wire("dracut-nm.img");
}

#[test]
fn dracut_systemd_networkd_sends_the_client_id() {
    client_id_reaches_the_wire("dracut-networkd.img");
}

/// A plain /init with busybox: kmodkit's net-up.sh runs udhcpc after the
/// loader; the lease (kmodkit's udhcpc script records it), the address,
/// the default route and the client identifier on the wire are checked.
#[test]
fn plain_init_busybox_gets_a_lease_with_the_client_id() {
    require("qemu-system-x86_64", "qemu-system-x86");
    let kver = find_image("mkinitramfs-gzip.img").kver;
    let scratch = Scratch::new("plain-net");
    let path = busybox_image(
        &scratch,
        "plain.img",
        &kver,
        &["sh", "cat", "mount", "echo"],
        "#!/bin/sh\nmount -t proc proc /proc\necho KMKPLAIN-BEGIN\ncat /proc/modules\n\
         busybox ip -4 -o addr\nbusybox ip -4 route\ncat /run/kmodkit/lease.*\n\
         echo KMKPLAIN-END\necho o > /proc/sysrq-trigger\n",
    );
    run(kmodkit()
        .args([
            "initrd",
            "add-drivers",
            "--no-backup",
            "--net",
            "dhcp",
            "--client-id",
            CLIENT_ID,
            "--kernel",
            &kver,
            "--root",
        ])
        .arg(fixture_root())
        .arg(&path)
        // No udev in a plain image: the PCI transport is named too.
        .args(["virtio_pci", "virtio_net"]));
    let pcap = scratch.join("nic.pcap");
    let kernel = fixture_root().join(format!("boot/vmlinuz-{kver}"));
    let out = Command::new("timeout")
        .args([
            "180",
            "qemu-system-x86_64",
            "-machine",
            "accel=tcg",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
        ])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-object",
        ])
        .arg(format!(
            "filter-dump,id=d0,netdev=n0,file={}",
            pcap.display()
        ))
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&path)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let report: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("KMKPLAIN-BEGIN"))
        .take_while(|l| !l.contains("KMKPLAIN-END"))
        .collect();
    assert!(
        report.iter().any(|l| l.starts_with("virtio_net ")),
        "virtio_net not loaded: {log}"
    );
    let lease_ip = report
        .iter()
        .find_map(|l| l.strip_prefix("ip="))
        .unwrap_or_else(|| panic!("no lease recorded: {log}"));
    assert!(
        report
            .iter()
            .any(|l| l.contains(&format!("inet {lease_ip}/24 "))),
        "the leased address is not set: {log}"
    );
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("default via 10.0.2.2 ")),
        "no default route: {log}"
    );
    let ids = client_ids_on_the_wire(&pcap);
    let want = CLIENT_ID.replace(':', "");
    assert!(
        !ids.is_empty() && ids.iter().all(|i| *i == want),
        "client identifiers sent: {ids:?}, asked for {want}"
    );
}
