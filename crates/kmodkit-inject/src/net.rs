//! The manual's static-address and DHCP steps as settings the image's own
//! network code reads: dracut's `ip=` (dracut.cmdline(7)) in
//! `etc/cmdline.d`, initramfs-tools' `IP=`/`DEVICE=`/`BOOTIF=` for
//! `configure_networking` (scripts/functions) and klibc's ipconfig, and
//! dhclient's `send dhcp-client-identifier` for DHCP over InfiniBand
//! (RFC 4390: no hardware address, a client identifier is mandatory).

use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::Serialize;

/// `--net`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum NetMode {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

impl FromStr for NetMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "dhcp" {
            return Ok(NetMode::Dhcp);
        }
        let (cidr, gateway) = match s.split_once(',') {
            Some((c, g)) => (
                c,
                Some(
                    g.parse::<Ipv4Addr>()
                        .map_err(|_| format!("'{g}' is not an IPv4 gateway address"))?,
                ),
            ),
            None => (s, None),
        };
        let (addr, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("'{s}': expected dhcp or ADDRESS/PREFIX[,GATEWAY], e.g. 192.168.1.20/24,192.168.1.1"))?;
        let address = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| format!("'{addr}' is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("'{prefix}' is not a prefix length (0-32)"))?;
        Ok(NetMode::Static {
            address,
            prefix,
            gateway,
        })
    }
}

/// `--iface`: a name, an Ethernet MAC or an InfiniBand port GUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Iface {
    Name(String),
    Mac(String),
    /// The 8-byte port GUID: the stable last 8 bytes of the 20-byte IPoIB
    /// link address.
    Guid([u8; 8]),
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let cleaned: String = s.chars().filter(|c| *c != ':' && *c != '-').collect();
    if cleaned.is_empty()
        || !cleaned.len().is_multiple_of(2)
        || !cleaned.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    (0..cleaned.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&cleaned[i..i + 2], 16).ok())
        .collect()
}

impl FromStr for Iface {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let separated = s.contains(':') || s.contains('-');
        match hex_bytes(s) {
            Some(b) if separated && b.len() == 6 => Ok(Iface::Mac(
                b.iter()
                    .map(|x| format!("{x:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            )),
            Some(b) if separated && b.len() == 8 => {
                let mut g = [0u8; 8];
                g.copy_from_slice(&b);
                Ok(Iface::Guid(g))
            }
            Some(b) if separated => Err(format!(
                "'{s}' has {} bytes: a MAC has 6, a port GUID 8",
                b.len()
            )),
            _ if !s.is_empty()
                && s.len() < 16
                && !s.contains('/')
                && !s.contains(char::is_whitespace) =>
            {
                Ok(Iface::Name(s.to_string()))
            }
            _ => Err(format!(
                "'{s}' is neither an interface name, a MAC nor a port GUID"
            )),
        }
    }
}

/// `--client-id`: the DHCP client identifier for IPoIB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdStyle {
    /// FlexBoot's: `ff:00:00:00:00:00:02:00:00:02:c9:00` + GUID (type 255,
    /// IAID 0, DUID-EN with Mellanox's enterprise number 0x2c9).
    Flexboot,
    /// NetworkManager/systemd's: `20` + GUID.
    Guid,
    Hex(Vec<u8>),
}

impl FromStr for ClientIdStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flexboot" => Ok(ClientIdStyle::Flexboot),
            "guid" => Ok(ClientIdStyle::Guid),
            _ => hex_bytes(s)
                .map(ClientIdStyle::Hex)
                .ok_or_else(|| format!("'{s}': expected flexboot, guid or hex bytes (ff:00:...)")),
        }
    }
}

impl ClientIdStyle {
    /// The identifier bytes; the GUID styles need the port GUID.
    pub fn bytes(&self, guid: Option<&[u8; 8]>) -> Result<Vec<u8>, String> {
        let need = |style: &str| {
            guid.copied().ok_or_else(|| {
                format!("--client-id {style} is built from the port GUID: give --iface GUID (8 bytes, e.g. 00:02:c9:03:00:00:10:39)")
            })
        };
        Ok(match self {
            ClientIdStyle::Flexboot => {
                let mut v = vec![0xff, 0, 0, 0, 0, 0, 0x02, 0, 0, 0x02, 0xc9, 0];
                v.extend_from_slice(&need("flexboot")?);
                v
            }
            ClientIdStyle::Guid => {
                let mut v = vec![0x20];
                v.extend_from_slice(&need("guid")?);
                v
            }
            ClientIdStyle::Hex(b) => b.clone(),
        })
    }
}

/// The network part of a request.
#[derive(Debug, Clone, Serialize)]
pub struct NetConfig {
    pub mode: NetMode,
    pub iface: Option<Iface>,
    pub client_id: Option<ClientIdStyle>,
}

pub fn colon_hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn netmask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    Ipv4Addr::from(bits)
}

impl NetConfig {
    pub fn iface_name(&self) -> Option<&str> {
        match &self.iface {
            Some(Iface::Name(n)) => Some(n),
            _ => None,
        }
    }

    fn guid(&self) -> Option<&[u8; 8]> {
        match &self.iface {
            Some(Iface::Guid(g)) => Some(g),
            _ => None,
        }
    }

    /// The client identifier bytes, if one was asked for.
    pub fn client_id_bytes(&self) -> Result<Option<Vec<u8>>, String> {
        self.client_id
            .as_ref()
            .map(|c| c.bytes(self.guid()))
            .transpose()
    }

    /// dracut kernel command-line arguments (for `etc/cmdline.d/`).
    pub fn dracut_args(&self) -> Result<Vec<String>, String> {
        let mut args = Vec::new();
        let dev = match &self.iface {
            None | Some(Iface::Guid(_)) => None,
            Some(Iface::Name(n)) => Some(n.clone()),
            Some(Iface::Mac(mac)) => {
                // dracut.cmdline(7): ifname=<interface>:<MAC>, "bootnet" is
                // its own example of a name that cannot clash with the
                // kernel's.
                args.push(format!("ifname=bootnet:{mac}"));
                Some("bootnet".to_string())
            }
        };
        match (&self.mode, dev) {
            (NetMode::Dhcp, None) => args.push("ip=dhcp".into()),
            (NetMode::Dhcp, Some(d)) => args.push(format!("ip={d}:dhcp")),
            (NetMode::Static { .. }, None) => {
                return Err(
                    "a static address needs --iface NAME or MAC (dracut's ip= names the interface)"
                        .into(),
                )
            }
            (
                NetMode::Static {
                    address,
                    prefix,
                    gateway,
                },
                Some(d),
            ) => args.push(format!(
                "ip={address}::{}:{}::{d}:none",
                gateway.map(|g| g.to_string()).unwrap_or_default(),
                netmask(*prefix)
            )),
        }
        args.push("rd.neednet=1".into());
        Ok(args)
    }

    /// Lines for dhclient.conf when a client identifier is asked for.
    pub fn dhclient_conf(&self) -> Result<Option<String>, String> {
        let Some(id) = self.client_id_bytes()? else {
            return Ok(None);
        };
        let send = format!("send dhcp-client-identifier {};", colon_hex(&id));
        Ok(Some(match self.iface_name() {
            Some(n) => format!("interface \"{n}\" {{\n    {send}\n}}\n"),
            None => format!("{send}\n"),
        }))
    }

    /// initramfs-tools variables (a `conf/conf.d` file).
    pub fn initramfs_tools_conf(&self) -> Result<String, String> {
        if self.client_id.is_some() || matches!(self.iface, Some(Iface::Guid(_))) {
            return Err("initramfs-tools brings the network up with klibc's ipconfig, which cannot do DHCP over InfiniBand (RFC 4390: no hardware address, a client identifier is mandatory) and cannot select a port by GUID; give the IPoIB interface a static address (--net ADDR/PREFIX --iface ib0) or use a dracut image with its network module (dhclient)".into());
        }
        let mut out = String::new();
        let dev = self.iface_name().unwrap_or("");
        match &self.mode {
            NetMode::Dhcp => out.push_str("IP=dhcp\n"),
            NetMode::Static {
                address,
                prefix,
                gateway,
            } => {
                if dev.is_empty() && !matches!(self.iface, Some(Iface::Mac(_))) {
                    return Err("a static address needs --iface NAME or MAC".into());
                }
                out.push_str(&format!(
                    "IP={address}::{}:{}::{dev}:off\n",
                    gateway.map(|g| g.to_string()).unwrap_or_default(),
                    netmask(*prefix)
                ));
            }
        }
        if !dev.is_empty() {
            out.push_str(&format!("DEVICE={dev}\n"));
        }
        if let Some(Iface::Mac(mac)) = &self.iface {
            // configure_networking picks the device with this address
            // (pxelinux's BOOTIF=01-<mac>).
            out.push_str(&format!("BOOTIF=01-{}\n", mac.replace(':', "-")));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flexboot_client_id_is_the_manuals() {
        // The manual's example: GUID 00:02:c9:03:00:00:10:39.
        let iface: Iface = "00:02:c9:03:00:00:10:39".parse().unwrap();
        let cfg = NetConfig {
            mode: NetMode::Dhcp,
            iface: Some(iface),
            client_id: Some(ClientIdStyle::Flexboot),
        };
        assert_eq!(
            colon_hex(&cfg.client_id_bytes().unwrap().unwrap()),
            "ff:00:00:00:00:00:02:00:00:02:c9:00:00:02:c9:03:00:00:10:39"
        );
        let guid = NetConfig {
            client_id: Some(ClientIdStyle::Guid),
            ..cfg.clone()
        };
        assert_eq!(
            colon_hex(&guid.client_id_bytes().unwrap().unwrap()),
            "20:00:02:c9:03:00:00:10:39"
        );
        assert!(cfg.initramfs_tools_conf().is_err());
    }

    #[test]
    fn parses_addresses_and_interfaces() {
        assert_eq!("dhcp".parse::<NetMode>().unwrap(), NetMode::Dhcp);
        let s: NetMode = "192.168.1.20/24,192.168.1.1".parse().unwrap();
        let cfg = NetConfig {
            mode: s,
            iface: Some("eth1".parse().unwrap()),
            client_id: None,
        };
        assert_eq!(
            cfg.dracut_args().unwrap(),
            vec![
                "ip=192.168.1.20::192.168.1.1:255.255.255.0::eth1:none",
                "rd.neednet=1"
            ]
        );
        assert_eq!(
            cfg.initramfs_tools_conf().unwrap(),
            "IP=192.168.1.20::192.168.1.1:255.255.255.0::eth1:off\nDEVICE=eth1\n"
        );
        assert!("10.0.0.1/33".parse::<NetMode>().is_err());
        assert_eq!(
            "52:54:00:12:34:56".parse::<Iface>().unwrap(),
            Iface::Mac("52:54:00:12:34:56".into())
        );
        assert!("52:54:00:12:34".parse::<Iface>().is_err());
        let mac = NetConfig {
            mode: NetMode::Dhcp,
            iface: Some("52:54:00:12:34:56".parse().unwrap()),
            client_id: None,
        };
        assert_eq!(
            mac.dracut_args().unwrap(),
            vec![
                "ifname=bootnet:52:54:00:12:34:56",
                "ip=bootnet:dhcp",
                "rd.neednet=1"
            ]
        );
        assert_eq!(
            mac.initramfs_tools_conf().unwrap(),
            "IP=dhcp\nBOOTIF=01-52-54-00-12-34-56\n"
        );
    }
}
