//! `kmodkit rebuild`: vendor driver sources rebuilt for new kernels, only
//! where the ABI broke.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use kmodkit_rebuild::conf::{EvalContext, Recipe, Source};
use kmodkit_rebuild::kernel::KernelEnv;
use kmodkit_rebuild::run::{self, Action, Outcome, Progress};

use crate::UsageError;

#[derive(Debug, Args)]
#[command(
    long_about = "Rebuild out-of-tree module sources for kernels — only where the kernel would refuse \
what is installed.\n\n\
Sources are DKMS trees (ROOT/usr/src/NAME-VERSION/dkms.conf, evaluated as DKMS does: MAKE/MAKE_MATCH, \
PATCH/PATCH_MATCH, BUILT_/DEST_MODULE_NAME/LOCATION, STRIP, PRE_/POST_BUILD, BUILD_DEPENDS, \
BUILD_EXCLUSIVE_*, /etc/dkms overrides) or plain Kbuild directories. Without --src, every DKMS tree under \
ROOT/usr/src with AUTOINSTALL=yes is built, packages before the ones that BUILD_DEPENDS on them; a \
dependent gets its dependency's Module.symvers through KBUILD_EXTRA_SYMBOLS.\n\n\
For each (package, kernel): a BUILD_EXCLUSIVE mismatch is a reported skip; a build installed from the \
same inputs (source content, recipe, the kernel's .config, Module.symvers and compiler) is up to date; a \
build installed for another kernel that this kernel's loader accepts (struct module size, vermagic, every \
symbol CRC — `kmodkit abi check`) is linked through weak-updates, not rebuilt (--force rebuilds); \
otherwise it is built — from the build cache when the same inputs were built before.\n\n\
All builds of a run run at once in private directories, under one GNU make jobserver of --jobs slots \
(never -j times the number of builds). Each build's log is kept; a failure names the package, kernel, \
log and first error line, and the other builds go on. Modules are stripped (STRIP), signed (--key/--cert, \
or DKMS's MOK ROOT/var/lib/dkms/mok.key + mok.pub) and compressed like the kernel's own modules, then \
installed with the module index regenerated as one atomic step per kernel; the initramfs is rebuilt \
only when it holds a changed module.",
    after_help = "Exit status: 0 everything needed was done (or nothing was needed), 1 a build or \
install failed (the others were still done), 2 usage error.\n\n\
Examples:\n  kmodkit rebuild --kernel 6.1.0-57-amd64 --dry-run\n  kmodkit signing-key create && kmodkit rebuild --all-kernels\n  kmodkit rebuild --root /srv/node-image \\\n    --src /srv/node-image/usr/src/mlnx-ofed-kernel-24.10 \\\n    --kernel 6.12.117+deb12-amd64\n  kmodkit rebuild --json | jq '.outcomes[] | select(.action == \"failed\")'"
)]
pub struct RebuildArgs {
    /// Root of the system to build for (its kernels, headers, /usr/src, /etc/dkms)
    #[arg(
        long,
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// A DKMS source tree (with dkms.conf) or Kbuild directory; repeatable (default: every
    /// ROOT/usr/src/*/dkms.conf with AUTOINSTALL=yes)
    #[arg(long = "src", value_name = "DIR")]
    pub sources: Vec<PathBuf>,
    /// Kernel release to build for; repeatable (default: the newest kernel under ROOT with headers)
    #[arg(short = 'k', long = "kernel", value_name = "KVER")]
    pub kernels: Vec<String>,
    /// Build for every kernel under ROOT that has headers
    #[arg(long, conflicts_with = "kernels")]
    pub all_kernels: bool,
    /// Job slots shared by every make of the run (default: the number of CPUs)
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Rebuild even where another kernel's build would load
    #[arg(long)]
    pub force: bool,
    /// Say what would be built and why; build and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Do not reuse earlier builds with the same inputs
    #[arg(long)]
    pub no_cache: bool,
    /// Build cache directory (default: ROOT/var/cache/kmodkit/rebuild)
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Private key to sign modules with (PEM; default: ROOT/var/lib/dkms/mok.key when present)
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// X.509 certificate of --key (DER or PEM; default: ROOT/var/lib/dkms/mok.pub)
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// File holding the password of an encrypted --key (else $KBUILD_SIGN_PIN, as sign-file)
    #[arg(long, value_name = "FILE")]
    pub key_password_file: Option<PathBuf>,
    /// Do not sign modules, even when a key is found
    #[arg(long, conflicts_with_all = ["key", "cert"])]
    pub no_sign: bool,
    /// Where modules go under lib/modules/KVER (default: the distribution's — updates/dkms on
    /// Debian and Ubuntu, extra on RHEL and Fedora, updates on SUSE)
    #[arg(long, value_name = "DIR")]
    pub dest_dir: Option<String>,
    /// Architecture of the targets (`uname -m`, DKMS's $arch)
    #[arg(long, default_value = "x86_64")]
    pub arch: String,
    /// Do not rebuild initramfs images
    #[arg(long)]
    pub no_initramfs: bool,
    /// Do not link compatible builds through weak-updates
    #[arg(long)]
    pub no_weak_modules: bool,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Package what was built (kmod-NAME / NAME-modules-KVER and
    /// NAME-kernel-only per target kernel) into the repository --repo DIR
    /// and regenerate its signed metadata (`kmodkit package`, `kmodkit repo`)
    #[arg(long, requires = "repo")]
    pub package: bool,
    /// The repository directory for --package
    #[arg(long, value_name = "DIR", requires = "package")]
    pub repo: Option<PathBuf>,
    /// Name of the NAME-kernel-only set (default: the package's name when
    /// one package was rebuilt)
    #[arg(long, value_name = "NAME", requires = "package")]
    pub name: Option<String>,
    #[command(flatten)]
    pub packaging: crate::package::PackagingArgs,
}

struct Lines {
    json: bool,
}

fn describe(o: &Outcome) -> String {
    let what = match o.action {
        Action::Excluded => "skipped",
        Action::UpToDate => "up to date",
        Action::Compatible => "linked",
        Action::Cached => "installed from cache",
        Action::Built => "built",
        Action::Failed => "FAILED",
        Action::WouldBuild => "would build",
        Action::WouldLink => "would link",
    };
    let mut s = format!("{} {} for {}: {what}", o.package, o.version, o.kernel);
    if let Some(t) = o.seconds.filter(|t| *t >= 0.0) {
        s.push_str(&format!(" in {t:.1} s"));
    }
    if !o.reason.is_empty() {
        s.push_str(&format!(" ({})", o.reason));
    }
    if let Some(e) = &o.error {
        s.push_str(&format!(": {e}"));
    }
    s
}

impl Progress for Lines {
    fn build_started(&self, package: &str, kernel: &str, log: &Path) {
        diag!(
            "rebuild: building {package} for {kernel} (log: {})",
            log.display()
        );
    }
    fn build_finished(&self, o: &Outcome) {
        if !self.json || o.action == Action::Failed {
            diag!("rebuild: {}", describe(o));
        }
    }
    fn installed(&self, kernel: &str, modules: usize) {
        diag!("rebuild: installed {modules} module(s) for {kernel} and regenerated its index");
    }
}

fn read_password(args: &RebuildArgs) -> Result<Option<Vec<u8>>> {
    if let Some(f) = &args.key_password_file {
        let mut p = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        while p.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            p.pop();
        }
        return Ok(Some(p));
    }
    Ok(std::env::var_os("KBUILD_SIGN_PIN").map(|v| v.into_encoded_bytes()))
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        PathBuf::from(crate::host::current_dir_name()).join(p)
    }
}

pub fn run(args: &RebuildArgs) -> Result<bool> {
    let root = absolute(&args.root);
    let root = root.as_path();
    if !root.join("lib/modules").is_dir() {
        return Err(UsageError(format!(
            "{}: no lib/modules (give the root of a system with --root)",
            root.display()
        ))
        .into());
    }
    let kernels: Vec<String> = if !args.kernels.is_empty() {
        args.kernels.clone()
    } else {
        let with = KernelEnv::with_headers(root);
        if with.is_empty() {
            anyhow::bail!(
                "no kernel under {} has headers (lib/modules/K/build); install the headers of the kernel to build for (e.g. linux-headers-K) or name it with --kernel",
                root.display()
            );
        }
        if args.all_kernels {
            with
        } else {
            with.last().cloned().into_iter().collect()
        }
    };
    // Sources: given, or every autoinstall DKMS tree under the root.
    let sources: Vec<Source> = if args.sources.is_empty() {
        let first = KernelEnv::open(root, &kernels[0])?;
        let scratch = crate::host::scratch_dir("kmodkit-rebuild-conf.")?;
        let mut out = Vec::new();
        for s in Source::all_dkms(root) {
            let cx = EvalContext {
                root,
                kernel: &first.release,
                arch: &args.arch,
                kernel_source_dir: &first.headers,
                dkms_tree: scratch.path(),
            };
            if Recipe::evaluate(&s, &cx)?.autoinstall {
                out.push(s);
            }
        }
        if out.is_empty() {
            anyhow::bail!(
                "no DKMS source tree with AUTOINSTALL=yes under {}; name sources with --src",
                root.join("usr/src").display()
            );
        }
        out
    } else {
        args.sources
            .iter()
            .map(|d| Source::open(&absolute(d)).map_err(anyhow::Error::from))
            .collect::<Result<_>>()?
    };

    // Signing: the given pair, or DKMS's MOK under the root.
    let mok = (
        root.join("var/lib/dkms/mok.key"),
        root.join("var/lib/dkms/mok.pub"),
    );
    let key_pair: Option<(PathBuf, PathBuf)> = if args.no_sign {
        None
    } else if let (Some(k), Some(c)) = (&args.key, &args.cert) {
        Some((k.clone(), c.clone()))
    } else if mok.0.is_file() && mok.1.is_file() {
        Some(mok)
    } else {
        None
    };
    let signer = match &key_pair {
        Some((k, c)) => Some(crate::signing::Signer::load(
            k,
            c,
            read_password(args)?.as_deref(),
        )?),
        None => None,
    };
    let sign_fn = |raw: &[u8], env: &KernelEnv| -> std::result::Result<Vec<u8>, String> {
        match &signer {
            Some(s) => s.sign(raw, env.sig_hash.as_deref()),
            None if env.sig_force => Err(format!(
                "kernel {} refuses unsigned modules (CONFIG_MODULE_SIG_FORCE=y): give --key and --cert",
                env.release
            )),
            None => Ok(raw.to_vec()),
        }
    };
    let compress_fn = |data: &[u8], how| crate::signing::compress(data, how);

    let scratch = crate::host::scratch_dir("kmodkit-rebuild.")?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = run::Options {
        root: root.to_path_buf(),
        sources,
        kernels,
        arch: args.arch.clone(),
        jobs,
        force: args.force,
        dry_run: args.dry_run,
        use_cache: !args.no_cache,
        cache_dir: args
            .cache
            .clone()
            .unwrap_or_else(|| root.join("var/cache/kmodkit/rebuild")),
        work_dir: scratch.path().to_path_buf(),
        log_dir: root.join("var/lib/kmodkit/rebuild/log"),
        dest_dir: args.dest_dir.clone().unwrap_or_else(|| {
            kmodkit_rebuild::kernel::Distribution::of(root)
                .module_dest()
                .to_string()
        }),
        sign: Some(&sign_fn),
        compress: &compress_fn,
        weak_links: !args.no_weak_modules,
        depmod_cache: Some(kmodkit_abi::weak::default_cache_dir(root)),
    };
    let progress = Lines { json: args.json };
    let report = run::run(&opts, &progress)?;
    drop(scratch);

    let mut ok = !report.failed();
    if !args.no_initramfs {
        for (kernel, changed) in &report.changed {
            if let Err(e) =
                crate::weak_modules::rebuild_initramfs(root, kernel, changed, args.dry_run)
            {
                diag!("rebuild: {kernel}: {e:#}");
                ok = false;
            }
        }
    }
    let packaged = match (&args.repo, args.dry_run) {
        (Some(repo), false) if ok => Some(package_report(args, root, repo, &report)?),
        _ => None,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        if let Some((written, idx, nodes)) = &packaged {
            #[derive(serde::Serialize)]
            struct J<'a> {
                #[serde(flatten)]
                rebuild: &'a run::Report,
                packages: &'a [crate::package::Written],
                repository: &'a crate::package::Indexed,
                nodes: &'a [String],
            }
            serde_json::to_writer_pretty(
                &mut out,
                &J {
                    rebuild: &report,
                    packages: written,
                    repository: idx,
                    nodes,
                },
            )?;
            writeln!(out)?;
            return Ok(ok);
        }
        serde_json::to_writer_pretty(&mut out, &report)?;
        writeln!(out)?;
    } else {
        for o in &report.outcomes {
            writeln!(out, "{}", describe(o))?;
            if o.action == Action::Failed {
                if let Some(log) = &o.log {
                    if log.is_file() {
                        writeln!(out, "  log: {}", log.display())?;
                    }
                }
            }
        }
        if let Some((written, idx, nodes)) = &packaged {
            for w in written {
                writeln!(out, "packaged {} {} ({:?})", w.package, w.version, w.format)?;
            }
            writeln!(
                out,
                "repository {}: {} rpm, {} deb, {}",
                idx.dir.display(),
                idx.rpm_packages,
                idx.deb_packages,
                if idx.signed {
                    "signed"
                } else {
                    "UNSIGNED (no --gpg-key)"
                }
            )?;
            writeln!(out, "On the nodes:")?;
            for n in nodes {
                writeln!(out, "  {n}")?;
            }
        }
    }
    Ok(ok)
}

/// `--package --repo DIR`: per target kernel, the builds this run
/// installed (built, from cache, or already up to date) as one set each;
/// modules linked through weak-updates are served by the package of the
/// kernel they were built for.
fn package_report(
    args: &RebuildArgs,
    root: &Path,
    repo: &Path,
    report: &run::Report,
) -> Result<(
    Vec<crate::package::Written>,
    crate::package::Indexed,
    Vec<String>,
)> {
    let repo = absolute(repo);
    let key = crate::package::load_key(&args.packaging, root)?;
    let mut kernels: Vec<&str> = report.outcomes.iter().map(|o| o.kernel.as_str()).collect();
    kernels.sort();
    kernels.dedup();
    let mut written = Vec::new();
    let mut names = Vec::new();
    for kernel in kernels {
        let wanted: Vec<String> = report
            .outcomes
            .iter()
            .filter(|o| {
                o.kernel == kernel
                    && matches!(o.action, Action::Built | Action::Cached | Action::UpToDate)
            })
            .map(|o| format!("{}/{}", o.package, o.version))
            .collect();
        for o in report
            .outcomes
            .iter()
            .filter(|o| o.kernel == kernel && o.action == Action::Compatible)
        {
            diag!(
                "rebuild: {} {} for {kernel} is the build of another kernel (weak-updates): its package for that kernel serves it",
                o.package, o.version
            );
        }
        if wanted.is_empty() {
            continue;
        }
        let sets =
            crate::package::sets_from_records(root, kernel, &wanted, &args.packaging.release)?;
        let name = crate::package::set_name(args.name.as_deref(), &sets, kernel)?;
        let abi = crate::package::kernel_abi(&args.packaging, root, kernel, None)?;
        written.extend(crate::package::package_sets(
            &sets,
            &abi,
            &name,
            &repo,
            &args.packaging,
            key.as_ref(),
        )?);
        names.push(format!("{name}-kernel-only"));
    }
    names.sort();
    names.dedup();
    let idx = crate::package::index(&repo, &args.packaging, key.as_ref(), "stable", "main")?;
    let url = args
        .packaging
        .url
        .clone()
        .unwrap_or_else(|| crate::package::file_url(&repo));
    let nodes = crate::package::node_commands(&idx, &url, &names.join(" "));
    Ok((written, idx, nodes))
}
