//! `kmodkit status`: for a package and every installed kernel, which file
//! modprobe would load for each of its modules, whether that kernel
//! accepts it, and the action needed (none / weak link / rebuild).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kmodkit_depmod::config::root_config_dirs;
use kmodkit_rebuild::status::{status, Action, KernelStatus, Loads, StatusRequest};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every module loads and is accepted on every kernel, 1 some \
action is needed, 2 usage or input error.\n\nExamples:\n  kmodkit status /usr/src/jool-dkms-4.1.9\n  \
kmodkit status --root /srv/node-root --json \\\n    --module mlx5_core --module mlx5_ib"
)]
pub struct StatusArgs {
    /// Root directory the kernels live under; its own depmod.d decides priorities
    #[arg(
        long,
        visible_short_alias = 'b',
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// Kernel release to check (repeatable; default: every kernel installed under the root)
    #[arg(short = 'k', long = "kernel", value_name = "KVER")]
    pub kernels: Vec<String>,
    /// A module of the package (repeatable)
    #[arg(short = 'm', long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// The package's DKMS source directory (its dkms.conf names the modules)
    #[arg(value_name = "PACKAGE_DIR")]
    pub package: Option<PathBuf>,
}

/// The module names of a DKMS package: `DEST_MODULE_NAME[n]`, else
/// `BUILT_MODULE_NAME[n]` (DKMS's `dkms.conf(5)`), read as plain
/// assignments without running the file.
/// The modules a DKMS source tree installs (`DEST_MODULE_NAME`, else
/// `BUILT_MODULE_NAME`), from its `dkms.conf` evaluated as DKMS does
/// (kmodkit_rebuild::conf). Which names a package has does not depend on
/// the kernel in any real recipe; it is evaluated for kernel "any" with no
/// headers.
pub(crate) fn dkms_module_names(package: &Path) -> Result<Vec<String>> {
    let dir = if package.is_dir() {
        package.to_path_buf()
    } else {
        package.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let source =
        kmodkit_rebuild::conf::Source::open(&dir).map_err(|e| UsageError(e.to_string()))?;
    if !source.dkms {
        return Err(UsageError(format!(
            "{}: no dkms.conf; name the modules with --module",
            dir.display()
        ))
        .into());
    }
    let scratch = crate::host::scratch_dir("kmodkit-status.")?;
    let cx = kmodkit_rebuild::conf::EvalContext {
        root: Path::new("/"),
        kernel: "any",
        arch: "x86_64",
        kernel_source_dir: scratch.path(),
        dkms_tree: scratch.path(),
    };
    let recipe = kmodkit_rebuild::conf::Recipe::evaluate(&source, &cx)
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(recipe
        .modules
        .iter()
        .map(|m| m.dest_name.replace('-', "_"))
        .collect())
}

/// The package's module names from `--module` and the package directory.
pub(crate) fn package_modules(modules: &[String], package: Option<&Path>) -> Result<Vec<String>> {
    let mut out = modules.to_vec();
    if let Some(p) = package {
        out.extend(dkms_module_names(p)?);
    }
    if out.is_empty() {
        return Err(UsageError(
            "name the package: its DKMS source directory (PACKAGE_DIR) or --module NAME"
                .to_string(),
        )
        .into());
    }
    Ok(out)
}

pub fn run(args: &StatusArgs) -> Result<u8> {
    let modules = package_modules(&args.modules, args.package.as_deref())?;
    let kernels = if args.kernels.is_empty() {
        kmodkit_abi::weak::installed_kernels(&args.root)
    } else {
        args.kernels.clone()
    };
    if kernels.is_empty() {
        return Err(UsageError(format!(
            "no kernel installed under {} (no {}/lib/modules/*)",
            args.root.display(),
            args.root.display()
        ))
        .into());
    }
    for k in &kernels {
        if let Some(msg) = kmodkit_depmod::installed::not_installed(&args.root, k) {
            return Err(UsageError(msg).into());
        }
    }
    let config_dirs = root_config_dirs(&args.root);
    let req = StatusRequest {
        root: &args.root,
        kernels: &kernels,
        modules: &modules,
        config_dirs: &config_dirs,
    };
    let result = status(&req).context("checking the package")?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.json {
        let doc = serde_json::json!({ "root": args.root, "kernels": result });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &result)?;
    }
    out.flush()?;
    Ok(if result.iter().any(KernelStatus::needs_action) {
        1
    } else {
        0
    })
}

fn print_table(out: &mut impl Write, result: &[KernelStatus]) -> Result<()> {
    let kw = result
        .iter()
        .map(|k| k.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mw = result
        .iter()
        .flat_map(|k| k.modules.iter().map(|m| m.name.len()))
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(
        out,
        "{:kw$}  {:mw$}  {:9}  {:8}  {:9}  FILE",
        "KERNEL", "MODULE", "LOADS", "ACCEPTED", "ACTION"
    )?;
    for k in result {
        for m in &k.modules {
            let (kind, file) = match &m.loads {
                Loads::Vendor { path } => ("vendor", path.display().to_string()),
                Loads::WeakLink { path, target } => (
                    "weak-link",
                    format!("{} -> {}", path.display(), target.display()),
                ),
                Loads::InTree { path } => ("in-tree", path.display().to_string()),
                Loads::Nothing => ("nothing", "-".to_string()),
            };
            let accepted = match m.accepted {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            let action = match m.action {
                Action::None => "none",
                Action::WeakLink => "weak-link",
                Action::Rebuild => "REBUILD",
                Action::Unknown => "UNKNOWN",
            };
            writeln!(
                out,
                "{:kw$}  {:mw$}  {kind:9}  {accepted:8}  {action:9}  {file}",
                k.kernel, m.name
            )?;
            if m.action != Action::None {
                writeln!(out, "    {}: {}", action.to_lowercase(), m.why)?;
            }
        }
    }
    let need = result.iter().filter(|k| k.needs_action()).count();
    writeln!(out, "{} of {} kernels need an action", need, result.len())?;
    Ok(())
}
