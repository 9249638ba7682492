//! A real boot: the fixture 6.1 kernel in qemu (TCG) with an initrd that
//! holds only the static kmodkit-init as /init, its configuration and the
//! virtio-net modules (load order and dependencies from kmod's
//! `modprobe --show-depends` on the fixture tree). qemu's user network
//! answers DHCP; a Python HTTP server on 127.0.0.1 (the guest's 10.0.2.2)
//! serves the root image, a gzip cpio with a static busybox whose /sbin/init
//! checks the switched root and prints a marker. Every qemu run is bounded.
//!
//! The init is built as it ships — static (`+crt-static`, glibc), release,
//! symbols stripped (2.3 MB) — by the test itself
//! ([`kmodkit_fixtures::static_kmodkit_init`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kmodkit_init::config::{
    Config, InterfaceSelector, ModuleSpec, NetworkMode, OnFailure, RootSource, Timeouts,
};
use kmodkit_initramfs::compression::{Compression, EncodeOptions};
use kmodkit_initramfs::cpio::FileType;
use kmodkit_initramfs::create::{plan, write_segments, CreateOptions, SegmentSpec, SourceEntry};
use kmodkit_initramfs::read::NoProgress;

const QEMU_TIMEOUT: Duration = Duration::from_secs(150);
const MARKER: &str = "KMODKIT-ROOT-OK";

fn require(tool: &str, package: &str) {
    kmodkit_fixtures::require_tool(tool, package);
}

/// The static init, built once per test run (see kmodkit-fixtures).
fn static_init() -> &'static Path {
    kmodkit_fixtures::static_kmodkit_init()
}

fn kernel(series: &str) -> (String, PathBuf) {
    let root = kmodkit_fixtures::fixture_root();
    // The first kernel of the series whose module tree the fixtures unpacked.
    let kver = kmodkit_fixtures::kernels()
        .into_iter()
        .filter(|(k, s)| {
            s == series
                && root
                    .join("lib/modules")
                    .join(k)
                    .join("modules.dep")
                    .is_file()
        })
        .map(|(k, _)| k)
        .next()
        .unwrap_or_else(|| {
            panic!("no {series} kernel with lib/modules in the fixtures; run scripts/fixtures")
        });
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{kver}"));
    (kver, vmlinuz)
}

/// The modules kmod would load for `wanted`, in its load order, each with
/// its dependencies (from modules.dep) as names.
fn resolve_modules(kver: &str, wanted: &[&str]) -> Vec<(ModuleSpec, PathBuf)> {
    require("modprobe", "kmod");
    let root = kmodkit_fixtures::fixture_root();
    let tree = root.join("lib/modules").join(kver);
    let dep_text = std::fs::read_to_string(tree.join("modules.dep")).unwrap();
    let name_of = |path: &str| {
        let file = Path::new(path)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        file.split(".ko").next().unwrap().replace('-', "_")
    };
    let mut out: Vec<(ModuleSpec, PathBuf)> = Vec::new();
    for module in wanted {
        let show = Command::new("modprobe")
            .args(["-d"])
            .arg(&root)
            .args(["-S", kver, "--show-depends", module])
            .output()
            .unwrap();
        assert!(
            show.status.success(),
            "modprobe --show-depends {module}: {}",
            String::from_utf8_lossy(&show.stderr)
        );
        for line in String::from_utf8_lossy(&show.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ") else {
                continue;
            };
            let path = path.split_whitespace().next().unwrap();
            let relative = Path::new(path)
                .strip_prefix(&tree)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let name = name_of(&relative);
            if out.iter().any(|(m, _)| m.name == name) {
                continue;
            }
            let depends = dep_text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{relative}:")))
                .unwrap_or("")
                .split_whitespace()
                .map(name_of)
                .collect();
            out.push((
                ModuleSpec {
                    name,
                    path: format!("/lib/modules/{kver}/{relative}"),
                    options: String::new(),
                    depends,
                },
                PathBuf::from(path),
            ));
        }
    }
    out
}

fn entry(name: &str, file_type: FileType, perm: u32) -> SourceEntry {
    SourceEntry::new(name.as_bytes().to_vec(), file_type, perm)
}

fn file_entry(name: &str, source: &Path, perm: u32) -> SourceEntry {
    let mut e = entry(name, FileType::Regular, perm);
    e.size = std::fs::metadata(source).unwrap().len();
    e.source = Some(source.to_path_buf());
    e
}

fn write_cpio_gz(entries: Vec<SourceEntry>, out: &Path) {
    let planned = plan(entries, &CreateOptions::default()).unwrap();
    let segments = [SegmentSpec {
        entries: &planned,
        format: kmodkit_initramfs::cpio::Format::Newc,
        encode: EncodeOptions {
            compression: Compression::Gzip,
            level: None,
            threads: 1,
        },
    }];
    let mut file = std::fs::File::create(out).unwrap();
    write_segments(&segments, &mut file, &NoProgress).unwrap();
}

/// The root image: static busybox, /sbin/init checking the switched root;
/// a gzip cpio written by kmodkit-initramfs, or a gzip tar by GNU tar.
fn root_image(dir: &Path, tar: bool) -> PathBuf {
    require("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap();
    let init = dir.join("root-init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\n\
             export PATH=/bin\n\
             echo \"ROOT-INIT: pid $$\"\n\
             if [ -r /proc/self/mountinfo ]; then echo ROOT-CHECK proc-mounted; fi\n\
             if grep -q '^[0-9]* [0-9]* [^ ]* / / .* - tmpfs ' /proc/self/mountinfo; then echo ROOT-CHECK root-is-tmpfs; fi\n\
             if [ ! -e /init ] && [ ! -e /etc/kmodkit-init.json ]; then echo ROOT-CHECK not-the-initramfs; fi\n\
             while read -r line; do echo \"ROOT-LEASE $line\"; done < /run/kmodkit/lease\n\
             echo {MARKER}\n\
             poweroff -f\n"
        ),
    )
    .unwrap();
    let mut entries = vec![
        file_entry("bin/busybox", busybox, 0o755),
        file_entry("sbin/init", &init, 0o755),
    ];
    for applet in ["sh", "grep", "echo", "poweroff", "cat"] {
        let mut link = entry(&format!("bin/{applet}"), FileType::Symlink, 0o777);
        link.link_target = b"busybox".to_vec();
        link.size = 7;
        entries.push(link);
    }
    for d in ["dev", "proc", "sys", "run", "etc", "tmp"] {
        entries.push(entry(d, FileType::Directory, 0o755));
    }
    if !tar {
        let out = dir.join("root.cpio.gz");
        write_cpio_gz(entries, &out);
        return out;
    }
    let stage = dir.join("root-tree");
    for e in &entries {
        let path = stage.join(String::from_utf8(e.name.clone()).unwrap());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match e.file_type {
            FileType::Directory => std::fs::create_dir_all(&path).unwrap(),
            FileType::Symlink => std::os::unix::fs::symlink("busybox", &path).unwrap(),
            _ => {
                std::fs::copy(e.source.as_ref().unwrap(), &path).unwrap();
                let mode = std::os::unix::fs::PermissionsExt::from_mode(e.perm);
                std::fs::set_permissions(&path, mode).unwrap();
            }
        }
    }
    let out = dir.join("root.tar.gz");
    let status = Command::new("tar")
        .args(["--format", "gnu", "--owner", "0", "--group", "0", "-czf"])
        .arg(&out)
        .arg("-C")
        .arg(&stage)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn initrd(dir: &Path, config: &Config, modules: &[(ModuleSpec, PathBuf)]) -> PathBuf {
    let config_file = dir.join("kmodkit-init.json");
    std::fs::write(&config_file, config.to_json()).unwrap();
    let mut entries = vec![
        file_entry("init", static_init(), 0o755),
        file_entry("etc/kmodkit-init.json", &config_file, 0o644),
    ];
    for (spec, source) in modules {
        entries.push(file_entry(spec.path.trim_start_matches('/'), source, 0o644));
    }
    let mut console = entry("dev/console", FileType::CharDevice, 0o600);
    console.rdev = (5, 1);
    entries.push(console);
    for d in ["proc", "sys", "run", "sysroot"] {
        entries.push(entry(d, FileType::Directory, 0o755));
    }
    let out = dir.join("initrd.img");
    write_cpio_gz(entries, &out);
    out
}

/// Python's `http.server` on 127.0.0.1, an ephemeral port, answering the
/// first `fail_first` requests with 503 (a server still starting); killed
/// on drop.
struct HttpServer {
    child: Child,
    port: u16,
}

impl HttpServer {
    fn start(dir: &Path, fail_first: u32) -> HttpServer {
        require("python3", "python3");
        let script = "import functools,http.server,sys\n\
                      class H(http.server.SimpleHTTPRequestHandler):\n\
                      \x20   left=int(sys.argv[2])\n\
                      \x20   def do_GET(self):\n\
                      \x20       if H.left > 0:\n\
                      \x20           H.left -= 1\n\
                      \x20           self.send_error(503)\n\
                      \x20       else:\n\
                      \x20           super().do_GET()\n\
                      h=functools.partial(H,directory=sys.argv[1])\n\
                      s=http.server.ThreadingHTTPServer(('127.0.0.1',0),h)\n\
                      print(s.server_address[1],flush=True)\n\
                      s.serve_forever()\n";
        let mut child = Command::new("python3")
            .args(["-c", script])
            .arg(dir)
            .arg(fail_first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the HTTP server's port");
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots and returns the serial console output and how long qemu ran.
fn boot(vmlinuz: &Path, initrd: &Path, append: &str) -> (String, Duration) {
    require("qemu-system-x86_64", "qemu-system-x86");
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(QEMU_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 loglevel=4 {append}"))
        .args(["-nic", "user,model=virtio-net-pci"])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run qemu");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    // For debugging a boot: KMODKIT_BOOT_CONSOLE=FILE keeps the last console.
    if let Some(file) = std::env::var_os("KMODKIT_BOOT_CONSOLE") {
        let _ = std::fs::write(file, &console);
    }
    (console, started.elapsed())
}

fn config_for(
    kver: &str,
    modules: &[(ModuleSpec, PathBuf)],
    url: String,
    sha256: String,
) -> Config {
    Config {
        kernel: kver.to_string(),
        modules: modules.iter().map(|(m, _)| m.clone()).collect(),
        interface: InterfaceSelector::FirstEthernet,
        network: NetworkMode::Dhcp {
            client_id: None,
            hostname: None,
        },
        root: RootSource::Http { url, sha256 },
        root_init: "/sbin/init".into(),
        timeouts: Timeouts {
            root_attempts: 3,
            ..Timeouts::default()
        },
        on_failure: OnFailure::Reboot { delay_secs: 0 },
        debug: false,
    }
}

fn sha256_file(path: &Path) -> String {
    kmodkit_init::rootfs::sha256_hex(&std::fs::read(path).unwrap())
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    kver: String,
    vmlinuz: PathBuf,
    modules: Vec<(ModuleSpec, PathBuf)>,
    root_sha: String,
    /// `root.cpio.gz` or `root.tar.gz`.
    root_name: String,
    server: HttpServer,
}

/// `xz -C crc32` copies of the modules (the check the kernel's decoder
/// takes), for a kernel that cannot decompress them itself.
fn xz_modules(dir: &Path, modules: Vec<(ModuleSpec, PathBuf)>) -> Vec<(ModuleSpec, PathBuf)> {
    require("xz", "xz-utils");
    modules
        .into_iter()
        .map(|(mut spec, source)| {
            let out = dir.join(format!("{}.ko.xz", spec.name));
            let data = Command::new("xz")
                .args(["-C", "crc32", "-c"])
                .arg(&source)
                .output()
                .unwrap();
            assert!(data.status.success());
            std::fs::write(&out, data.stdout).unwrap();
            spec.path.push_str(".xz");
            (spec, out)
        })
        .collect()
}

fn setup(series: &str, tar_root: bool) -> Setup {
    setup_serving(series, tar_root, 0)
}

fn setup_serving(series: &str, tar_root: bool, fail_first: u32) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (kver, vmlinuz) = kernel(series);
    let modules = resolve_modules(&kver, &["virtio_pci", "virtio_net"]);
    let served = path.join("www");
    std::fs::create_dir_all(&served).unwrap();
    let image = root_image(&path, tar_root);
    let root_name = image.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&image, served.join(&root_name)).unwrap();
    let root_sha = sha256_file(&served.join(&root_name));
    let server = HttpServer::start(&served, fail_first);
    Setup {
        _dir: dir,
        dir: path,
        kver,
        vmlinuz,
        modules,
        root_sha,
        root_name,
        server,
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn has_line(console: &str, needle: &str) -> bool {
    console.lines().any(|l| l.contains(needle))
}

fn boots_to_the_root_over_dhcp_and_http(series: &str, compress: bool, tar_root: bool) {
    let mut s = setup(series, tar_root);
    if compress {
        s.modules = xz_modules(&s.dir, std::mem::take(&mut s.modules));
    }
    let compressed = s
        .modules
        .iter()
        .filter(|(m, _)| m.path.ends_with(".ko.xz"))
        .count();
    // 6.1 has no CONFIG_MODULE_DECOMPRESS: the init decompresses there.
    let decompressed_here = if series == "6.1" { compressed } else { 0 };
    assert!(compressed > 0 || !compress);
    let url = format!("http://10.0.2.2:{}/{}", s.server.port, s.root_name);
    let config = config_for(&s.kver, &s.modules, url, s.root_sha.clone());
    let img = initrd(&s.dir, &config, &s.modules);
    let (console, took) = boot(&s.vmlinuz, &img, "");
    let names: Vec<&str> = s.modules.iter().map(|(m, _)| m.name.as_str()).collect();
    assert!(
        names.contains(&"virtio_net") && names.contains(&"net_failover"),
        "{names:?}"
    );
    let expected = [
        "kmodkit-init: [".to_string(),
        "] mounts: /proc /sys /dev /run in ".to_string(),
        "] config: ".to_string(),
        format!("] modules: loaded {} in ", s.modules.len()),
        format!(" already present, {decompressed_here} decompressed here, "),
        "] interface: eth0 (52:54:00:12:34:56) up in ".to_string(),
        " s, carrier".to_string(),
        "] network: eth0 10.0.2.15/24 via 10.0.2.2 from DHCP server 10.0.2.2 in ".to_string(),
        format!(
            ", sha256 ok, {}.gz with ",
            if tar_root { "tar" } else { "cpio" }
        ),
        " initramfs entries freed, exec /sbin/init in /sysroot".to_string(),
        "ROOT-CHECK proc-mounted".to_string(),
        "ROOT-CHECK root-is-tmpfs".to_string(),
        "ROOT-CHECK not-the-initramfs".to_string(),
        "ROOT-LEASE address=10.0.2.15".to_string(),
        "ROOT-LEASE routers=10.0.2.2".to_string(),
        MARKER.to_string(),
    ];
    for needle in &expected {
        assert!(
            has_line(&console, needle),
            "{needle:?} not on the console ({took:?}); tail:\n{}",
            tail(&console)
        );
    }
    assert!(!console.contains("FAILED"), "{}", tail(&console));
    // Shown with --nocapture: the stage times of this boot.
    for line in console
        .lines()
        .filter(|l| l.starts_with("kmodkit-init: ") || l.starts_with("ROOT-"))
    {
        println!("{line}");
    }
}

/// 6.1: plain `.ko` files, `finit_module`.
#[test]
fn boots_6_1() {
    boots_to_the_root_over_dhcp_and_http("6.1", false, false);
}

/// 6.1 with `.ko.xz` modules: the kernel cannot decompress, the init does.
#[test]
fn boots_6_1_with_xz_modules() {
    boots_to_the_root_over_dhcp_and_http("6.1", true, false);
}

/// 6.12: Debian's `.ko.xz`, decompressed by the kernel
/// (`MODULE_INIT_COMPRESSED_FILE`); virtio_pci is built in there. The root
/// is a tar.gz here.
#[test]
fn boots_6_12() {
    boots_to_the_root_over_dhcp_and_http("6.12", false, true);
}

#[test]
fn a_missing_nic_driver_fails_in_stage_interface() {
    let s = setup("6.1", false);
    let url = format!("http://10.0.2.2:{}/{}", s.server.port, s.root_name);
    let mut config = config_for(&s.kver, &[], url, s.root_sha.clone());
    config.timeouts.interface_secs = 3;
    let img = initrd(&s.dir, &config, &[]);
    let (console, took) = boot(&s.vmlinuz, &img, "");
    let failed = console
        .lines()
        .find(|l| l.contains("FAILED in stage interface: "))
        .unwrap_or_else(|| {
            panic!(
                "no interface failure on the console; tail:\n{}",
                tail(&console)
            )
        });
    assert!(
        failed.contains("no interface with an Ethernet address appeared within 3")
            && failed.contains("links seen: lo (00:00:00:00:00:00)")
            && failed.contains("; check: the NIC's driver is in the image"),
        "{failed}"
    );
    assert!(
        took < QEMU_TIMEOUT,
        "qemu ran into the timeout: the init hung"
    );
}

#[test]
fn a_wrong_checksum_fails_in_stage_root_and_does_not_hang() {
    let s = setup("6.1", false);
    let url = format!("http://10.0.2.2:{}/{}", s.server.port, s.root_name);
    let wrong = "0".repeat(64);
    let config = config_for(&s.kver, &s.modules, url, wrong.clone());
    let img = initrd(&s.dir, &config, &s.modules);
    let (console, took) = boot(&s.vmlinuz, &img, "");
    let failed = console
        .lines()
        .find(|l| l.contains("FAILED in stage root: "))
        .unwrap_or_else(|| panic!("no root failure on the console; tail:\n{}", tail(&console)));
    assert!(
        failed.contains(&format!(
            "sha256 of the image is {}, the configuration expects {wrong}",
            s.root_sha
        )) && failed.contains("; check: "),
        "{failed}"
    );
    assert!(has_line(&console, "rebooting in 0 s"), "{}", tail(&console));
    assert!(
        took < QEMU_TIMEOUT,
        "qemu ran into the timeout: the init hung"
    );
    assert!(!has_line(&console, MARKER));
}

/// The kernel command line overrides the configuration: dracut's static
/// `ip=` instead of DHCP, and `kmodkit.debug`; the HTTP server answers 503
/// twice first, and the init's retries get the image.
#[test]
fn static_ip_from_the_command_line_and_http_retries() {
    let s = setup_serving("6.1", false, 2);
    let url = format!("http://10.0.2.2:{}/{}", s.server.port, s.root_name);
    let config = config_for(&s.kver, &s.modules, url, s.root_sha.clone());
    let img = initrd(&s.dir, &config, &s.modules);
    let (console, took) = boot(
        &s.vmlinuz,
        &img,
        "ip=10.0.2.77::10.0.2.2:255.255.255.0:node77:eth0:none kmodkit.debug",
    );
    for needle in [
        "] network: eth0 10.0.2.77/24 via 10.0.2.2 from static configuration in ",
        "] root: attempt 1 of 3: http://10.0.2.2:",
        "server answered HTTP/1.0 503 Service Unavailable; again in 1 s",
        "] root: attempt 2 of 3: ",
        "again in 2 s",
        "ROOT-LEASE address=10.0.2.77",
        "ROOT-LEASE hostname=node77",
        "ROOT-LEASE source=static",
        "ROOT-CHECK root-is-tmpfs",
        MARKER,
    ] {
        assert!(
            has_line(&console, needle),
            "{needle:?} not on the console ({took:?}); tail:\n{}",
            tail(&console)
        );
    }
    assert!(!has_line(&console, "dhcp: offer"), "{}", tail(&console));
    assert!(
        has_line(&console, "modules: virtio_net New in "),
        "kmodkit.debug: {}",
        tail(&console)
    );
}

/// A dependency left out of the image (net_failover): the kernel refuses
/// virtio_net with ENOENT (unknown symbols), and the init names the module,
/// the errno and what to check.
#[test]
fn a_missing_dependency_fails_in_stage_modules() {
    let s = setup("6.1", false);
    let url = format!("http://10.0.2.2:{}/{}", s.server.port, s.root_name);
    let modules: Vec<(ModuleSpec, PathBuf)> = s
        .modules
        .iter()
        .filter(|(m, _)| m.name != "net_failover" && m.name != "failover")
        .map(|(m, p)| {
            let mut m = m.clone();
            m.depends.retain(|d| d != "net_failover" && d != "failover");
            (m, p.clone())
        })
        .collect();
    let config = config_for(&s.kver, &modules, url, s.root_sha.clone());
    let img = initrd(&s.dir, &config, &modules);
    let (console, took) = boot(&s.vmlinuz, &img, "");
    let failed = console
        .lines()
        .find(|l| l.contains("FAILED in stage modules: "))
        .unwrap_or_else(|| {
            panic!(
                "no modules failure on the console; tail:\n{}",
                tail(&console)
            )
        });
    assert!(
        failed.contains("module virtio_net (/lib/modules/")
            && failed.contains(
                "finit_module: No such file or directory (os error 2); check: an unknown symbol"
            ),
        "{failed}"
    );
    // The kernel's own reason, from its log (loglevel=4 keeps it off the console).
    assert!(
        failed.contains("[kernel: virtio_net: Unknown symbol "),
        "{failed}"
    );
    assert!(
        took < QEMU_TIMEOUT,
        "qemu ran into the timeout: the init hung"
    );
}
