//! DHCP server configuration from a node list, one address per node in
//! every boot stage (see kmodkit-init's `dhcp::client_id` for the
//! identifier forms and `dhcp::server_config` for why dnsmasq gets tagging
//! `dhcp-host` lines and a one-address range).
//!
//! Node list: one node a line, `NAME MAC|GUID ADDRESS`; `#` starts a
//! comment. A 6-byte address is an Ethernet MAC, an 8-byte one an IB port
//! GUID.
//!
//! The iPXE chain (iPXE's documentation, "chainloading"): a client that is
//! not iPXE yet gets `undionly.kpxe`; iPXE (it sends option 175, and
//! user-class `iPXE`) gets the boot script. An offer without option 60
//! `PXEClient` makes iPXE wait for ProxyDHCP offers that never come
//! (`DHCP_DISC_PROXY_TIMEOUT_SEC`, seen as 12 s a DHCP exchange under
//! qemu); dnsmasq is told to send it to iPXE, which then takes the offer.
//!
//! ISC dhcpd (dhcpd.conf(5)): a `host` declaration matches on
//! `option dhcp-client-identifier` or `hardware ethernet`; several host
//! declarations may carry one `fixed-address`, so every identifier form
//! gets its own block.

use std::net::Ipv4Addr;

use kmodkit_init::dhcp::client_id::{all_forms, colon_hex, MacAddress, PortGuid, PortIdentity};
use kmodkit_init::dhcp::server_config::dnsmasq_host_lines;

use crate::NetbootError;

/// One line of the node list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub port: PortIdentity,
    pub address: Ipv4Addr,
}

/// Parses the node list; `source` names it in errors.
pub fn parse_nodes(text: &str, source: &str) -> Result<Vec<Node>, NetbootError> {
    let mut nodes = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let error = |what: String| {
            NetbootError::Invalid(format!(
                "{source}:{}: {what} (expected `NAME MAC|GUID ADDRESS`)",
                i + 1
            ))
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, id, address] = fields[..] else {
            return Err(error(format!("{} fields", fields.len())));
        };
        let port = if let Ok(mac) = id.parse::<MacAddress>() {
            PortIdentity {
                guid: None,
                mac: Some(mac),
            }
        } else if let Ok(guid) = id.parse::<PortGuid>() {
            PortIdentity {
                guid: Some(guid),
                mac: None,
            }
        } else {
            return Err(error(format!(
                "{id:?} is neither a MAC (6 bytes) nor an IB port GUID (8 bytes)"
            )));
        };
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| error(format!("{address:?} is not an IPv4 address")))?;
        if nodes.iter().any(|n: &Node| n.name == name) {
            return Err(error(format!("node {name} listed twice")));
        }
        nodes.push(Node {
            name: name.to_string(),
            port,
            address,
        });
    }
    Ok(nodes)
}

/// The boot script's URL for an iPXE client, the first stage's file otherwise.
pub const FIRST_STAGE: &str = "undionly.kpxe";

/// dnsmasq configuration (file syntax).
pub fn dnsmasq(nodes: &[Node], boot_url: Option<&str>) -> String {
    let mut out = String::from("# written by kmodkit netboot dhcp-config\n");
    if let Some(url) = boot_url {
        out.push_str(&format!(
            "dhcp-match=set:ipxe,175\ndhcp-boot=tag:!ipxe,{FIRST_STAGE}\ndhcp-boot=tag:ipxe,{url}\n\
             dhcp-option-force=tag:ipxe,60,PXEClient\n"
        ));
    }
    for n in nodes {
        out.push_str(&format!("# {} {}\n", n.name, n.address));
        for line in dnsmasq_host_lines(&n.name, &n.port, n.address) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// ISC dhcpd configuration: the iPXE chain and `host` blocks.
pub fn dhcpd(nodes: &[Node], boot_url: Option<&str>) -> String {
    let mut out = String::from("# written by kmodkit netboot dhcp-config\n");
    if let Some(url) = boot_url {
        out.push_str(&format!(
            "if exists user-class and option user-class = \"iPXE\" {{\n  filename \"{url}\";\n}} else {{\n  filename \"{FIRST_STAGE}\";\n}}\n"
        ));
    }
    for n in nodes {
        for (style, id) in all_forms(&n.port) {
            out.push_str(&format!(
                "host {}-{} {{\n  option dhcp-client-identifier {};\n  fixed-address {};\n  option host-name \"{}\";\n}}\n",
                n.name,
                style.name(),
                colon_hex(&id.0),
                n.address,
                n.name
            ));
        }
        if let Some(mac) = n.port.mac {
            out.push_str(&format!(
                "host {}-mac {{\n  hardware ethernet {};\n  fixed-address {};\n  option host-name \"{}\";\n}}\n",
                n.name,
                colon_hex(&mac.0),
                n.address,
                n.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_list_forms_and_errors() {
        let nodes = parse_nodes(
            "# comment\nn1 52:54:00:12:34:56 10.0.0.11\nn2 f4:52:14:03:00:38:39:81 10.0.0.12 # ib\n",
            "nodes",
        )
        .unwrap();
        assert_eq!(nodes.len(), 2);
        assert!(nodes[0].port.mac.is_some());
        assert!(nodes[1].port.guid.is_some());
        let err = parse_nodes("n1 zz 10.0.0.1\n", "nodes")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("nodes:1:"), "{err}");
        let d = dhcpd(&nodes, Some("http://10.0.0.1/boot.ipxe"));
        assert!(d.contains("option dhcp-client-identifier ff:00:00:00:00:00:02:00:00:02:c9:00:f4:52:14:03:00:38:39:81;"), "{d}");
        assert!(d.contains("hardware ethernet 52:54:00:12:34:56;"));
        let m = dnsmasq(&nodes, Some("http://10.0.0.1/boot.ipxe"));
        assert!(m.contains("dhcp-boot=tag:ipxe,http://10.0.0.1/boot.ipxe"));
    }
}
