//! `kmodkit netboot`: diskless boot sets with kmodkit-init, and the DHCP
//! server configuration for them (kmodkit-netboot does the work).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use kmodkit_init::config::{InterfaceSelector, NetworkMode, RootSource};
use kmodkit_init::dhcp::client_id::{ClientIdStyle, MacAddress, PortGuid};
use kmodkit_initramfs::compression::Compression;
use kmodkit_netboot::build::{self, BuildRequest};
use kmodkit_netboot::dhcp_config;

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

pub fn run(args: &NetbootArgs) -> Result<bool> {
    match &args.command {
        NetbootCommand::Build(a) => run_build(a),
        NetbootCommand::DhcpConfig(a) => run_dhcp_config(a),
    }
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
