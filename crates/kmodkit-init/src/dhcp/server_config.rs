//! DHCP server configuration that gives a ConnectX node one address in
//! every boot stage, whatever identifier the stage sends (see
//! [`client_id`](super::client_id) for the forms and their sources).
//!
//! dnsmasq (`src/rfc2131.c`, checked with dnsmasq 2.90 in this crate's
//! tests) matches `dhcp-host=id:HEX` against the bytes of option 61
//! exactly, whatever the htype, so each form needs its own `id:` line; a
//! plain hardware address line matches chaddr, which an IPoIB (RFC 4390)
//! client leaves empty. Several lines may carry the same address and name:
//! dnsmasq then treats them as one host known by several identifiers. It
//! does not hand an address that is leased to one identifier to another
//! until that lease ends or is released, which is why kmodkit-init sends
//! the firmware's identifier in the first place.

use std::net::Ipv4Addr;

use super::client_id::{all_forms, colon_hex, PortIdentity};

/// `dhcp-host=` lines (without the leading `--`, as in a dnsmasq
/// configuration file) mapping every identifier of `port` to `address` and
/// host `name`: one `id:` line per client identifier form, and the
/// Ethernet MAC itself when known (for clients that send no identifier).
pub fn dnsmasq_host_lines(name: &str, port: &PortIdentity, address: Ipv4Addr) -> Vec<String> {
    let mut lines: Vec<String> = all_forms(port)
        .into_iter()
        .map(|(_, id)| format!("dhcp-host=id:{},{address},{name}", colon_hex(&id.0)))
        .collect();
    if let Some(mac) = port.mac {
        lines.push(format!("dhcp-host={},{address},{name}", colon_hex(&mac.0)));
    }
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
                "dhcp-host=id:ff:00:00:00:00:00:02:00:00:02:c9:00:f4:52:14:03:00:38:39:81,10.0.0.11,node1",
                "dhcp-host=id:20:f4:52:14:03:00:38:39:81,10.0.0.11,node1",
                "dhcp-host=id:01:f4:52:14:38:39:81,10.0.0.11,node1",
            ]
        );
    }
}
