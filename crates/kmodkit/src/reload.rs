//! `kmodkit reload`: unload a package's modules and their users on the
//! running kernel, load them again in dependency order, one line per
//! module with the kernel's own reason when it refuses one.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use kmodkit_rebuild::reload::{
    execute, plan, InstalledIndex, Kernel, Role, StepResult, SystemKernel,
};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 every module unloaded and loaded again, 1 some step \
failed (the others were still tried), 2 usage or input error.\n\nExamples:\n  \
kmodkit reload /usr/src/jool-dkms-4.1.9\n  kmodkit reload --module mlx5_core --module mlx5_ib --dry-run"
)]
pub struct ReloadArgs {
    /// A module of the package (repeatable)
    #[arg(short = 'm', long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Print the plan (unload and load order) without changing anything
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// The package's DKMS source directory (its dkms.conf names the modules)
    #[arg(value_name = "PACKAGE_DIR")]
    pub package: Option<PathBuf>,
}

pub fn run(args: &ReloadArgs) -> Result<u8> {
    let modules = crate::status::package_modules(&args.modules, args.package.as_deref())?;
    let release = crate::host::running_kernel_release("reload works on the running kernel only")?;
    let module_dir = PathBuf::from("/lib/modules").join(&release);
    let index = InstalledIndex::new(&module_dir);
    let mut kernel = SystemKernel {
        proc_modules: PathBuf::from("/proc/modules"),
        sys_module: PathBuf::from("/sys/module"),
        kmsg: PathBuf::from("/dev/kmsg"),
    };
    let loaded = kernel.loaded()?;
    let plan = plan(&modules, &loaded, &index)
        .with_context(|| format!("planning the reload on {release}"))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if args.dry_run {
        if args.json {
            let doc = serde_json::json!({ "kernel": release, "dry_run": true, "plan": plan });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        } else {
            for n in &plan.unload {
                writeln!(out, "unload {n}")?;
            }
            for s in &plan.load {
                let path = s
                    .path
                    .as_ref()
                    .map_or("(not in modules.dep)".to_string(), |p| {
                        p.display().to_string()
                    });
                writeln!(out, "load   {} ({}) {path}", s.name, role(s.role))?;
            }
        }
        out.flush()?;
        return Ok(0);
    }
    let report = execute(&plan, &mut kernel);
    if args.json {
        let doc = serde_json::json!({ "kernel": release, "ok": report.all_ok(), "report": report });
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let width = report
            .unloaded
            .iter()
            .chain(&report.loaded)
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0);
        let line = |out: &mut dyn Write, verb: &str, s: &StepResult| -> std::io::Result<()> {
            let word = if s.ok { "OK" } else { "FAILED" };
            match &s.reason {
                Some(r) if !s.ok => writeln!(out, "{verb} {:width$}  {word}  {r}", s.name),
                _ => writeln!(out, "{verb} {:width$}  {word}", s.name),
            }
        };
        for s in &report.unloaded {
            line(&mut out, "unload", s)?;
        }
        for s in &report.loaded {
            line(&mut out, "load  ", s)?;
        }
    }
    out.flush()?;
    Ok(if report.all_ok() { 0 } else { 1 })
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Package => "package",
        Role::Dependency => "dependency",
        Role::User => "user",
    }
}
