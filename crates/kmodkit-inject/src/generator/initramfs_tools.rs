//! Debian's initramfs-tools (initramfs-tools(7), scripts/functions):
//! `load_modules` runs modprobe for every line of `conf/modules` before
//! `init-premount`.

use crate::image::ImageFacts;
use crate::plan::{with_block, Plan};

use super::{list_words, Loads};

pub(super) fn made_it(facts: &ImageFacts) -> bool {
    facts.exists("scripts/functions") && facts.exists("conf/initramfs.conf")
}

pub(super) fn explicit_loads(facts: &ImageFacts, loads: &mut Loads) {
    if let Some(t) = facts.text("conf/modules") {
        for m in list_words(&t) {
            loads.push(m, "conf/modules");
        }
    }
}

pub(super) fn add_load_list(plan: &mut Plan, list: &[String]) {
    if list.is_empty() {
        return;
    }
    let old = plan.facts.text("conf/modules").unwrap_or_default();
    let block: String = list.iter().map(|m| format!("{m}\n")).collect();
    plan.generated("conf/modules", with_block(&old, &block), 0o644, "load list");
    plan.mechanism.push(
        "conf/modules: load_modules (scripts/functions) runs modprobe for each, before init-premount"
            .into(),
    );
}
