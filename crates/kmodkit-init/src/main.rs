//! `kmodkit-init`: the `/init` of a diskless image when it runs as PID 1
//! (or with the `init` subcommand; see `init.rs`), and `dhcp-probe`, which
//! runs one DHCP exchange on an interface and prints the lease; the tests
//! use it, and an administrator can check a reservation with it.

mod init;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kmodkit_init::dhcp::client::{Client, ClientConfig, Event, LinkMode, SystemClock};
use kmodkit_init::dhcp::client_id::{ClientIdStyle, MacAddress, PortGuid, PortIdentity};
use kmodkit_init::dhcp::socket::{Interface, PacketSocket};

const USAGE: &str = "usage: kmodkit-init [init]   (as PID 1: the /init stages, configured by /etc/kmodkit-init.json)
       kmodkit-init dhcp-probe --iface IF [--ipoib] [--client-id flexboot|infiniband|ipxe|ethernet|HEX]
                          [--mac MAC] [--guid GUID] [--timeout SECS] [--broadcast] [--lease-file PATH]

Runs DISCOVER/OFFER/REQUEST/ACK once on IF from a raw packet socket (root) and prints
the lease as key=value lines (the /run/kmodkit/lease format). --ipoib sends RFC 4390
messages (htype 32, hlen 0, zero chaddr, broadcast flag); its default identifier is
flexboot, computed from --guid or the last 8 bytes of IF's 20-byte address. Ethernet
mode uses IF's MAC (or --mac) and sends no identifier unless asked.
Exit status: 0 bound, 1 no lease (the message names the stage), 2 usage.";

struct Probe {
    iface: String,
    ipoib: bool,
    style: Option<ClientIdStyle>,
    mac: Option<MacAddress>,
    guid: Option<PortGuid>,
    timeout: Duration,
    broadcast: bool,
    lease_file: Option<PathBuf>,
}

fn parse_probe(args: &[String]) -> Result<Probe, String> {
    let mut probe = Probe {
        iface: String::new(),
        ipoib: false,
        style: None,
        mac: None,
        guid: None,
        timeout: Duration::from_secs(30),
        broadcast: false,
        lease_file: None,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--iface" => probe.iface = value()?,
            "--ipoib" => probe.ipoib = true,
            "--broadcast" => probe.broadcast = true,
            "--client-id" => {
                probe.style = Some(value()?.parse().map_err(|e| format!("--client-id: {e}"))?)
            }
            "--mac" => probe.mac = Some(value()?.parse().map_err(|e| format!("--mac: {e}"))?),
            "--guid" => probe.guid = Some(value()?.parse().map_err(|e| format!("--guid: {e}"))?),
            "--lease-file" => probe.lease_file = Some(PathBuf::from(value()?)),
            "--timeout" => {
                let text = value()?;
                let secs: f64 = text
                    .parse()
                    .map_err(|_| format!("--timeout {text:?} is not a number of seconds"))?;
                probe.timeout = Duration::try_from_secs_f64(secs)
                    .map_err(|_| format!("--timeout {text:?} is out of range"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if probe.iface.is_empty() {
        return Err("--iface is required".into());
    }
    Ok(probe)
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != 8 {
        // Early boot before the pool is ready: time and pid still differ per node and run.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        return nanos as u64 ^ u64::from(std::process::id()) << 32;
    }
    u64::from_ne_bytes(seed)
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

fn dhcp_probe(probe: Probe) -> Result<String, String> {
    let interface =
        Interface::from_sysfs(Path::new("/sys"), &probe.iface).map_err(|e| e.to_string())?;
    let mac = probe.mac.or_else(|| {
        <[u8; 6]>::try_from(interface.address.as_slice())
            .ok()
            .map(MacAddress)
    });
    let guid = probe.guid.or_else(|| interface.ipoib_guid().map(PortGuid));
    let port = PortIdentity { guid, mac };
    let style = match (&probe.style, probe.ipoib) {
        (Some(style), _) => Some(style.clone()),
        (None, true) => Some(ClientIdStyle::FlexBoot),
        (None, false) => None,
    };
    let client_id = style
        .map(|s| s.client_id(&port))
        .transpose()
        .map_err(|e| e.to_string())?;
    let link = if probe.ipoib {
        LinkMode::Ipoib
    } else {
        let mac = mac.ok_or_else(|| {
            format!(
                "{} has a {}-byte address, not a MAC: give --mac, or --ipoib",
                probe.iface,
                interface.address.len()
            )
        })?;
        LinkMode::Ethernet { mac: mac.0 }
    };
    let mut config = ClientConfig::new(&probe.iface, link, client_id);
    config.total_timeout = probe.timeout;
    config.broadcast = probe.broadcast;
    config.seed = random_seed();
    let mut socket = PacketSocket::open(interface).map_err(|e| e.to_string())?;
    let clock = SystemClock::new();
    let started = std::time::Instant::now();
    let mut log = |event: Event| {
        let t = started.elapsed().as_secs_f64();
        match event {
            Event::Sent { kind, xid, attempt } => eprintln!(
                "[{t:7.3}] dhcp: sent {} xid {xid:#010x} (#{attempt})",
                kind.name()
            ),
            Event::Offered { address, server } => {
                eprintln!("[{t:7.3}] dhcp: offer {address} from {server}")
            }
            Event::Nak { server, message } => {
                eprintln!(
                    "[{t:7.3}] dhcp: DHCPNAK from {server}: {}; starting again",
                    message.unwrap_or_default()
                )
            }
            Event::Ignored { reason } => eprintln!("[{t:7.3}] dhcp: ignored a packet: {reason}"),
        }
    };
    let lease = Client::new(config)
        .and_then(|mut client| client.run(&mut socket, &clock, &mut log))
        .map_err(|e| e.to_string())?;
    let text = lease.to_key_value();
    if let Some(path) = &probe.lease_file {
        write_atomically(path, &text)
            .map_err(|e| format!("writing the lease to {}: {e}", path.display()))?;
    }
    Ok(text)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The kernel runs /init with no arguments, or with the ones of the
    // command line it did not understand: as PID 1 always the init.
    if std::process::id() == 1 {
        init::main();
    }
    match args.first().map(String::as_str) {
        Some("init") => init::main(),
        Some("dhcp-probe") => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let probe = match parse_probe(&args[1..]) {
        Ok(probe) => probe,
        Err(e) => {
            eprintln!("kmodkit-init dhcp-probe: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match dhcp_probe(probe) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kmodkit-init: dhcp: {e}");
            ExitCode::from(1)
        }
    }
}
