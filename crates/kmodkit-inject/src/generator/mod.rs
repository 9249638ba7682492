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
