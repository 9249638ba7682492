//! The contract between the image builder and the init: one JSON file,
//! `/etc/kmodkit-init.json` in the image ([`CONFIG_PATH`]), written by the
//! builder and read by the init (booster's `config.go` on both sides).
//!
//! The kernel command line overrides a documented subset
//! ([`Config::apply_cmdline`]):
//!
//! - `ip=dhcp` — DHCP on the configured interface;
//! - `ip=<client>::<gw>:<netmask>:<hostname>:<iface>:none` — dracut's static
//!   form (`<gw>`, `<hostname>`, `<iface>` may be empty; `<netmask>` is
//!   dotted or a prefix length); a non-empty `<iface>` selects by name;
//! - `kmodkit.root=<http URL>` (the image's sha256 from
//!   `kmodkit.root.sha256=<hex>`, else the configured one) or
//!   `kmodkit.root=nfs:<server>:<path>`;
//! - `kmodkit.debug` — log every DHCP event and module timing;
//! - `kmodkit.timeout.<name>=<n>` — one of [`Timeouts`]: `interface`,
//!   `carrier`, `dhcp`, `http` (seconds), `dhcp_attempts`, `root_attempts`.
//!
//! `rdinit=` is the kernel's own and means nothing to the init.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the image builder puts the configuration.
pub const CONFIG_PATH: &str = "/etc/kmodkit-init.json";

/// Everything the init needs, resolved at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kernel release the modules were resolved for (`uname -r`), checked
    /// against the running kernel.
    pub kernel: String,
    /// Modules in load order, dependencies before their users.
    #[serde(default)]
    pub modules: Vec<ModuleSpec>,
    /// The interface that reaches the root.
    pub interface: InterfaceSelector,
    /// How the interface gets its address.
    pub network: NetworkMode,
    /// Where the root comes from.
    pub root: RootSource,
    /// Path of the root's init inside the root.
    #[serde(default = "default_root_init")]
    pub root_init: String,
    /// Waits and retries.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// What to do when a stage fails for good.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Log more (also `kmodkit.debug` on the command line).
    #[serde(default)]
    pub debug: bool,
}

fn default_root_init() -> String {
    "/sbin/init".to_string()
}

/// One module file to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSpec {
    /// Module name as the kernel knows it (`mlx5_core`, not `mlx5-core`).
    pub name: String,
    /// Path in the image, `/lib/modules/<kernel>/...ko[.xz|.zst|.gz]`.
    pub path: String,
    /// Parameters passed to `finit_module` (`key=value key2=value`).
    #[serde(default)]
    pub options: String,
    /// Names of the modules of this list it needs loaded first (its
    /// `depends=`); the init loads each dependency level in parallel.
    #[serde(default)]
    pub depends: Vec<String>,
}

/// How the init finds the interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceSelector {
    /// Kernel name (`eth0`, `ib0`, `enp1s0f0np0`).
    Name(String),
    /// Ethernet MAC, `aa:bb:cc:dd:ee:ff`.
    Mac(String),
    /// IB port GUID (last 8 bytes of the 20-byte IPoIB address), 16 hex digits with or without colons.
    Guid(String),
    /// The first non-loopback link with a 6-byte (Ethernet) address.
    FirstEthernet,
}

/// How the interface is configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// DHCP (RFC 2131; RFC 4390 on IPoIB).
    Dhcp {
        /// Client identifier style: `flexboot`, `infiniband`, `ipxe`,
        /// `ethernet` or hex bytes; none sends no option 61 on Ethernet
        /// (IPoIB then uses `flexboot`).
        #[serde(default)]
        client_id: Option<String>,
        /// Option 12.
        #[serde(default)]
        hostname: Option<String>,
    },
    /// A fixed address.
    Static {
        /// Address of this node.
        address: Ipv4Addr,
        /// Prefix length (24 for 255.255.255.0).
        prefix_len: u8,
        /// Default gateway.
        #[serde(default)]
        gateway: Option<Ipv4Addr>,
        /// DNS servers, written to the lease file for the root.
        #[serde(default)]
        dns: Vec<Ipv4Addr>,
        /// Host name, written to the lease file.
        #[serde(default)]
        hostname: Option<String>,
    },
}

/// Where the root file system comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// An image (cpio or tar, plain or gzip) fetched over HTTP into a tmpfs.
    Http {
        /// `http://<IPv4 address>[:port]/path` (no resolver in the initrd).
        url: String,
        /// SHA-256 of the image as served, lower-case hex.
        sha256: String,
    },
    /// NFS (v3/v4 via the kernel's own client), `server:/export`.
    Nfs {
        /// `server:/path`.
        export: String,
        /// Mount options (`vers=4.2,ro`).
        #[serde(default)]
        options: String,
    },
}

/// Waits and retries, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Wait for the interface to appear.
    pub interface_secs: u64,
    /// Wait for carrier once it is up (DHCP starts anyway after it).
    pub carrier_secs: u64,
    /// One DHCP exchange.
    pub dhcp_secs: u64,
    /// DHCP exchanges before giving up.
    pub dhcp_attempts: u32,
    /// Downloads of the root image before giving up.
    pub root_attempts: u32,
    /// One HTTP request (connect and every read).
    pub http_secs: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            interface_secs: 30,
            carrier_secs: 30,
            dhcp_secs: 60,
            dhcp_attempts: 3,
            root_attempts: 5,
            http_secs: 30,
        }
    }
}

impl Timeouts {
    /// [`Timeouts::interface_secs`] as a duration.
    pub fn interface(&self) -> Duration {
        Duration::from_secs(self.interface_secs)
    }
    /// [`Timeouts::http_secs`] as a duration.
    pub fn http(&self) -> Duration {
        Duration::from_secs(self.http_secs)
    }
}

/// After a failure that retries did not cure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Stop: sleep forever, printing nothing more (the message stays on screen).
    #[default]
    Halt,
    /// Reboot after this many seconds (a node that retries its boot).
    Reboot {
        /// Seconds to wait before rebooting.
        delay_secs: u64,
    },
}

/// A command-line override that could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("kernel command line: {parameter:?}: {reason}")]
pub struct CmdlineError {
    /// The parameter as given.
    pub parameter: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Config {
    /// Parses the JSON the builder wrote.
    pub fn from_json(text: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The JSON the builder writes (pretty, stable field order).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).expect("Config serializes");
        text.push('\n');
        text
    }

    /// Applies the overrides of the module documentation from a kernel
    /// command line (`/proc/cmdline`); other parameters are ignored.
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), CmdlineError> {
        let mut root_sha = None;
        let mut root_url = None;
        for parameter in cmdline.split_whitespace() {
            let (key, value) = match parameter.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (parameter, None),
            };
            let error = |reason: &str| CmdlineError {
                parameter: parameter.to_string(),
                reason: reason.to_string(),
            };
            match (key, value) {
                ("kmodkit.debug", _) => self.debug = true,
                ("kmodkit.root.sha256", Some(hex)) => root_sha = Some(hex.to_ascii_lowercase()),
                ("kmodkit.root", Some(root)) => root_url = Some(root.to_string()),
                ("ip", Some(ip)) => self.apply_ip(ip).map_err(|r| error(&r))?,
                (key, Some(v)) if key.starts_with("kmodkit.timeout.") => {
                    let n: u64 = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        error("expected a whole number of seconds (or attempts) above 0")
                    })?;
                    let t = &mut self.timeouts;
                    match &key["kmodkit.timeout.".len()..] {
                        "interface" => t.interface_secs = n,
                        "carrier" => t.carrier_secs = n,
                        "dhcp" => t.dhcp_secs = n,
                        "dhcp_attempts" => t.dhcp_attempts = n.min(u64::from(u32::MAX)) as u32,
                        "root_attempts" => t.root_attempts = n.min(u64::from(u32::MAX)) as u32,
                        "http" => t.http_secs = n,
                        _ => return Err(error(
                            "known: kmodkit.timeout.{interface,carrier,dhcp,dhcp_attempts,root_attempts,http}",
                        )),
                    }
                }
                _ => {}
            }
        }
        match (root_url, &mut self.root) {
            (Some(url), _) if url.starts_with("nfs:") => {
                self.root = RootSource::Nfs {
                    export: url["nfs:".len()..].to_string(),
                    options: String::new(),
                }
            }
            (Some(url), RootSource::Http { sha256, .. }) => {
                self.root = RootSource::Http {
                    url,
                    sha256: root_sha.unwrap_or_else(|| sha256.clone()),
                }
            }
            (Some(url), RootSource::Nfs { .. }) => {
                self.root = RootSource::Http {
                    url,
                    sha256: root_sha.ok_or_else(|| CmdlineError {
                        parameter: "kmodkit.root".into(),
                        reason: "an HTTP root needs kmodkit.root.sha256=<hex> too".into(),
                    })?,
                }
            }
            (None, RootSource::Http { sha256, .. }) => {
                if let Some(sha) = root_sha {
                    *sha256 = sha;
                }
            }
            (None, RootSource::Nfs { .. }) => {}
        }
        Ok(())
    }

    fn apply_ip(&mut self, ip: &str) -> Result<(), String> {
        if ip == "dhcp" || ip == "on" || ip == "any" {
            if !matches!(self.network, NetworkMode::Dhcp { .. }) {
                self.network = NetworkMode::Dhcp {
                    client_id: None,
                    hostname: None,
                };
            }
            return Ok(());
        }
        // dracut: ip=<client-IP>:[<peer>]:<gateway-IP>:<netmask>:<client_hostname>:<interface>:{none|off|dhcp|...}
        let fields: Vec<&str> = ip.split(':').collect();
        if fields.len() < 7 {
            return Err("expected ip=dhcp or ip=<client>::<gw>:<netmask>:<hostname>:<iface>:none (7 fields)".into());
        }
        let (client, gateway, netmask, hostname, iface, method) = (
            fields[0], fields[2], fields[3], fields[4], fields[5], fields[6],
        );
        if !iface.is_empty() {
            self.interface = InterfaceSelector::Name(iface.to_string());
        }
        match method {
            "dhcp" | "on" | "any" => {
                self.network = NetworkMode::Dhcp {
                    client_id: None,
                    hostname: (!hostname.is_empty()).then(|| hostname.to_string()),
                };
                return Ok(());
            }
            "none" | "off" => {}
            other => {
                return Err(format!(
                    "autoconf method {other:?} is not supported (none or dhcp)"
                ))
            }
        }
        let address: Ipv4Addr = client
            .parse()
            .map_err(|_| format!("client address {client:?} is not an IPv4 address"))?;
        let prefix_len = parse_netmask(netmask)?;
        let gateway = if gateway.is_empty() {
            None
        } else {
            Some(
                gateway
                    .parse()
                    .map_err(|_| format!("gateway {gateway:?} is not an IPv4 address"))?,
            )
        };
        let dns = match &self.network {
            NetworkMode::Static { dns, .. } => dns.clone(),
            NetworkMode::Dhcp { .. } => Vec::new(),
        };
        self.network = NetworkMode::Static {
            address,
            prefix_len,
            gateway,
            dns,
            hostname: (!hostname.is_empty()).then(|| hostname.to_string()),
        };
        Ok(())
    }
}

/// `255.255.255.0` or `24` → 24; a non-contiguous mask is refused.
pub fn parse_netmask(text: &str) -> Result<u8, String> {
    if let Ok(n) = text.parse::<u8>() {
        if n <= 32 {
            return Ok(n);
        }
    }
    let mask: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("netmask {text:?} is neither dotted nor a prefix length"))?;
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(format!("netmask {text:?} is not contiguous"));
    }
    Ok(prefix as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        Config {
            kernel: "6.1.0-53-amd64".into(),
            modules: vec![ModuleSpec {
                name: "failover".into(),
                path: "/lib/modules/6.1.0-53-amd64/kernel/net/core/failover.ko".into(),
                options: String::new(),
                depends: vec![],
            }],
            interface: InterfaceSelector::FirstEthernet,
            network: NetworkMode::Dhcp {
                client_id: Some("flexboot".into()),
                hostname: None,
            },
            root: RootSource::Http {
                url: "http://10.0.2.2:8000/root.cpio.gz".into(),
                sha256: "00".repeat(32),
            },
            root_init: "/sbin/init".into(),
            timeouts: Timeouts::default(),
            on_failure: OnFailure::Reboot { delay_secs: 5 },
            debug: false,
        }
    }

    #[test]
    fn json_round_trip() {
        let config = sample();
        assert_eq!(Config::from_json(&config.to_json()).unwrap(), config);
    }

    #[test]
    fn timeout_overrides() {
        let mut config = sample();
        config
            .apply_cmdline("quiet kmodkit.timeout.dhcp=5 kmodkit.timeout.dhcp_attempts=2 kmodkit.timeout.interface=7")
            .unwrap();
        assert_eq!(config.timeouts.dhcp_secs, 5);
        assert_eq!(config.timeouts.dhcp_attempts, 2);
        assert_eq!(config.timeouts.interface_secs, 7);
        assert_eq!(config.timeouts.http_secs, Timeouts::default().http_secs);
        for bad in [
            "kmodkit.timeout.dhcp=0",
            "kmodkit.timeout.dhcp=x",
            "kmodkit.timeout.nap=3",
        ] {
            let e = sample().apply_cmdline(bad).unwrap_err();
            assert_eq!(e.parameter, bad);
        }
    }

    #[test]
    fn dracut_static_ip_overrides() {
        let mut config = sample();
        config
            .apply_cmdline("console=ttyS0 ip=192.168.1.7::192.168.1.1:255.255.255.0:node7:eth1:none kmodkit.debug")
            .unwrap();
        assert_eq!(config.interface, InterfaceSelector::Name("eth1".into()));
        assert_eq!(
            config.network,
            NetworkMode::Static {
                address: "192.168.1.7".parse().unwrap(),
                prefix_len: 24,
                gateway: Some("192.168.1.1".parse().unwrap()),
                dns: vec![],
                hostname: Some("node7".into()),
            }
        );
        assert!(config.debug);
    }

    #[test]
    fn root_override_keeps_or_replaces_checksum() {
        let mut config = sample();
        config
            .apply_cmdline("kmodkit.root=http://10.0.0.1/r.tar kmodkit.root.sha256=AB")
            .unwrap();
        assert_eq!(
            config.root,
            RootSource::Http {
                url: "http://10.0.0.1/r.tar".into(),
                sha256: "ab".into()
            }
        );
        config
            .apply_cmdline("kmodkit.root=nfs:10.0.0.1:/srv/root")
            .unwrap();
        assert!(
            matches!(config.root, RootSource::Nfs { ref export, .. } if export == "10.0.0.1:/srv/root")
        );
    }

    #[test]
    fn ip_dhcp_replaces_a_static_configuration() {
        let mut config = sample();
        config
            .apply_cmdline("ip=10.1.1.5::10.1.1.1:24::ib0:none")
            .unwrap();
        assert!(matches!(
            config.network,
            NetworkMode::Static { prefix_len: 24, .. }
        ));
        config.apply_cmdline("ip=dhcp").unwrap();
        assert!(matches!(
            config.network,
            NetworkMode::Dhcp {
                client_id: None,
                ..
            }
        ));
        assert_eq!(config.interface, InterfaceSelector::Name("ib0".into()));
    }

    #[test]
    fn bad_ip_is_named() {
        let err = sample().apply_cmdline("ip=1.2.3.4:x").unwrap_err();
        assert_eq!(err.parameter, "ip=1.2.3.4:x");
        assert_eq!(
            parse_netmask("255.0.255.0").unwrap_err(),
            "netmask \"255.0.255.0\" is not contiguous"
        );
    }
}
