//! `kmodkit weak-modules`: a drop-in for RHEL's `weak-modules` script.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kmodkit_abi::weak::{self, Plan};
use kmodkit_inject::generator::Generator;
use kmodkit_inject::image::ImageFacts;

#[derive(Debug, Args)]
#[command(
    long_about = "Keep out-of-tree modules working across kernels (RHEL's weak-modules). A module built for \
kernel A lives in /lib/modules/A/extra/; for every other installed kernel K whose loader would accept it \
(checked as `kmodkit abi check` does: struct module size, vermagic, every symbol CRC against the provider K \
would use), it is linked as /lib/modules/K/weak-updates/<path>. The newest compatible build wins; \
interdependent modules are accepted or refused together; K's module index is regenerated in-process and the \
links and index change as one atomic step. The initramfs is rebuilt only when a changed module is in it.\n\n\
Module lists (--add-modules, --remove-modules) are read from standard input, one path per line.",
    after_help = "Examples:\n  echo /lib/modules/5.14.0-362.el9.x86_64/extra/mlnx-en/mlx4_core.ko | \\\n    kmodkit weak-modules --add-modules\n  kmodkit weak-modules --add-kernel 5.14.0-427.el9.x86_64 --dry-run --verbose\n  kmodkit weak-modules --remove-kernel 5.14.0-362.el9.x86_64"
)]
pub struct WeakModulesArgs {
    /// Link compatible kernels to the modules listed on stdin
    #[arg(long, group = "action")]
    pub add_modules: bool,
    /// Remove the links to the modules listed on stdin (and offer older builds instead)
    #[arg(long, group = "action")]
    pub remove_modules: bool,
    /// Link every compatible module for a newly installed kernel (default: the running kernel)
    #[arg(long, group = "action", value_name = "KVER", num_args = 0..=1, default_missing_value = "")]
    pub add_kernel: Option<String>,
    /// Remove the weak-updates links of a kernel being removed (default: the running kernel)
    #[arg(long, group = "action", value_name = "KVER", num_args = 0..=1, default_missing_value = "")]
    pub remove_kernel: Option<String>,
    /// Say what would be done; write nothing at all
    #[arg(long)]
    pub dry_run: bool,
    /// Say what is done and why modules are refused
    #[arg(short, long)]
    pub verbose: bool,
    /// Do not rebuild initramfs images
    #[arg(long)]
    pub no_initramfs: bool,
    /// Root of the system to work on
    #[arg(long, visible_alias = "root", value_name = "DIR", default_value = "/")]
    pub basedir: PathBuf,
    /// Write ROOT/etc/depmod.d/kmodkit-weak-updates.conf (search updates weak-updates built-in), so
    /// depmod prefers the weak-updates links over in-tree modules of the same name, and regenerate the
    /// index of every kernel that has links
    #[arg(long, group = "action")]
    pub write_depmod_conf: bool,
}

/// The kernel a module path belongs to: `.../lib/modules/<K>/...`.
fn kernel_of(path: &Path) -> Option<String> {
    let s = path.to_string_lossy();
    let rest = s.split("/lib/modules/").nth(1)?;
    rest.split('/').next().map(str::to_string)
}

/// Reads the module list. A path that is not a file is an error for
/// `--add-modules`. For `--remove-modules` it is expected: RHEL's kmod
/// packages call it from `%postun`, after the files are gone. There it is
/// fine when a weak-updates link still names it, said on stderr when it is
/// under an installed kernel's directory but nothing names it (a module
/// that was never linked anywhere), and an error otherwise.
fn read_stdin_paths(root: &Path, removing: bool) -> Result<Vec<PathBuf>> {
    let stdin = std::io::stdin();
    let mut out = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.context("reading the module list from standard input")?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p = PathBuf::from(line);
        // Paths name the installed system; under --basedir they live below it.
        let p = if root != Path::new("/") && p.is_absolute() && !p.starts_with(root) {
            root.join(p.strip_prefix("/").unwrap_or(&p))
        } else {
            p
        };
        out.push(p);
    }
    let linked: BTreeSet<PathBuf> = if removing {
        weak::installed_kernels(root)
            .iter()
            .flat_map(|k| {
                weak::current_links(root, &root.join("lib/modules").join(k)).into_values()
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let installed: BTreeSet<String> = weak::installed_kernels(root).into_iter().collect();
    let mut missing = Vec::new();
    for p in out.iter().filter(|p| !p.is_file() && !linked.contains(*p)) {
        let known_kernel = kernel_of(p).is_some_and(|k| installed.contains(&k));
        if removing && known_kernel {
            diag!(
                "weak-modules: {} is gone and no weak-updates link names it; nothing to remove for it",
                p.display()
            );
        } else {
            missing.push(p.display().to_string());
        }
    }
    if !missing.is_empty() {
        let under = if root == Path::new("/") {
            String::new()
        } else {
            format!(
                " (under --basedir, /lib/modules/... is read as {}/lib/modules/...)",
                root.display()
            )
        };
        anyhow::bail!(
            "no such module file{}: {}{under}; give the paths of installed .ko files, one per line{}",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if removing {
                ", or of removed ones under an installed kernel's /lib/modules/K/"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

/// The kernel an option names (the running one when the option has no
/// value), which must be installed under `root`.
fn installed_kernel(root: &Path, named: &str) -> Result<String> {
    let k = if named.is_empty() {
        crate::host::running_kernel_release("name the kernel")?
    } else {
        named.to_string()
    };
    if let Some(msg) = kmodkit_depmod::installed::not_installed(root, &k) {
        anyhow::bail!("{msg}");
    }
    Ok(k)
}

pub fn run(args: &WeakModulesArgs) -> Result<bool> {
    let root = args.basedir.as_path();
    let (kernels, exclude): (Vec<String>, BTreeSet<PathBuf>) = if let Some(k) = &args.remove_kernel
    {
        let k = installed_kernel(root, k)?;
        if args.dry_run {
            let links = weak::current_links(root, &root.join("lib/modules").join(&k));
            writeln!(
                std::io::stdout().lock(),
                "would remove {} weak-updates links of {k}",
                links.len()
            )?;
        } else {
            let n = weak::remove_kernel_links(root, &k)?;
            if args.verbose {
                writeln!(
                    std::io::stdout().lock(),
                    "removed {n} weak-updates links of {k}"
                )?;
            }
        }
        return Ok(true);
    } else if let Some(k) = &args.add_kernel {
        let k = installed_kernel(root, k)?;
        (vec![k], BTreeSet::new())
    } else if args.write_depmod_conf {
        let any = weak::installed_kernels(root)
            .into_iter()
            .next()
            .unwrap_or_default();
        if args.dry_run {
            writeln!(
                std::io::stdout().lock(),
                "would write {} with: {}",
                root.join("etc/depmod.d")
                    .join(weak::DEPMOD_CONF_NAME)
                    .display(),
                weak::DEPMOD_CONF.lines().last().unwrap_or_default()
            )?;
        } else {
            let path = weak::write_depmod_conf(root, &any)?;
            writeln!(std::io::stdout().lock(), "wrote {}", path.display())?;
        }
        let kernels = weak::installed_kernels(root)
            .into_iter()
            .filter(|k| !weak::current_links(root, &root.join("lib/modules").join(k)).is_empty())
            .collect();
        (kernels, BTreeSet::new())
    } else if args.add_modules || args.remove_modules {
        let modules = read_stdin_paths(root, args.remove_modules)?;
        let own: BTreeSet<String> = modules.iter().filter_map(|p| kernel_of(p)).collect();
        let kernels = weak::installed_kernels(root)
            .into_iter()
            .filter(|k| !own.contains(k))
            .collect();
        let exclude = if args.remove_modules {
            modules.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        (kernels, exclude)
    } else {
        anyhow::bail!("say what to do: --add-modules, --remove-modules, --add-kernel or --remove-kernel (see --help)");
    };

    let builds = weak::builds(root, &exclude);
    let mut ok = true;
    for k in &kernels {
        if !args.dry_run && weak::recover(root, k)? {
            diag!("weak-modules: {k}: completed an interrupted update");
        }
        let plan = match weak::plan(root, k, &builds) {
            Ok(p) => p,
            // The kernel asked for by --add-kernel cannot be skipped: its
            // modules would silently not load.
            Err(kmodkit_abi::weak::WeakError::Target(e)) if args.add_kernel.is_some() => {
                diag!("weak-modules: {k}: {:#}", anyhow::Error::from(e));
                ok = false;
                continue;
            }
            Err(kmodkit_abi::weak::WeakError::Target(e)) => {
                diag!("weak-modules: skipping {k}: {:#}", anyhow::Error::from(e));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        report(root, &plan, args)?;
        // After --write-depmod-conf the links stay and the index changes.
        if !plan.is_change() && !args.write_depmod_conf {
            continue;
        }
        if !args.dry_run {
            let cache = weak::default_cache_dir(root);
            weak::apply(root, &plan, Some(&cache))
                .with_context(|| format!("updating weak-updates of {k}"))?;
        }
        if !args.no_initramfs {
            if let Err(e) = rebuild_initramfs(root, k, &plan.changed_modules(), args.dry_run) {
                diag!("weak-modules: {k}: {e:#}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

/// The headline of one refusal: what a user must do about it.
fn refusal_kind(v: &kmodkit_abi::Verdict) -> String {
    use kmodkit_abi::Reason;
    let first = v
        .reasons
        .iter()
        .find(|r| !matches!(r, Reason::Dependency { .. }))
        .or(v.reasons.first());
    match first {
        Some(Reason::Crc { symbol, .. }) if symbol == "module_layout" => {
            "module_layout differs — rebuild needed".into()
        }
        Some(Reason::Crc { .. }) => "symbol versions differ — rebuild needed".into(),
        Some(Reason::StructModuleSize { .. }) => {
            "struct module size differs — rebuild needed".into()
        }
        Some(Reason::Vermagic { .. }) => "version magic differs — rebuild needed".into(),
        Some(Reason::UnknownSymbol { .. }) => {
            "needs symbols the kernel does not export — rebuild needed".into()
        }
        Some(Reason::GplOnly { .. }) => "uses GPL-only symbols with a non-GPL license".into(),
        Some(Reason::Namespace { .. }) => "uses a symbol namespace it does not import".into(),
        Some(Reason::Dependency { .. }) => "needs a module that is refused".into(),
        Some(Reason::Unreadable { .. }) => "cannot be read as a module".into(),
        None => "refused".into(),
    }
}

fn report(root: &Path, plan: &Plan, args: &WeakModulesArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let verb = if args.dry_run { "would " } else { "" };
    let dir = format!("/lib/modules/{}/weak-updates", plan.kernel);
    if root != Path::new("/") || args.verbose {
        let files: Vec<String> = plan
            .config
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        writeln!(
            out,
            "{}: depmod configuration: {} (modprobe.d changes no decision here)",
            plan.kernel,
            if files.is_empty() {
                format!(
                    "none in {}, kmod's default search order",
                    if root == Path::new("/") {
                        "/etc/depmod.d, /run/depmod.d, /usr/local/lib/depmod.d, /lib/depmod.d"
                            .to_string()
                    } else {
                        format!("{}/{{etc,run,usr/local/lib,lib}}/depmod.d", root.display())
                    }
                )
            } else {
                files.join(", ")
            }
        )?;
    }
    for (rel, target) in &plan.links {
        if plan.current.get(rel) != Some(target) {
            writeln!(
                out,
                "{verb}link {dir}/{rel} -> {}",
                weak::in_root(root, target).display()
            )?;
        }
    }
    for (rel, target) in &plan.current {
        if !plan.links.contains_key(rel) {
            writeln!(
                out,
                "{verb}unlink {dir}/{rel} (was -> {})",
                weak::in_root(root, target).display()
            )?;
        }
    }
    // Modules with no accepted build: one line, the commonest reason first.
    let linked: BTreeSet<&str> = plan.accepted.iter().map(|v| v.name.as_str()).collect();
    let mut last: std::collections::BTreeMap<&str, &kmodkit_abi::Verdict> = Default::default();
    for v in &plan.refused {
        if !linked.contains(v.name.as_str()) {
            last.entry(v.name.as_str()).or_insert(v);
        }
    }
    if !last.is_empty() {
        let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
        for v in last.values() {
            *kinds.entry(refusal_kind(v)).or_default() += 1;
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let others: usize = kinds.iter().skip(1).map(|k| k.1).sum();
        writeln!(
            out,
            "{}: {} refused: {}{}{}",
            plan.kernel,
            last.len(),
            kinds[0].0,
            if others > 0 {
                format!(" ({others} for other reasons)")
            } else {
                String::new()
            },
            if args.verbose {
                ""
            } else {
                " (-v lists every reason)"
            }
        )?;
    }
    // Links that modules.dep will not use: an in-tree module of the same
    // name wins under the target's search order.
    let shadowed: Vec<&kmodkit_abi::Verdict> = plan
        .accepted
        .iter()
        .filter(|v| v.shadowed_by.is_some())
        .collect();
    if !shadowed.is_empty() && !weak::weak_updates_ranked(&plan.config) {
        writeln!(
            out,
            "{}: {} of {} linked modules will not be used: depmod's search order ranks in-tree modules above weak-updates, so modules.dep keeps {}; fix: kmodkit weak-modules{} --write-depmod-conf (writes {}/etc/depmod.d/{}: {})",
            plan.kernel,
            shadowed.len(),
            plan.links.len(),
            shadowed
                .iter()
                .map(|v| weak::in_root(root, Path::new(v.shadowed_by.as_deref().unwrap_or_default()))
                    .display()
                    .to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if root == Path::new("/") {
                String::new()
            } else {
                format!(" --basedir {}", root.display())
            },
            if root == Path::new("/") {
                String::new()
            } else {
                root.display().to_string()
            },
            weak::DEPMOD_CONF_NAME,
            weak::DEPMOD_CONF.lines().last().unwrap_or_default()
        )?;
    }
    if args.verbose {
        for v in &plan.refused {
            writeln!(
                out,
                "{}: refused {} for {}:",
                plan.kernel,
                v.path.display(),
                v.name
            )?;
            for r in &v.reasons {
                writeln!(out, "    - {r}")?;
            }
        }
        for rel in &plan.native {
            writeln!(
                out,
                "{}: ships its own extra/{rel}; not linked",
                plan.kernel
            )?;
        }
    }
    Ok(())
}

/// Module names inside an initramfs image (from its paths).
fn image_modules(facts: &ImageFacts) -> BTreeSet<String> {
    facts
        .nodes
        .keys()
        .filter_map(|name| {
            kmodkit_index::name::is_module_file(name)
                .then(|| kmodkit_index::name::module_name_from_path(Path::new(name)))
                .flatten()
        })
        .collect()
}

/// Rebuilds K's initramfs when a changed module is in it, with the tool
/// that made the image (initramfs-tools' `update-initramfs` or dracut).
pub(crate) fn rebuild_initramfs(
    root: &Path,
    kernel: &str,
    changed_modules: &BTreeSet<String>,
    dry_run: bool,
) -> Result<()> {
    let candidates = [
        format!("boot/initramfs-{kernel}.img"),
        format!("boot/initrd.img-{kernel}"),
        format!("boot/initrd-{kernel}"),
    ];
    let Some(image) = candidates
        .iter()
        .map(|c| root.join(c))
        .find(|p| p.is_file())
    else {
        return Ok(());
    };
    let scratch = crate::host::scratch_dir("kmodkit-modules.")?;
    let facts = ImageFacts::read(
        &image,
        scratch.path(),
        kmodkit_initramfs::read::DEFAULT_MAX_OUTPUT,
        &kmodkit_initramfs::read::NoProgress,
    )
    .with_context(|| format!("reading {}", image.display()))?;
    let inside = image_modules(&facts);
    let changed: Vec<String> = changed_modules.intersection(&inside).cloned().collect();
    if changed.is_empty() {
        return Ok(());
    }
    let generator = Generator::detect(&facts);
    let Some(cmd) = generator.rebuild_command(kernel) else {
        writeln!(std::io::stdout().lock(), "rebuild {} by the means that made it (a {} image; kmodkit knows no command for it): it holds changed module(s) {}",
            image.display(),
            generator.name(),
            changed.join(", "))?;
        return Ok(());
    };
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let tool = words[0];
    let installed = which(tool);
    let live = root == Path::new("/");
    if dry_run || !live || installed.is_none() {
        let why = if dry_run {
            "dry run".to_string()
        } else if !live {
            "not the running system's root".to_string()
        } else {
            format!("{tool} is not installed")
        };
        writeln!(
            std::io::stdout().lock(),
            "would run: {cmd} (the {} image {} holds changed module(s) {}; {why})",
            generator.name(),
            image.display(),
            changed.join(", ")
        )?;
        return Ok(());
    }
    let status = std::process::Command::new(tool)
        .args(&words[1..])
        .status()
        .with_context(|| format!("running {cmd}"))?;
    anyhow::ensure!(status.success(), "{cmd} failed: {status}");
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}
