//! `kmodkit depmod`: kmod 30's depmod command line; the files it writes are
//! byte-identical to kmod's, replaced as one atomic set.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::host::make_absolute;
use anyhow::{bail, Result};
use clap::Args;
use kmodkit_depmod::cache::CachedOutput;
use kmodkit_depmod::{output, write, KernelSymbols, ModuleTree, TreeOptions};

#[derive(Debug, Args)]
#[command(
    long_about = "Generate modules.dep and the other module index files (modules.alias, \
modules.symbols, the .bin indexes, modules.devname, ...) for a kernel, exactly as kmod's \
depmod does. Modules are read on all cores; with --cache an unchanged tree is re-indexed \
without reading its modules again. All files are replaced as one set: an interrupted run \
leaves the previous set or the new one, never a mix.\n\n\
Arguments: [KVER] [MODULE FILES...]. Without module files every module of \
BASEDIR/lib/modules/KVER is indexed (as -a).",
    after_help = "Examples:\n  kmodkit depmod -a 6.1.0-56-amd64\n  kmodkit depmod -b /srv/node-root -a 6.12.117+deb12-amd64 --cache\n  kmodkit depmod -n -e -a $(uname -r) \\\n    -E /usr/src/linux-headers-$(uname -r)/Module.symvers 2>warnings.txt"
)]
pub struct DepmodArgs {
    /// Probe all modules (the default without module files)
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Only do the work if a module is newer than modules.dep
    #[arg(short = 'A', long = "quick")]
    pub quick: bool,
    /// Use an image of a module tree rooted at DIR
    #[arg(
        short = 'b',
        long = "basedir",
        visible_alias = "root",
        value_name = "DIR"
    )]
    pub basedir: Option<String>,
    /// Read configuration from PATH (repeatable; replaces the default depmod.d directories)
    #[arg(short = 'C', long = "config", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Use Module.symvers FILE to check symbol versions (vmlinux rows)
    #[arg(short = 'E', long = "symvers", value_name = "FILE")]
    pub symvers: Option<PathBuf>,
    /// Use System.map FILE for the kernel's own symbols
    #[arg(short = 'F', long = "filesyms", value_name = "FILE")]
    pub filesyms: Option<PathBuf>,
    /// Report symbols no module or the kernel provides, and version mismatches (needs -E or -F)
    #[arg(short = 'e', long = "errsyms")]
    pub errsyms: bool,
    /// Print the dependencies found
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Write the text files to standard output instead of the module directory
    #[arg(short = 'n', long = "show", visible_alias = "dry-run")]
    pub show: bool,
    /// Architecture symbol prefix (one character)
    #[arg(short = 'P', long = "symbol-prefix", value_name = "C")]
    pub symbol_prefix: Option<String>,
    /// Warn about duplicate index entries
    #[arg(short = 'w', long = "warn")]
    pub warn: bool,
    /// Deprecated (ignored, as kmod does)
    #[arg(short = 'u', long = "unresolved-error", hide = true)]
    pub unresolved_error: bool,
    /// Deprecated (ignored)
    #[arg(short = 'q', long = "quiet", hide = true)]
    pub quiet: bool,
    /// Deprecated (ignored); `--root DIR` is --basedir as in every kmodkit command
    #[arg(short = 'r', hide = true)]
    pub root: bool,
    /// Deprecated (ignored)
    #[arg(short = 'm', long = "map", hide = true)]
    pub map: bool,
    /// Reuse parsed modules from a cache (default DIR: ~/.cache/kmodkit/depmod)
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "")]
    pub cache: Option<PathBuf>,
    /// Print a JSON summary (modules, warnings, files, timing) on standard output
    #[arg(long, conflicts_with = "show")]
    pub json: bool,
    /// Kernel release, then optional module files (absolute paths)
    #[arg(value_name = "KVER [MODULE]")]
    pub args: Vec<String>,
}

/// `is_version_number`: "%u.%u" matches.
fn is_version_number(s: &str) -> bool {
    let mut it = s.splitn(2, '.');
    let a = it.next().unwrap_or("");
    let b = it.next().unwrap_or("");
    let num = |t: &str| {
        let t = t.trim_start();
        let t = t.strip_prefix('+').unwrap_or(t);
        t.bytes().next().is_some_and(|c| c.is_ascii_digit())
    };
    num(a) && num(b)
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cache")
        })
        .join("kmodkit/depmod")
}

fn warn(msg: impl std::fmt::Display) {
    diag!("depmod: WARNING: {msg}");
}

pub fn run(args: &DepmodArgs) -> Result<bool> {
    let started = Instant::now();
    for (flag, set) in [
        ("-u", args.unresolved_error),
        ("-q", args.quiet),
        ("-r", args.root),
        ("-m", args.map),
    ] {
        if set {
            warn(format_args!("Ignored deprecated option {flag}"));
        }
    }
    let mut positional = args.args.iter();
    let kver = match args.args.first() {
        Some(v) if is_version_number(v) => {
            positional.next();
            v.clone()
        }
        Some(v) => bail!("Bad version passed {v}"),
        None => crate::host::running_kernel_release("pass KVER")?,
    };
    let modules: Vec<PathBuf> = positional.map(PathBuf::from).collect();
    let basedir = args.basedir.as_deref().map(make_absolute);

    let mut opts = TreeOptions::new(basedir, &kver);
    opts.config_paths = args.config.clone();
    opts.kernel_symbols = match (&args.symvers, &args.filesyms) {
        (Some(s), _) => Some(KernelSymbols::Symvers(s.clone())),
        (None, Some(f)) => Some(KernelSymbols::SystemMap(f.clone())),
        _ => None,
    };
    if args.errsyms && opts.kernel_symbols.is_none() {
        warn("-e needs -E or -F");
    }
    opts.report_unresolved = args.errsyms;
    opts.symbol_prefix = match args.symbol_prefix.as_deref() {
        None => None,
        Some(p) if p.len() == 1 => Some(p.as_bytes()[0]),
        Some(_) => bail!("-P only takes a single char"),
    };
    if !(args.all || modules.is_empty()) {
        opts.modules = modules;
    } else if !modules.is_empty() && args.all {
        // kmod: -a with module files scans everything; the files are ignored.
        opts.modules = Vec::new();
    }
    opts.cache = args.cache.as_ref().map(|c| {
        if c.as_os_str().is_empty() {
            default_cache_dir()
        } else {
            c.clone()
        }
    });

    let dir = opts.module_dir();
    let dir_path = Path::new(&dir);
    if !dir_path.is_dir() {
        let root = opts.basedir.clone().unwrap_or_else(|| "/".to_string());
        if let Some(msg) = kmodkit_depmod::installed::not_installed(Path::new(&root), &kver) {
            bail!("{msg}");
        }
    }
    if args.quick && !args.show && kmodkit_depmod::index_up_to_date(dir_path) {
        return Ok(true);
    }
    if !args.show && write::recover(dir_path)? {
        warn(format_args!("{dir}: completed an interrupted index update"));
    }

    let cache_dir = opts.cache.clone();
    let mut scan = ModuleTree::scan(opts)?;
    // Fast path: an unchanged tree (same fingerprint) gets the files of the
    // last run without reading any module.
    let fingerprint = match &cache_dir {
        Some(_) => Some(scan.fingerprint()?),
        None => None,
    };
    if let (Some(cdir), Some(fp), false, false) = (&cache_dir, fingerprint, args.verbose, args.warn)
    {
        if let Some(cached) = CachedOutput::load(cdir, &dir, fp) {
            for (sev, msg) in &cached.diagnostics {
                if !(args.show && skipped_on_stdout(msg)) {
                    diag!("depmod: {sev}: {msg}");
                }
            }
            return emit(
                args,
                dir_path,
                &cached.files,
                scan.len(),
                started,
                &dir,
                &kver,
                &cached.diagnostics,
            );
        }
    }
    let tree = ModuleTree::from_scan(scan)?;
    crate::profile::steps(&tree.timings);
    for d in &tree.diagnostics {
        diag!("depmod: {}: {d}", d.severity());
    }
    if args.verbose {
        print_dependencies(&tree)?;
    }
    let t = Instant::now();
    let (files, warnings) = output::render_all(&tree)?;
    crate::profile::step("render", t);
    for w in &warnings {
        let msg = w.to_string();
        if !(args.show && skipped_on_stdout(&msg)) {
            diag!("depmod: {}: {msg}", w.severity());
        }
    }
    // kmod finds duplicate aliases while building modules.alias.bin, which
    // it skips under -n (output_aliases_bin returns early for stdout).
    if args.warn && !args.show {
        for w in duplicate_warnings(&tree) {
            warn(w);
        }
    }
    let mut diagnostics: Vec<(String, String)> = tree
        .diagnostics
        .iter()
        .map(|d| (d.severity().to_string(), d.to_string()))
        .collect();
    diagnostics.extend(
        warnings
            .iter()
            .map(|w| (w.severity().to_string(), w.to_string())),
    );
    if let (Some(cdir), Some(fp)) = (&cache_dir, fingerprint) {
        let cached = CachedOutput {
            files: files.clone(),
            diagnostics: diagnostics.clone(),
        };
        // A cache that cannot be written only costs speed next time.
        let _ = cached.store(cdir, &dir, fp);
    }
    emit(
        args,
        dir_path,
        &files,
        tree.modules.len(),
        started,
        &dir,
        &kver,
        &diagnostics,
    )
}

/// Prints (`-n`) or installs the files, and the JSON summary.
#[allow(clippy::too_many_arguments)]
fn emit(
    args: &DepmodArgs,
    dir_path: &Path,
    files: &[output::OutputFile],
    modules: usize,
    started: Instant,
    dir: &str,
    kver: &str,
    diagnostics: &[(String, String)],
) -> Result<bool> {
    if args.show {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for f in files.iter().filter(|f| f.text) {
            out.write_all(&f.contents)?;
        }
        out.flush()?;
        return Ok(true);
    }
    let t = Instant::now();
    write::write_set(dir_path, files)?;
    crate::profile::step("write", t);
    if args.json {
        let summary = serde_json::json!({
            "module_dir": dir,
            "kernel_release": kver,
            "modules": modules,
            "files": files.iter().map(|f| serde_json::json!({"name": f.name, "bytes": f.contents.len()})).collect::<Vec<_>>(),
            "diagnostics": diagnostics.iter().map(|(s, m)| serde_json::json!({"severity": s, "message": m})).collect::<Vec<_>>(),
            "seconds": started.elapsed().as_secs_f64(),
        });
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&summary)?
        )?;
    }
    Ok(true)
}

/// `-v`: kmod's "<path> needs "<symbol>": <provider path>" for the symbol
/// that first made each dependency.
fn print_dependencies(tree: &ModuleTree) -> Result<()> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for m in &tree.modules {
        let mut seen = Vec::new();
        for (sym, _, _) in &m.record.needs {
            let Some(owner) = tree.find_symbol(sym).and_then(|p| p.owner) else {
                continue;
            };
            if seen.contains(&owner) {
                continue;
            }
            seen.push(owner);
            writeln!(
                out,
                "{} needs \"{sym}\": {}",
                m.path.display(),
                tree.modules[owner].path.display()
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

/// `-w`: duplicate (alias, module) pairs, as kmod's `output_aliases_bin`
/// reports them: the alias is normalised first (`alias_normalize`: `-` to
/// `_` outside brackets), so `spi:tpm-tis-spi` repeats `spi:tpm_tis_spi`,
/// and the normalised form is printed. Aliases with an unmatched bracket
/// are never inserted.
fn duplicate_warnings(tree: &ModuleTree) -> Vec<String> {
    let mut out = Vec::new();
    for m in &tree.modules {
        let mut seen = std::collections::HashSet::new();
        for (k, v) in &m.record.info {
            if k != "alias" {
                continue;
            }
            let Ok(alias) = kmodkit_index::lookup::normalize_alias(v) else {
                continue;
            };
            if !seen.insert(alias.clone()) {
                out.push(format!(
                    "duplicate module alias:\n{alias} {}",
                    m.display_name()
                ));
            }
        }
    }
    out
}

/// Messages kmod never prints under `-n`: its builtin and alias index
/// callbacks return before reading anything when writing to stdout.
fn skipped_on_stdout(msg: &str) -> bool {
    msg.starts_with("could not open modules.builtin") || msg.starts_with("Unmatched bracket")
}
