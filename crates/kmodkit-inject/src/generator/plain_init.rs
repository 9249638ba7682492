//! An image of no known generator with an `/init` shell script (a busybox
//! image, or one kmodkit made): kmodkit's own loader,
//! `etc/kmodkit/load-drivers.sh`, insmods each module after its
//! dependencies, and `/init` runs it first.

use std::path::Path;

use crate::image::{ImageFacts, Node};
use crate::plan::{Plan, Request};
use crate::InjectError;
use kmodkit_index::lookup::module_name_from_path;

use super::Loads;

/// kmodkit's loader script in the image.
pub(crate) const LOADER: &str = "etc/kmodkit/load-drivers.sh";

pub(super) fn explicit_loads(facts: &ImageFacts, loads: &mut Loads) {
    for name in ["init", LOADER] {
        let Some(t) = facts.text(name) else { continue };
        for l in t.lines() {
            let words: Vec<&str> = l.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0].ends_with("insmod") || w[0].ends_with("modprobe") {
                    let m =
                        module_name_from_path(Path::new(w[1])).unwrap_or_else(|| w[1].to_string());
                    loads.push(&m, name);
                }
            }
        }
    }
}

/// The image's `insmod`, or busybox's.
fn insmod(plan: &Plan) -> Result<String, InjectError> {
    let facts = &plan.facts;
    if let Some(p) = facts.first_present(&[
        "sbin/insmod",
        "bin/insmod",
        "usr/sbin/insmod",
        "usr/bin/insmod",
    ]) {
        return Ok(format!("/{p}"));
    }
    facts
        .first_present(&["bin/busybox", "usr/bin/busybox", "sbin/busybox"])
        .map(|p| format!("/{p} insmod"))
        .ok_or_else(|| {
            InjectError::Invalid(format!(
                "{}: the image has no insmod (nor busybox) to load modules with",
                plan.image.display()
            ))
        })
}

/// `/init` as it will be: the plan's new version if it already changed it.
fn current_init(plan: &Plan) -> Result<String, InjectError> {
    if let Some(text) = plan.generated_text("init") {
        return Ok(text);
    }
    let Some(init) = plan.facts.text("init") else {
        return Err(InjectError::Invalid(format!(
            "{}: neither dracut nor initramfs-tools made this image and it has no /init script to hook into",
            plan.image.display()
        )));
    };
    if !init.starts_with("#!") {
        return Err(InjectError::Invalid(format!(
            "{}: /init is a program, not a script; kmodkit cannot insert the driver loading into it",
            plan.image.display()
        )));
    }
    Ok(init)
}

/// Makes `/init` run `script` right after the lines kmodkit added before
/// (so the loader runs before the network script), once.
pub(crate) fn hook_init(plan: &mut Plan, script: &str) -> Result<(), InjectError> {
    let init = current_init(plan)?;
    let hook = format!("/{script} # kmodkit initrd add-drivers");
    if init.lines().any(|l| l == hook) {
        return Ok(());
    }
    let mut lines: Vec<&str> = init.lines().collect();
    let mut at = 1.min(lines.len());
    while at < lines.len() && lines[at].ends_with("# kmodkit initrd add-drivers") {
        at += 1;
    }
    lines.insert(at, &hook);
    let mut new_init = lines.join("\n");
    new_init.push('\n');
    let mode = match plan.facts.node("init") {
        Some(Node::File { mode, .. }) => *mode,
        _ => 0o755,
    };
    plan.generated("init", new_init, mode, "init hook");
    Ok(())
}

pub(super) fn add_loader(plan: &mut Plan, req: &Request) -> Result<(), InjectError> {
    if plan.resolution.modules.is_empty() {
        return Ok(());
    }
    current_init(plan)?;
    let insmod = insmod(plan)?;
    let module_dir = plan.facts.module_dir(&plan.image_kernel);
    let mut script = String::from("#!/bin/sh\n# Written by kmodkit initrd add-drivers: load the added drivers in dependency order.\n");
    for m in &plan.resolution.modules {
        let params: Vec<String> = req
            .options
            .iter()
            .filter(|o| o.module == m.name)
            .map(|o| format!("{}={}", o.param, o.value))
            .collect();
        let rel = plan.placement(&m.relpath);
        script.push_str(&format!(
            "grep -q '^{name} ' /proc/modules 2>/dev/null || {insmod} /{module_dir}/{rel}{sep}{params} || echo 'kmodkit: loading {name} failed' >&2\n",
            name = m.name,
            sep = if params.is_empty() { "" } else { " " },
            params = params.join(" ")
        ));
    }
    plan.generated(LOADER, script, 0o755, "load script");
    hook_init(plan, LOADER)?;
    plan.mechanism.push(format!(
        "/init runs /{LOADER} first, which insmods each module after its dependencies"
    ));
    Ok(())
}
