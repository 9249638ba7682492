//! `netboot verify`: boots a set the way a node does — qemu (TCG) with its
//! iPXE ROM (Debian `ipxe-qemu`), a real dnsmasq serving DHCP and TFTP and
//! a real HTTP server (Python's `http.server`), all on a tap inside a
//! private network namespace — and reports each stage from what the
//! servers and the console saw, timed on one clock.
//!
//! The lab: `unshare --net` holds a new network namespace with one tap
//! (`kmk0`) carrying the server address (the root URL's host); dnsmasq,
//! the HTTP servers and qemu run in it through `nsenter`. Every child gets
//! `PR_SET_PDEATHSIG`: when verify ends, however it ends, they end, and
//! with the last of them the namespace and its tap are gone.
//!
//! DHCP: the node list's reservations through [`crate::dhcp_config::dnsmasq`]
//! (what `dhcp-config` writes), iPXE clients sent `boot.ipxe` over TFTP
//! (`tftp-root` = the set). `boot.ipxe` fetches `vmlinuz` and `initrd.img`
//! over TFTP (relative URLs) or from the set's `--url` over HTTP.
//!
//! Stages, in order: `firmware-dhcp` (the first DHCPACK), `boot-script`,
//! `kernel-fetch` (both files sent), `kernel-start` ("Linux version"),
//! `modules` (kmodkit-init loaded every module of the manifest),
//! `interface`, `network` (the address kmodkit-init configured),
//! `lease` (DHCP sets: dnsmasq's lease file holds the node's reserved
//! address for the VM), `root` (image fetched, sha256 ok), `switch-root`,
//! `root-init` (the root's init printed the marker; only with a marker).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kmodkit_init::config::{InterfaceSelector, NetworkMode, RootSource};
use kmodkit_init::dhcp::client_id::{colon_hex, ipxe_mac_from_guid, MacAddress};
use serde::{Deserialize, Serialize};

use crate::dhcp_config::{self, Node};
use crate::NetbootError;

/// The lab's tap, inside its namespace.
const TAP: &str = "kmk0";
/// The lab's IPv6 prefix (unique local), announced so iPXE need not wait.
const LAB_IPV6: &str = "fd4b:4d6b:0:1::";
/// The VM's MAC when no node gives one.
pub const DEFAULT_MAC: &str = "52:54:00:4b:4d:01";

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The boot set (`netboot build`'s output).
    pub set: PathBuf,
    /// The node list; the node booted is [`VerifyRequest::node`].
    pub nodes: Vec<Node>,
    /// The node to boot (by name); `None`: the only node of the list.
    pub node: Option<String>,
    /// dnsmasq configuration to use instead of the one generated from `nodes`.
    pub dhcp_config: Option<PathBuf>,
    /// The root image served at the root URL; `None`: the set's file of
    /// the URL's base name.
    pub root_image: Option<PathBuf>,
    /// The tree an NFS-root set mounts, exported read-only over NFSv4 by
    /// nfs-ganesha at the set's export path.
    pub root_dir: Option<PathBuf>,
    /// A line the root's init prints; the boot is verified when it appears.
    pub marker: Option<String>,
    pub timeout: Duration,
    /// Rehearsal: dnsmasq answers iPXE only, the OS stage gets no lease.
    pub no_os_lease: bool,
    /// Rehearsal: the root image's HTTP server starts this long after
    /// kmodkit-init's network is up (needs the root on its own port).
    pub root_server_late: Option<Duration>,
    pub memory_mib: u32,
    /// Where the console, server logs, dnsmasq configuration, leases and
    /// `timeline.log` (every line of them on verify's clock) are written
    /// (created).
    pub logs: PathBuf,
    pub qemu: String,
}

/// One stage as observed.
#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub name: &'static str,
    /// Seconds since qemu started, when reached.
    pub at: Option<f64>,
    pub ok: bool,
    pub detail: String,
}

/// Where the boot stopped, if it did not reach the end.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub stage: String,
    pub reason: String,
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub kernel: String,
    pub node: Option<String>,
    pub expected_address: Option<Ipv4Addr>,
    pub mac: String,
    pub stages: Vec<Stage>,
    pub failure: Option<Failure>,
    /// Seconds from qemu's start to the end of the run.
    pub seconds: f64,
    pub logs: PathBuf,
}

#[derive(Deserialize)]
struct ManifestView {
    kernel: String,
    modules: Vec<serde_json::Value>,
    settings: SettingsView,
}

#[derive(Deserialize)]
struct SettingsView {
    network: NetworkMode,
    root: RootSource,
    boot_url: Option<String>,
    interface: InterfaceSelector,
}

/// `http://A.B.C.D[:port]/path` → (address, port, path).
fn split_url(url: &str) -> Result<(Ipv4Addr, u16, String), NetbootError> {
    let bad = |why: &str| NetbootError::Invalid(format!("{url}: {why}"));
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| bad("verify serves http:// URLs only"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad("the port is not a number"))?),
        None => (hostport, 80),
    };
    let host = host
        .parse()
        .map_err(|_| bad("the host is not an IPv4 address"))?;
    Ok((host, port, path))
}

/// The stages, fed one line at a time.
#[derive(Debug)]
pub struct Tracker {
    stages: Vec<Stage>,
    expected_modules: usize,
    expected_address: Option<Ipv4Addr>,
    firmware_address: Option<Ipv4Addr>,
    marker: Option<String>,
    kernel_started: bool,
    fetched: BTreeMap<&'static str, f64>,
    pub failure: Option<Failure>,
    /// The root's init printed the marker (or switch_root ran, without one).
    pub done: bool,
    /// kmodkit-init's network is up (for the late root server).
    pub network_up: bool,
    pub last_console: String,
}

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Console,
    Dnsmasq,
    Http,
}

const STAGES: [&str; 11] = [
    "firmware-dhcp",
    "boot-script",
    "kernel-fetch",
    "kernel-start",
    "modules",
    "interface",
    "network",
    "lease",
    "root",
    "switch-root",
    "root-init",
];

impl Tracker {
    /// `expected_address`: the OS stage's; `firmware_address`: the
    /// firmware's (the node's reservation; `None`: any).
    pub fn new(
        expected_modules: usize,
        expected_address: Option<Ipv4Addr>,
        firmware_address: Option<Ipv4Addr>,
        marker: Option<String>,
    ) -> Tracker {
        Tracker {
            stages: STAGES
                .iter()
                .map(|name| Stage {
                    name,
                    at: None,
                    ok: false,
                    detail: String::new(),
                })
                .collect(),
            expected_modules,
            expected_address,
            firmware_address,
            marker,
            kernel_started: false,
            fetched: BTreeMap::new(),
            failure: None,
            done: false,
            network_up: false,
            last_console: String::new(),
        }
    }

    fn reach(&mut self, name: &str, at: f64, ok: bool, detail: String) -> Option<&Stage> {
        let stage = self.stages.iter_mut().find(|s| s.name == name)?;
        if stage.at.is_some() {
            return None;
        }
        stage.at = Some(at);
        stage.ok = ok;
        stage.detail = detail;
        if !ok && self.failure.is_none() {
            self.failure = Some(Failure {
                stage: name.to_string(),
                reason: stage.detail.clone(),
            });
        }
        Some(stage)
    }

    /// Takes one line; returns the stage it completed, if any.
    pub fn feed(&mut self, source: Source, at: f64, line: &str) -> Option<Stage> {
        match source {
            Source::Dnsmasq => self.dnsmasq(at, line),
            Source::Http => self.http(at, line),
            Source::Console => self.console(at, line),
        }
    }

    fn fetched(&mut self, at: f64, file: &str) -> Option<Stage> {
        let name = Path::new(file).file_name()?.to_str()?;
        match name {
            "boot.ipxe" => self
                .reach("boot-script", at, true, format!("{file} sent"))
                .cloned(),
            "vmlinuz" | "initrd.img" => {
                self.fetched.insert(
                    if name == "vmlinuz" {
                        "vmlinuz"
                    } else {
                        "initrd.img"
                    },
                    at,
                );
                if self.fetched.len() == 2 {
                    return self
                        .reach(
                            "kernel-fetch",
                            at,
                            true,
                            "vmlinuz and initrd.img sent".into(),
                        )
                        .cloned();
                }
                None
            }
            _ => None,
        }
    }

    fn dnsmasq(&mut self, at: f64, line: &str) -> Option<Stage> {
        if let Some(i) = line.find("DHCPACK(") {
            let fields: Vec<&str> = line[i..].split_whitespace().collect();
            let address = fields.get(1).and_then(|a| a.parse::<Ipv4Addr>().ok());
            if !self.kernel_started {
                let ok = match (self.firmware_address, address) {
                    (Some(want), Some(got)) => want == got,
                    _ => address.is_some(),
                };
                let detail = format!(
                    "{} to {}{}",
                    fields.get(1).unwrap_or(&"?"),
                    fields.get(2).unwrap_or(&"?"),
                    if ok { "" } else { " (not the reservation)" }
                );
                return self.reach("firmware-dhcp", at, ok, detail).cloned();
            }
            return None;
        }
        // "dnsmasq-tftp[PID]: sent /srv/set/vmlinuz to 10.0.0.11"
        if line.starts_with("dnsmasq-tftp") {
            let (_, rest) = line
                .split_once("]: sent ")
                .or_else(|| line.split_once(": sent "))?;
            let file = rest.split(" to ").next()?;
            return self.fetched(at, file);
        }
        None
    }

    fn http(&mut self, at: f64, line: &str) -> Option<Stage> {
        // `ADDR - - [date] "GET /path HTTP/1.1" 200 -`
        let request = line.split('"').nth(1)?;
        let status = line.split('"').nth(2)?.split_whitespace().next()?;
        let mut words = request.split_whitespace();
        let (Some("GET"), Some(path)) = (words.next(), words.next()) else {
            return None;
        };
        if status != "200" {
            return None;
        }
        self.fetched(at, path)
    }

    fn console(&mut self, at: f64, line: &str) -> Option<Stage> {
        if !line.trim().is_empty() {
            self.last_console = line.trim().to_string();
        }
        if let Some(marker) = &self.marker {
            if line.contains(marker.as_str()) {
                self.done = true;
                return self
                    .reach("root-init", at, true, format!("{marker:?} printed"))
                    .cloned();
            }
        }
        if line.contains("Linux version ") {
            self.kernel_started = true;
            let detail = line
                .split("Linux version ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("")
                .to_string();
            return self.reach("kernel-start", at, true, detail).cloned();
        }
        for firmware_failure in [
            "No bootable device",
            "No more network devices",
            "Could not boot",
        ] {
            if line.contains(firmware_failure) && !self.kernel_started {
                self.failure.get_or_insert(Failure {
                    stage: "firmware".into(),
                    reason: line.trim().to_string(),
                });
                return None;
            }
        }
        let i = line.find("kmodkit-init: [")?;
        let rest = &line[i + "kmodkit-init: [".len()..];
        let (_, text) = rest.split_once("] ")?;
        self.kernel_started = true;
        if let Some(failed) = text.strip_prefix("FAILED in stage ") {
            let (stage, reason) = failed.split_once(": ").unwrap_or((failed, ""));
            self.failure.get_or_insert(Failure {
                stage: stage.to_string(),
                reason: reason.to_string(),
            });
            return None;
        }
        if let Some(m) = text.strip_prefix("modules: loaded ") {
            // "N in S s (P already present, ..."
            let loaded: usize = m.split_whitespace().next()?.parse().ok()?;
            let present: usize = m
                .split('(')
                .nth(1)
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let ok = loaded + present == self.expected_modules;
            let detail = format!(
                "{} of the manifest's {} modules in the kernel{}",
                loaded + present,
                self.expected_modules,
                if ok { "" } else { " (not all)" }
            );
            return self.reach("modules", at, ok, detail).cloned();
        }
        if let Some(d) = text.strip_prefix("interface: ") {
            return self.reach("interface", at, true, d.to_string()).cloned();
        }
        if let Some(d) = text.strip_prefix("network: ") {
            self.network_up = true;
            // "IFACE ADDR/PREFIX ..."
            let address = d
                .split_whitespace()
                .nth(1)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse::<Ipv4Addr>().ok());
            let ok = match self.expected_address {
                Some(want) => address == Some(want),
                None => address.is_some(),
            };
            let detail = format!(
                "{d}{}",
                if ok {
                    String::new()
                } else {
                    format!(
                        " (expected {})",
                        self.expected_address
                            .map_or("an address".into(), |a| a.to_string())
                    )
                }
            );
            return self.reach("network", at, ok, detail).cloned();
        }
        if let Some(d) = text.strip_prefix("root: ") {
            if d.contains("sha256 ok") || d.starts_with("nfs ") && d.contains("mounted") {
                return self.reach("root", at, true, d.to_string()).cloned();
            }
            return None;
        }
        if let Some(d) = text.strip_prefix("switch_root: ") {
            if self.marker.is_none() {
                self.done = true;
            }
            return self.reach("switch-root", at, true, d.to_string()).cloned();
        }
        None
    }

    /// The lease stage from dnsmasq's lease file (`expiry MAC IP NAME ID`).
    pub fn leases(&mut self, at: f64, text: &str, mac: &str) -> Option<Stage> {
        let want = self.expected_address?;
        let mine: Vec<&str> = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some(mac))
            .collect();
        let ok = mine
            .iter()
            .any(|l| l.split_whitespace().nth(2) == Some(&want.to_string()));
        let detail = if mine.is_empty() {
            format!("no lease for {mac} in dnsmasq's lease file")
        } else {
            mine.iter()
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    format!(
                        "{} client-id {}",
                        f.get(2).unwrap_or(&"?"),
                        f.get(4).unwrap_or(&"*")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        self.reach("lease", at, ok, detail).cloned()
    }

    /// The stages in order; those never reached have `at: None`.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetbootError + '_ {
    move |source| NetbootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Children die with verify (PR_SET_PDEATHSIG), whatever ends it.
fn with_parent(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    cmd
}

struct Lab {
    holder: Child,
    children: Vec<Child>,
}

impl Lab {
    fn start(server: Ipv4Addr, prefix: u8) -> Result<Lab, NetbootError> {
        let script = format!(
            "set -e; ip link set lo up; ip tuntap add dev {TAP} mode tap; \
             ip addr add {server}/{prefix} dev {TAP}; \
             ip -6 addr add {LAB_IPV6}1/64 dev {TAP} nodad; ip link set {TAP} up; \
             echo ready; exec sleep 2147483647"
        );
        let mut holder = with_parent(
            Command::new("unshare")
                .args(["--net", "--", "sh", "-c", &script])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .spawn()
        .map_err(|e| NetbootError::Invalid(format!("unshare (util-linux): {e}")))?;
        let mut line = String::new();
        let _ = BufReader::new(holder.stdout.take().expect("piped")).read_line(&mut line);
        if line.trim() != "ready" {
            let mut err = String::new();
            if let Some(mut e) = holder.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(NetbootError::Invalid(format!(
                "the lab's network namespace could not be made (verify needs root, `unshare` and `ip`): {}",
                err.trim()
            )));
        }
        Ok(Lab {
            holder,
            children: Vec::new(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.holder.id()))
            .arg("--")
            .arg(program)
            .stdin(Stdio::null());
        with_parent(&mut cmd);
        cmd
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in self
            .children
            .iter_mut()
            .chain(std::iter::once(&mut self.holder))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends each line of `stream` with its time since `start`.
fn forward(
    stream: impl Read + Send + 'static,
    source: Source,
    start: Instant,
    tx: mpsc::Sender<(Source, f64, String)>,
    raw_log: Option<std::fs::File>,
) {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut raw_log = raw_log;
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if let Some(f) = raw_log.as_mut() {
                let _ = f.write_all(&buf);
            }
            let text = strip_escapes(&String::from_utf8_lossy(&buf));
            let at = start.elapsed().as_secs_f64();
            for part in text.split('\r') {
                if tx.send((source, at, part.to_string())).is_err() {
                    return;
                }
            }
        }
    });
}

/// The text of a console line without ANSI escape sequences.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\n' {
            out.push(c);
        }
    }
    out
}

const HTTP_SERVER: &str = "import functools,http.server,sys\n\
h=functools.partial(http.server.SimpleHTTPRequestHandler,directory=sys.argv[1])\n\
s=http.server.ThreadingHTTPServer((sys.argv[2],int(sys.argv[3])),h)\n\
print('ready',flush=True)\n\
s.serve_forever()\n";

/// Waits until the lab's last child, a server, writes `ready` into its
/// `log`. If it ends first (or takes `patience`), the error is its own
/// last words: a TFTP root dnsmasq cannot read, a configuration line it
/// refuses, an export nfs-ganesha cannot open — not a node stage that
/// "found no server" later.
fn wait_until_serving(
    lab: &mut Lab,
    server: &str,
    log: &Path,
    ready: &str,
    patience: Duration,
) -> Result<(), NetbootError> {
    let deadline = Instant::now() + patience;
    loop {
        if std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(ready)
        {
            return Ok(());
        }
        let ended = lab
            .children
            .last_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if ended || Instant::now() >= deadline {
            // A forwarding thread may still be writing the last lines.
            std::thread::sleep(Duration::from_millis(200));
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let mut said: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .rev()
                .take(3)
                .collect();
            said.reverse();
            return Err(NetbootError::Invalid(format!(
                "{server} did not start: {} (see {})",
                said.join(" | "),
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where the lab serves the set's root from.
enum RootServer {
    /// Python's http.server on `port`, the image at `path`.
    Http {
        url: String,
        port: u16,
        path: String,
    },
    /// nfs-ganesha exporting `dir` at `path` (the set's `SERVER:/PATH`).
    Nfs { path: String, dir: PathBuf },
}

impl RootServer {
    fn http_port(&self) -> Option<u16> {
        match self {
            RootServer::Http { port, .. } => Some(*port),
            RootServer::Nfs { .. } => None,
        }
    }
}

const GANESHA: &str = "ganesha.nfsd";

/// `SERVER:/PATH` of an NFS root, the server an IPv4 address.
fn split_export(export: &str) -> Result<(Ipv4Addr, String), NetbootError> {
    let bad = |why: &str| NetbootError::Invalid(format!("NFS root {export}: {why}"));
    let (host, path) = export
        .split_once(':')
        .ok_or_else(|| bad("expected SERVER:/PATH"))?;
    if !path.starts_with('/') || path.contains('"') {
        return Err(bad("the path must be absolute (and without quotes)"));
    }
    let host = host
        .parse()
        .map_err(|_| bad("the server is not an IPv4 address"))?;
    Ok((host, path.to_string()))
}

/// nfs-ganesha's configuration for the lab: `dir` read-only at the
/// pseudo path `path`, NFSv4 over TCP only (no rpcbind, no NLM, no
/// grace period: the lab's server is new for each boot).
fn ganesha_config(server: Ipv4Addr, path: &str, dir: &Path, state: &Path) -> String {
    format!(
        "NFS_CORE_PARAM {{ Protocols = 4; NFS_Port = 2049; Bind_addr = {server}; \
Enable_NLM = false; Enable_RQUOTA = false; }}\n\
NFSV4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = \"{}\"; }}\n\
NFS_KRB5 {{ Active_krb5 = false; }}\n\
EXPORT {{ Export_Id = 1; Path = \"{}\"; Pseudo = \"{path}\"; Access_Type = RO; \
Squash = No_Root_Squash; SecType = sys; Protocols = 4; Transports = TCP; FSAL {{ Name = VFS; }} }}\n",
        state.display(),
        dir.display()
    )
}

/// Starts nfs-ganesha in the lab and waits until it serves.
fn start_ganesha(
    lab: &mut Lab,
    logs: &Path,
    server: Ipv4Addr,
    path: &str,
    dir: &Path,
) -> Result<(), NetbootError> {
    let dir = std::fs::canonicalize(dir).map_err(io(dir))?;
    let state = logs.join("ganesha-state");
    std::fs::create_dir_all(&state).map_err(io(&state))?;
    let conf = logs.join("ganesha.conf");
    std::fs::write(&conf, ganesha_config(server, path, &dir, &state)).map_err(io(&conf))?;
    let log = logs.join("ganesha.log");
    let _ = std::fs::remove_file(&log);
    let child = lab
        .command(GANESHA)
        .arg("-F")
        .arg("-L")
        .arg(&log)
        .arg("-f")
        .arg(&conf)
        .arg("-p")
        .arg(logs.join("ganesha.pid"))
        .args(["-N", "NIV_EVENT"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| NetbootError::Invalid(format!("{GANESHA}: {e}")))?;
    lab.children.push(child);
    wait_until_serving(
        lab,
        "nfs-ganesha",
        &log,
        "NFS SERVER INITIALIZED",
        Duration::from_secs(30),
    )
}

/// Symlinks `target` at `www/url_path`.
fn publish(www: &Path, url_path: &str, target: &Path) -> Result<(), NetbootError> {
    let at = www.join(url_path.trim_start_matches('/'));
    if let Some(parent) = at.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let target = std::fs::canonicalize(target).map_err(io(target))?;
    let _ = std::fs::remove_file(&at);
    std::os::unix::fs::symlink(&target, &at).map_err(io(&at))
}

/// Boots the set and reports; `progress` gets each stage as it is reached.
pub fn verify(
    req: &VerifyRequest,
    progress: &mut dyn FnMut(&Stage),
) -> Result<Report, NetbootError> {
    let manifest_path = req.set.join("manifest.json");
    let manifest: ManifestView = serde_json::from_slice(&crate::read(&manifest_path)?)
        .map_err(|e| NetbootError::Invalid(format!("{}: {e}", manifest_path.display())))?;
    let settings = &manifest.settings;
    let (server, root) = match &settings.root {
        RootSource::Http { url, .. } => {
            let (server, port, path) = split_url(url)?;
            (
                server,
                RootServer::Http {
                    url: url.clone(),
                    port,
                    path,
                },
            )
        }
        RootSource::Nfs { export, .. } => {
            let (host, path) = split_export(export)?;
            let dir = req.root_dir.clone().ok_or_else(|| {
                NetbootError::Invalid(format!(
                    "the set's root is NFS ({export}): give --root-dir, the tree to export"
                ))
            })?;
            if !dir.is_dir() {
                return Err(NetbootError::Invalid(format!(
                    "{}: --root-dir is not a directory",
                    dir.display()
                )));
            }
            if req.root_server_late.is_some() {
                return Err(NetbootError::Invalid(
                    "--root-server-late rehearses an HTTP root; this set's root is NFS".into(),
                ));
            }
            (host, RootServer::Nfs { path, dir })
        }
    };
    let root_port = root.http_port();
    let boot = match &settings.boot_url {
        Some(url) => {
            let (host, port, path) = split_url(url)?;
            if host != server {
                let root_at = match &root {
                    RootServer::Http { url, .. } => url.clone(),
                    RootServer::Nfs { .. } => format!("NFS export {server}"),
                };
                return Err(NetbootError::Invalid(format!(
                    "the set's boot URL {url} and root {root_at} name two servers; verify hosts one"
                )));
            }
            Some((port, path))
        }
        None => None,
    };
    if let (Some(_), Some(port)) = (req.root_server_late, root_port) {
        if boot.as_ref().is_some_and(|(p, _)| *p == port) {
            return Err(NetbootError::Invalid(format!(
                "--root-server-late needs the root on its own port; the set serves its boot files and the root from port {port}"
            )));
        }
    }

    // The node and the address it must get.
    let node = match &req.node {
        Some(name) => Some(req.nodes.iter().find(|n| &n.name == name).ok_or_else(|| {
            NetbootError::Invalid(format!("node {name} is not in the node list"))
        })?),
        None if req.nodes.len() == 1 => req.nodes.first(),
        None => None,
    };
    let (expected, prefix) = match &settings.network {
        NetworkMode::Static {
            address,
            prefix_len,
            ..
        } => (Some(*address), *prefix_len),
        NetworkMode::Dhcp { .. } => {
            let Some(node) = node else {
                return Err(NetbootError::Invalid(if req.nodes.is_empty() {
                    "a DHCP set needs the node list (--nodes) to know the reservation".into()
                } else {
                    "the node list has several nodes: name the one to boot (--node)".into()
                }));
            };
            (Some(node.address), 24)
        }
    };
    let mac = node
        .and_then(|n| n.port.mac.or_else(|| n.port.guid.map(ipxe_mac_from_guid)))
        .map(|m| colon_hex(&m.0))
        .or_else(|| match &settings.interface {
            InterfaceSelector::Mac(mac) => Some(mac.clone()),
            _ => None,
        })
        .unwrap_or_else(|| DEFAULT_MAC.to_string());
    mac.parse::<MacAddress>()
        .map_err(|_| NetbootError::Invalid(format!("{mac}: not a MAC address")))?;
    if let Some(addr) = expected {
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        if u32::from(addr) & mask != u32::from(server) & mask || addr == server {
            return Err(NetbootError::Invalid(format!(
                "the node's address {addr} is not a host of the server's network {server}/{prefix}"
            )));
        }
    }

    std::fs::create_dir_all(&req.logs).map_err(io(&req.logs))?;
    let logs = std::fs::canonicalize(&req.logs).map_err(io(&req.logs))?;
    let set = std::fs::canonicalize(&req.set).map_err(io(&req.set))?;

    // What the servers publish.
    let www = logs.join("www");
    let _ = std::fs::remove_dir_all(&www);
    if let RootServer::Http { url, port, path } = &root {
        let root_image = match &req.root_image {
            Some(p) => p.clone(),
            None => set.join(
                Path::new(path)
                    .file_name()
                    .ok_or_else(|| NetbootError::Invalid(format!("{url}: no file name")))?,
            ),
        };
        if !root_image.is_file() {
            return Err(NetbootError::Invalid(format!(
                "{}: the root image is missing (give --root-image)",
                root_image.display()
            )));
        }
        publish(&www.join(format!("port-{port}")), path, &root_image)?;
    }
    if let Some((port, path)) = &boot {
        let dir = www.join(format!("port-{port}"));
        for f in crate::build::FILES {
            publish(
                &dir,
                &format!("{}/{f}", path.trim_end_matches('/')),
                &set.join(f),
            )?;
        }
    }

    // dnsmasq's configuration: the node list's lines and the lab's own.
    let nodes_conf = match &req.dhcp_config {
        Some(p) => String::from_utf8_lossy(&crate::read(p)?).into_owned(),
        None => dhcp_config::dnsmasq(&req.nodes, Some("boot.ipxe")),
    };
    let mut conf = nodes_conf;
    if node.is_none() {
        // A static set without a node list: the firmware stage still needs an address.
        let base = u32::from(server) & 0xffff_ff00;
        conf.push_str(&format!(
            "dhcp-range={},{}\n",
            Ipv4Addr::from(base | 200),
            Ipv4Addr::from(base | 250)
        ));
    }
    if req.no_os_lease {
        conf.push_str("# rehearsal: no lease for the OS stage\ndhcp-ignore=tag:!ipxe\n");
    }
    let conf_path = logs.join("dnsmasq.conf");
    std::fs::write(&conf_path, &conf).map_err(io(&conf_path))?;
    let leases = logs.join("dnsmasq.leases");
    std::fs::write(&leases, "").map_err(io(&leases))?;

    for tool in [&req.qemu, "dnsmasq", "python3", "nsenter", "unshare", "ip"] {
        if !crate::verify::on_path(tool) {
            return Err(NetbootError::Invalid(format!(
                "{tool} is not installed (Debian: qemu-system-x86 ipxe-qemu, dnsmasq-base, python3, util-linux, iproute2)"
            )));
        }
    }
    if matches!(root, RootServer::Nfs { .. }) && !crate::verify::on_path(GANESHA) {
        return Err(NetbootError::Invalid(format!(
            "{GANESHA} is not installed (Debian: nfs-ganesha nfs-ganesha-vfs); it serves the NFS root"
        )));
    }

    let mut lab = Lab::start(server, prefix)?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();

    let mut dnsmasq = lab
        .command("dnsmasq")
        .args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
        .arg(format!("--interface={TAP}"))
        .args([
            "--bind-interfaces",
            "--log-dhcp",
            "--log-facility=-",
            "--no-ping",
        ])
        // iPXE's `ifconf` waits for IPv6 router advertisements too (16 s
        // under qemu when none come): the lab announces a prefix.
        .arg("--enable-ra")
        .arg(format!("--dhcp-range={LAB_IPV6},ra-only,64"))
        .arg("--enable-tftp")
        .arg(format!("--tftp-root={}", set.display()))
        .arg(format!("--dhcp-leasefile={}", leases.display()))
        .arg(format!("--conf-file={}", conf_path.display()))
        // No drop to `nobody`: the set and the logs may sit in a directory
        // only root reads (mktemp -d); the lab is private to this run.
        .args(["--user=root", "--group=root"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetbootError::Invalid(format!("dnsmasq: {e}")))?;
    let dnsmasq_log = std::fs::File::create(logs.join("dnsmasq.log")).map_err(io(&logs))?;
    forward(
        dnsmasq.stderr.take().expect("piped"),
        Source::Dnsmasq,
        start,
        tx.clone(),
        Some(dnsmasq_log),
    );
    lab.children.push(dnsmasq);
    wait_until_serving(
        &mut lab,
        "dnsmasq",
        &logs.join("dnsmasq.log"),
        "sockets bound exclusively",
        Duration::from_secs(10),
    )?;

    let http_log = |name: String| std::fs::File::create(logs.join(name)).map_err(io(&logs));
    let start_http = |lab: &mut Lab, port: u16| -> Result<(), NetbootError> {
        let dir = www.join(format!("port-{port}"));
        let mut child = lab
            .command("python3")
            .args(["-c", HTTP_SERVER])
            .arg(&dir)
            .arg(server.to_string())
            .arg(port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NetbootError::Invalid(format!("python3 http.server: {e}")))?;
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(NetbootError::Invalid(format!(
                "the HTTP server on {server}:{port} did not start"
            )));
        }
        forward(
            child.stderr.take().expect("piped"),
            Source::Http,
            start,
            tx.clone(),
            Some(http_log(format!("http-{port}.log"))?),
        );
        lab.children.push(child);
        Ok(())
    };
    if let Some((port, _)) = &boot {
        start_http(&mut lab, *port)?;
    }
    let mut root_started = true;
    match &root {
        RootServer::Nfs { path, dir } => start_ganesha(&mut lab, &logs, server, path, dir)?,
        // Served with the boot files already.
        RootServer::Http { port, .. } if boot.as_ref().is_some_and(|(p, _)| p == port) => {}
        RootServer::Http { .. } if req.root_server_late.is_some() => root_started = false,
        RootServer::Http { port, .. } => start_http(&mut lab, *port)?,
    }

    let mut qemu = lab
        .command(&req.qemu)
        .args(["-m", &req.memory_mib.to_string()])
        .args(["-smp", "1", "-nographic", "-no-reboot", "-boot", "n"])
        .args([
            "-netdev",
            &format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
        ])
        .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetbootError::Invalid(format!("{}: {e}", req.qemu)))?;
    let console_log = std::fs::File::create(logs.join("console.log")).map_err(io(&logs))?;
    forward(
        qemu.stdout.take().expect("piped"),
        Source::Console,
        start,
        tx.clone(),
        Some(console_log),
    );
    let qemu_err = qemu.stderr.take().expect("piped");
    let qemu_stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(qemu_err).read_to_string(&mut s);
        s
    });
    let qemu_index = lab.children.len();
    lab.children.push(qemu);

    let timeline_path = logs.join("timeline.log");
    let mut timeline =
        std::io::BufWriter::new(std::fs::File::create(&timeline_path).map_err(io(&timeline_path))?);
    let mut tracker = Tracker::new(
        manifest.modules.len(),
        expected,
        node.map(|n| n.address),
        req.marker.clone(),
    );
    let mut network_at: Option<Instant> = None;
    let mut end_after: Option<Instant> = None;
    let deadline = start + req.timeout;
    loop {
        let now = Instant::now();
        if end_after.is_some_and(|t| now >= t) || now >= deadline {
            break;
        }
        if let (Some(late), Some(at), false, Some(port)) =
            (req.root_server_late, network_at, root_started, root_port)
        {
            if now >= at + late {
                start_http(&mut lab, port)?;
                root_started = true;
            }
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((source, at, line)) => {
                if !line.trim().is_empty() {
                    use std::io::Write;
                    let _ = writeln!(timeline, "{at:9.3} {source:?} {}", line.trim_end());
                }
                if let Some(stage) = tracker.feed(source, at, &line) {
                    progress(&stage);
                }
                if tracker.network_up && network_at.is_none() {
                    network_at = Some(Instant::now());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if matches!(lab.children[qemu_index].try_wait(), Ok(Some(_))) && end_after.is_none() {
            end_after = Some(Instant::now() + Duration::from_millis(500));
        }
        if (tracker.done || tracker.failure.is_some()) && end_after.is_none() {
            // The lines after the verdict (the reason's context) still count.
            end_after = Some(Instant::now() + Duration::from_secs(1));
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let leases_text = std::fs::read_to_string(&leases).unwrap_or_default();
    if matches!(settings.network, NetworkMode::Dhcp { .. }) {
        if let Some(stage) = tracker.leases(seconds, &leases_text, &mac) {
            progress(&stage);
        }
    }
    drop(lab);
    let qemu_stderr = qemu_stderr.join().unwrap_or_default();
    if tracker.failure.is_none() && !tracker.done {
        let missing = tracker
            .stages()
            .iter()
            .find(|s| s.at.is_none() && (s.name != "root-init" || req.marker.is_some()))
            .map_or("end", |s| s.name);
        let reason = if seconds >= req.timeout.as_secs_f64() {
            format!(
                "nothing more within {} s; the last console line: {:?}",
                req.timeout.as_secs(),
                tracker.last_console
            )
        } else {
            format!(
                "qemu ended; the last console line: {:?}{}",
                tracker.last_console,
                if qemu_stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("; qemu: {}", qemu_stderr.trim())
                }
            )
        };
        tracker.failure = Some(Failure {
            stage: missing.to_string(),
            reason,
        });
    }
    let ok = tracker.failure.is_none()
        && tracker.done
        && tracker
            .stages()
            .iter()
            .all(|s| s.ok || (s.at.is_none() && optional(s.name, &settings.network, req)));
    Ok(Report {
        ok,
        kernel: manifest.kernel.clone(),
        node: node.map(|n| n.name.clone()),
        expected_address: expected,
        mac,
        stages: tracker.stages().to_vec(),
        failure: tracker.failure.clone(),
        seconds,
        logs,
    })
}

/// Stages a run may leave out: the lease of a static set, the root's
/// marker when none is given.
fn optional(name: &str, network: &NetworkMode, req: &VerifyRequest) -> bool {
    match name {
        "lease" => matches!(network, NetworkMode::Static { .. }),
        "root-init" => req.marker.is_none(),
        _ => false,
    }
}

pub(crate) fn on_path(tool: &str) -> bool {
    if tool.contains('/') {
        return Path::new(tool).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://10.0.0.1:8081/img/root.cpio.gz").unwrap(),
            (
                "10.0.0.1".parse().unwrap(),
                8081,
                "/img/root.cpio.gz".into()
            )
        );
        assert_eq!(split_url("http://10.0.0.1").unwrap().1, 80);
        assert!(split_url("https://10.0.0.1/x").is_err());
        assert!(split_url("http://head/x").is_err());
    }

    #[test]
    fn nfs_exports() {
        assert_eq!(
            split_export("10.0.0.1:/srv/root").unwrap(),
            ("10.0.0.1".parse().unwrap(), "/srv/root".into())
        );
        assert!(split_export("head:/srv/root").is_err());
        assert!(split_export("10.0.0.1:srv").is_err());
        assert!(split_export("10.0.0.1:/a\"b").is_err());
        assert!(split_export("/srv/root").is_err());
    }

    #[test]
    fn escapes_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}[2J\u{1b}[01;01HiPXE 1.0\n"),
            "iPXE 1.0"
        );
    }

    /// Lines in the formats dnsmasq 2.90, Python's http.server, the kernel
    /// and kmodkit-init print.
    #[test]
    fn stages_from_lines() {
        let want: Ipv4Addr = "10.77.0.11".parse().unwrap();
        let mut t = Tracker::new(3, Some(want), Some(want), Some("ROOT-OK".into()));
        let lines = [
            (Source::Dnsmasq, "dnsmasq-dhcp: 3412 DHCPACK(kmk0) 10.77.0.11 52:54:00:4b:4d:01 n1"),
            (Source::Dnsmasq, "dnsmasq-tftp[2188]: sent /srv/set/boot.ipxe to 10.77.0.11"),
            (Source::Http, "10.77.0.11 - - [02/Dec/2026 20:00:00] \"GET /vmlinuz HTTP/1.1\" 200 -"),
            (Source::Http, "10.77.0.11 - - [02/Dec/2026 20:00:01] \"GET /initrd.img HTTP/1.1\" 200 -"),
            (Source::Console, "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)"),
            (Source::Console, "kmodkit-init: [1.200] modules: loaded 2 in 0.40 s (1 already present, 0 decompressed here, 2 dependency levels)"),
            (Source::Console, "kmodkit-init: [1.300] interface: eth0 (52:54:00:4b:4d:01) up in 0.01 s, carrier"),
            (Source::Console, "kmodkit-init: [2.000] network: eth0 10.77.0.11/24 via 10.77.0.1 from DHCP 10.77.0.1 in 0.7 s"),
            (Source::Console, "kmodkit-init: [2.500] root: 123 bytes from http://10.77.0.1/r in 0.1 s, sha256 ok, gzip cpio with 9 entries unpacked into /sysroot in 0.01 s"),
            (Source::Console, "kmodkit-init: [2.600] switch_root: 40 initramfs entries freed, exec /sbin/init in /sysroot"),
            (Source::Console, "ROOT-OK"),
        ];
        for (i, (source, line)) in lines.iter().enumerate() {
            t.feed(*source, i as f64, line);
        }
        t.leases(
            20.0,
            "1800 52:54:00:4b:4d:01 10.77.0.11 n1 01:52:54:00:4b:4d:01\n",
            "52:54:00:4b:4d:01",
        );
        assert!(t.failure.is_none(), "{:?}", t.failure);
        assert!(t.done);
        for s in t.stages() {
            assert!(s.ok && s.at.is_some(), "{s:?}");
        }

        let mut t = Tracker::new(3, Some(want), Some(want), None);
        t.feed(Source::Console, 1.0, "kmodkit-init: [1.200] modules: loaded 2 in 0.40 s (0 already present, 0 decompressed here, 2 dependency levels)");
        assert_eq!(t.failure.as_ref().unwrap().stage, "modules");
        let mut t = Tracker::new(3, Some(want), Some(want), None);
        t.feed(Source::Console, 1.0, "kmodkit-init: [9.000] FAILED in stage root: sha256 of the image is 00, the configuration says 11; check: the image");
        let f = t.failure.unwrap();
        assert_eq!(
            (f.stage.as_str(), f.reason.starts_with("sha256")),
            ("root", true)
        );
        let mut t = Tracker::new(3, Some(want), Some(want), None);
        t.feed(
            Source::Dnsmasq,
            1.0,
            "dnsmasq-dhcp: 1 DHCPACK(kmk0) 10.77.0.99 52:54:00:4b:4d:01",
        );
        assert_eq!(t.failure.unwrap().stage, "firmware-dhcp");
    }
}
