//! dracut's network-manager (modules.d/35network-manager): its cmdline
//! hook nm-config.sh runs nm-initrd-generator on getcmdline's output (so
//! `ip=`, `ifname=` and `rd.neednet` from `etc/cmdline.d` count), and
//! NetworkManager brings the connections up. nm-initrd-generator of
//! NetworkManager 1.42 has no client-identifier option; a
//! `[connection]` default in NetworkManager.conf(5) `conf.d`
//! (`ipv4.dhcp-client-id`) gives one to the connection it generates.

use crate::image::ImageFacts;
use crate::net::{colon_hex, Iface, NetConfig};
use crate::plan::Plan;
use crate::InjectError;

use super::NetworkStack;

pub(super) struct NetworkManager;

impl NetworkStack for NetworkManager {
    fn name(&self) -> &'static str {
        "dracut network-manager (NetworkManager)"
    }

    fn present(&self, facts: &ImageFacts) -> bool {
        facts
            .first_present(&[
                "usr/libexec/nm-initrd-generator",
                "usr/lib/nm-initrd-generator",
                "usr/lib/NetworkManager/nm-initrd-generator",
            ])
            .is_some()
            && facts
                .first_present(&["usr/sbin/NetworkManager", "sbin/NetworkManager"])
                .is_some()
    }

    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
        super::write_dracut_args(plan, net, "nm-initrd-generator")?;
        let Some(id) = net.client_id_bytes().map_err(InjectError::Invalid)? else {
            return Ok(());
        };
        let device = match &net.iface {
            Some(Iface::Name(n)) => Some(format!("interface-name:{n}")),
            Some(Iface::Guid(_)) => Some(format!("interface-name:{}", super::GUID_IFNAME)),
            Some(Iface::Mac(m)) => Some(format!("mac:{m}")),
            None => None,
        };
        let mut text = String::from(
            "# Written by kmodkit initrd add-drivers (--client-id): the DHCP client\n\
             # identifier of the connections nm-initrd-generator makes.\n\
             [connection-kmodkit-client-id]\n",
        );
        if let Some(d) = &device {
            text.push_str(&format!("match-device={d}\n"));
        }
        text.push_str(&format!("ipv4.dhcp-client-id={}\n", colon_hex(&id)));
        plan.generated(
            "etc/NetworkManager/conf.d/50-kmodkit-client-id.conf",
            text,
            0o644,
            "DHCP client identifier",
        );
        plan.mechanism.push(
            "DHCP client identifier in etc/NetworkManager/conf.d/50-kmodkit-client-id.conf (ipv4.dhcp-client-id)".into(),
        );
        Ok(())
    }
}
