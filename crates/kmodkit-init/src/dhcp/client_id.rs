//! The DHCP client identifiers (option 61) a ConnectX port sends, stage by stage.
//!
//! A diskless node asks for an address up to three times per boot, and each
//! stage has its own idea of who it is. Sending the firmware's identifier
//! from the initrd ([`ClientIdStyle::FlexBoot`], the default on IPoIB) lets
//! one reservation serve the firmware and the OS. The forms:
//!
//! | style | bytes | who sends it | source |
//! |---|---|---|---|
//! | [`FlexBoot`](ClientIdStyle::FlexBoot) | `ff` `00:00:00:00` `00:02` `00:00:02:c9` `00` + GUID (20 bytes) | NVIDIA/Mellanox FlexBoot on an IB port | RFC 4390 §2.1 / RFC 4361 §6.1 layout: type 255, IAID 0, DUID-EN (type 2) with enterprise 0x2c9 (Mellanox) and identifier `00`+GUID; the prefix as documented by OpenStack Ironic's InfiniBand guide and ironic-python-agent's `mlnx` hardware manager (`CLIENT_ID = 'ff:00:00:00:00:00:02:00:00:02:c9:00' + GUID`) |
//! | [`Infiniband`](ClientIdStyle::Infiniband) | `20` + GUID (9 bytes) | Linux IPoIB stacks: systemd-networkd `ClientIdentifier=mac`, NetworkManager, ISC dhclient (`dhcp-client-identifier = hardware`, dracut network-legacy) | ARP type 32 (InfiniBand) + the last 8 bytes of the 20-byte IPoIB hardware address, which are the port GUID |
//! | [`Ipxe`](ClientIdStyle::Ipxe) | `01` + 6-byte MAC (7 bytes) | upstream iPXE on IPoIB, which poses as Ethernet | iPXE `src/net/udp/dhcp.c` `dhcp_create_request` stores `ll_proto` (ARPHRD_ETHER = 1 for IPoIB, `src/drivers/net/ipoib.c` `ipoib_protocol`) + `ll_addr`; `ipoib_init_addr` derives `ll_addr` from the GUID with `IPOIB_GUID_MASK` 0xe7 = bytes 0,1,2,5,6,7 (unless the driver knows the port's eIPoIB MAC: hermon copies the firmware's Ethernet MAC into `lemac`, then give `--mac`) |
//! | [`Ethernet`](ClientIdStyle::Ethernet) | `01` + MAC (7 bytes) | Ethernet ports (iPXE, dhclient, networkd `mac`) | RFC 2132 §9.14: type = ARP hardware type |
//! | [`Raw`](ClientIdStyle::Raw) | as given | anything else | — |
//!
//! FlexBoot's "enterprise number" 0x2c9 is Mellanox's IEEE OUI (00:02:c9),
//! not its IANA enterprise number (33049): tshark decodes the identifier as
//! DUID-EN with enterprise 713, which the tests check byte for byte.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The 12 bytes FlexBoot puts before the port GUID (see the module table).
pub const FLEXBOOT_PREFIX: [u8; 12] = [0xff, 0, 0, 0, 0, 0, 0x02, 0, 0, 0x02, 0xc9, 0];

/// An 8-byte InfiniBand port GUID (the last 8 bytes of the IPoIB link address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortGuid(pub [u8; 8]);

/// A 6-byte Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

/// What identifies a ConnectX port: its GUID (IB), its MAC (Ethernet), or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortIdentity {
    /// IB port GUID.
    pub guid: Option<PortGuid>,
    /// Ethernet MAC (for an IB port: the eIPoIB MAC iPXE uses, if known).
    pub mac: Option<MacAddress>,
}

/// Which identifier to send; see the module documentation for each form's source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIdStyle {
    /// `ff:00:00:00:00:00:02:00:00:02:c9:00` + GUID.
    FlexBoot,
    /// `20` + GUID.
    Infiniband,
    /// `01` + the MAC iPXE derives from the GUID (or the given MAC).
    Ipxe,
    /// `01` + MAC.
    Ethernet,
    /// Bytes given literally.
    Raw(ClientId),
}

/// A client identifier: the data of option 61.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId(pub Vec<u8>);

/// Why an identifier cannot be computed or parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientIdError {
    /// The style needs the port GUID and none was given.
    #[error("client identifier style {style} needs the port GUID: give --guid (8 bytes, e.g. from `ibstat` or the last 8 bytes of `ip link show ib0`)")]
    NeedGuid {
        /// Style name.
        style: &'static str,
    },
    /// The style needs the MAC and none was given.
    #[error("client identifier style {style} needs the port's MAC address: give --mac")]
    NeedMac {
        /// Style name.
        style: &'static str,
    },
    /// Text that is not colon- or dash-separated (or plain) hex of the expected length.
    #[error("{what} {text:?} is not {expected}")]
    BadHex {
        /// What was being parsed.
        what: &'static str,
        /// The input.
        text: String,
        /// What was expected.
        expected: &'static str,
    },
}

/// Parse hex bytes written `aa:bb:cc`, `aa-bb-cc` or `aabbcc`.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| *c != ':' && *c != '-').collect();
    if compact.is_empty() || !compact.len().is_multiple_of(2) || !compact.is_ascii() {
        return None;
    }
    (0..compact.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&compact[i..i + 2], 16).ok())
        .collect()
}

/// Bytes as lowercase colon-separated hex (`ff:00:02`), the form dnsmasq and dhcpd read.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl FromStr for PortGuid {
    type Err = ClientIdError;
    fn from_str(text: &str) -> Result<PortGuid, ClientIdError> {
        parse_hex(text)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(PortGuid)
            .ok_or_else(|| ClientIdError::BadHex {
                what: "port GUID",
                text: text.into(),
                expected: "8 hex bytes",
            })
    }
}

impl FromStr for MacAddress {
    type Err = ClientIdError;
    fn from_str(text: &str) -> Result<MacAddress, ClientIdError> {
        parse_hex(text)
            .and_then(|b| <[u8; 6]>::try_from(b).ok())
            .map(MacAddress)
            .ok_or_else(|| ClientIdError::BadHex {
                what: "MAC address",
                text: text.into(),
                expected: "6 hex bytes",
            })
    }
}

impl FromStr for ClientId {
    type Err = ClientIdError;
    fn from_str(text: &str) -> Result<ClientId, ClientIdError> {
        parse_hex(text)
            .map(ClientId)
            .ok_or_else(|| ClientIdError::BadHex {
                what: "client identifier",
                text: text.into(),
                expected: "hex bytes",
            })
    }
}

impl fmt::Display for PortGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&colon_hex(&self.0))
    }
}

impl FromStr for ClientIdStyle {
    type Err = ClientIdError;
    /// `flexboot`, `infiniband` (or `20`), `ipxe`, `ethernet` (or `mac`), else hex bytes.
    fn from_str(text: &str) -> Result<ClientIdStyle, ClientIdError> {
        Ok(match text {
            "flexboot" => ClientIdStyle::FlexBoot,
            "infiniband" | "20" => ClientIdStyle::Infiniband,
            "ipxe" => ClientIdStyle::Ipxe,
            "ethernet" | "mac" => ClientIdStyle::Ethernet,
            hex => ClientIdStyle::Raw(hex.parse()?),
        })
    }
}

impl ClientIdStyle {
    /// The style's name as the CLI spells it.
    pub fn name(&self) -> &'static str {
        match self {
            ClientIdStyle::FlexBoot => "flexboot",
            ClientIdStyle::Infiniband => "infiniband",
            ClientIdStyle::Ipxe => "ipxe",
            ClientIdStyle::Ethernet => "ethernet",
            ClientIdStyle::Raw(_) => "hex",
        }
    }

    /// The identifier of `port` in this style.
    pub fn client_id(&self, port: &PortIdentity) -> Result<ClientId, ClientIdError> {
        let guid = || {
            port.guid
                .ok_or(ClientIdError::NeedGuid { style: self.name() })
        };
        Ok(ClientId(match self {
            ClientIdStyle::FlexBoot => [&FLEXBOOT_PREFIX[..], &guid()?.0].concat(),
            ClientIdStyle::Infiniband => [&[32u8][..], &guid()?.0].concat(),
            ClientIdStyle::Ipxe => {
                let mac = match port.mac {
                    Some(mac) => mac,
                    None => ipxe_mac_from_guid(guid()?),
                };
                [&[1u8][..], &mac.0].concat()
            }
            ClientIdStyle::Ethernet => {
                let mac = port
                    .mac
                    .ok_or(ClientIdError::NeedMac { style: self.name() })?;
                [&[1u8][..], &mac.0].concat()
            }
            ClientIdStyle::Raw(id) => id.0.clone(),
        }))
    }
}

/// The Ethernet address iPXE gives an IPoIB port: GUID bytes 0,1,2,5,6,7
/// (iPXE `ipoib_init_addr`, `IPOIB_GUID_MASK` 0xe7).
pub fn ipxe_mac_from_guid(guid: PortGuid) -> MacAddress {
    let g = guid.0;
    MacAddress([g[0], g[1], g[2], g[5], g[6], g[7]])
}

/// Every identifier a port may send across the boot stages, each once, in
/// the order FlexBoot, `20:`, iPXE, Ethernet MAC (those the identity allows).
pub fn all_forms(port: &PortIdentity) -> Vec<(ClientIdStyle, ClientId)> {
    let mut forms: Vec<(ClientIdStyle, ClientId)> = Vec::new();
    let mut ipxe_from_guid = *port;
    ipxe_from_guid.mac = None;
    let candidates = [
        (ClientIdStyle::FlexBoot, port),
        (ClientIdStyle::Infiniband, port),
        (ClientIdStyle::Ipxe, &ipxe_from_guid),
        (ClientIdStyle::Ethernet, port),
    ];
    for (style, identity) in candidates {
        if let Ok(id) = style.client_id(identity) {
            if !forms.iter().any(|(_, seen)| *seen == id) {
                forms.push((style, id));
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example port of OpenStack Ironic's InfiniBand guide.
    const GUID: &str = "f4:52:14:03:00:38:39:81";

    #[test]
    fn forms_match_the_published_examples() {
        let port = PortIdentity {
            guid: Some(GUID.parse().unwrap()),
            mac: None,
        };
        assert_eq!(
            ClientIdStyle::FlexBoot
                .client_id(&port)
                .unwrap()
                .to_string(),
            "ff:00:00:00:00:00:02:00:00:02:c9:00:f4:52:14:03:00:38:39:81"
        );
        assert_eq!(
            ClientIdStyle::Infiniband
                .client_id(&port)
                .unwrap()
                .to_string(),
            "20:f4:52:14:03:00:38:39:81"
        );
        // Ironic: "the port GUID's lower 3 and higher 3 bytes ... f4:52:14:38:39:81".
        assert_eq!(
            ClientIdStyle::Ipxe.client_id(&port).unwrap().to_string(),
            "01:f4:52:14:38:39:81"
        );
        assert_eq!(
            ClientIdStyle::Ethernet.client_id(&port),
            Err(ClientIdError::NeedMac { style: "ethernet" })
        );
        assert_eq!(all_forms(&port).len(), 3);
    }

    #[test]
    fn styles_parse_and_hex_is_raw() {
        assert_eq!(
            "flexboot".parse::<ClientIdStyle>().unwrap(),
            ClientIdStyle::FlexBoot
        );
        assert_eq!(
            "20".parse::<ClientIdStyle>().unwrap(),
            ClientIdStyle::Infiniband
        );
        assert_eq!(
            "ab-cd".parse::<ClientIdStyle>().unwrap(),
            ClientIdStyle::Raw(ClientId(vec![0xab, 0xcd]))
        );
        assert!("xyz".parse::<ClientIdStyle>().is_err());
        assert!("00:11:22".parse::<PortGuid>().is_err());
        let none = PortIdentity::default();
        assert!(matches!(
            ClientIdStyle::FlexBoot.client_id(&none),
            Err(ClientIdError::NeedGuid { .. })
        ));
    }
}
