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
// TODO(lead): replace with kmodkit_rebuild::conf once it lands on main;
// this reads literal values only (no shell expansion, no MAKE_MATCH).
pub(crate) fn dkms_module_names(package: &Path) -> Result<Vec<String>> {
    let conf = if package.is_dir() {
        package.join("dkms.conf")
    } else {
        package.to_path_buf()
    };
    let text = std::fs::read_to_string(&conf)
        .map_err(|e| UsageError(format!("{}: cannot read dkms.conf: {e}", conf.display())))?;
    let mut built: std::collections::BTreeMap<u32, String> = Default::default();
    let mut dest: std::collections::BTreeMap<u32, String> = Default::default();
    for line in text.lines() {
        let line = line.trim();
        for (key, map) in [
            ("BUILT_MODULE_NAME[", &mut built),
            ("DEST_MODULE_NAME[", &mut dest),
        ] {
            let Some(rest) = line.strip_prefix(key) else {
                continue;
            };
            let Some((idx, value)) = rest.split_once("]=") else {
                continue;
            };
            let Ok(idx) = idx.parse::<u32>() else {
                continue;
            };
            let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
            if !value.is_empty() {
                map.insert(idx, value.to_string());
            }
        }
    }
    if built.is_empty() {
        return Err(UsageError(format!(
            "{}: no BUILT_MODULE_NAME[n] assignment; name the modules with --module",
            conf.display()
        ))
        .into());
    }
    Ok(built
        .iter()
        .map(|(i, b)| dest.get(i).unwrap_or(b).clone())
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
