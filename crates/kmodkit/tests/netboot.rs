//! `kmodkit netboot build`, `dhcp-config` and `verify` against real
//! oracles: the fixture 6.1 and 6.12 kernels, kmod's `modprobe
//! --show-depends` for the module set, the kernel itself in qemu (TCG)
//! network-booted by `netboot verify` through qemu's iPXE ROM from dnsmasq
//! (DHCP with the configuration `dhcp-config` writes, TFTP) and Python's
//! http.server, the booted root's own /proc/modules and lease file, and
//! dnsmasq's and ISC dhcpd's own configuration checks.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, require_tool};
use kmodkit_initramfs::compression::{Compression, EncodeOptions};
use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::create::{plan, write_segments, CreateOptions, SegmentSpec, SourceEntry};
use kmodkit_initramfs::read::NoProgress;

const MARKER: &str = "KMODKIT-NETBOOT-ROOT-OK";

/// The driver list, and virtio_pci: the PCI transport of qemu's
/// NIC is not in virtio_net's modules.dep closure and is a module on 6.1.
const DRIVERS: [&str; 10] = [
    "mlx4_en",
    "mlx4_ib",
    "mlx5_core",
    "mlx5_ib",
    "ib_ipoib",
    "rdma_ucm",
    "ib_umad",
    "virtio_pci",
    "virtio_net",
    "rdma_rxe",
];

/// The first fixture kernel of `series` with modules and a vmlinuz.
fn kernel_of(series: &str) -> String {
    let root = kmodkit_fixtures::fixture_root();
    kmodkit_fixtures::kernels()
        .into_iter()
        .filter(|(k, s)| {
            s == series
                && root
                    .join("lib/modules")
                    .join(k)
                    .join("modules.dep")
                    .is_file()
                && root.join("boot").join(format!("vmlinuz-{k}")).is_file()
        })
        .map(|(k, _)| k)
        .next()
        .unwrap_or_else(|| {
            panic!(
                "no {series} kernel with modules and vmlinuz in the fixtures; run scripts/fixtures"
            )
        })
}

fn kernel_61() -> String {
    kernel_of("6.1")
}

/// kmod's closure of each driver (`modprobe --show-depends`), in the order
/// modprobe would insert them, without repeats.
fn kmod_closure(root: &Path, kver: &str, drivers: &[&str]) -> Vec<String> {
    require_tool("modprobe", "kmod");
    let mut out: Vec<String> = Vec::new();
    for d in drivers {
        let show = Command::new("modprobe")
            .arg("-d")
            .arg(root)
            .args(["-S", kver, "--show-depends", d])
            .output()
            .unwrap();
        assert!(
            show.status.success(),
            "modprobe --show-depends {d}: {}",
            String::from_utf8_lossy(&show.stderr)
        );
        for line in String::from_utf8_lossy(&show.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = path.split_whitespace().next().unwrap();
            let file = Path::new(path).file_name().unwrap().to_string_lossy();
            let name = file.split(".ko").next().unwrap().replace('-', "_");
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

fn entry(name: &str, file_type: FileType, perm: u32) -> SourceEntry {
    SourceEntry::new(name.as_bytes().to_vec(), file_type, perm)
}

fn static_busybox() -> &'static Path {
    require_tool("busybox", "busybox-static");
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap()
}

/// The root's /sbin/init: prints the loaded modules, the lease
/// kmodkit-init handed over, what / is mounted from, a marker, and powers
/// off.
fn root_init_script() -> String {
    format!(
        "#!/bin/busybox sh\n\
         export PATH=/bin\n\
         while read -r name rest; do echo \"ROOT-MODULE $name\"; done < /proc/modules\n\
         while read -r line; do echo \"ROOT-LEASE $line\"; done < /run/kmodkit/lease\n\
         while read -r dev at fs opts rest; do [ \"$at\" = / ] && echo \"ROOT-FS $dev $fs $opts\"; done < /proc/mounts\n\
         echo {MARKER}\n\
         poweroff -f\n"
    )
}

const ROOT_APPLETS: [&str; 5] = ["sh", "echo", "poweroff", "cat", "["];
const ROOT_DIRS: [&str; 6] = ["dev", "proc", "sys", "run", "etc", "tmp"];

/// The root as an image (a gzip newc cpio): static busybox and the init.
fn root_image(dir: &Path) -> PathBuf {
    let busybox = static_busybox();
    let init = dir.join("root-init");
    std::fs::write(&init, root_init_script()).unwrap();
    let mut entries = Vec::new();
    for (name, source) in [("bin/busybox", busybox), ("sbin/init", init.as_path())] {
        let mut e = entry(name, FileType::Regular, 0o755);
        e.size = std::fs::metadata(source).unwrap().len();
        e.source = Some(source.to_path_buf());
        entries.push(e);
    }
    for applet in ROOT_APPLETS {
        let mut link = entry(&format!("bin/{applet}"), FileType::Symlink, 0o777);
        link.link_target = b"busybox".to_vec();
        link.size = 7;
        entries.push(link);
    }
    for d in ROOT_DIRS {
        entries.push(entry(d, FileType::Directory, 0o755));
    }
    let planned = plan(entries, &CreateOptions::default()).unwrap();
    let segments = [SegmentSpec {
        entries: &planned,
        format: Format::Newc,
        encode: EncodeOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 1,
        },
    }];
    let out = dir.join("root.cpio.gz");
    let mut file = std::fs::File::create(&out).unwrap();
    write_segments(&segments, &mut file, &NoProgress).unwrap();
    out
}

fn build(
    kver: &str,
    out: &Path,
    root_url: &str,
    root_image: &Path,
    drivers: &[&str],
) -> serde_json::Value {
    build_with(kver, out, root_url, root_image, drivers, &[])
}

fn build_with(
    kver: &str,
    out: &Path,
    root_url: &str,
    root_image: &Path,
    drivers: &[&str],
    flags: &[&str],
) -> serde_json::Value {
    let root = [
        "--root-url".into(),
        root_url.into(),
        "--root-image".into(),
        root_image.as_os_str().to_owned(),
    ];
    build_set(kver, out, &root, drivers, flags)
}

/// `netboot build --json` with the root given by `root_args`; the manifest.
fn build_set(
    kver: &str,
    out: &Path,
    root_args: &[std::ffi::OsString],
    drivers: &[&str],
    flags: &[&str],
) -> serde_json::Value {
    let mut cmd = kmodkit();
    cmd.args(["netboot", "build", "--root"])
        .arg(kmodkit_fixtures::fixture_root())
        .args(["--kernel", kver, "--out"])
        .arg(out)
        .arg("--init")
        .arg(kmodkit_fixtures::static_kmodkit_init())
        .args(root_args)
        .arg("--json")
        .args(flags)
        .args(drivers)
        .env_remove("SOURCE_DATE_EPOCH");
    let output = cmd.output().unwrap();
    assert!(
        output.status.success(),
        "netboot build: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints the manifest")
}

/// The lab's server address (verify gives it to its namespace's tap) and
/// the node's reservation.
const SERVER: &str = "10.77.0.1";
const NODE: &str = "n1 52:54:00:12:34:56 10.77.0.23\n";
const RESERVED: &str = "10.77.0.23";
/// Short waits for the failure cases, on the kernel command line.
const CMDLINE: &str = "console=ttyS0,115200n8 panic=-1 kmodkit.timeout.interface=5 \
kmodkit.timeout.dhcp=4 kmodkit.timeout.dhcp_attempts=2";

/// `netboot verify SET ARGS --json`: (exit code, report, console).
fn verify(set: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    require_tool("qemu-system-x86_64", "qemu-system-x86");
    require_tool("dnsmasq", "dnsmasq-base");
    require_tool("python3", "python3");
    assert!(
        Path::new("/usr/lib/ipxe/qemu").is_dir(),
        "qemu's iPXE ROMs are missing (scripts/fixtures installs ipxe-qemu)"
    );
    let logs = set.with_extension("logs");
    let output = kmodkit()
        .args(["netboot", "verify"])
        .arg(set)
        .arg("--logs")
        .arg(&logs)
        .args(["--timeout", "240", "--json"])
        .args(args)
        .output()
        .unwrap();
    let console = std::fs::read_to_string(logs.join("console.log"))
        .unwrap_or_default()
        .replace('\r', "");
    if let Some(file) = std::env::var_os("KMODKIT_BOOT_CONSOLE") {
        let _ = std::fs::write(file, &console);
    }
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no report ({e}): {}\n{}",
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        )
    });
    (output.status.code().unwrap_or(-1), report, console)
}

/// The node list and the dnsmasq configuration `dhcp-config` writes for
/// it (what a site pastes), in `dir`.
fn dhcp_files(dir: &Path) -> (PathBuf, PathBuf) {
    let nodes = dir.join("nodes.txt");
    std::fs::write(&nodes, NODE).unwrap();
    let output = kmodkit()
        .args(["netboot", "dhcp-config", "--nodes"])
        .arg(&nodes)
        .args(["--boot-url", "boot.ipxe"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let conf = dir.join("dnsmasq-kmodkit.conf");
    std::fs::write(&conf, &output.stdout).unwrap();
    (nodes, conf)
}

/// The report's stage `name`.
fn stage<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// The same root as a directory tree (what an NFS server exports).
fn root_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("sbin")).unwrap();
    std::fs::copy(static_busybox(), dir.join("bin/busybox")).unwrap();
    for applet in ROOT_APPLETS {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    for d in ROOT_DIRS {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let init = dir.join("sbin/init");
    std::fs::write(&init, root_init_script()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A boot through iPXE that must reach the root with every module of
/// kmod's closure loaded and the node's reserved address; the console.
/// The root is `SET/../serve/root.cpio.gz` unless `extra` gives --root-dir.
fn assert_boots_to_root(kver: &str, set: &Path, modules: &[String], extra: &[&str]) -> String {
    let dir = set.parent().unwrap();
    let (nodes, conf) = dhcp_files(dir);
    let mut args = vec![
        "--nodes".to_string(),
        nodes.display().to_string(),
        "--node".into(),
        "n1".into(),
        "--dhcp-config".into(),
        conf.display().to_string(),
        "--marker".into(),
        MARKER.into(),
    ];
    if !extra.contains(&"--root-dir") {
        args.push("--root-image".into());
        args.push(dir.join("serve/root.cpio.gz").display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, report, console) = verify(set, &args);
    assert_eq!(code, 0, "{kver}: not verified: {report:#}\n{console}");
    assert_eq!(report["ok"], true);
    for name in [
        "firmware-dhcp",
        "boot-script",
        "kernel-fetch",
        "kernel-start",
        "modules",
        "network",
        "lease",
        "root",
        "switch-root",
        "root-init",
    ] {
        assert_eq!(stage(&report, name)["ok"], true, "{name}: {report:#}");
    }
    assert!(
        stage(&report, "lease")["detail"]
            .as_str()
            .unwrap()
            .starts_with(RESERVED),
        "dnsmasq's lease file: {report:#}"
    );
    let loaded: Vec<&str> = console
        .lines()
        .filter_map(|l| l.strip_prefix("ROOT-MODULE "))
        .collect();
    for m in modules {
        assert!(
            loaded.contains(&m.as_str()),
            "{kver}: {m} not in /proc/modules of the booted root:\n{console}"
        );
    }
    assert!(
        console
            .lines()
            .any(|l| l.starts_with("ROOT-LEASE") && l.contains(RESERVED)),
        "{kver}: the reservation {RESERVED} was not handed to the root:\n{console}"
    );
    console
}

/// A boot that must fail in `want_stage`, named on the console by
/// kmodkit-init, well before verify's own timeout.
fn assert_fails_in(set: &Path, args: &[&str], want_stage: &str) -> String {
    let started = std::time::Instant::now();
    let (code, report, console) = verify(set, args);
    assert_eq!(
        code, 1,
        "verify must report a failed stage: {report:#}\n{console}"
    );
    assert_eq!(report["ok"], false);
    assert_eq!(
        report["failure"]["stage"], want_stage,
        "{report:#}\n{console}"
    );
    assert!(
        console.contains(&format!("FAILED in stage {want_stage}: ")),
        "the console does not name the stage:\n{console}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(200),
        "the failure took as long as verify's timeout: a hang"
    );
    console
}

fn manifest_modules(manifest: &serde_json::Value) -> Vec<String> {
    manifest["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

/// The set for the drivers: kmod's closure exactly, each module
/// after its dependencies, every file's sha256 right, and the same bytes
/// twice; then the kernel boots it to the root with every module loaded.
#[test]
fn build_matches_kmod_is_reproducible_and_boots() {
    let kver = kernel_61();
    let root = kmodkit_fixtures::fixture_root();
    let tmp = tempfile::tempdir().unwrap();
    let serve = tmp.path().join("serve");
    std::fs::create_dir(&serve).unwrap();
    let image = root_image(&serve);
    let url = format!("http://{SERVER}:8081/root.cpio.gz");

    let out1 = tmp.path().join("set1");
    let out2 = tmp.path().join("set2");
    let manifest = build(&kver, &out1, &url, &image, &DRIVERS);
    let again = build(&kver, &out2, &url, &image, &DRIVERS);
    for name in ["vmlinuz", "initrd.img", "boot.ipxe", "manifest.json"] {
        let a = std::fs::read(out1.join(name)).unwrap();
        let b = std::fs::read(out2.join(name)).unwrap();
        assert!(a == b, "{name} differs between two builds");
    }
    assert_eq!(manifest, again);

    // The module list is kmod's closure of the drivers (as a set; the
    // order is checked against the dependencies below).
    let modules = manifest_modules(&manifest);
    let mut ours = modules.clone();
    let mut kmod = kmod_closure(&root, &kver, &DRIVERS);
    ours.sort();
    kmod.sort();
    assert_eq!(ours, kmod, "manifest modules vs modprobe --show-depends");
    for (i, m) in manifest["modules"].as_array().unwrap().iter().enumerate() {
        for dep in m["depends"].as_array().unwrap() {
            let at = modules.iter().position(|n| n == dep.as_str().unwrap());
            assert!(
                at.is_some_and(|at| at < i),
                "{} loads before its dependency {dep}",
                m["name"]
            );
        }
    }
    let sha = &manifest["sha256"];
    for name in ["vmlinuz", "initrd.img", "boot.ipxe"] {
        let bytes = std::fs::read(out1.join(name)).unwrap();
        assert_eq!(
            sha[name].as_str().unwrap(),
            kmodkit_init::rootfs::sha256_hex(&bytes),
            "{name}"
        );
    }
    let vmlinuz = std::fs::read(root.join("boot").join(format!("vmlinuz-{kver}"))).unwrap();
    assert!(vmlinuz == std::fs::read(out1.join("vmlinuz")).unwrap());
    let ipxe = std::fs::read_to_string(out1.join("boot.ipxe")).unwrap();
    assert!(
        ipxe.starts_with("#!ipxe\nisset ${ip} || dhcp\nkernel vmlinuz initrd=initrd.img "),
        "{ipxe}"
    );
    assert!(ipxe.contains("\ninitrd initrd.img\nboot\n"), "{ipxe}");

    // The initrd as GNU cpio lists it: /init, the configuration, the modules.
    require_tool("cpio", "cpio");
    require_tool("zstd", "zstd");
    let listing = Command::new("sh")
        .arg("-c")
        .arg("zstd -dc \"$0\" | cpio -it --quiet")
        .arg(out1.join("initrd.img"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    for want in ["init", "etc/kmodkit-init.json", "dev/console"] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} not in the initrd:\n{listing}"
        );
    }
    for m in manifest["modules"].as_array().unwrap() {
        let path = m["path"].as_str().unwrap().trim_start_matches('/');
        assert!(
            listing.lines().any(|l| l == path),
            "{path} not in the initrd"
        );
    }

    // Through iPXE: DHCP and TFTP (boot.ipxe, and the kernel and initrd
    // by its relative URLs) from dnsmasq, the root over HTTP.
    assert_boots_to_root(&kver, &out1, &modules, &[]);
}

/// The 6.12 kernel (`.ko.xz` modules), the kernel and initrd over HTTP
/// from the set's --url.
#[test]
fn kernel_612_boots_through_ipxe_over_http() {
    let kver = kernel_of("6.12");
    let tmp = tempfile::tempdir().unwrap();
    let serve = tmp.path().join("serve");
    std::fs::create_dir(&serve).unwrap();
    let image = root_image(&serve);
    let out = tmp.path().join("set");
    let url = format!("http://{SERVER}:8081/root.cpio.gz");
    let manifest = build_with(
        &kver,
        &out,
        &url,
        &image,
        &DRIVERS,
        &[
            "--url",
            &format!("http://{SERVER}:8080/boot"),
            "--cmdline",
            CMDLINE,
        ],
    );
    let mut ours = manifest_modules(&manifest);
    let mut kmod = kmod_closure(&kmodkit_fixtures::fixture_root(), &kver, &DRIVERS);
    ours.sort();
    kmod.sort();
    assert_eq!(ours, kmod, "manifest modules vs modprobe --show-depends");
    assert!(manifest["modules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["path"].as_str().unwrap().ends_with(".ko.xz")));
    assert_boots_to_root(&kver, &out, &ours, &[]);
}

/// `--net ADDR/PREFIX,GW`: no DHCP in the OS stage (the firmware still
/// asks); the root comes over HTTP and gets the static settings as its
/// lease file.
#[test]
fn static_address_boots() {
    let kver = kernel_61();
    let tmp = tempfile::tempdir().unwrap();
    let serve = tmp.path().join("serve");
    std::fs::create_dir(&serve).unwrap();
    let image = root_image(&serve);
    let url = format!("http://{SERVER}:8081/root.cpio.gz");
    let out = tmp.path().join("set");
    let manifest = build_with(
        &kver,
        &out,
        &url,
        &image,
        &["virtio_pci", "virtio_net"],
        &[
            "--net",
            "10.77.0.77/24,10.77.0.1",
            "--iface",
            "52:54:00:12:34:56",
        ],
    );
    assert_eq!(
        manifest["settings"]["network"]["static"]["address"],
        "10.77.0.77"
    );
    let image = image.display().to_string();
    let (code, report, console) = verify(&out, &["--root-image", &image, "--marker", MARKER]);
    assert_eq!(code, 0, "not verified: {report:#}\n{console}");
    assert!(stage(&report, "network")["detail"]
        .as_str()
        .unwrap()
        .contains("10.77.0.77/24"));
    assert!(
        console
            .lines()
            .any(|l| l == "ROOT-LEASE address=10.77.0.77"),
        "no static address handed to the root:\n{console}"
    );
}

/// An NFS root: the set carries kmod's closure of the NIC driver and the
/// kernel's NFS client (nfs, nfsv3, nfsv4: modules on Debian, loaded
/// before the mount since the initrd has no modprobe for
/// request_module), and the node mounts a read-only NFSv4 export
/// (nfs-ganesha) as / and runs its init there.
#[test]
fn nfs_root_boots_read_only() {
    require_tool("ganesha.nfsd", "nfs-ganesha");
    let kver = kernel_61();
    let root = kmodkit_fixtures::fixture_root();
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("exported-root");
    root_tree(&tree);
    let out = tmp.path().join("set");
    let drivers = ["virtio_pci", "virtio_net"];
    let export = format!("{SERVER}:/srv/root");
    let manifest = build_set(
        &kver,
        &out,
        &["--root-nfs".into(), export.into()],
        &drivers,
        &[],
    );
    let mut ours = manifest_modules(&manifest);
    // Only what the kernel has as modules is added (built-in needs nothing).
    let builtin =
        std::fs::read_to_string(root.join("lib/modules").join(&kver).join("modules.builtin"))
            .unwrap_or_default();
    let mut wanted: Vec<&str> = drivers.to_vec();
    for m in ["nfs", "nfsv3", "nfsv4"] {
        if !builtin.lines().any(|l| l.ends_with(&format!("/{m}.ko"))) {
            wanted.push(m);
        }
    }
    let mut kmod = kmod_closure(&root, &kver, &wanted);
    ours.sort();
    kmod.sort();
    assert_eq!(ours, kmod, "manifest modules vs modprobe --show-depends");

    let console = assert_boots_to_root(
        &kver,
        &out,
        &kmod,
        &["--root-dir", &tree.display().to_string()],
    );
    let root_fs = console
        .lines()
        .find_map(|l| l.strip_prefix("ROOT-FS "))
        .unwrap_or_else(|| panic!("the root printed no ROOT-FS line:\n{console}"));
    let fields: Vec<&str> = root_fs.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"10.77.0.1:/srv/root"), "{root_fs}");
    assert_eq!(fields.get(1), Some(&"nfs4"), "/ is not NFSv4: {root_fs}");
    assert!(
        console.contains("root: nfs 10.77.0.1:/srv/root mounted on /sysroot"),
        "{console}"
    );
}

/// The failures a site meets, each through verify: stage and reason on
/// the console, no hang.
#[test]
fn failures_name_their_stage() {
    let kver = kernel_61();
    let tmp = tempfile::tempdir().unwrap();
    let serve = tmp.path().join("serve");
    std::fs::create_dir(&serve).unwrap();
    let image = root_image(&serve);
    let (nodes, _) = dhcp_files(tmp.path());
    let nodes = nodes.display().to_string();
    let url = format!("http://{SERVER}:8081/root.cpio.gz");
    let flags = [
        "--url",
        &format!("http://{SERVER}:8080/"),
        "--cmdline",
        CMDLINE,
    ];
    let nic = ["virtio_pci", "virtio_net"];
    let out = tmp.path().join("set");
    build_with(&kver, &out, &url, &image, &nic, &flags);
    let image_arg = image.display().to_string();
    let base = [
        "--nodes",
        nodes.as_str(),
        "--root-image",
        image_arg.as_str(),
        "--marker",
        MARKER,
    ];

    // No lease for the OS stage.
    let mut args = base.to_vec();
    args.push("--no-os-lease");
    assert_fails_in(&out, &args, "network");

    // The image served is not the one the set was built for.
    let other = tmp.path().join("other.cpio.gz");
    let mut bytes = std::fs::read(&image).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&other, bytes).unwrap();
    let other = other.display().to_string();
    let console = assert_fails_in(
        &out,
        &[
            "--nodes",
            &nodes,
            "--root-image",
            &other,
            "--marker",
            MARKER,
        ],
        "root",
    );
    assert!(console.contains("sha256"), "{console}");

    // The root's server comes up late: the init's retries win.
    let mut args = base.to_vec();
    args.extend(["--root-server-late", "4"]);
    let (code, report, console) = verify(&out, &args);
    assert_eq!(code, 0, "{report:#}\n{console}");
    assert!(
        console.contains("root: attempt 1 of "),
        "no retry seen:\n{console}"
    );

    // No NIC driver in the set.
    let bare = tmp.path().join("bare");
    build_with(&kver, &bare, &url, &image, &["mlx5_core"], &flags);
    assert_fails_in(&bare, &base, "interface");
}

/// A lab that cannot start is exit 2 with dnsmasq's own words, not a
/// firmware stage that "found no server"; and a set in a directory only
/// root may read (mktemp -d) is served all the same.
#[test]
fn verify_names_a_dhcp_server_that_cannot_start() {
    require_tool("dnsmasq", "dnsmasq-base");
    let kver = kernel_61();
    let tmp = tempfile::tempdir().unwrap();
    let serve = tmp.path().join("serve");
    std::fs::create_dir(&serve).unwrap();
    let image = root_image(&serve);
    let out = tmp.path().join("set");
    build(
        &kver,
        &out,
        &format!("http://{SERVER}:8081/root.cpio.gz"),
        &image,
        &["virtio_pci", "virtio_net"],
    );
    let (nodes, _) = dhcp_files(tmp.path());
    let bad = tmp.path().join("bad.conf");
    std::fs::write(
        &bad,
        "dhcp-host=52:54:00:12:34:56,10.77.0.23\nno-such-option=1\n",
    )
    .unwrap();
    let output = kmodkit()
        .args(["netboot", "verify"])
        .arg(&out)
        .arg("--nodes")
        .arg(&nodes)
        .arg("--dhcp-config")
        .arg(&bad)
        .arg("--root-image")
        .arg(&image)
        .arg("--logs")
        .arg(tmp.path().join("logs"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains("dnsmasq did not start") && err.contains("bad option at line 2"),
        "{err}"
    );
}

/// Unknown and old names are refused or explained as add-drivers does it.
#[test]
fn names_as_add_drivers_words_them() {
    let kver = kernel_61();
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("root.img");
    std::fs::write(&image, b"root").unwrap();
    let mut cmd = kmodkit();
    cmd.args(["netboot", "build", "--root"])
        .arg(kmodkit_fixtures::fixture_root())
        .args(["--kernel", &kver, "--out"])
        .arg(tmp.path().join("out"))
        .arg("--init")
        .arg(kmodkit_fixtures::static_kmodkit_init())
        .args(["--root-url", "http://10.0.0.1/root.img", "--root-image"])
        .arg(&image);
    let unknown = cmd.arg("mlx4_enn").output().unwrap();
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains(&format!(
            "no module named mlx4_enn in {kver}; did you mean mlx4_en?"
        )),
        "{err}"
    );
    assert!(
        !tmp.path().join("out/initrd.img").exists(),
        "nothing is written on error"
    );

    let mut cmd = kmodkit();
    cmd.args(["netboot", "build", "--root"])
        .arg(kmodkit_fixtures::fixture_root())
        .args(["--kernel", &kver, "--out"])
        .arg(tmp.path().join("out"))
        .arg("--init")
        .arg(kmodkit_fixtures::static_kmodkit_init())
        .args(["--root-url", "http://10.0.0.1/root.img", "--root-image"])
        .arg(&image)
        .args(["ib_addr", "virtio_net"]);
    let old = cmd.output().unwrap();
    assert!(
        old.status.success(),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    let text = String::from_utf8_lossy(&old.stdout);
    assert!(
        text.contains(&format!("ib_addr: no such module in {kver}")),
        "{text}"
    );
    assert!(text.contains("ib_core is added instead"), "{text}");
}

/// dnsmasq and ISC dhcpd accept what dhcp-config writes.
#[test]
fn dhcp_config_passes_the_servers_own_checks() {
    let tmp = tempfile::tempdir().unwrap();
    let nodes = tmp.path().join("nodes");
    std::fs::write(
        &nodes,
        "# name  MAC or IB port GUID  address\n\
         node1 52:54:00:12:34:56 10.0.2.21\n\
         node2 f4:52:14:03:00:38:39:81 10.0.2.22\n",
    )
    .unwrap();
    let config = |format: &str| {
        let out = kmodkit()
            .args(["netboot", "dhcp-config", "--nodes"])
            .arg(&nodes)
            .args([
                "--format",
                format,
                "--boot-url",
                "http://10.0.2.2/boot/boot.ipxe",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    require_tool("dnsmasq", "dnsmasq-base");
    let dnsmasq = config("dnsmasq");
    assert!(dnsmasq.contains("dhcp-match=set:ipxe,175\n"), "{dnsmasq}");
    assert!(
        dnsmasq.contains("dhcp-boot=tag:!ipxe,undionly.kpxe\n"),
        "{dnsmasq}"
    );
    assert!(
        dnsmasq.contains("dhcp-boot=tag:ipxe,http://10.0.2.2/boot/boot.ipxe\n"),
        "{dnsmasq}"
    );
    assert!(
        dnsmasq.contains("id:ff:00:00:00:00:00:02:00:00:02:c9:00:f4:52:14:03:00:38:39:81"),
        "{dnsmasq}"
    );
    let file = tmp.path().join("dnsmasq.conf");
    std::fs::write(&file, &dnsmasq).unwrap();
    let test = Command::new("dnsmasq")
        .arg("--test")
        .arg(format!("--conf-file={}", file.display()))
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "dnsmasq --test: {}\n{dnsmasq}",
        String::from_utf8_lossy(&test.stderr)
    );

    let dhcpd_bin = ["/usr/sbin/dhcpd", "/sbin/dhcpd"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("ISC dhcpd not installed: apt-get install isc-dhcp-server (scripts/fixtures does)");
    let dhcpd = config("dhcpd");
    let forms = dhcpd.matches("option dhcp-client-identifier").count();
    assert!(
        forms >= 4,
        "every identifier form gets a host block:\n{dhcpd}"
    );
    let file = tmp.path().join("dhcpd.conf");
    std::fs::write(&file, &dhcpd).unwrap();
    let test = Command::new(dhcpd_bin)
        .args(["-t", "-cf"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "dhcpd -t: {}\n{dhcpd}",
        String::from_utf8_lossy(&test.stderr)
    );
}
