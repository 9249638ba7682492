//! `kmodkit netboot`: diskless boot sets with kmodkit-init, and the DHCP
//! server configuration for them (kmodkit-netboot does the work).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use kmodkit_init::config::{InterfaceSelector, NetworkMode, RootSource};
use kmodkit_init::dhcp::client_id::{ClientIdStyle, MacAddress, PortGuid};
use kmodkit_initramfs::compression::Compression;
use kmodkit_netboot::build::{self, BuildRequest};
use kmodkit_netboot::dhcp_config;
use kmodkit_netboot::verify::{self, Stage, VerifyRequest};

#[derive(Debug, Args)]
pub struct NetbootArgs {
    #[command(subcommand)]
    pub command: NetbootCommand,
}

#[derive(Debug, Subcommand)]
pub enum NetbootCommand {
    /// Write a boot set: vmlinuz, initrd.img (kmodkit-init and the drivers), boot.ipxe, manifest.json
    #[command(
        long_about = "Write a diskless boot set into OUT: vmlinuz (ROOT/boot/vmlinuz-KVER), \
initrd.img (a newc cpio with the static kmodkit-init as /init, its configuration \
/etc/kmodkit-init.json, the drivers and their firmware), boot.ipxe (fetches both over HTTP) and \
manifest.json (modules in load order, sha256 of every file, the settings).\n\n\
The drivers are resolved exactly as `initrd add-drivers` resolves them: modules.dep closure, \
softdeps, run-time companions (mlx4_en/mlx4_ib with mlx4_core, mlx5_ib with mlx5_core, the RDMA \
upper layers), firmware, the ABI guard, and names that no longer exist explained. The same \
inputs give the same bytes (cpio mtimes are SOURCE_DATE_EPOCH, else 0). The four files replace \
an earlier set in OUT as one step.",
        after_help = "Examples:\n  \
kmodkit netboot build -k 6.1.0-56-amd64 -o /srv/boot/node \\\n    \
--root-url http://10.0.0.1/root.cpio.gz --root-image root.cpio.gz \\\n    \
mlx4_en mlx4_ib mlx5_core mlx5_ib ib_ipoib rdma_ucm ib_umad\n  \
kmodkit netboot build --root /srv/node-image -k 6.12.117+deb12-amd64 \\\n    \
-o out --iface f4:52:14:03:00:38:39:81 --client-id flexboot \\\n    \
--url http://10.0.0.1/boot --root-url http://10.0.0.1/root.cpio.gz \\\n    \
--root-image root.cpio.gz --json mlx5_ib ib_ipoib\n  \
kmodkit netboot build -k 6.1.0-56-amd64 -o out \\\n    \
--net 10.0.0.11/24,10.0.0.1 --root-url http://10.0.0.1/root.cpio.gz \\\n    \
--root-image root.cpio.gz virtio_pci virtio_net"
    )]
    Build(Box<BuildArgs>),
    /// DHCP server configuration (dnsmasq or ISC dhcpd) giving each node one address in every boot stage
    #[command(
        long_about = "Write DHCP server configuration from a node list (one node a line: \
`NAME MAC|GUID ADDRESS`, `#` comments) to standard output. Every identifier a ConnectX port \
sends in some boot stage (FlexBoot `ff:00:00:00:00:00:02:00:00:02:c9:00:GUID`, iPXE `01:MAC`, \
the OS `20:GUID`, the Ethernet MAC) is mapped to the node's one address. With --boot-url, \
clients that are not iPXE yet are sent undionly.kpxe and iPXE is sent the boot script.",
        after_help = "Examples:\n  \
kmodkit netboot dhcp-config --nodes nodes.txt \\\n    \
--boot-url http://10.0.0.1/boot/boot.ipxe > /etc/dnsmasq.d/kmodkit.conf\n  \
kmodkit netboot dhcp-config --nodes nodes.txt --format dhcpd \\\n    \
>> /etc/dhcp/dhcpd.conf"
    )]
    DhcpConfig(DhcpConfigArgs),
    /// Boot a set in qemu through its iPXE ROM against real dnsmasq (DHCP, TFTP) and HTTP servers; report every stage
    #[command(
        long_about = "Boot the set in DIR the way a node boots it, and report each stage. \
qemu (TCG) network-boots through its iPXE ROM (Debian ipxe-qemu) on a tap inside a private \
network namespace, where dnsmasq serves DHCP (the node list's reservations, as `dhcp-config` \
writes them) and TFTP (boot.ipxe), and Python's http.server serves the set's --url and the root \
image at the root URL's address (an NFS root: nfs-ganesha exports --root-dir read-only over \
NFSv4 at the set's SERVER:/PATH). The stages, timed on one clock from qemu's start: \
firmware-dhcp, boot-script, kernel-fetch, kernel-start, modules (every module of the manifest \
in the kernel), interface, network (the address kmodkit-init configured), lease (dnsmasq's \
lease file holds the node's reservation), root (image fetched, sha256 ok), switch-root, \
root-init (the root's init printed --marker).\n\n\
Needs root (a network namespace), qemu-system-x86, ipxe-qemu, dnsmasq-base, python3 (an NFS root: nfs-ganesha, nfs-ganesha-vfs). \
Nothing outside the namespace is touched; the console, server logs, dnsmasq's configuration \
and lease file stay in --logs. --no-os-lease and --root-server-late rehearse the failures a \
site meets (an OS stage without a reservation, a root server that comes up late).\n\n\
Exit status: 0 the node reached the end, 1 a stage failed (the report names it), 2 the \
verification could not run.",
        after_help = "Examples:\n  \
kmodkit netboot verify out --nodes nodes.txt --node n1 --marker 'root is up'\n  \
kmodkit netboot verify out --root-image root.cpio.gz --json\n  \
kmodkit netboot verify out --nodes nodes.txt --root-server-late 10\n  \
kmodkit netboot verify nfs-set --nodes nodes.txt --root-dir /srv/node-root"
    )]
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InitrdCompression {
    Zstd,
    Gzip,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Root of the system the kernel, modules and firmware come from
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Kernel release (ROOT/boot/vmlinuz-KVER, ROOT/lib/modules/KVER)
    #[arg(short = 'k', long, value_name = "KVER")]
    pub kernel: String,
    /// Directory to write the boot set into (created if missing)
    #[arg(short = 'o', long, value_name = "DIR")]
    pub out: PathBuf,
    /// The static kmodkit-init [default: kmodkit-init beside the kmodkit
    /// binary, then /usr/lib/kmodkit/kmodkit-init]
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// `dhcp`, or a static `ADDR/PREFIX[,GATEWAY]`
    #[arg(long, value_name = "dhcp|ADDR/PREFIX[,GW]", default_value = "dhcp")]
    pub net: String,
    /// The interface that reaches the root: a name, a MAC or an IB port
    /// GUID [default: the first Ethernet interface]
    #[arg(long, value_name = "NAME|MAC|GUID")]
    pub iface: Option<String>,
    /// DHCP client identifier: flexboot, infiniband, ipxe, ethernet or hex bytes
    #[arg(long, value_name = "STYLE|HEX")]
    pub client_id: Option<String>,
    /// Host name sent in DHCP (option 12) or given to the static address
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// URL of the root image (`http://IPv4[:port]/path`; no resolver in the initrd)
    #[arg(long, value_name = "URL", requires = "root_image")]
    pub root_url: Option<String>,
    /// The root image as it will be served (its sha256 goes into the configuration)
    #[arg(long, value_name = "FILE", requires = "root_url")]
    pub root_image: Option<PathBuf>,
    /// NFS root instead of an image: `SERVER:/EXPORT`
    #[arg(long, value_name = "SERVER:/PATH", conflicts_with_all = ["root_url", "root_image"])]
    pub root_nfs: Option<String>,
    /// Where vmlinuz and initrd.img are served [default: beside boot.ipxe, relative URLs]
    #[arg(long, value_name = "BASE")]
    pub url: Option<String>,
    /// Kernel command line in boot.ipxe (after initrd=initrd.img)
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "console=tty0 console=ttyS0,115200n8"
    )]
    pub cmdline: String,
    /// Compression of initrd.img
    #[arg(long, value_enum, default_value = "zstd")]
    pub compress: InitrdCompression,
    /// Do not add the firmware files the modules name
    #[arg(long)]
    pub no_firmware: bool,
    /// Do not add run-time companions (mlx4_en with mlx4_core, RDMA upper layers, ...)
    #[arg(long)]
    pub no_companions: bool,
    /// Keep modules the ABI check refuses
    #[arg(long)]
    pub force: bool,
    /// Print the manifest as JSON instead of the summary
    #[arg(long)]
    pub json: bool,
    /// Drivers (module names; old names are explained)
    #[arg(required = true, value_name = "DRIVER")]
    pub drivers: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DhcpFormat {
    Dnsmasq,
    Dhcpd,
}

#[derive(Debug, Args)]
pub struct DhcpConfigArgs {
    /// Node list: `NAME MAC|GUID ADDRESS` a line
    #[arg(long, value_name = "FILE")]
    pub nodes: PathBuf,
    #[arg(long, value_enum, default_value = "dnsmasq")]
    pub format: DhcpFormat,
    /// URL of boot.ipxe, handed to iPXE clients (others get undionly.kpxe)
    #[arg(long, value_name = "URL")]
    pub boot_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The boot set (`netboot build --out`)
    #[arg(value_name = "DIR")]
    pub set: PathBuf,
    /// Node list (`NAME MAC|GUID ADDRESS` a line): the reservations dnsmasq serves
    #[arg(long, value_name = "FILE")]
    pub nodes: Option<PathBuf>,
    /// The node to boot [default: the only node of the list]
    #[arg(long, value_name = "NAME", requires = "nodes")]
    pub node: Option<String>,
    /// dnsmasq configuration to serve instead of the one made from --nodes
    #[arg(long, value_name = "FILE")]
    pub dhcp_config: Option<PathBuf>,
    /// The root image served at the root URL [default: DIR/<the URL's file name>]
    #[arg(long, value_name = "FILE")]
    pub root_image: Option<PathBuf>,
    /// For a set with an NFS root: the tree exported (read-only, NFSv4, by nfs-ganesha)
    #[arg(long, value_name = "DIR", conflicts_with = "root_image")]
    pub root_dir: Option<PathBuf>,
    /// A line the root's init prints; the boot is verified when it appears
    #[arg(long, value_name = "TEXT")]
    pub marker: Option<String>,
    /// Give up after this many seconds
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// Rehearse: dnsmasq answers the firmware only, the OS stage gets no lease
    #[arg(long)]
    pub no_os_lease: bool,
    /// Rehearse: the root's HTTP server starts SECS after the node's network is up
    #[arg(long, value_name = "SECS")]
    pub root_server_late: Option<u64>,
    /// Memory of the VM
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub memory: u32,
    /// Keep the console, server logs and leases here [default: a scratch directory, removed]
    #[arg(long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// The qemu binary
    #[arg(long, value_name = "PATH", default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &NetbootArgs) -> Result<bool> {
    match &args.command {
        NetbootCommand::Build(a) => run_build(a),
        NetbootCommand::DhcpConfig(a) => run_dhcp_config(a),
        NetbootCommand::Verify(a) => run_verify(a),
    }
}

fn run_verify(a: &VerifyArgs) -> Result<bool> {
    let nodes = match &a.nodes {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--nodes {}", path.display()))?;
            dhcp_config::parse_nodes(&text, &path.display().to_string())?
        }
        None => Vec::new(),
    };
    let scratch;
    let logs = match &a.logs {
        Some(dir) => dir.clone(),
        None => {
            scratch = crate::host::scratch_dir("kmodkit-verify-")?;
            scratch.path().to_path_buf()
        }
    };
    let req = VerifyRequest {
        set: a.set.clone(),
        nodes,
        node: a.node.clone(),
        dhcp_config: a.dhcp_config.clone(),
        root_image: a.root_image.clone(),
        root_dir: a.root_dir.clone(),
        marker: a.marker.clone(),
        timeout: Duration::from_secs(a.timeout),
        no_os_lease: a.no_os_lease,
        root_server_late: a.root_server_late.map(Duration::from_secs),
        memory_mib: a.memory,
        logs,
        qemu: a.qemu.clone(),
    };
    let json = a.json;
    let mut progress = |s: &Stage| {
        if !json {
            eprintln!(
                "  [{:7.2} s] {:13} {}  {}",
                s.at.unwrap_or(0.0),
                s.name,
                if s.ok { "ok    " } else { "FAILED" },
                s.detail
            );
        }
    };
    if !json {
        eprintln!(
            "verify: booting {} through qemu's iPXE ROM",
            a.set.display()
        );
    }
    // A lab that cannot run (a missing tool, a server that will not start,
    // a set that names two servers) is exit 2, as --help says; 1 is kept
    // for a node that failed a stage.
    let report = verify::verify(&req, &mut progress)
        .map_err(|e| anyhow::Error::new(crate::UsageError(format!("netboot verify: {e}"))))?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(report.ok);
    }
    for s in report.stages.iter().filter(|s| s.at.is_none()) {
        writeln!(out, "  {:13} not reached", s.name)?;
    }
    if let Some(f) = &report.failure {
        writeln!(out, "FAILED in stage {}: {}", f.stage, f.reason)?;
    }
    writeln!(
        out,
        "{}: kernel {}, {}{} in {:.1} s{}",
        if report.ok {
            "verified"
        } else {
            "not verified"
        },
        report.kernel,
        report
            .node
            .as_deref()
            .map_or(String::new(), |n| format!("node {n} ")),
        report
            .expected_address
            .map_or(String::new(), |a| format!("address {a}")),
        report.seconds,
        if a.logs.is_some() {
            format!("; logs in {}", report.logs.display())
        } else {
            String::new()
        }
    )?;
    Ok(report.ok)
}

/// The init shipped with this kmodkit: beside the binary (a build tree, a
/// tarball), then where the packages install it.
fn default_init() -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            tried.push(dir.join("kmodkit-init"));
        }
    }
    tried.push(PathBuf::from("/usr/lib/kmodkit/kmodkit-init"));
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    bail!(
        "no kmodkit-init found (looked for {}); build it static with \
`RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p kmodkit-init --target x86_64-unknown-linux-gnu` and pass --init",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn parse_net(
    net: &str,
    hostname: Option<String>,
    client_id: Option<String>,
) -> Result<NetworkMode> {
    if net == "dhcp" {
        if let Some(id) = &client_id {
            id.parse::<ClientIdStyle>()
                .map_err(|e| anyhow::anyhow!("--client-id {id}: {e}"))?;
        }
        return Ok(NetworkMode::Dhcp {
            client_id,
            hostname,
        });
    }
    if client_id.is_some() {
        bail!("--client-id is for DHCP; --net {net} is a static address");
    }
    let (cidr, gateway) = match net.split_once(',') {
        Some((c, g)) => (c, Some(g)),
        None => (net, None),
    };
    let usage = || {
        format!("--net {net}: expected `dhcp` or `ADDR/PREFIX[,GATEWAY]` (10.0.0.11/24,10.0.0.1)")
    };
    let (addr, prefix) = cidr.split_once('/').with_context(usage)?;
    let address: Ipv4Addr = addr.parse().ok().with_context(usage)?;
    let prefix_len: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .with_context(usage)?;
    let gateway = match gateway {
        Some(g) => Some(g.parse::<Ipv4Addr>().ok().with_context(usage)?),
        None => None,
    };
    Ok(NetworkMode::Static {
        address,
        prefix_len,
        gateway,
        dns: Vec::new(),
        hostname,
    })
}

fn parse_iface(iface: Option<&str>) -> InterfaceSelector {
    match iface {
        None => InterfaceSelector::FirstEthernet,
        Some(s) if s.parse::<MacAddress>().is_ok() => {
            InterfaceSelector::Mac(s.to_ascii_lowercase())
        }
        Some(s) if s.parse::<PortGuid>().is_ok() => InterfaceSelector::Guid(s.to_ascii_lowercase()),
        Some(s) => InterfaceSelector::Name(s.to_string()),
    }
}

fn root_source(a: &BuildArgs) -> Result<RootSource> {
    if let Some(export) = &a.root_nfs {
        return Ok(RootSource::Nfs {
            export: export.clone(),
            options: String::new(),
        });
    }
    match (&a.root_url, &a.root_image) {
        (Some(url), Some(image)) => {
            if !url.starts_with("http://") {
                bail!("--root-url {url}: only http:// URLs (the initrd has no TLS and no resolver)");
            }
            let bytes =
                std::fs::read(image).with_context(|| format!("--root-image {}", image.display()))?;
            Ok(RootSource::Http {
                url: url.clone(),
                sha256: kmodkit_init::rootfs::sha256_hex(&bytes),
            })
        }
        _ => bail!("the root is missing: give --root-url URL --root-image FILE, or --root-nfs SERVER:/PATH"),
    }
}

/// SOURCE_DATE_EPOCH (reproducible-builds.org) for the cpio mtimes, else 0.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

fn run_build(a: &BuildArgs) -> Result<bool> {
    let init = match &a.init {
        Some(p) => p.clone(),
        None => default_init()?,
    };
    let req = BuildRequest {
        root: a.root.clone(),
        kernel: a.kernel.clone(),
        init,
        drivers: a.drivers.clone(),
        interface: parse_iface(a.iface.as_deref()),
        network: parse_net(&a.net, a.hostname.clone(), a.client_id.clone())?,
        root_source: root_source(a)?,
        boot_url: a.url.clone(),
        cmdline: a.cmdline.clone(),
        compression: match a.compress {
            InitrdCompression::Zstd => Compression::Zstd,
            InitrdCompression::Gzip => Compression::Gzip,
        },
        firmware: !a.no_firmware,
        companions: !a.no_companions,
        force: a.force,
        mtime: source_date_epoch()?,
        scratch: crate::host::scratch_base(),
    };
    let set = build::build(&req)?;
    build::write(&set, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    let mut out = std::io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &set.manifest)?;
        writeln!(out)?;
        return Ok(true);
    }
    let m = &set.manifest;
    for note in &m.notes {
        writeln!(out, "  {}", crate::add_drivers::note_text(note, &m.kernel))?;
    }
    writeln!(out, "modules, in load order ({}):", m.modules.len())?;
    let width = m.modules.iter().map(|x| x.name.len()).max().unwrap_or(0);
    for x in &m.modules {
        writeln!(
            out,
            "  {:width$}  {}",
            x.name,
            crate::add_drivers::why_text(&x.why)
        )?;
    }
    for fw in &m.firmware {
        writeln!(out, "firmware: {fw}")?;
    }
    for fw in &m.missing_firmware {
        writeln!(out, "warning: firmware not found: {fw}")?;
    }
    writeln!(out, "ABI: {}", m.abi_check)?;
    for (name, _) in &set.files {
        writeln!(
            out,
            "wrote {}  sha256 {}",
            a.out.join(name).display(),
            m.sha256.get(*name).map_or("(see the file)", String::as_str)
        )?;
    }
    Ok(true)
}

fn run_dhcp_config(a: &DhcpConfigArgs) -> Result<bool> {
    let text = std::fs::read_to_string(&a.nodes)
        .with_context(|| format!("--nodes {}", a.nodes.display()))?;
    let nodes = dhcp_config::parse_nodes(&text, &a.nodes.display().to_string())?;
    let config = match a.format {
        DhcpFormat::Dnsmasq => dhcp_config::dnsmasq(&nodes, a.boot_url.as_deref()),
        DhcpFormat::Dhcpd => dhcp_config::dhcpd(&nodes, a.boot_url.as_deref()),
    };
    std::io::stdout().lock().write_all(config.as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_forms() {
        let dhcp = parse_net("dhcp", None, Some("flexboot".into())).unwrap();
        assert!(
            matches!(dhcp, NetworkMode::Dhcp { client_id: Some(ref c), .. } if c == "flexboot")
        );
        assert!(parse_net("dhcp", None, Some("nonsense-style".into())).is_err());
        let fixed = parse_net("10.0.0.11/24,10.0.0.1", Some("n1".into()), None).unwrap();
        assert_eq!(
            fixed,
            NetworkMode::Static {
                address: "10.0.0.11".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("10.0.0.1".parse().unwrap()),
                dns: Vec::new(),
                hostname: Some("n1".into()),
            }
        );
        for bad in ["10.0.0.11", "10.0.0.11/33", "10.0.0/24", "10.0.0.11/24,gw"] {
            let e = parse_net(bad, None, None).unwrap_err().to_string();
            assert!(
                e.contains("expected `dhcp` or `ADDR/PREFIX[,GATEWAY]`"),
                "{bad}: {e}"
            );
        }
        assert!(parse_net("10.0.0.11/24", None, Some("flexboot".into())).is_err());
    }

    #[test]
    fn iface_forms() {
        assert_eq!(parse_iface(None), InterfaceSelector::FirstEthernet);
        assert_eq!(
            parse_iface(Some("52:54:00:12:34:56")),
            InterfaceSelector::Mac("52:54:00:12:34:56".into())
        );
        assert_eq!(
            parse_iface(Some("F4:52:14:03:00:38:39:81")),
            InterfaceSelector::Guid("f4:52:14:03:00:38:39:81".into())
        );
        assert_eq!(
            parse_iface(Some("ib0")),
            InterfaceSelector::Name("ib0".into())
        );
    }
}
