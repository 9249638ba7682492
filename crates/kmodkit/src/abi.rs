//! `kmodkit abi check`: will these modules load on that kernel?

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use kmodkit_abi::{check, collect_modules, Reason, Target};
use kmodkit_depmod::config::root_config_dirs;

#[derive(Debug, Subcommand)]
pub enum AbiCommand {
    /// Check modules built for one kernel against another, as its loader would
    #[command(
        long_about = "Check out-of-tree modules (files or directories, e.g. a vendor's extra/ of kernel A) \
against a target kernel, exactly as the target's module loader would: struct module size, \
module_layout, vermagic, every symbol's CRC against the provider the target would really use \
(vmlinux, an in-tree module, or another module of the set, by the target's depmod.d priority), \
unknown symbols, GPL-only exports, namespaces, extended modversions. A module needing a refused \
module of the set is refused too.\n\n\
The target's symbol versions come from ROOT/boot/symvers-K.gz, ROOT/lib/modules/K/symvers.gz, \
ROOT/lib/modules/K/build/Module.symvers or ROOT/usr/src/linux-headers-K/Module.symvers, or --symvers.",
        after_help = "Exit status: 0 every module is compatible, 1 some are not, 2 error.\n\nExamples:\n  kmodkit abi check --kernel 5.14.0-427.el9.x86_64 \\\n    /lib/modules/5.14.0-362.el9.x86_64/extra\n  kmodkit abi check --kernel 6.1.0-56-amd64 --json ./mlx4_core.ko ./mlx4_en.ko"
    )]
    Check(AbiCheckArgs),
}

#[derive(Debug, Args)]
pub struct AbiCheckArgs {
    /// Target kernel release
    #[arg(short = 'k', long = "kernel", value_name = "KVER")]
    pub kernel: String,
    /// Root directory the target kernel lives under; its own depmod.d decides priorities
    #[arg(
        long,
        visible_short_alias = 'b',
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// Module.symvers / symvers.gz of the target (instead of searching)
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,
    /// Subdirectory of the target's module directory the set would be installed in (modules already
    /// in that directory tree are checked where they are)
    #[arg(long, value_name = "SUBDIR", default_value = "weak-updates")]
    pub placement: String,
    /// Check each module on its own (its dependencies from the target only),
    /// as when each is inserted alone after the target's own modules
    #[arg(long)]
    pub independent: bool,
    /// Print the verdicts as JSON
    #[arg(long)]
    pub json: bool,
    /// Module files or directories holding them
    #[arg(required = true, value_name = "MODULE|DIR")]
    pub modules: Vec<PathBuf>,
}

/// Exit codes: 0 all compatible, 1 some not; errors become 2 in main.
pub fn run(cmd: &AbiCommand) -> Result<u8> {
    let AbiCommand::Check(args) = cmd;
    let t = std::time::Instant::now();
    if let Some(msg) = kmodkit_depmod::installed::not_installed(&args.root, &args.kernel) {
        anyhow::bail!("{msg}");
    }
    let files = collect_modules(&args.modules)?;
    crate::profile::step("collect", t);
    if files.is_empty() {
        anyhow::bail!(
            "no module files (.ko, .ko.xz, .ko.zst, .ko.gz) in {:?}",
            args.modules
        );
    }
    let t = std::time::Instant::now();
    // Under --root the target system's own depmod.d decides which module
    // modprobe would load, as weak-modules decides (kmodkit_abi::weak).
    let config_dirs = root_config_dirs(&args.root);
    let target = Target::load_with_config(
        &args.root,
        &args.kernel,
        args.symvers.as_deref(),
        &config_dirs,
    )?;
    crate::profile::step("target", t);
    let t = std::time::Instant::now();
    // Modules already installed in the target's own tree are checked where
    // they are (else each would be placed again under --placement and be
    // shadowed by itself).
    let installed = !files.is_empty()
        && files
            .iter()
            .all(|f| f.starts_with(Path::new(&target.module_dir)));
    let judge = |set: &[PathBuf]| {
        if installed {
            kmodkit_abi::check_installed(&target, set)
        } else {
            check(&target, set, &args.placement)
        }
    };
    let verdicts = if args.independent {
        files
            .iter()
            .flat_map(|f| judge(std::slice::from_ref(f)))
            .collect()
    } else {
        judge(&files)
    };
    crate::profile::step("check", t);
    // A file that is no module cannot be judged: an error naming it, not a
    // verdict (kmod's modprobe fails the same way before the loader runs).
    let unreadable: Vec<String> = verdicts
        .iter()
        .flat_map(|v| v.reasons.iter())
        .filter_map(|r| match r {
            Reason::Unreadable { error } => Some(error.clone()),
            _ => None,
        })
        .collect();
    if !unreadable.is_empty() {
        anyhow::bail!(
            "not a module abi check can read (nothing was checked): {}",
            unreadable.join("; ")
        );
    }
    let config = config_description(&args.root, &target);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let doc = serde_json::json!({
            "kernel": target.release,
            "symvers": target.symbols.source,
            "vermagic": target.vermagic,
            "struct_module_size": target.struct_module_size,
            "depmod_config": config,
            "modules": verdicts,
        });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let width = verdicts.iter().map(|v| v.name.len()).max().unwrap_or(0);
        for v in &verdicts {
            let word = if v.compatible {
                "compatible"
            } else {
                "INCOMPATIBLE"
            };
            writeln!(out, "{:width$}  {word}  {}", v.name, v.path.display())?;
            for r in &v.reasons {
                writeln!(out, "    - {r}")?;
            }
            if let Some(s) = &v.shadowed_by {
                writeln!(
                    out,
                    "    note: {s} has priority under this kernel's depmod.d; modprobe loads that one"
                )?;
            }
            for w in &v.warnings {
                writeln!(out, "    warning: {w}")?;
            }
        }
        let bad = verdicts.iter().filter(|v| !v.compatible).count();
        writeln!(
            out,
            "{} of {} modules compatible with {} (symbol versions from {}; depmod configuration: {config})",
            verdicts.len() - bad,
            verdicts.len(),
            target.release,
            target.symbols.source.display()
        )?;
    }
    out.flush()?;
    Ok(if verdicts.iter().all(|v| v.compatible) {
        0
    } else {
        1
    })
}

/// Which depmod.d files decided the priorities, as weak-modules says it.
fn config_description(root: &std::path::Path, target: &Target) -> String {
    let files: Vec<String> = target
        .scan
        .config
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    if !files.is_empty() {
        return files.join(", ");
    }
    if root == std::path::Path::new("/") {
        "none in /etc/depmod.d, /run/depmod.d, /usr/local/lib/depmod.d, /lib/depmod.d, kmod's default search order".to_string()
    } else {
        format!(
            "none in {}/{{etc,run,usr/local/lib,lib}}/depmod.d, kmod's default search order",
            root.display()
        )
    }
}
