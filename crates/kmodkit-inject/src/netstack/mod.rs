//! One module per network stack an initramfs can carry. Each recognises
//! itself in an image and writes a [`NetConfig`] in the form that stack
//! reads, or refuses with the reason when it cannot do what was asked:
//!
//! - [`dracut_legacy`]: dracut's network-legacy (ifup, dhclient), reading
//!   `ip=` through dracut's getcmdline (so `etc/cmdline.d` works);
//! - [`network_manager`]: dracut's network-manager (nm-initrd-generator
//!   is run on getcmdline's output, NetworkManager reads `conf.d`);
//! - [`networkd`]: dracut's systemd-networkd, whose
//!   systemd-network-generator reads only `/proc/cmdline`: kmodkit writes
//!   `.network` files instead, and makes the initrd wait for the network;
//! - [`klibc`]: initramfs-tools' `configure_networking` (klibc ipconfig);
//! - [`busybox`]: a plain `/init`, with busybox's udhcpc and ip.
//!
//! Adding a stack is one file here and one line in a generator's list.

mod busybox;
mod dracut_legacy;
mod klibc;
mod network_manager;
mod networkd;

use crate::image::ImageFacts;
use crate::net::{colon_hex, Iface, NetConfig, NetMode};
use crate::plan::Plan;
use crate::InjectError;

use crate::generator::Generator;

/// A network stack of an initramfs.
pub trait NetworkStack: Sync {
    /// Its name in reports, e.g. "dracut systemd-networkd".
    fn name(&self) -> &'static str;
    /// Whether the image carries it.
    fn present(&self, facts: &ImageFacts) -> bool;
    /// Adds to the plan the files that make the stack bring the network up
    /// as `net` says (and makes the initrd wait for it).
    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError>;
}

/// dracut's handlers, in the order its `network` module prefers them
/// (modules.d/40network: network-manager before network-legacy before
/// systemd-networkd).
pub(crate) static DRACUT: &[&dyn NetworkStack] = &[
    &network_manager::NetworkManager,
    &dracut_legacy::NetworkLegacy,
    &networkd::Networkd,
];
pub(crate) static INITRAMFS_TOOLS: &[&dyn NetworkStack] = &[&klibc::Klibc];
pub(crate) static PLAIN_INIT: &[&dyn NetworkStack] = &[&busybox::Busybox];

/// The stacks of `generator` that `facts` carries.
pub fn detect(generator: Generator, facts: &ImageFacts) -> Vec<&'static dyn NetworkStack> {
    generator
        .network_stacks()
        .iter()
        .copied()
        .filter(|s| s.present(facts))
        .collect()
}

/// Configures every stack the image carries.
pub(crate) fn configure(plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
    let stacks = detect(plan.generator, &plan.facts);
    if stacks.is_empty() {
        let image = plan.image.display();
        return Err(InjectError::Invalid(match plan.generator {
            Generator::Dracut { .. } => format!(
                "{image}: this dracut image has no network stack (it was built without dracut's network module); rebuild it with `dracut --add network` or leave out --net"
            ),
            Generator::InitramfsTools => format!(
                "{image}: the image has no ipconfig (klibc), which initramfs-tools' configure_networking needs; rebuild it with a NIC driver and IP= (initramfs.conf), or leave out --net"
            ),
            Generator::PlainInit => format!(
                "{image}: not made by dracut or initramfs-tools, and it has no busybox (udhcpc, ip) to bring the network up with; add busybox to the image or leave out --net"
            ),
        }));
    }
    if stacks.len() > 1 {
        plan.warnings.push(format!(
            "the image carries several network stacks ({}); each is configured, and they may compete for the same interface",
            stacks.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
        ));
    }
    for s in stacks {
        s.configure(plan, net)?;
        plan.network_stacks.push(s.name().to_string());
    }
    Ok(())
}

/// The interface name kmodkit gives the IPoIB port named by `--iface GUID`
/// on udev-based stacks.
pub(crate) const GUID_IFNAME: &str = "bootib";

/// A udev rule naming the IPoIB port whose link address ends in `guid`
/// [`GUID_IFNAME`]. The 20-byte IPoIB address is 4 bytes of flags and
/// queue pair number (which change) and the 16-byte port GID, whose last 8
/// bytes are the port GUID. NAME= set before 80-net-setup-link.rules wins
/// over the predictable names (that rule only names unnamed devices).
pub(crate) fn name_port_by_guid(plan: &mut Plan, guid: &[u8; 8]) {
    let rule = format!(
        "# Written by kmodkit initrd add-drivers (--iface {g}): the IPoIB port\n\
         # with this port GUID is named {GUID_IFNAME}.\n\
         SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{{type}}==\"32\", ATTR{{address}}==\"?*:{g}\", NAME=\"{GUID_IFNAME}\"\n",
        g = colon_hex(guid)
    );
    plan.generated(
        "etc/udev/rules.d/70-kmodkit-bootib.rules",
        rule,
        0o644,
        "interface name (udev)",
    );
    plan.mechanism.push(format!(
        "etc/udev/rules.d/70-kmodkit-bootib.rules: udev names the IPoIB port with GUID {} {GUID_IFNAME}",
        colon_hex(guid)
    ));
}

/// dracut's command-line form (dracut.cmdline(7)), read by network-legacy
/// and by nm-initrd-generator: `ifname=` for a MAC, `ip=`, `rd.neednet=1`.
/// A port GUID becomes [`GUID_IFNAME`] (see [`name_port_by_guid`]).
pub(crate) fn dracut_args(net: &NetConfig) -> Result<Vec<String>, InjectError> {
    let mut args = Vec::new();
    let dev = match &net.iface {
        None => None,
        Some(Iface::Name(n)) => Some(n.clone()),
        Some(Iface::Mac(mac)) => {
            // "bootnet" is dracut.cmdline(7)'s own example of a name that
            // cannot clash with the kernel's.
            args.push(format!("ifname=bootnet:{mac}"));
            Some("bootnet".to_string())
        }
        Some(Iface::Guid(_)) => Some(GUID_IFNAME.to_string()),
    };
    match (&net.mode, dev) {
        (NetMode::Dhcp, None) => args.push("ip=dhcp".into()),
        (NetMode::Dhcp, Some(d)) => args.push(format!("ip={d}:dhcp")),
        (NetMode::Static { .. }, None) => return Err(static_needs_iface()),
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
            crate::net::netmask(*prefix)
        )),
    }
    args.push("rd.neednet=1".into());
    Ok(args)
}

pub(crate) fn static_needs_iface() -> InjectError {
    InjectError::Invalid(
        "a static address needs --iface NAME, MAC or GUID: it is given to one interface".into(),
    )
}

/// Writes dracut's command-line form into `etc/cmdline.d`.
pub(crate) fn write_dracut_args(
    plan: &mut Plan,
    net: &NetConfig,
    reader: &str,
) -> Result<(), InjectError> {
    let args = dracut_args(net)?;
    if let Some(Iface::Guid(g)) = &net.iface {
        name_port_by_guid(plan, g);
    }
    plan.generated(
        "etc/cmdline.d/50-kmodkit-net.conf",
        args.join(" ") + "\n",
        0o644,
        "network settings",
    );
    plan.mechanism.push(format!(
        "network: etc/cmdline.d/50-kmodkit-net.conf ({}), read by {reader} through dracut's getcmdline",
        args.join(" ")
    ));
    Ok(())
}

/// Whether `--iface` names what is surely an IPoIB port: a GUID, or a
/// kernel IPoIB name (`ib0`, `ib0.8001`).
pub(crate) fn is_ipoib(net: &NetConfig) -> bool {
    match &net.iface {
        Some(Iface::Guid(_)) => true,
        Some(Iface::Name(n)) => {
            n.starts_with("ib") && n[2..].starts_with(|c: char| c.is_ascii_digit())
        }
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A request as `--net MODE [--iface IFACE]` gives it.
    pub(crate) fn cfg(mode: &str, iface: Option<&str>) -> NetConfig {
        NetConfig {
            mode: mode.parse().unwrap(),
            iface: iface.map(|i| i.parse().unwrap()),
            client_id: None,
        }
    }

    #[test]
    fn dracut_command_line_forms() {
        assert_eq!(
            dracut_args(&cfg("192.168.1.20/24,192.168.1.1", Some("eth1"))).unwrap(),
            vec![
                "ip=192.168.1.20::192.168.1.1:255.255.255.0::eth1:none",
                "rd.neednet=1"
            ]
        );
        assert_eq!(
            dracut_args(&cfg("dhcp", Some("52:54:00:12:34:56"))).unwrap(),
            vec![
                "ifname=bootnet:52:54:00:12:34:56",
                "ip=bootnet:dhcp",
                "rd.neednet=1"
            ]
        );
        // A GUID is not dropped: the port gets kmodkit's name.
        assert_eq!(
            dracut_args(&cfg("dhcp", Some("00:02:c9:03:00:00:10:39"))).unwrap(),
            vec!["ip=bootib:dhcp", "rd.neednet=1"]
        );
        assert!(dracut_args(&cfg("10.0.0.2/24", None)).is_err());
    }

    /// Each generator's stacks, in its preference order, filtered by the
    /// programs the image carries.
    #[test]
    fn stacks_are_the_generators_that_the_image_carries() {
        use crate::image::tests::facts;
        let names = |g: Generator, f: &ImageFacts| -> Vec<&str> {
            detect(g, f).iter().map(|s| s.name()).collect()
        };
        let dracut = Generator::Dracut { systemd: true };
        let all = facts(
            &[],
            &[
                ("usr/lib/systemd/systemd-networkd", ""),
                ("usr/libexec/nm-initrd-generator", ""),
                ("usr/sbin/NetworkManager", ""),
                ("usr/sbin/ifup", ""),
                ("usr/bin/ipconfig", ""),
                ("bin/busybox", ""),
            ],
            &[],
        );
        let dracut_all = names(dracut, &all);
        assert_eq!(dracut_all.len(), 3, "{dracut_all:?}");
        assert!(dracut_all[0].contains("network-manager"), "{dracut_all:?}");
        assert!(dracut_all[2].contains("networkd"), "{dracut_all:?}");
        // NetworkManager before network-legacy before networkd
        // (modules.d/40network).
        let only_networkd = facts(&[], &[("lib/systemd/systemd-networkd", "")], &[]);
        assert_eq!(names(dracut, &only_networkd), [dracut_all[2]]);
        assert_eq!(names(Generator::InitramfsTools, &all).len(), 1);
        assert_eq!(names(Generator::PlainInit, &all).len(), 1);
        // nm-initrd-generator writes profiles only NetworkManager reads.
        let generator_only = facts(&[], &[("usr/lib/nm-initrd-generator", "")], &[]);
        assert!(names(dracut, &generator_only).is_empty());
        // The other generators' programs do not count.
        assert!(names(Generator::InitramfsTools, &only_networkd).is_empty());
        assert!(names(
            Generator::PlainInit,
            &facts(&[], &[("usr/bin/ipconfig", "")], &[])
        )
        .is_empty());
        assert!(names(dracut, &facts(&[], &[("bin/busybox", "")], &[])).is_empty());
    }

    #[test]
    fn ipoib_names() {
        assert!(is_ipoib(&cfg("dhcp", Some("ib0"))));
        assert!(is_ipoib(&cfg("dhcp", Some("ib1.8001"))));
        assert!(!is_ipoib(&cfg("dhcp", Some("ibm0x"))));
        assert!(!is_ipoib(&cfg("dhcp", Some("eth0"))));
        assert!(is_ipoib(&cfg("dhcp", Some("00:02:c9:03:00:00:10:39"))));
    }
}
