//! initramfs-tools' network (scripts/functions `configure_networking`):
//! klibc's ipconfig with `IP=`, `DEVICE=` and `BOOTIF=` from a
//! `conf/conf.d` file, run by a kmodkit `init-premount` script (after
//! `load_modules`). klibc's ipconfig sends DHCP with the interface's
//! hardware address only: it cannot do RFC 4390 DHCP over IPoIB (no
//! hardware address, a client identifier is mandatory), nor pick a port by
//! GUID, so such requests are refused.

use crate::image::ImageFacts;
use crate::net::{netmask, Iface, NetConfig, NetMode};
use crate::plan::Plan;
use crate::InjectError;

use super::NetworkStack;

pub(super) struct Klibc;

const IPCONFIG: &[&str] = &[
    "usr/bin/ipconfig",
    "bin/ipconfig",
    "usr/lib/klibc/bin/ipconfig",
];

const NO_IPOIB_DHCP: &str = "initramfs-tools brings the network up with klibc's ipconfig, which cannot do DHCP over InfiniBand (RFC 4390: no hardware address, a client identifier is mandatory) and cannot select a port by GUID";

impl NetworkStack for Klibc {
    fn name(&self) -> &'static str {
        "initramfs-tools (klibc ipconfig)"
    }

    fn present(&self, facts: &ImageFacts) -> bool {
        facts.first_present(IPCONFIG).is_some()
    }

    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
        let conf = settings(net)?;
        plan.generated(
            "conf/conf.d/kmodkit-network",
            format!("# Written by kmodkit initrd add-drivers (--net).\n{conf}"),
            0o644,
            "network settings",
        );
        let script = "#!/bin/sh\n\
# Written by kmodkit initrd add-drivers: bring the network up in the initrd\n\
# stage (after load_modules) with the settings of conf/conf.d/kmodkit-network.\n\
PREREQ=\"\"\n\
prereqs() { echo \"$PREREQ\"; }\n\
case \"$1\" in prereqs) prereqs; exit 0 ;; esac\n\
. /scripts/functions\n\
configure_networking\n";
        plan.generated(
            "scripts/init-premount/kmodkit-network",
            script.into(),
            0o755,
            "network hook",
        );
        let line = "/scripts/init-premount/kmodkit-network \"$@\"";
        let mut order = plan
            .facts
            .text("scripts/init-premount/ORDER")
            .unwrap_or_default();
        if !order.lines().any(|l| l == line) {
            order.push_str(line);
            order.push_str("\n[ -e /conf/param.conf ] && . /conf/param.conf\n");
        }
        plan.generated("scripts/init-premount/ORDER", order, 0o644, "hook order");
        plan.mechanism.push(
            "network: conf/conf.d/kmodkit-network (IP=, DEVICE=) and scripts/init-premount/kmodkit-network, which runs configure_networking (klibc ipconfig)".into(),
        );
        Ok(())
    }
}

/// initramfs-tools variables (a `conf/conf.d` file) for `net`.
pub(crate) fn settings(net: &NetConfig) -> Result<String, InjectError> {
    if net.client_id.is_some() || matches!(net.iface, Some(Iface::Guid(_))) {
        return Err(InjectError::Invalid(format!("{NO_IPOIB_DHCP}; give the IPoIB interface a static address (--net ADDR/PREFIX --iface ib0) or use a dracut image with its network module (network-legacy, network-manager or systemd-networkd)")));
    }
    if net.mode == NetMode::Dhcp && super::is_ipoib(net) {
        return Err(InjectError::Invalid(format!(
            "--iface {} --net dhcp: {NO_IPOIB_DHCP}, so this could never get a lease; give it a static address (--net ADDR/PREFIX) or use a dracut image with its network module",
            net.iface_name().unwrap_or_default()
        )));
    }
    let mut out = String::new();
    let dev = net.iface_name().unwrap_or("");
    match &net.mode {
        NetMode::Dhcp => out.push_str("IP=dhcp\n"),
        NetMode::Static {
            address,
            prefix,
            gateway,
        } => {
            if net.iface.is_none() {
                return Err(super::static_needs_iface());
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
    if let Some(Iface::Mac(mac)) = &net.iface {
        // configure_networking picks the device with this address
        // (pxelinux's BOOTIF=01-<mac>).
        out.push_str(&format!("BOOTIF=01-{}\n", mac.replace(':', "-")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netstack::tests::cfg;

    #[test]
    fn static_and_mac_settings() {
        assert_eq!(
            settings(&cfg("192.168.1.20/24,192.168.1.1", Some("eth1"))).unwrap(),
            "IP=192.168.1.20::192.168.1.1:255.255.255.0::eth1:off\nDEVICE=eth1\n"
        );
        assert_eq!(
            settings(&cfg("dhcp", Some("52:54:00:12:34:56"))).unwrap(),
            "IP=dhcp\nBOOTIF=01-52-54-00-12-34-56\n"
        );
    }

    #[test]
    fn ipoib_dhcp_is_refused_with_or_without_client_id() {
        let err = settings(&cfg("dhcp", Some("ib0"))).unwrap_err().to_string();
        assert!(err.contains("could never get a lease"), "{err}");
        let mut with_id = cfg("dhcp", Some("00:02:c9:03:00:00:10:39"));
        with_id.client_id = Some(crate::net::ClientIdStyle::Flexboot);
        assert!(settings(&with_id)
            .unwrap_err()
            .to_string()
            .contains("RFC 4390"));
        // A static address on IPoIB is what ipconfig can do.
        assert!(settings(&cfg("10.0.0.5/24", Some("ib0"))).is_ok());
    }
}
