//! One module per initramfs generator. Each knows how an image it made is
//! recognised, which files of the image name the modules its machinery
//! loads explicitly, where kmodkit's load list goes, which network stacks
//! such an image can carry ([`crate::netstack`]) and how the image is
//! rebuilt on the system that owns it.

mod dracut;
mod initramfs_tools;
mod plain_init;

pub(crate) use plain_init::hook_init;

use serde::Serialize;

use crate::image::ImageFacts;
use crate::netstack::NetworkStack;
use crate::plan::{Plan, Request};
use crate::InjectError;

/// Which generator made the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    /// dracut; `systemd` when its /init is systemd.
    Dracut { systemd: bool },
    /// Debian's initramfs-tools (`scripts/functions`, `conf/initramfs.conf`).
    InitramfsTools,
    /// Anything else with an executable /init script.
    PlainInit,
}

/// One module the image's machinery loads explicitly, and the file that
/// says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadEntry {
    pub module: String,
    pub source: String,
}

/// Collects [`LoadEntry`]s: names normalised (`-` to `_`), first mention
/// wins.
#[derive(Default)]
pub(crate) struct Loads(Vec<LoadEntry>);

impl Loads {
    pub(crate) fn push(&mut self, module: &str, source: &str) {
        let module = module.replace('-', "_");
        if !module.is_empty() && !self.0.iter().any(|e| e.module == module) {
            self.0.push(LoadEntry {
                module,
                source: source.to_string(),
            });
        }
    }
}

/// The first word of every line that is not blank or a comment (the
/// format of conf/modules and modules-load.d).
pub(crate) fn list_words(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().next())
}

impl Generator {
    /// Recognises the generator from the image's files.
    pub fn detect(facts: &ImageFacts) -> Generator {
        if dracut::made_it(facts) {
            Generator::Dracut {
                systemd: dracut::systemd_init(facts),
            }
        } else if initramfs_tools::made_it(facts) {
            Generator::InitramfsTools
        } else {
            Generator::PlainInit
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Generator::Dracut { systemd: true } => "dracut (systemd)",
            Generator::Dracut { systemd: false } => "dracut",
            Generator::InitramfsTools => "initramfs-tools",
            Generator::PlainInit => "plain /init",
        }
    }

    /// The modules the image's machinery loads by name, in the order its
    /// files mention them.
    pub fn explicit_loads(self, facts: &ImageFacts) -> Vec<LoadEntry> {
        let mut loads = Loads::default();
        match self {
            Generator::Dracut { .. } => dracut::explicit_loads(facts, &mut loads),
            Generator::InitramfsTools => initramfs_tools::explicit_loads(facts, &mut loads),
            Generator::PlainInit => plain_init::explicit_loads(facts, &mut loads),
        }
        loads.0
    }

    /// The network stacks an image of this generator can carry, in the
    /// order the generator prefers them.
    pub fn network_stacks(self) -> &'static [&'static dyn NetworkStack] {
        match self {
            Generator::Dracut { .. } => crate::netstack::DRACUT,
            Generator::InitramfsTools => crate::netstack::INITRAMFS_TOOLS,
            Generator::PlainInit => crate::netstack::PLAIN_INIT,
        }
    }

    /// The command that rebuilds an image of this generator for `release`
    /// on the system that owns it, or `None` when kmodkit knows none.
    pub fn rebuild_command(self, release: &str) -> Option<String> {
        match self {
            Generator::Dracut { .. } => Some(format!("dracut -f --kver {release}")),
            Generator::InitramfsTools => Some(format!("update-initramfs -u -k {release}")),
            Generator::PlainInit => None,
        }
    }

    /// Writes the load list (and, for a plain /init, the loader itself)
    /// where this generator's machinery reads it.
    pub(crate) fn add_load_list(
        self,
        plan: &mut Plan,
        req: &Request,
        list: &[String],
    ) -> Result<(), InjectError> {
        match self {
            Generator::Dracut { systemd } => {
                dracut::add_load_list(plan, list, systemd);
                Ok(())
            }
            Generator::InitramfsTools => {
                initramfs_tools::add_load_list(plan, list);
                Ok(())
            }
            Generator::PlainInit => plain_init::add_loader(plan, req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tests::facts;

    const DRACUT_HOOKS: &str = "usr/lib/dracut/hooks";

    #[test]
    fn detection_follows_each_generators_marks() {
        // dracut: its hooks directory; systemd when /init points at it.
        let systemd = facts(&[DRACUT_HOOKS], &[], &[("init", "usr/lib/systemd/systemd")]);
        assert_eq!(
            Generator::detect(&systemd),
            Generator::Dracut { systemd: true }
        );
        let legacy = facts(&["lib/dracut/hooks"], &[("init", "#!/bin/sh\n")], &[]);
        assert_eq!(
            Generator::detect(&legacy),
            Generator::Dracut { systemd: false }
        );
        // initramfs-tools needs both its function library and its config.
        let tools = facts(
            &["scripts"],
            &[("scripts/functions", ""), ("conf/initramfs.conf", "")],
            &[],
        );
        assert_eq!(Generator::detect(&tools), Generator::InitramfsTools);
        let half = facts(&[], &[("scripts/functions", "")], &[]);
        assert_eq!(Generator::detect(&half), Generator::PlainInit);
        // dracut's marks win over initramfs-tools' (checked first).
        let both = facts(
            &[DRACUT_HOOKS],
            &[("scripts/functions", ""), ("conf/initramfs.conf", "")],
            &[],
        );
        assert_eq!(
            Generator::detect(&both),
            Generator::Dracut { systemd: false }
        );
        assert_eq!(
            Generator::detect(&facts(&[], &[], &[])),
            Generator::PlainInit
        );
    }

    fn modules(loads: &[LoadEntry]) -> Vec<(&str, &str)> {
        loads
            .iter()
            .map(|e| (e.module.as_str(), e.source.as_str()))
            .collect()
    }

    #[test]
    fn dracut_loads_come_from_the_command_line_and_modules_load_d() {
        let f = facts(
            &[DRACUT_HOOKS],
            &[
                (
                    "etc/cmdline.d/10-a.conf",
                    "rd.driver.pre=mlx5-core,e1000e rdloaddriver=ib_ipoib quiet",
                ),
                (
                    "etc/modules-load.d/b.conf",
                    "# comment\n\nvirtio_net\n; other\nmlx5_core\n",
                ),
                // Not a .conf: systemd-modules-load ignores it.
                ("usr/lib/modules-load.d/c.txt", "ignored\n"),
            ],
            &[],
        );
        let g = Generator::detect(&f);
        assert_eq!(
            modules(&g.explicit_loads(&f)),
            [
                ("mlx5_core", "etc/cmdline.d/10-a.conf"),
                ("e1000e", "etc/cmdline.d/10-a.conf"),
                ("ib_ipoib", "etc/cmdline.d/10-a.conf"),
                ("virtio_net", "etc/modules-load.d/b.conf"),
            ]
        );
    }

    #[test]
    fn initramfs_tools_loads_come_from_conf_modules() {
        let f = facts(
            &[],
            &[
                ("scripts/functions", ""),
                ("conf/initramfs.conf", ""),
                (
                    "conf/modules",
                    "# Written by hand\nbnxt-en\n\nmlx4_core debug_level=1\n",
                ),
                // initramfs-tools reads no modules-load.d.
                ("etc/modules-load.d/x.conf", "virtio_net\n"),
            ],
            &[],
        );
        let g = Generator::detect(&f);
        assert_eq!(g, Generator::InitramfsTools);
        assert_eq!(
            modules(&g.explicit_loads(&f)),
            [("bnxt_en", "conf/modules"), ("mlx4_core", "conf/modules")]
        );
    }

    #[test]
    fn plain_init_loads_are_its_insmod_and_modprobe_lines() {
        let f = facts(
            &[],
            &[
                (
                    "init",
                    "#!/bin/sh\n/bin/busybox insmod /lib/modules/6.1/virtio_net.ko.xz\nmodprobe e1000e\necho insmod\n",
                ),
                (
                    "etc/kmodkit/load-drivers.sh",
                    "insmod /lib/modules/6.1/kernel/mlx5_core.ko\ninsmod /x/virtio_net.ko\n",
                ),
            ],
            &[],
        );
        let g = Generator::detect(&f);
        assert_eq!(g, Generator::PlainInit);
        assert_eq!(
            modules(&g.explicit_loads(&f)),
            [
                ("virtio_net", "init"),
                ("e1000e", "init"),
                ("mlx5_core", "etc/kmodkit/load-drivers.sh"),
            ]
        );
        assert_eq!(g.rebuild_command("6.1"), None);
    }
}
