//! DHCP server configuration that gives a ConnectX node one address in
//! every boot stage, whatever identifier the stage sends (see
//! [`client_id`](super::client_id) for the forms and their sources).
//!
//! What dnsmasq 2.90 does, measured by this crate's tests
//! (`tests/dhcp_netns.rs`): `dhcp-host=id:HEX` matches option 61 exactly,
//! for htype 1 and htype 32 (IPoIB, hlen 0) alike; one `dhcp-host` keeps
//! only the last of several `id:`s; and two `dhcp-host` lines with one
//! address are refused at start ("duplicate dhcp-host IP address"). So the
//! lines here give every identifier of a node its own `dhcp-host` without
//! an address that sets a tag `kmk-NAME`, and a one-address `dhcp-range`
//! for that tag hands out the address. The site's general range must then
//! serve only unknown clients (`dhcp-range=tag:!known,...`), or a known node
//! could be given a pool address.
//!
//! dnsmasq binds a lease to the identifier that took it: the address is
//! free for another form only once that lease is released or expired. That
//! is why kmodkit-init sends the firmware's identifier: then the OS stage
//! renews the firmware's lease instead of competing with it.

use std::net::Ipv4Addr;

use super::client_id::{all_forms, colon_hex, PortIdentity};

/// dnsmasq configuration lines (as in a configuration file, without the
/// leading `--`) that give every identifier of `port` the one `address`
/// and host `name`: a tagging `dhcp-host` per client identifier form and
/// for the Ethernet MAC when known, and the tagged one-address range.
/// Characters of `name` other than ASCII letters, digits, `-` and `_` are
/// written `_` in the tag.
pub fn dnsmasq_host_lines(name: &str, port: &PortIdentity, address: Ipv4Addr) -> Vec<String> {
    let tag: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut lines: Vec<String> = all_forms(port)
        .into_iter()
        .map(|(_, id)| format!("dhcp-host=id:{},set:kmk-{tag},{name}", colon_hex(&id.0)))
        .collect();
    if let Some(mac) = port.mac {
        lines.push(format!(
            "dhcp-host={},set:kmk-{tag},{name}",
            colon_hex(&mac.0)
        ));
    }
    lines.push(format!("dhcp-range=tag:kmk-{tag},{address},{address}"));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ib_port_gets_its_three_identifiers() {
        let port = PortIdentity {
            guid: Some("f4:52:14:03:00:38:39:81".parse().unwrap()),
            mac: None,
        };
        let lines = dnsmasq_host_lines("node1", &port, Ipv4Addr::new(10, 0, 0, 11));
        assert_eq!(
            lines,
            [
                "dhcp-host=id:ff:00:00:00:00:00:02:00:00:02:c9:00:f4:52:14:03:00:38:39:81,set:kmk-node1,node1",
                "dhcp-host=id:20:f4:52:14:03:00:38:39:81,set:kmk-node1,node1",
                "dhcp-host=id:01:f4:52:14:38:39:81,set:kmk-node1,node1",
                "dhcp-range=tag:kmk-node1,10.0.0.11,10.0.0.11",
            ]
        );
    }
}
