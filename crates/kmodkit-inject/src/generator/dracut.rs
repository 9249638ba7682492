//! dracut (dracut.modules(7), modules.d/99base and 98dracut-systemd): the
//! hook directory marks its images; `rd.driver.pre=` in `etc/cmdline.d`
//! (read by dracut's getcmdline as if on the kernel command line) loads
//! modules before udev, and in systemd images systemd-modules-load reads
//! `modules-load.d` as well.

use crate::image::{ImageFacts, Node};
use crate::plan::Plan;

use super::{list_words, Loads};

const DRIVERS_DROPIN: &str =
    "etc/systemd/system/dracut-pre-mount.service.d/50-kmodkit-drivers.conf";

pub(super) fn made_it(facts: &ImageFacts) -> bool {
    facts.is_dir("usr/lib/dracut/hooks") || facts.is_dir("lib/dracut/hooks")
}

pub(super) fn systemd_init(facts: &ImageFacts) -> bool {
    matches!(facts.nodes.get("init"), Some(Node::Symlink { target }) if target.contains("systemd"))
}

pub(super) fn explicit_loads(facts: &ImageFacts, loads: &mut Loads) {
    for (name, bytes) in &facts.files {
        let text = String::from_utf8_lossy(bytes);
        if name.starts_with("etc/cmdline.d/") {
            for word in text.split_whitespace() {
                let value = word
                    .strip_prefix("rd.driver.pre=")
                    .or_else(|| word.strip_prefix("rdloaddriver="));
                for m in value.into_iter().flat_map(|v| v.split(',')) {
                    loads.push(m, name);
                }
            }
        } else if (name.starts_with("etc/modules-load.d/")
            || name.starts_with("usr/lib/modules-load.d/"))
            && name.ends_with(".conf")
        {
            for m in list_words(&text) {
                loads.push(m, name);
            }
        }
    }
}

pub(super) fn add_load_list(plan: &mut Plan, list: &[String], systemd: bool) {
    if list.is_empty() {
        return;
    }
    let text: String = std::iter::once("# Written by kmodkit initrd add-drivers.\n".to_string())
        .chain(list.iter().map(|m| format!("{m}\n")))
        .collect();
    plan.generated("etc/modules-load.d/kmodkit.conf", text, 0o644, "load list");
    plan.generated(
        "etc/cmdline.d/50-kmodkit-drivers.conf",
        format!("rd.driver.pre={}\n", list.join(",")),
        0o644,
        "load list",
    );
    if systemd {
        if plan
            .facts
            .first_present(&[
                "usr/lib/systemd/systemd-modules-load",
                "lib/systemd/systemd-modules-load",
            ])
            .is_none()
        {
            plan.warnings.push("the image has no systemd-modules-load; the drivers load through rd.driver.pre (dracut-pre-udev) only".into());
        }
        // dracut-pre-mount.service has no default dependencies: without
        // this it can run (and the root be mounted) while
        // systemd-modules-load is still loading (seen under load in qemu
        // with a static address, which is up at once).
        plan.generated(
            DRIVERS_DROPIN,
            "# Written by kmodkit initrd add-drivers: the root file system is mounted\n\
             # once the added drivers are loaded.\n\
             [Unit]\nAfter=systemd-modules-load.service dracut-pre-udev.service\n"
                .into(),
            0o644,
            "load order",
        );
        plan.mechanism.push(format!("etc/modules-load.d/kmodkit.conf: systemd-modules-load loads them before udev and the network (rd.driver.pre in etc/cmdline.d as well); {DRIVERS_DROPIN} orders the root mount after them"));
    } else {
        plan.mechanism.push("etc/cmdline.d/50-kmodkit-drivers.conf: rd.driver.pre=..., loaded by dracut's cmdline hook before udev and the network".into());
    }
}
