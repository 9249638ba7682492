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

pub(crate) fn netmask(prefix: u8) -> Ipv4Addr {
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
    }

    #[test]
    fn parses_addresses_and_interfaces() {
        assert_eq!("dhcp".parse::<NetMode>().unwrap(), NetMode::Dhcp);
        let s: NetMode = "192.168.1.20/24,192.168.1.1".parse().unwrap();
        assert_eq!(
            s,
            NetMode::Static {
                address: "192.168.1.20".parse().unwrap(),
                prefix: 24,
                gateway: Some("192.168.1.1".parse().unwrap()),
            }
        );
        assert!("10.0.0.1/33".parse::<NetMode>().is_err());
        assert_eq!(
            "52:54:00:12:34:56".parse::<Iface>().unwrap(),
            Iface::Mac("52:54:00:12:34:56".into())
        );
        assert!("52:54:00:12:34".parse::<Iface>().is_err());
    }
}
