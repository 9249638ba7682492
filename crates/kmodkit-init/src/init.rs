//! `/init`: the stages in order, each logged on the console with its time
//! since boot; a failure names the stage, the reason and what to check,
//! then halts or reboots as configured. Never returns (PID 1).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use kmodkit_init::config::{Config, NetworkMode, OnFailure, RootSource, CONFIG_PATH};
use kmodkit_init::dhcp::client::{Client, ClientConfig, Event, Lease, LinkMode, SystemClock};
use kmodkit_init::dhcp::client_id::{ClientIdStyle, MacAddress, PortGuid, PortIdentity};
use kmodkit_init::dhcp::socket::{Interface, PacketSocket};
use kmodkit_init::netlink::{Link, LinkMatch, RouteSocket};
use kmodkit_init::{http, modules, rootfs, system};

/// Where the lease (or the static settings) is handed to the root.
const LEASE_PATH: &str = "/run/kmodkit/lease";
const SYSROOT: &str = "/sysroot";

/// A stage's failure: the reason and what to check.
struct Failure {
    stage: &'static str,
    reason: String,
    check: String,
}

fn fail(stage: &'static str, reason: impl ToString, check: impl ToString) -> Failure {
    Failure {
        stage,
        reason: reason.to_string(),
        check: check.to_string(),
    }
}

fn log(line: &str) {
    let t = system::since_boot().as_secs_f64();
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "kmodkit-init: [{t:.3}] {line}");
}

/// Runs the init; never returns.
pub fn main() -> ! {
    // A panic must not end PID 1 (the kernel would panic with "Attempted to
    // kill init" and the reason scrolled away): report it like a failure
    // and stop here, whichever thread it was.
    std::panic::set_hook(Box::new(|info| {
        log(&format!(
            "FAILED in stage internal: {info}; check: this is a bug in kmodkit-init, please report the line above"
        ));
        system::halt_forever()
    }));
    let mut on_failure = OnFailure::Halt;
    let failure = match run(&mut on_failure) {
        Ok(never) => match never {},
        Err(failure) => failure,
    };
    let check = if failure.reason.contains("; check: ") || failure.check.is_empty() {
        String::new()
    } else {
        format!("; check: {}", failure.check)
    };
    log(&format!(
        "FAILED in stage {}: {}{check}",
        failure.stage, failure.reason
    ));
    match on_failure {
        OnFailure::Halt => {
            log("halted (on_failure: halt)");
            system::halt_forever()
        }
        OnFailure::Reboot { delay_secs } => {
            log(&format!("rebooting in {delay_secs} s (on_failure: reboot)"));
            std::thread::sleep(Duration::from_secs(delay_secs));
            system::reboot()
        }
    }
}

fn run(on_failure: &mut OnFailure) -> Result<std::convert::Infallible, Failure> {
    let started = Instant::now();
    let mounted = system::mount_api_filesystems();
    system::open_console();
    mounted.map_err(|e| {
        fail(
            "mounts",
            e,
            "the kernel has CONFIG_PROC_FS, CONFIG_SYSFS, CONFIG_DEVTMPFS and CONFIG_TMPFS",
        )
    })?;
    log(&format!(
        "mounts: /proc /sys /dev /run in {:.2} s",
        started.elapsed().as_secs_f64()
    ));

    let config = load_config(on_failure)?;
    load_modules(&config)?;
    let link = wait_for_interface(&config)?;
    let lease_text = configure_network(&config, &link)?;
    if config.debug {
        for line in lease_text.lines() {
            log(&format!("lease: {line}"));
        }
    }
    fetch_root(&config)?;
    let mut announce = |deleted: usize| {
        log(&format!(
            "switch_root: {deleted} initramfs entries freed, exec {} in {SYSROOT}",
            config.root_init
        ))
    };
    let reason = system::switch_root(Path::new(SYSROOT), &config.root_init, &mut announce);
    Err(fail(
        "switch_root",
        reason,
        format!(
            "the root image has {} (executable) and /dev /proc /sys /run",
            config.root_init
        ),
    ))
}

/// The kernel's text mount data for an NFS root. The kernel itself does
/// what mount.nfs would (rpcbind and MOUNT for v3), but it needs the
/// server's address (`addr=`); `nolock` since no rpc.statd runs here. With
/// no version given, NFSv4 (one TCP port, no rpcbind or mountd on the
/// server); the kernel's own default would be v3 (NFS_DEFAULT_VERSION in
/// fs/nfs/fs_context.c).
fn nfs_mount_data(server: &str, options: &str) -> String {
    let mut data = format!("nolock,addr={server}");
    let names_version = options
        .split(',')
        .any(|o| o.starts_with("vers=") || o.starts_with("nfsvers="));
    if !names_version {
        data.push_str(",vers=4");
    }
    if !options.is_empty() {
        data.push(',');
        data.push_str(options);
    }
    data
}

fn load_config(on_failure: &mut OnFailure) -> Result<Config, Failure> {
    let check = "the image's /etc/kmodkit-init.json (kmodkit netboot build writes it) and the kernel command line";
    let text = std::fs::read_to_string(CONFIG_PATH)
        .map_err(|e| fail("config", format!("{CONFIG_PATH}: {e}"), check))?;
    let mut config = Config::from_json(&text)
        .map_err(|e| fail("config", format!("{CONFIG_PATH}: {e}"), check))?;
    *on_failure = config.on_failure;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    config
        .apply_cmdline(&cmdline)
        .map_err(|e| fail("config", e, check))?;
    let running = system::kernel_release();
    if !config.modules.is_empty() && running != config.kernel {
        return Err(fail(
            "config",
            format!(
                "the image's modules are for kernel {}, this is {running}",
                config.kernel
            ),
            "boot the kernel the image was built for, or rebuild the image for this one",
        ));
    }
    log(&format!(
        "config: {} modules, interface {:?}, root {}",
        config.modules.len(),
        config.interface,
        match &config.root {
            RootSource::Http { url, .. } => url.clone(),
            RootSource::Nfs { export, .. } => format!("nfs {export}"),
        }
    ));
    Ok(config)
}

fn load_modules(config: &Config) -> Result<(), Failure> {
    let started = Instant::now();
    let decompresses = modules::kernel_decompresses(Path::new("/sys"));
    let report =
        modules::load_all(Path::new("/"), &config.modules, decompresses).map_err(|errors| {
            // The kernel's own words, which `quiet` keeps off the console.
            let reasons: Vec<String> = errors
                .iter()
                .map(|e| {
                    let kernel = system::kernel_log_lines(&format!("{}: ", e.module()));
                    if kernel.is_empty() {
                        e.to_string()
                    } else {
                        let last: Vec<&str> = kernel
                            .iter()
                            .rev()
                            .take(3)
                            .rev()
                            .map(String::as_str)
                            .collect();
                        format!("{e} [kernel: {}]", last.join(" | "))
                    }
                })
                .collect();
            fail(
                "modules",
                reasons.join("; "),
                "the kernel log lines above name the kernel's reason",
            )
        })?;
    if config.debug {
        for (name, took, outcome) in &report.timings {
            log(&format!(
                "modules: {name} {outcome:?} in {:.3} s",
                took.as_secs_f64()
            ));
        }
    }
    log(&format!(
        "modules: loaded {} in {:.2} s ({} already present, {} decompressed here, {} dependency levels)",
        report.loaded,
        started.elapsed().as_secs_f64(),
        report.present,
        report.decompressed,
        report.levels
    ));
    Ok(())
}

fn wait_for_interface(config: &Config) -> Result<Link, Failure> {
    let started = Instant::now();
    let check = "the NIC's driver is in the image's module list and the interface selector matches this node";
    let wanted = LinkMatch::new(&config.interface).map_err(|e| fail("interface", e, check))?;
    let mut socket =
        RouteSocket::open(libc::RTMGRP_LINK as u32).map_err(|e| fail("interface", e, check))?;
    if let Ok(lo) = socket.wait_for_link(&LinkMatch::Name("lo".into()), Duration::from_secs(1)) {
        let _ = socket.set_up(lo.index);
    }
    let link = socket
        .wait_for_link(&wanted, config.timeouts.interface())
        .map_err(|e| fail("interface", e, check))?;
    socket
        .set_up(link.index)
        .map_err(|e| fail("interface", format!("{}: {e}", link.name), check))?;
    let carrier = socket
        .wait_for_carrier(
            link.index,
            Duration::from_secs(config.timeouts.carrier_secs),
        )
        .map_err(|e| fail("interface", format!("{}: {e}", link.name), check))?;
    log(&format!(
        "interface: {} ({}) up in {:.2} s, {}",
        link.name,
        kmodkit_init::dhcp::client_id::colon_hex(&link.address),
        started.elapsed().as_secs_f64(),
        if carrier {
            "carrier".to_string()
        } else {
            format!(
                "no carrier after {} s (cable, switch port, IB subnet manager?); trying anyway",
                config.timeouts.carrier_secs
            )
        }
    ));
    Ok(link)
}

fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes; GRND_NONBLOCK so early boot never blocks.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), libc::GRND_NONBLOCK) };
    if n != 8 {
        return system::since_boot().as_nanos() as u64 ^ 0x6b6d_6f64;
    }
    u64::from_ne_bytes(seed)
}

fn dhcp(
    config: &Config,
    link: &Link,
    client_id: &Option<String>,
    hostname: &Option<String>,
) -> Result<Lease, Failure> {
    let check = "a DHCP server answers on this link and has a reservation or range for this client identifier";
    let interface = Interface::from_sysfs(Path::new("/sys"), &link.name)
        .map_err(|e| fail("network", e, check))?;
    let ipoib = interface.address.len() == 20;
    let mac = <[u8; 6]>::try_from(interface.address.as_slice())
        .ok()
        .map(MacAddress);
    let port = PortIdentity {
        guid: interface.ipoib_guid().map(PortGuid),
        mac,
    };
    let style = match client_id {
        Some(text) => Some(
            text.parse::<ClientIdStyle>()
                .map_err(|e| fail("network", format!("client_id {text:?}: {e}"), check))?,
        ),
        None if ipoib => Some(ClientIdStyle::FlexBoot),
        None => None,
    };
    let client_id = style
        .map(|s| s.client_id(&port))
        .transpose()
        .map_err(|e| fail("network", e, check))?;
    let mode = match (ipoib, mac) {
        (true, _) => LinkMode::Ipoib,
        (false, Some(mac)) => LinkMode::Ethernet { mac: mac.0 },
        (false, None) => {
            return Err(fail(
                "network",
                format!(
                    "{} has a {}-byte address: neither Ethernet nor IPoIB",
                    link.name,
                    interface.address.len()
                ),
                "the interface selector",
            ))
        }
    };
    let mut client_config = ClientConfig::new(&link.name, mode, client_id);
    client_config.total_timeout = Duration::from_secs(config.timeouts.dhcp_secs);
    client_config.hostname = hostname.clone();
    let clock = SystemClock::new();
    let attempts = config.timeouts.dhcp_attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        client_config.seed = random_seed();
        let mut socket =
            PacketSocket::open(interface.clone()).map_err(|e| fail("network", e, check))?;
        let debug = config.debug;
        let mut events = |event: Event| {
            if debug {
                log(&format!("dhcp: {event:?}"));
            } else if let Event::Offered { address, server } = event {
                log(&format!("dhcp: offer {address} from {server}"));
            }
        };
        match Client::new(client_config.clone())
            .and_then(|mut c| c.run(&mut socket, &clock, &mut events))
        {
            Ok(lease) => return Ok(lease),
            Err(e) => {
                last = e.to_string();
                if attempt < attempts {
                    log(&format!(
                        "dhcp: attempt {attempt} of {attempts} failed: {last}; trying again"
                    ));
                }
            }
        }
    }
    Err(fail("network", last, check))
}

fn configure_network(config: &Config, link: &Link) -> Result<String, Failure> {
    let started = Instant::now();
    let check =
        "the address and gateway fit this link (ip= on the command line, or the configuration)";
    let (address, prefix_len, gateway, text, source) = match &config.network {
        NetworkMode::Dhcp {
            client_id,
            hostname,
        } => {
            let lease = dhcp(config, link, client_id, hostname)?;
            let text = lease.to_key_value();
            let source = format!("DHCP server {}", lease.server_id);
            (
                lease.address,
                lease.prefix_len,
                lease.routers.first().copied(),
                text,
                source,
            )
        }
        NetworkMode::Static {
            address,
            prefix_len,
            gateway,
            dns,
            hostname,
        } => {
            let mut text = format!(
                "interface={}\naddress={address}\nprefix={prefix_len}\n",
                link.name
            );
            if let Some(gw) = gateway {
                text.push_str(&format!("routers={gw}\n"));
            }
            if !dns.is_empty() {
                let list: Vec<String> = dns.iter().map(Ipv4Addr::to_string).collect();
                text.push_str(&format!("dns={}\n", list.join(",")));
            }
            if let Some(h) = hostname {
                text.push_str(&format!("hostname={h}\n"));
            }
            text.push_str("source=static\n");
            (
                *address,
                *prefix_len,
                *gateway,
                text,
                "static configuration".to_string(),
            )
        }
    };
    let mut socket = RouteSocket::open(0).map_err(|e| fail("network", e, check))?;
    socket
        .add_address(link.index, address, prefix_len)
        .map_err(|e| {
            fail(
                "network",
                format!("{address}/{prefix_len} on {}: {e}", link.name),
                check,
            )
        })?;
    if let Some(gw) = gateway {
        socket.add_default_route(link.index, gw).map_err(|e| {
            fail(
                "network",
                format!("default route via {gw} on {}: {e}", link.name),
                check,
            )
        })?;
    }
    write_lease(&text).map_err(|e| {
        fail(
            "network",
            format!("writing {LEASE_PATH}: {e}"),
            "/run is a writable tmpfs",
        )
    })?;
    log(&format!(
        "network: {} {address}/{prefix_len}{} from {source} in {:.2} s",
        link.name,
        gateway.map(|g| format!(" via {g}")).unwrap_or_default(),
        started.elapsed().as_secs_f64()
    ));
    Ok(text)
}

fn write_lease(text: &str) -> std::io::Result<()> {
    let path = Path::new(LEASE_PATH);
    std::fs::create_dir_all(path.parent().expect("has a parent"))?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

fn fetch_root(config: &Config) -> Result<(), Failure> {
    let started = Instant::now();
    match &config.root {
        RootSource::Http { url, sha256 } => {
            let check = format!(
                "{url} is served to this node's network and the configured sha256 is the image's"
            );
            system::mount("tmpfs", Path::new(SYSROOT), "tmpfs", 0, "mode=0755").map_err(|e| {
                fail(
                    "root",
                    format!("mount tmpfs on {SYSROOT}: {e}"),
                    "CONFIG_TMPFS and memory",
                )
            })?;
            let attempts = config.timeouts.root_attempts.max(1);
            let mut delay = Duration::from_secs(1);
            let mut attempt = 1;
            let image = loop {
                match http::get(url, config.timeouts.http()) {
                    Ok(body) => break body,
                    Err(e) if e.is_transient() && attempt < attempts => {
                        log(&format!(
                            "root: attempt {attempt} of {attempts}: {e}; again in {} s",
                            delay.as_secs()
                        ));
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(Duration::from_secs(30));
                        attempt += 1;
                    }
                    Err(e) => {
                        return Err(fail(
                            "root",
                            format!("after {attempt} attempts: {e}"),
                            check,
                        ))
                    }
                }
            };
            let fetched = started.elapsed();
            let unpacked = rootfs::unpack(&image, sha256, Path::new(SYSROOT))
                .map_err(|e| fail("root", format!("{url}: {e}"), check))?;
            log(&format!(
                "root: {} bytes from {url} in {:.2} s, sha256 ok, {}{} with {} entries unpacked into {SYSROOT} in {:.2} s",
                image.len(),
                fetched.as_secs_f64(),
                unpacked.format,
                if unpacked.gzip { ".gz" } else { "" },
                unpacked.entries,
                (started.elapsed() - fetched).as_secs_f64()
            ));
        }
        RootSource::Nfs { export, options } => {
            let check = format!("the NFS server exports {export} to this node and the kernel has the nfs module or CONFIG_NFS_FS=y");
            let server = export.split(':').next().unwrap_or_default();
            let data = nfs_mount_data(server, options);
            let attempts = config.timeouts.root_attempts.max(1);
            let mut attempt = 1;
            loop {
                match system::mount(export, Path::new(SYSROOT), "nfs", 0, &data) {
                    Ok(()) => break,
                    Err(e) if attempt < attempts => {
                        log(&format!(
                            "root: nfs mount {export} attempt {attempt}: {e}; again in {attempt} s"
                        ));
                        std::thread::sleep(Duration::from_secs(u64::from(attempt)));
                        attempt += 1;
                    }
                    Err(e) => return Err(fail("root", format!("mount nfs {export}: {e}"), check)),
                }
            }
            log(&format!(
                "root: nfs {export} mounted on {SYSROOT} in {:.2} s",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::nfs_mount_data;

    #[test]
    fn nfs_mount_data_defaults_to_v4_and_keeps_a_given_version() {
        assert_eq!(
            nfs_mount_data("10.0.0.1", ""),
            "nolock,addr=10.0.0.1,vers=4"
        );
        assert_eq!(
            nfs_mount_data("10.0.0.1", "ro,timeo=30"),
            "nolock,addr=10.0.0.1,vers=4,ro,timeo=30"
        );
        assert_eq!(
            nfs_mount_data("10.0.0.1", "vers=3,tcp"),
            "nolock,addr=10.0.0.1,vers=3,tcp"
        );
        assert_eq!(
            nfs_mount_data("10.0.0.1", "nfsvers=4.2"),
            "nolock,addr=10.0.0.1,nfsvers=4.2"
        );
    }
}
