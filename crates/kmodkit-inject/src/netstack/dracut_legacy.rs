//! dracut's network-legacy (modules.d/35network-legacy): parse-ip-opts and
//! net-genrules read `ip=`, `ifname=` and `rd.neednet` through getargs
//! (so from `etc/cmdline.d` too), ifup runs dhclient with the image's
//! `dhclient.conf`, where a client identifier goes (RFC 4390: DHCP over
//! IPoIB has no hardware address, the identifier is mandatory).

use crate::image::ImageFacts;
use crate::net::{colon_hex, NetConfig};
use crate::plan::{with_block, Plan};
use crate::InjectError;

use super::NetworkStack;

pub(super) struct NetworkLegacy;

impl NetworkStack for NetworkLegacy {
    fn name(&self) -> &'static str {
        "dracut network-legacy (dhclient)"
    }

    fn present(&self, facts: &ImageFacts) -> bool {
        facts
            .first_present(&["usr/sbin/ifup", "sbin/ifup"])
            .is_some()
    }

    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
        super::write_dracut_args(plan, net, "network-legacy (parse-ip-opts, ifup)")?;
        let Some(id) = net.client_id_bytes().map_err(InjectError::Invalid)? else {
            return Ok(());
        };
        let Some(conf) = plan
            .facts
            .first_present(&["etc/dhclient.conf", "etc/dhcp/dhclient.conf"])
        else {
            return Err(InjectError::Invalid(format!(
                "{}: --client-id needs dhclient's configuration, and this network-legacy image has no dhclient.conf",
                plan.image.display()
            )));
        };
        let send = format!("send dhcp-client-identifier {};", colon_hex(&id));
        let iface = net.iface_name().map(str::to_string).or_else(|| {
            matches!(net.iface, Some(crate::net::Iface::Guid(_)))
                .then(|| super::GUID_IFNAME.to_string())
        });
        let block = match &iface {
            Some(n) => format!("interface \"{n}\" {{\n    {send}\n}}\n"),
            None => format!("{send}\n"),
        };
        let mut old = plan.facts.text(conf).unwrap_or_default();
        if iface.is_none() {
            // A global identifier replaces the image's global one (dracut's
            // network-legacy sends `= hardware`, useless on IPoIB).
            old = without_global_client_id(&old);
        }
        plan.generated(
            conf,
            with_block(&old, &block),
            0o644,
            "DHCP client identifier",
        );
        plan.mechanism
            .push(format!("DHCP client identifier in {conf} (dhclient)"));
        Ok(())
    }
}

/// dhclient.conf without top-level `send dhcp-client-identifier` lines
/// (commented out, so the file still shows what the generator wrote).
fn without_global_client_id(text: &str) -> String {
    let mut depth = 0i32;
    let mut out = String::new();
    for line in text.lines() {
        let global = depth == 0;
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        if global && line.trim_start().starts_with("send dhcp-client-identifier") {
            out.push_str("# ");
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
