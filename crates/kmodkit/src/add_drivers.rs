//! `kmodkit initrd add-drivers` and `kmodkit initrd modules`: the command
//! line of kmodkit-inject. The library decides and explains; this module
//! prints.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use kmodkit_index::lookup::{module_name_from_path, ModuleDirectory};
use kmodkit_inject::image::{Generator, ImageFacts, LoadEntry};
use kmodkit_inject::net::{ClientIdStyle, Iface, NetConfig, NetMode};
use kmodkit_inject::plan::{self, Content, ModuleOption, Plan, Request};
use kmodkit_inject::resolve::{NameNote, Why};
use kmodkit_inject::write::{self, Mode, WriteOptions};
use serde::Serialize;

use crate::progress::Bar;
use crate::read_flags::ReadFlags;

/// `kmodkit initrd add-drivers --help` (on the subcommand variant, where
/// clap takes it from).
pub const LONG_ABOUT: &str =
    "Put NIC and InfiniBand drivers into an existing initramfs (dracut, initramfs-tools \
or a plain /init) so that the image's own machinery loads them, in dependency order, before it \
brings up the network. Replaces the vendor manuals' unpack / copy .ko files / edit init / repack \
procedure.\n\n\
For each DRIVER kmodkit adds the module and its dependency closure from ROOT/lib/modules/KERNEL \
(modules.dep, as modprobe reads it), its softdeps, the firmware it names, and the run-time \
relations modules.dep does not show (mlx4_core -> mlx4_en, mlx4_ib; mlx5_core -> mlx5_ib; \
ib_ipoib, ib_umad and rdma_ucm, which rdma-core's udev rules load), each with the reason. \
Built-in modules are reported and skipped; names of old manuals that no longer exist (ib_addr, \
ib_mad, ib_sa, ib_ucm, ipoib_helper) are explained and replaced where something replaces them. \
Modules the image's kernel would refuse (vermagic, struct module size, symbol CRCs) are not \
added unless --force.\n\n\
The load list goes where the generator reads it (initramfs-tools: conf/modules; dracut: \
etc/modules-load.d and rd.driver.pre in etc/cmdline.d; plain /init: a hook script), options \
into etc/modprobe.d/kmodkit.conf, and the image's modules.* index is regenerated for its new \
module set so modprobe works inside it.\n\n\
--net configures the network stack the image really carries, in the form that stack reads: \
dracut network-legacy (ip=, ifname= and rd.neednet=1 in etc/cmdline.d; the client identifier in \
dhclient.conf), dracut network-manager (the same ip= for nm-initrd-generator; the client \
identifier in NetworkManager's conf.d), dracut systemd-networkd (a .network file, since its \
generator reads only /proc/cmdline, and the root mount waits for network-online.target), \
initramfs-tools (IP=/DEVICE=/BOOTIF= and a hook that runs configure_networking, klibc \
ipconfig) and a plain /init with busybox (udhcpc or ip from kmodkit's net-up.sh). --iface GUID \
names the IPoIB port by a udev rule (bootib). What a stack cannot do is refused with the \
reason: klibc ipconfig cannot do DHCP over IPoIB; networkd sends only RFC 4361 identifiers \
with a DUID of standard length (not FlexBoot's).\n\n\
--append (default) adds one compressed segment at the end: the original bytes stay intact and \
the kernel lets later files replace earlier ones. --rebuild unpacks, merges and recompresses \
with the original compression. The image is replaced atomically; the original is kept as \
IMAGE.bak unless --no-backup (an existing backup is never replaced: the next one is \
IMAGE.bak.1, .2, ...). A run that would change nothing writes nothing.";

pub const AFTER_HELP: &str = "Exit status: 0 written (or planned with --dry-run, or nothing to do), 1 error (nothing written), 2 usage error.\n\n\
Examples:\n  kmodkit initrd add-drivers /boot/initrd.img-$(uname -r) \\
    mlx4_en mlx4_ib ib_ipoib --net dhcp\n  \
kmodkit initrd add-drivers --dry-run initrd.img ib_addr ib_core ib_mad \\
    ib_sa ib_cm ib_uverbs ib_ucm ib_umad iw_cm rdma_cm rdma_ucm mlx4_core \\
    mlx4_ib ib_mthca ipoib_helper ib_ipoib\n  \
kmodkit initrd add-drivers initrd.img mlx5_core mlx5_ib ib_ipoib \\
    --net dhcp --iface 00:02:c9:03:00:00:10:39 --client-id flexboot\n  \
kmodkit initrd add-drivers initrd.img mlx4_en --net 10.1.0.20/16,10.1.0.1 \\
    --iface 52:54:00:12:34:56\n  \
kmodkit initrd add-drivers -o node.img --root /srv/image initrd.img \\
    mlx4_en --option mlx4_core:log_num_mgm_entry_size=-1";

#[derive(Debug, Args)]
pub struct AddDriversArgs {
    /// The initramfs image to change
    pub image: PathBuf,
    /// Module names (requested drivers)
    #[arg(required = true, value_name = "DRIVER")]
    pub drivers: Vec<String>,
    /// The image's kernel, as in every kmodkit command the kernel acted
    /// for (needed only when the image holds several module trees, or none)
    #[arg(short = 'k', long, value_name = "RELEASE")]
    pub kernel: Option<String>,
    /// Release of the modules to add, when they are built for another
    /// kernel than the image's (default: the image's kernel)
    #[arg(long, value_name = "RELEASE")]
    pub source_kernel: Option<String>,
    /// Root of the system the modules and firmware come from
    #[arg(
        long,
        visible_alias = "basedir",
        short_alias = 'b',
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// Module parameter for the image's modprobe.d (repeatable); the
    /// parameter must exist
    #[arg(long = "option", value_name = "MOD:PARAM=VALUE")]
    pub options: Vec<ModuleOption>,
    /// Do not add the firmware files the modules name
    #[arg(long)]
    pub no_firmware: bool,
    /// Do not add run-time relations modules.dep does not show
    /// (mlx4_core -> mlx4_en/mlx4_ib, mlx5_core -> mlx5_ib, RDMA upper layers)
    #[arg(long)]
    pub no_companions: bool,
    /// Configure the network in the initrd stage: dhcp or ADDR/PREFIX[,GATEWAY]
    #[arg(long, value_name = "dhcp|ADDR/PREFIX[,GW]")]
    pub net: Option<NetMode>,
    /// The interface for --net: a name, an Ethernet MAC or an InfiniBand port GUID
    #[arg(long, value_name = "NAME|MAC|GUID", requires = "net")]
    pub iface: Option<Iface>,
    /// DHCP client identifier for IPoIB: flexboot (as the FlexBoot ROM
    /// sends it), guid (NetworkManager/systemd style) or hex bytes
    #[arg(long, value_name = "flexboot|guid|HEX", requires = "net")]
    pub client_id: Option<ClientIdStyle>,
    /// Add modules even when the image's kernel would refuse them
    #[arg(long)]
    pub force: bool,
    /// Show what would be done; write nothing
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Write the result here instead of replacing IMAGE
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Keep the original as IMAGE.bak (the default)
    #[arg(long, overrides_with = "no_backup")]
    pub backup: bool,
    /// Do not keep IMAGE.bak
    #[arg(long)]
    pub no_backup: bool,
    /// Add one compressed segment at the end (default)
    #[arg(long, conflicts_with = "rebuild")]
    pub append: bool,
    /// Decompress, merge and recompress with the original compression
    #[arg(long)]
    pub rebuild: bool,
    /// Compression level of the written segment (the format's default otherwise)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub level: Option<i32>,
    /// Print the plan and the result as JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kmodkit initrd modules /boot/initrd.img-$(uname -r)\n  kmodkit initrd modules --json initrd.img | jq '.loads'"
)]
pub struct ModulesArgs {
    /// The initramfs image
    pub image: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

pub(crate) fn why_text(why: &Why) -> String {
    match why {
        Why::Requested => "requested".into(),
        Why::DependencyOf { of } => format!("needed by {of} (modules.dep)"),
        Why::Softdep { of, pre: true } => format!("softdep pre: of {of}"),
        Why::Softdep { of, pre: false } => format!("softdep post: of {of}"),
        Why::Companion { of, why } => format!("with {of}: {why}"),
        Why::Replacement { of } => format!("replaces {of}"),
    }
}

/// What happened to a name that was asked for (`built into`, an old name
/// and its replacement); `netboot build` says it the same way.
pub(crate) fn note_text(note: &NameNote, kernel: &str) -> String {
    match note {
        NameNote::BuiltIn { name } => format!("{name}: built into {kernel}; nothing to add"),
        NameNote::Legacy {
            name,
            fate,
            replacement,
            replacement_added,
        } => {
            let tail = match (replacement, replacement_added) {
                (Some(r), true) => format!("; {r} is added instead"),
                (Some(r), false) => format!("; {r} is not in this kernel either"),
                (None, _) => "; skipped".into(),
            };
            format!("{name}: no such module in {kernel}: {fate}{tail}")
        }
    }
}

fn print_plan(plan: &Plan, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "image: {} ({}, kernel {}, {} segment{}, {})",
        plan.image.display(),
        plan.generator.name(),
        plan.image_kernel,
        plan.facts.segments.len(),
        if plan.facts.segments.len() == 1 {
            ""
        } else {
            "s"
        },
        plan.facts.main_compression()
    )?;
    if plan.source_kernel != plan.image_kernel {
        writeln!(out, "modules from kernel {}", plan.source_kernel)?;
    }
    for note in &plan.resolution.notes {
        writeln!(out, "  {}", note_text(note, &plan.source_kernel))?;
    }
    let explicit = plan.load_list.len();
    writeln!(
        out,
        "modules, in load order ({} in all, {explicit} loaded explicitly):",
        plan.resolution.modules.len()
    )?;
    let width = plan
        .resolution
        .modules
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0);
    for m in &plan.resolution.modules {
        let mark = if plan.already_in_image.contains(&m.name) {
            " (already in the image)"
        } else {
            ""
        };
        writeln!(
            out,
            "  {:width$}  {}{}{mark}",
            m.name,
            if m.load { "load  " } else { "      " },
            why_text(&m.why)
        )?;
    }
    for fw in &plan.resolution.firmware {
        writeln!(out, "firmware: {} (for {})", fw.relpath, fw.module)?;
    }
    writeln!(out, "ABI: {}", plan.abi_check)?;
    for v in &plan.refused {
        writeln!(
            out,
            "  refused (added with --force): {}: {}",
            v.name,
            v.reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )?;
    }
    if !plan.network_stacks.is_empty() {
        writeln!(out, "network stack: {}", plan.network_stacks.join(", "))?;
    }
    for m in &plan.mechanism {
        writeln!(out, "loading: {m}")?;
    }
    let count =
        |pred: &dyn Fn(&plan::Addition) -> bool| plan.additions.iter().filter(|a| pred(a)).count();
    writeln!(
        out,
        "files to add or replace: {} ({} modules, {} firmware, {} index, {} configuration)",
        plan.additions.len(),
        count(&|a| a.what.starts_with("module ")),
        count(&|a| a.what.starts_with("firmware")),
        count(&|a| a.what.starts_with("index")),
        count(&|a| matches!(a.content, Content::Generated(_)) && !a.what.starts_with("index")),
    )?;
    Ok(())
}

#[derive(Serialize)]
struct JsonReport<'a> {
    plan: &'a Plan,
    dry_run: bool,
    written: Option<write::Written>,
}

pub fn add_drivers(a: &AddDriversArgs) -> anyhow::Result<bool> {
    let net = a.net.clone().map(|mode| NetConfig {
        mode,
        iface: a.iface.clone(),
        client_id: a.client_id.clone(),
    });
    if let Some(net) = &net {
        // What the arguments alone decide: a usage error (exit 2), before
        // the image is read.
        net.client_id_bytes().map_err(crate::UsageError)?;
        if matches!(net.mode, NetMode::Static { .. }) && net.iface.is_none() {
            return Err(crate::UsageError(
                "--net ADDR/PREFIX needs --iface NAME, MAC or GUID: a static address is given to one interface".into(),
            )
            .into());
        }
    }
    let req = Request {
        image: a.image.clone(),
        root: a.root.clone(),
        image_kernel: a.kernel.clone(),
        source_kernel: a.source_kernel.clone(),
        drivers: a.drivers.clone(),
        options: a.options.clone(),
        firmware: !a.no_firmware,
        companions: !a.no_companions,
        net,
        force: a.force,
        max_output: a.read.max_size,
        depmod_config: Vec::new(),
        scratch_base: crate::host::scratch_base(),
    };
    let bar = Bar::new("reading");
    let t = std::time::Instant::now();
    let plan =
        // Every error of the plan names its file (the image, a module, the
        // source tree): no context that would say the image twice.
        plan::build(&req, &bar)?;
    crate::profile::step("plan", t);
    let mut stdout = io::stdout().lock();
    if !a.json {
        print_plan(&plan, &mut stdout)?;
    }
    for w in &plan.warnings {
        diag!("kmodkit: warning: {w}");
    }
    let written = if a.dry_run {
        if !a.json {
            writeln!(stdout, "dry run: nothing written")?;
        }
        None
    } else if plan.additions.is_empty()
        || a.output.is_none()
            && !plan
                .changes_image(a.read.max_size)
                .with_context(|| format!("{}: add-drivers", a.image.display()))?
    {
        if !a.json {
            writeln!(
                stdout,
                "nothing to do: every file to add is in the image already, with the same content; nothing written"
            )?;
        }
        None
    } else {
        let mtime = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
        let opts = WriteOptions {
            mode: if a.rebuild {
                Mode::Rebuild
            } else {
                Mode::Append
            },
            output: a.output.clone(),
            backup: !a.no_backup,
            level: a.level,
            mtime,
        };
        let bar = Bar::new("writing");
        let w = write::write(&plan, &opts, &bar).with_context(|| {
            format!(
                "{}: writing failed; nothing was changed (no temporary file or backup left)",
                a.image.display()
            )
        })?;
        if !a.json {
            writeln!(
                stdout,
                "wrote {} ({}: {} -> {} bytes, {} segment){}",
                w.path.display(),
                match w.mode {
                    Mode::Append => "appended",
                    Mode::Rebuild => "rebuilt",
                },
                w.size_before,
                w.size_after,
                w.compression,
                w.backup
                    .as_ref()
                    .map(|b| format!("; original kept as {}", b.display()))
                    .unwrap_or_default()
            )?;
        }
        Some(w)
    };
    if a.json {
        serde_json::to_writer_pretty(
            &mut stdout,
            &JsonReport {
                plan: &plan,
                dry_run: a.dry_run,
                written,
            },
        )?;
        writeln!(stdout)?;
    }
    Ok(true)
}

/// What `kmodkit initrd modules` reports.
#[derive(Serialize)]
struct ModulesReport {
    image: PathBuf,
    generator: Generator,
    kernel: Option<String>,
    /// Module names the image carries.
    carries: Vec<String>,
    /// Modules the image loads explicitly, with where that is said.
    loads: Vec<LoadEntry>,
    /// The explicit loads expanded with their dependencies from the
    /// image's modules.dep, in the order modprobe inserts them.
    load_order: Vec<String>,
    /// Loaded but not in the image.
    missing: Vec<String>,
}

pub fn modules(a: &ModulesArgs) -> anyhow::Result<bool> {
    let scratch = crate::host::scratch_dir("kmodkit-modules.")?;
    let bar = Bar::new("reading");
    let facts = ImageFacts::read(&a.image, scratch.path(), a.read.max_size, &bar)?;
    let generator = facts.generator();
    let kernel = facts.kernel_releases.first().cloned();
    let mut carries: Vec<String> = kernel
        .as_deref()
        .map(|k| {
            facts
                .module_files(k)
                .iter()
                .filter_map(|p| module_name_from_path(Path::new(p)))
                .collect()
        })
        .unwrap_or_default();
    carries.sort();
    let loads = generator.explicit_loads(&facts);
    let (load_order, missing) = match &kernel {
        Some(k) => {
            let dir = ModuleDirectory::new(
                scratch
                    .path()
                    .join("lib/modules")
                    .join(k)
                    .display()
                    .to_string(),
            );
            // Softdeps as the image's own modprobe sees them: its index
            // and its modprobe.d files.
            let conf = scratch.path().join("modprobe.d");
            std::fs::create_dir_all(&conf)?;
            for (name, bytes) in &facts.files {
                if let Some(base) = name
                    .strip_prefix("etc/modprobe.d/")
                    .or_else(|| name.strip_prefix("usr/lib/modprobe.d/"))
                    .or_else(|| name.strip_prefix("lib/modprobe.d/"))
                {
                    if !base.contains('/') && !conf.join(base).exists() {
                        std::fs::write(conf.join(base), bytes)?;
                    }
                }
            }
            let names: Vec<String> = loads.iter().map(|l| l.module.clone()).collect();
            kmodkit_inject::resolve::probe_order(&dir, &names, &[conf])?
        }
        None => (Vec::new(), loads.iter().map(|l| l.module.clone()).collect()),
    };
    let report = ModulesReport {
        image: a.image.clone(),
        generator,
        kernel,
        carries,
        loads,
        load_order,
        missing,
    };
    let mut out = io::stdout().lock();
    if a.json {
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
        return Ok(true);
    }
    writeln!(
        out,
        "image: {} ({}, kernel {})",
        report.image.display(),
        report.generator.name(),
        report.kernel.as_deref().unwrap_or("none")
    )?;
    writeln!(out, "carries {} modules", report.carries.len())?;
    if report.loads.is_empty() {
        writeln!(
            out,
            "loads none explicitly (udev loads drivers for the devices it finds)"
        )?;
    } else {
        writeln!(out, "loads explicitly:")?;
        for l in &report.loads {
            writeln!(out, "  {:20} ({})", l.module, l.source)?;
        }
        writeln!(out, "load order with dependencies:")?;
        for (i, m) in report.load_order.iter().enumerate() {
            writeln!(out, "  {:3}. {m}", i + 1)?;
        }
    }
    for m in &report.missing {
        writeln!(out, "  missing: {m} is loaded but not in the image")?;
    }
    Ok(report.missing.is_empty())
}
