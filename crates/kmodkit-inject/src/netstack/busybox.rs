//! A plain `/init` with busybox: kmodkit's own network script,
//! `etc/kmodkit/net-up.sh`, run by `/init` after the driver loader. It
//! finds the interface (by name, by link address: a MAC or, for IPoIB, the
//! port GUID ending the 20-byte address; else the first Ethernet one),
//! then runs busybox's udhcpc (a client identifier with `-x 0x3d:`) or
//! sets the static address with `ip`. udhcpc's script records each lease
//! in `/run/kmodkit/lease.IFACE`.

use crate::image::ImageFacts;
use crate::net::{colon_hex, Iface, NetConfig, NetMode};
use crate::plan::Plan;
use crate::InjectError;

use super::NetworkStack;

pub(super) struct Busybox;

const BUSYBOX: &[&str] = &["bin/busybox", "usr/bin/busybox", "sbin/busybox"];
const NET_UP: &str = "etc/kmodkit/net-up.sh";
const UDHCPC_SCRIPT: &str = "etc/kmodkit/udhcpc.script";

impl NetworkStack for Busybox {
    fn name(&self) -> &'static str {
        "busybox (udhcpc, ip)"
    }

    fn present(&self, facts: &ImageFacts) -> bool {
        facts.first_present(BUSYBOX).is_some()
    }

    fn configure(&self, plan: &mut Plan, net: &NetConfig) -> Result<(), InjectError> {
        let Some(bb) = plan.facts.first_present(BUSYBOX).map(|p| format!("/{p}")) else {
            return Err(InjectError::Invalid(format!(
                "{}: the image has no busybox to bring the network up with",
                plan.image.display()
            )));
        };
        let (by, want) = match &net.iface {
            None => ("first", String::new()),
            Some(Iface::Name(n)) => ("name", n.clone()),
            Some(Iface::Mac(m)) => ("address", m.clone()),
            Some(Iface::Guid(g)) => ("address", colon_hex(g)),
        };
        let mut s = format!(
            "#!/bin/sh\n\
# Written by kmodkit initrd add-drivers (--net): bring the network up.\n\
bb={bb}\n\
# /init runs this before its own mounts.\n\
[ -d /sys/class/net ] || $bb mount -t sysfs sysfs /sys\n\
[ -e /proc/self ] || $bb mount -t proc proc /proc\n\
ifc=\n\
n=0\n\
while [ -z \"$ifc\" ] && [ $n -lt 20 ]; do\n\
  for d in /sys/class/net/*; do\n\
    [ -e \"$d/address\" ] || continue\n\
    read -r addr < \"$d/address\"; read -r type < \"$d/type\"\n\
    case {by} in\n\
      name) [ \"${{d##*/}}\" = '{want}' ] && ifc=${{d##*/}} ;;\n\
      address) case $addr in *'{want}') ifc=${{d##*/}} ;; esac ;;\n\
      first) [ \"$type\" = 1 ] && ifc=${{d##*/}} ;;\n\
    esac\n\
    [ -n \"$ifc\" ] && break\n\
  done\n\
  [ -n \"$ifc\" ] || {{ n=$((n + 1)); $bb sleep 0.5; }}\n\
done\n\
[ -n \"$ifc\" ] || {{ echo 'kmodkit: no network interface ({by} {want}) appeared' >&2; exit 1; }}\n\
$bb ip link set lo up\n\
$bb ip link set \"$ifc\" up\n"
        );
        match &net.mode {
            NetMode::Dhcp => {
                let id = match net.client_id_bytes().map_err(InjectError::Invalid)? {
                    Some(id) => format!(
                        " -C -x 0x3d:{}",
                        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
                    ),
                    None => String::new(),
                };
                s.push_str(&format!(
                    "$bb udhcpc -i \"$ifc\" -f -q -n -t 10 -T 2 -s /{UDHCPC_SCRIPT}{id} || echo \"kmodkit: no DHCP lease on $ifc\" >&2\n"
                ));
                plan.generated(
                    UDHCPC_SCRIPT,
                    udhcpc_script(&bb),
                    0o755,
                    "DHCP client script",
                );
            }
            NetMode::Static { .. } if net.iface.is_none() => {
                return Err(super::static_needs_iface())
            }
            NetMode::Static {
                address,
                prefix,
                gateway,
            } => {
                s.push_str(&format!(
                    "$bb ip addr add {address}/{prefix} dev \"$ifc\"\n"
                ));
                if let Some(g) = gateway {
                    s.push_str(&format!("$bb ip route add default via {g} dev \"$ifc\"\n"));
                }
            }
        }
        plan.generated(NET_UP, s, 0o755, "network script");
        crate::generator::hook_init(plan, NET_UP)?;
        plan.mechanism.push(format!(
            "network: /init runs /{NET_UP} after the drivers load (busybox udhcpc or ip)"
        ));
        Ok(())
    }
}

fn udhcpc_script(bb: &str) -> String {
    format!(
        "#!/bin/sh\n\
# Written by kmodkit initrd add-drivers: udhcpc's event script.\n\
bb={bb}\n\
case $1 in\n\
  deconfig) $bb ip -4 addr flush dev \"$interface\" ;;\n\
  bound|renew)\n\
    $bb ip -4 addr flush dev \"$interface\"\n\
    $bb ip addr add \"$ip/${{mask:-24}}\" dev \"$interface\"\n\
    for r in $router; do $bb ip route add default via \"$r\" dev \"$interface\"; break; done\n\
    $bb mkdir -p /run/kmodkit\n\
    printf 'ip=%s\\nmask=%s\\nrouter=%s\\nserverid=%s\\nlease=%s\\n' \"$ip\" \"$mask\" \"$router\" \"$serverid\" \"$lease\" > \"/run/kmodkit/lease.$interface\"\n\
    ;;\n\
esac\n"
    )
}
