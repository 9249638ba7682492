//! dracut's systemd-networkd (modules.d/01systemd-networkd). Its
//! systemd-network-generator turns `ip=` into `.network` files, but reads
//! only `/proc/cmdline`: what `etc/cmdline.d` says never reaches it. So
//! kmodkit writes the `.network` file itself (systemd.network(5), read
//! from `/etc/systemd/network` before the image's own), and makes
//! `dracut-pre-mount.service` — before which the root file system is not
//! mounted — want and wait for `network-online.target`, which the module
//! fills with systemd-networkd-wait-online: that is `rd.neednet=1` for
//! this stack.
//!
//! networkd sends only RFC 4361 client identifiers (type 255: IAID and
//! DUID; `ClientIdentifier=duid`, `IAID=`, `DUIDType=`, `DUIDRawData=`),
//! and only DUIDs of the four RFC 8415 types whose length passes its
//! `dhcp_validate_duid_len` (src/libsystemd-network/dhcp-identifier.h): a
//! vendor DUID (DUID-EN) of exactly 4 + 8 bytes, a UUID of 16, link-layer
//! ones longer than their fixed part. It refuses any other with "Failed to
//! configure DHCPv4 client: Invalid argument" and never sends a packet
//! (seen in qemu with systemd 252). FlexBoot's identifier carries a 4 + 9
//! byte DUID-EN, so it cannot be sent by networkd: such requests are
//! refused here with the reason.

use crate::image::ImageFacts;
use crate::net::{colon_hex, Iface, NetConfig, NetMode};
use crate::plan::Plan;
use crate::InjectError;

use super::NetworkStack;

pub(super) struct Networkd;

const NETWORK_FILE: &str = "etc/systemd/network/10-kmodkit.network";
const WAIT_DROPIN: &str = "etc/systemd/system/dracut-pre-mount.service.d/50-kmodkit-network.conf";

impl NetworkStack for Networkd {
    fn name(&self) -> &'static str {
        "dracut systemd-networkd"
    }

    fn present(&self, facts: &ImageFacts) -> bool {
        facts
            .first_present(&[
                "usr/lib/systemd/systemd-networkd",
                "lib/systemd/systemd-networkd",
            ])
            .is_some()
    }

    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
        let text = network_file(plan, net)?;
        plan.generated(
            NETWORK_FILE,
            text,
            0o644,
            "network settings (systemd-networkd)",
        );
        plan.generated(
            WAIT_DROPIN,
            "# Written by kmodkit initrd add-drivers (--net): the root file system is\n\
             # mounted once the network is up (systemd-networkd-wait-online).\n\
             [Unit]\nWants=network-online.target\nAfter=network-online.target\n"
                .into(),
            0o644,
            "wait for the network",
        );
        plan.mechanism.push(format!(
            "network: {NETWORK_FILE}, read by systemd-networkd (systemd-network-generator reads only /proc/cmdline, not etc/cmdline.d); {WAIT_DROPIN} makes the initrd wait for network-online.target"
        ));
        Ok(())
    }
}

/// The `.network` file for `net`.
fn network_file(plan: &mut Plan, net: &NetConfig) -> Result<String, InjectError> {
    let mut t = String::from("# Written by kmodkit initrd add-drivers (--net).\n[Match]\n");
    match &net.iface {
        Some(Iface::Name(n)) => t.push_str(&format!("Name={n}\n")),
        Some(Iface::Mac(m)) => t.push_str(&format!("MACAddress={m}\n")),
        Some(Iface::Guid(g)) => {
            super::name_port_by_guid(plan, g);
            t.push_str(&format!("Name={}\n", super::GUID_IFNAME));
        }
        None => t.push_str("Type=!loopback\n"),
    }
    t.push_str("\n[Network]\n");
    match &net.mode {
        NetMode::Dhcp => t.push_str("DHCP=ipv4\n"),
        NetMode::Static { .. } if net.iface.is_none() => return Err(super::static_needs_iface()),
        NetMode::Static {
            address,
            prefix,
            gateway,
        } => {
            t.push_str(&format!("Address={address}/{prefix}\n"));
            if let Some(g) = gateway {
                t.push_str(&format!("Gateway={g}\n"));
            }
        }
    }
    if let Some(id) = net.client_id_bytes().map_err(InjectError::Invalid)? {
        t.push_str("\n[DHCPv4]\n");
        t.push_str(&client_id_settings(&id)?);
    }
    Ok(t)
}

/// `[DHCPv4]` settings that make networkd send `id`.
fn client_id_settings(id: &[u8]) -> Result<String, InjectError> {
    let refuse = |why: &str| {
        InjectError::Invalid(format!(
            "--client-id {}: systemd-networkd sends only RFC 4361 client identifiers (type 255, a 4-byte IAID, a DUID) of standard DUID lengths; {why}. Use such an identifier, or a dracut image with network-legacy or network-manager",
            colon_hex(id)
        ))
    };
    if id.len() < 8 || id[0] != 0xff {
        return Err(refuse("this one is not"));
    }
    let iaid = u32::from_be_bytes([id[1], id[2], id[3], id[4]]);
    let raw = &id[7..];
    let (duid_type, fits) = match u16::from_be_bytes([id[5], id[6]]) {
        1 => ("link-layer-time", raw.len() > 6),
        2 => ("vendor", raw.len() == 12),
        3 => ("link-layer", raw.len() > 2),
        4 => ("uuid", raw.len() == 16),
        _ => return Err(refuse("its DUID type is none of RFC 8415's four")),
    };
    if !fits {
        return Err(refuse(&format!(
            "networkd accepts a {duid_type} DUID only of its standard length (a vendor DUID: a 4-byte enterprise number and an 8-byte identifier, 12 bytes), and this one has {} bytes after the type",
            raw.len()
        )));
    }
    Ok(format!(
        "ClientIdentifier=duid\nIAID={iaid}\nDUIDType={duid_type}\nDUIDRawData={}\n",
        colon_hex(&id[7..])
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ClientIdStyle;

    #[test]
    fn rfc4361_identifiers_of_standard_duid_length_only() {
        // Type 255, IAID 1, DUID-EN: enterprise 0x2c9 and an 8-byte id.
        let id = crate::net::ClientIdStyle::Hex(vec![
            0xff, 0, 0, 0, 1, 0, 2, 0, 0, 2, 0xc9, 0, 2, 0xc9, 3, 0, 0, 0x10, 0x39,
        ]);
        assert_eq!(
            client_id_settings(&id.bytes(None).unwrap()).unwrap(),
            "ClientIdentifier=duid\nIAID=1\nDUIDType=vendor\nDUIDRawData=00:00:02:c9:00:02:c9:03:00:00:10:39\n"
        );
        // FlexBoot's DUID-EN has a 9-byte id: networkd would fail the link.
        let guid = [0x00, 0x02, 0xc9, 0x03, 0x00, 0x00, 0x10, 0x39];
        let flexboot = ClientIdStyle::Flexboot.bytes(Some(&guid)).unwrap();
        let err = client_id_settings(&flexboot).unwrap_err().to_string();
        assert!(err.contains("13 bytes after the type"), "{err}");
        let guid_style = ClientIdStyle::Guid.bytes(Some(&guid)).unwrap();
        assert!(client_id_settings(&guid_style).is_err());
    }
}
