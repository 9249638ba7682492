//! The DHCP client against real servers and decoders, inside network
//! namespaces (needs root, `ip`, dnsmasq, busybox, tshark; scripts/fixtures
//! installs them): a veth pair joins a server namespace running dnsmasq to a
//! client namespace running `kmodkit-init dhcp-probe` or busybox `udhcpc`.
//! dnsmasq's configuration is what `dnsmasq_host_lines` generates; the
//! expected address is checked in our lease and in dnsmasq's lease file,
//! the packets by tshark's DHCP dissector.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use kmodkit_init::dhcp::client_id::{colon_hex, ClientIdStyle, PortGuid, PortIdentity};
use kmodkit_init::dhcp::server_config::dnsmasq_host_lines;

const GUID: &str = "f4:52:14:03:00:38:39:81";
const RESERVED: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);

fn port() -> PortIdentity {
    PortIdentity {
        guid: Some(GUID.parse::<PortGuid>().unwrap()),
        mac: None,
    }
}

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    output
}

fn check(command: &mut Command) {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Two namespaces joined by a veth pair; removed on drop.
struct Lab {
    server_ns: String,
    client_ns: String,
    server_if: String,
    client_if: String,
    dir: tempfile::TempDir,
    dnsmasq: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the netns DHCP tests need root (scripts/test runs them as root)"
        );
        let id = format!(
            "{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = Lab {
            server_ns: format!("kmkdhcp-s{id}"),
            client_ns: format!("kmkdhcp-c{id}"),
            server_if: format!("kds{id}"),
            client_if: format!("kdc{id}"),
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
        };
        for ns in [&lab.server_ns, &lab.client_ns] {
            check(Command::new("ip").args(["netns", "add", ns]));
        }
        check(Command::new("ip").args([
            "link",
            "add",
            &lab.server_if,
            "type",
            "veth",
            "peer",
            "name",
            &lab.client_if,
        ]));
        check(Command::new("ip").args(["link", "set", &lab.server_if, "netns", &lab.server_ns]));
        check(Command::new("ip").args(["link", "set", &lab.client_if, "netns", &lab.client_ns]));
        check(Command::new("ip").args([
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            "10.77.0.1/24",
            "dev",
            &lab.server_if,
        ]));
        check(Command::new("ip").args(["-n", &lab.server_ns, "link", "set", &lab.server_if, "up"]));
        check(Command::new("ip").args(["-n", &lab.client_ns, "link", "set", &lab.client_if, "up"]));
        lab
    }

    fn in_client(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.client_ns, program]);
        command
    }

    fn leases(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.leases")
    }

    /// (Re)start dnsmasq with the general pool for unknown clients and `lines`, and an empty lease file.
    fn start_dnsmasq(&mut self, lines: &[String]) {
        self.stop_dnsmasq();
        let _ = std::fs::remove_file(self.leases());
        let conf = self.dir.path().join("hosts.conf");
        let mut text =
            "dhcp-range=tag:!known,10.77.0.100,10.77.0.150,255.255.255.0,1h\n".to_string();
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        let log = std::fs::File::create(self.dir.path().join("dnsmasq.log")).unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server_ns,
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
            ])
            .arg("--port=0")
            .arg(format!("--interface={}", self.server_if))
            .arg("--bind-interfaces")
            .arg("--log-dhcp")
            .arg("--log-facility=-")
            // A fresh pool address is pinged for 3 s before it is offered; there is nobody to answer.
            .arg("--no-ping")
            .arg(format!("--dhcp-leasefile={}", self.leases().display()))
            .arg(format!("--conf-file={}", conf.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dnsmasq (scripts/fixtures installs dnsmasq-base)");
        self.dnsmasq = Some(child);
        // Ready when it has bound its DHCP socket.
        let start = Instant::now();
        while !self.dnsmasq_log().contains("DHCP, IP range") {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start: {}",
                self.dnsmasq_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut child) = self.dnsmasq.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn dnsmasq_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    /// dnsmasq's lease file lines: (address, host name, client id).
    fn dnsmasq_leases(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.leases())
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() >= 5).then(|| (f[2].to_string(), f[3].to_string(), f[4].to_string()))
            })
            .collect()
    }

    fn probe(&self, args: &[&str]) -> (Output, Duration) {
        let start = Instant::now();
        let mut command = self.in_client(env!("CARGO_BIN_EXE_kmodkit-init"));
        command
            .args(["dhcp-probe", "--iface", &self.client_if])
            .args(args);
        (run(&mut command), start.elapsed())
    }

    /// Start tshark on the client's interface; returns it once it captures.
    fn capture(&self, file: &Path) -> Child {
        let stderr = file.with_extension("tshark.err");
        let child = self
            .in_client("tshark")
            .args([
                "-i",
                &self.client_if,
                "-f",
                "udp port 67 or udp port 68",
                "-w",
            ])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("tshark");
        let start = Instant::now();
        while !std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .contains("Capturing on")
        {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "tshark did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn stop(mut child: Child) {
    // Let the last packets reach the file.
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_identifier_form_gets_the_one_reservation() {
    let mut lab = Lab::new();
    let lines = dnsmasq_host_lines("node1", &port(), RESERVED);
    let flexboot = ClientIdStyle::FlexBoot.client_id(&port()).unwrap();

    // kmodkit-init on Ethernet sending the FlexBoot identifier.
    lab.start_dnsmasq(&lines);
    let lease_file = lab.dir.path().join("run/kmodkit/lease");
    let (out, _) = lab.probe(&[
        "--client-id",
        "flexboot",
        "--guid",
        GUID,
        "--timeout",
        "20",
        "--lease-file",
        lease_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        lab.dnsmasq_log()
    );
    assert!(
        stdout(&out).contains(&format!("\naddress={RESERVED}\n")),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&lease_file).unwrap(), stdout(&out));
    assert!(stdout(&out).contains(&format!("client_id={flexboot}\n")));
    assert!(stdout(&out).contains("\nserver_id=10.77.0.1\n"));
    assert_eq!(
        lab.dnsmasq_leases(),
        [(
            RESERVED.to_string(),
            "node1".to_string(),
            flexboot.to_string()
        )]
    );

    // An independent client sending each form, each against a fresh lease table
    // (dnsmasq binds a lease to the identifier that took it).
    let forms = kmodkit_init::dhcp::client_id::all_forms(&port());
    assert_eq!(forms.len(), 3);
    let unknown = (
        "unknown".to_string(),
        vec![0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x99],
    );
    let cases = forms
        .iter()
        .map(|(style, id)| (style.name().to_string(), id.0.clone()))
        .chain([unknown]);
    for (style, id) in cases {
        lab.start_dnsmasq(&lines);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let out = run(lab
            .in_client("busybox")
            .args([
                "udhcpc",
                "-i",
                &lab.client_if,
                "-q",
                "-n",
                "-f",
                "-t",
                "10",
                "-T",
                "1",
            ])
            .args(["-x", &format!("61:{hex}"), "-s", "/bin/true"]));
        let text = format!("{}{}", stdout(&out), stderr(&out));
        let leases = lab.dnsmasq_leases();
        assert_eq!(leases.len(), 1, "{style}: {text}\n{}", lab.dnsmasq_log());
        assert_eq!(
            leases[0].2,
            colon_hex(&id),
            "{style}: dnsmasq saw another identifier"
        );
        if style == "unknown" {
            assert_ne!(
                leases[0].0,
                RESERVED.to_string(),
                "an unknown identifier must not get the reservation"
            );
            assert!(text.contains("lease of 10.77.0.1"), "{text}");
        } else {
            assert_eq!(leases[0].0, RESERVED.to_string(), "{style}: {text}");
            assert!(
                text.contains(&format!("lease of {RESERVED} obtained")),
                "{style}: {text}"
            );
        }
    }
}

/// tshark's fields of each DHCP message in `pcap`, one map per packet;
/// `option.N` holds option N's value as colon hex, `chaddr` the 16 bytes of
/// the chaddr field (tshark shows them only inside "Client address not
/// given" when hlen is 0, so they are read from the PDML output).
fn dhcp_fields(pcap: &Path) -> Vec<BTreeMap<String, String>> {
    let fields = [
        "dhcp.type",
        "dhcp.hw.type",
        "dhcp.hw.len",
        "dhcp.flags.bc",
        "dhcp.option.type",
        "dhcp.option.value",
    ];
    let mut command = Command::new("tshark");
    command.arg("-r").arg(pcap).args([
        "-Y",
        "dhcp",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "aggregator=;",
    ]);
    for f in fields {
        command.args(["-e", f]);
    }
    let out = run(&mut command);
    assert!(out.status.success(), "tshark -r: {}", stderr(&out));
    let mut packets: Vec<BTreeMap<String, String>> = stdout(&out)
        .lines()
        .map(|line| {
            let values: Vec<&str> = line.split('|').collect();
            let mut packet: BTreeMap<String, String> = fields[..4]
                .iter()
                .zip(&values)
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect();
            let codes = values.get(4).copied().unwrap_or_default().split(';');
            let option_values = values.get(5).copied().unwrap_or_default().split(';');
            for (code, value) in codes.zip(option_values) {
                packet.insert(format!("option.{code}"), value.to_string());
            }
            packet
        })
        .collect();
    let pdml = run(Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "dhcp", "-T", "pdml"]));
    let pdml = stdout(&pdml);
    let chunks: Vec<&str> = pdml.split("<proto name=\"dhcp\"").skip(1).collect();
    assert_eq!(
        chunks.len(),
        packets.len(),
        "PDML and fields disagree on the packet count"
    );
    for (packet, chunk) in packets.iter_mut().zip(chunks) {
        let marker = "show=\"Client address not given\" size=\"16\"";
        let chaddr = chunk.find(marker).and_then(|at| {
            let rest = &chunk[at..];
            let value = rest.find("value=\"")? + 7;
            Some(rest[value..value + 32].to_string())
        });
        packet.insert("chaddr".into(), chaddr.unwrap_or_else(|| "given".into()));
    }
    packets
}

fn assert_rfc_4390(packet: &BTreeMap<String, String>, flexboot: &str) {
    assert_eq!(packet["dhcp.type"], "1", "BOOTREQUEST: {packet:?}");
    assert_eq!(packet["dhcp.hw.type"], "0x20", "htype 32: {packet:?}");
    assert_eq!(packet["dhcp.hw.len"], "0", "hlen 0: {packet:?}");
    assert_eq!(packet["chaddr"], "0".repeat(32), "zero chaddr: {packet:?}");
    assert_eq!(packet["dhcp.flags.bc"], "1", "broadcast flag: {packet:?}");
    assert_eq!(
        packet["option.61"], flexboot,
        "client identifier: {packet:?}"
    );
}

#[test]
fn ipoib_messages_on_the_wire_and_a_timeout_naming_the_stage() {
    let mut lab = Lab::new();
    let flexboot = ClientIdStyle::FlexBoot.client_id(&port()).unwrap();
    let flexboot_hex: String = flexboot.0.iter().map(|b| format!("{b:02x}")).collect();

    // No server: DISCOVERs go out, then a clear error, no hang.
    let pcap = lab.dir.path().join("silent.pcap");
    let tshark = lab.capture(&pcap);
    let (out, elapsed) = lab.probe(&["--ipoib", "--guid", GUID, "--timeout", "4"]);
    stop(tshark);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Timeout 4 s; the margin is for a loaded machine (process start,
    // namespace setup), still far from a hang.
    assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
    let err = stderr(&out);
    assert!(
        err.contains("no answer in stage DHCPDISCOVER") && err.contains("IPoIB"),
        "{err}"
    );
    let packets = dhcp_fields(&pcap);
    assert!(packets.len() >= 2, "retransmissions expected: {packets:?}");
    for packet in &packets {
        assert_eq!(packet["option.53"], "01", "DHCPDISCOVER: {packet:?}");
        assert_rfc_4390(packet, &flexboot_hex);
    }

    // dnsmasq answers htype 32: the REQUEST is on the wire too, and the lease is the reservation.
    lab.start_dnsmasq(&dnsmasq_host_lines("node1", &port(), RESERVED));
    let pcap = lab.dir.path().join("served.pcap");
    let tshark = lab.capture(&pcap);
    let (out, _) = lab.probe(&["--ipoib", "--guid", GUID, "--timeout", "20"]);
    stop(tshark);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        lab.dnsmasq_log()
    );
    assert!(
        stdout(&out).contains(&format!("\naddress={RESERVED}\n")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        lab.dnsmasq_leases(),
        [(
            RESERVED.to_string(),
            "node1".to_string(),
            flexboot.to_string()
        )]
    );
    let packets = dhcp_fields(&pcap);
    let requests: Vec<_> = packets
        .iter()
        .filter(|p| p.get("dhcp.type").map(String::as_str) == Some("1"))
        .collect();
    let kinds: Vec<&str> = requests
        .iter()
        .map(|p| p.get("option.53").map_or("", String::as_str))
        .collect();
    assert!(
        kinds.contains(&"01") && kinds.contains(&"03"),
        "DISCOVER and REQUEST expected: {packets:#?}"
    );
    for packet in requests {
        assert_rfc_4390(packet, &flexboot_hex);
    }
}
