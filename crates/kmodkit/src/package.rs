//! `kmodkit package` and `kmodkit repo`: kernel-only driver packages for
//! RPM and Debian clusters, and the signed repository the nodes install
//! them from (kmodkit-package does the formats).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use kmodkit_package::pgp::RepoKey;
use kmodkit_package::rpm::{self as krpm, RpmOptions};
use kmodkit_package::{KernelAbi, ModuleSet};
use serde::Serialize;

use crate::UsageError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RHEL kABI-tracking kmod-NAME and NAME-kernel-only (.rpm)
    Rpm,
    /// NAME-modules-KVER and NAME-kernel-only (.deb)
    Deb,
}

/// What `package` and `rebuild --package` share.
#[derive(Debug, Args, Clone)]
pub struct PackagingArgs {
    /// Package formats to write (repeat or comma-separate)
    #[arg(long = "format", value_enum, value_delimiter = ',', default_values_t = [Format::Rpm, Format::Deb])]
    pub formats: Vec<Format>,
    /// The package release (RPM Release, Debian revision), never a date;
    /// the kernel is appended (RELEASE.kver.KVER) so builds for several
    /// kernels share one repository
    #[arg(long, default_value = "1", value_name = "N")]
    pub release: String,
    /// OpenPGP secret key (armored) that signs the packages and the
    /// repository; default ROOT/var/lib/kmodkit/repo-key.asc when it exists
    /// (`kmodkit signing-key create --openpgp` makes it)
    #[arg(long, value_name = "FILE")]
    pub gpg_key: Option<PathBuf>,
    /// Write unsigned packages and metadata even when a key exists
    #[arg(long, conflicts_with = "gpg_key")]
    pub no_gpg_sign: bool,
    /// How the nodes reach the repository (printed in the .repo file and
    /// the apt sources); default file://DIR
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The Packager (RPM) / Maintainer (Debian) field
    #[arg(
        long,
        value_name = "NAME <EMAIL>",
        default_value = "kmodkit <root@localhost>"
    )]
    pub packager: String,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Package out-of-tree modules as kernel-only driver packages, with the ABI \
dependencies a package manager checks before it installs them.\n\n\
Modules come from what `kmodkit rebuild` installed under ROOT for KVER (name packages, or \
all of them), or from module files given with --name and --version. For RPM: kmod-NAME \
(modules in /lib/modules/KVER/extra/NAME, `Requires: kernel(SYM) = 0xCRC` for each symbol the \
kernel exports with that CRC, `ksym(SYM)` otherwise, `Provides: kmod(M.ko)`, `ksym(SYM)` for \
the modules' exports, kmodtool's depmod and weak-modules scriptlets). For Debian: \
NAME-modules-KVER depending on linux-image-KVER. Each set also gets NAME-kernel-only, \
requiring exactly its packages.\n\n\
Packages go into the repository directory DIR (RPMs in DIR/Packages, debs in DIR/pool/main) \
and DIR's metadata is regenerated (`kmodkit repo DIR`), signed with --gpg-key. The last \
lines say what to run on the nodes.",
    after_help = "Exit status: 0 packaged, 1 a package could not be built, 2 usage or input error.\n\n\
Examples:\n  kmodkit package --kernel 6.1.0-57-amd64 --repo /srv/repo mlnx-en\n  \
kmodkit package -k 5.14.0-427.el9.x86_64 --format rpm \\\n    \
--gpg-key /etc/kmodkit/repo-key.asc --repo /srv/repo \\\n    \
--name mlnx-en --pkg-version 24.10 mlx5_core.ko mlx5_ib.ko\n  \
kmodkit package -k 6.1.0-57-amd64 --repo /srv/repo --json \\\n    \
| jq -r '.packages[].file'"
)]
pub struct PackageArgs {
    /// Root of the system the modules were installed in
    #[arg(
        long,
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// Kernel release the modules are for (default: the modules' vermagic)
    #[arg(short = 'k', long = "kernel", value_name = "KVER")]
    pub kernel: Option<String>,
    /// The kernel's Module.symvers (default: found under ROOT for KVER)
    #[arg(long, value_name = "FILE")]
    pub symvers: Option<PathBuf>,
    /// Package name for module files (and of the NAME-kernel-only set)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Package version for module files
    #[arg(
        long = "pkg-version",
        visible_alias = "version-of",
        value_name = "VERSION"
    )]
    pub pkg_version: Option<String>,
    /// The repository directory packages are written into
    #[arg(long, value_name = "DIR")]
    pub repo: PathBuf,
    /// Do not regenerate the repository metadata
    #[arg(long)]
    pub no_index: bool,
    #[command(flatten)]
    pub packaging: PackagingArgs,
    /// Print what was written as JSON
    #[arg(long)]
    pub json: bool,
    /// Rebuild records (PACKAGE or PACKAGE/VERSION) or module files (.ko, .ko.xz, ...)
    #[arg(value_name = "PACKAGE|MODULE")]
    pub items: Vec<String>,
}

#[derive(Debug, Args)]
#[command(
    long_about = "Write the repository metadata for the packages in DIR: yum/dnf `repodata/` \
for the RPMs and an apt archive (`dists/SUITE/...`) for the debs, incremental (unchanged \
packages are not read again), signed with --gpg-key (repomd.xml.asc; InRelease and \
Release.gpg), with the public key, the .repo file and the apt .sources file the nodes need.",
    after_help = "Examples:\n  kmodkit repo /srv/repo --gpg-key /etc/kmodkit/repo-key.asc \\\n    \
--url http://head/repo\n  kmodkit repo /srv/repo --json"
)]
pub struct RepoArgs {
    /// The repository directory
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Root whose default key (ROOT/var/lib/kmodkit/repo-key.asc) is used
    #[arg(
        long,
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    #[command(flatten)]
    pub packaging: PackagingArgs,
    /// apt suite (Suite and Codename of the Release file)
    #[arg(long, default_value = "stable")]
    pub suite: String,
    /// apt component
    #[arg(long, default_value = "main")]
    pub component: String,
    #[arg(long)]
    pub json: bool,
}

/// The default OpenPGP key of a root.
pub(crate) fn default_gpg_key(root: &Path) -> PathBuf {
    root.join("var/lib/kmodkit/repo-key.asc")
}

pub(crate) fn load_key(args: &PackagingArgs, root: &Path) -> Result<Option<RepoKey>> {
    if args.no_gpg_sign {
        return Ok(None);
    }
    let path = match &args.gpg_key {
        Some(p) => p.clone(),
        None => {
            let d = default_gpg_key(root);
            if !d.is_file() {
                return Ok(None);
            }
            d
        }
    };
    // A missing or unusable key is bad input (exit 2), named with its file.
    RepoKey::load(&path)
        .map(Some)
        .map_err(|e| UsageError(format!("{e:#}")).into())
}

/// One written package.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Written {
    pub format: Format,
    pub package: String,
    pub version: String,
    pub file: PathBuf,
    pub signed: bool,
}

/// Writes a package atomically, its modification time the package's own
/// time: repository metadata records file times (createrepo_c's
/// `<time file>`), so the same inputs give the same metadata.
fn write_into(dir: &Path, name: &str, bytes: &[u8], time: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(name);
    let mut staged = kmodkit_commit::Staged::new(&path)?;
    staged.set_mode(0o644)?;
    staged
        .file()
        .write_all(bytes)
        .and_then(|()| {
            staged
                .file()
                .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(time))
        })
        .with_context(|| format!("writing {}", staged.temporary_path().display()))?;
    staged.commit(kmodkit_commit::Backup::None)?;
    Ok(path)
}

/// The time stamps of this run's outputs.
fn time_of(sets: &[ModuleSet]) -> u64 {
    kmodkit_package::source_date(sets.iter().map(|s| s.newest_mtime()).max().unwrap_or(0))
}

/// The package release of a build for kernel `kver`: the given release
/// and the kernel, as MLNX_OFED names its kernel-specific builds
/// (`24.10-OFED.24.10.0.7.0.1.kver.5.14.0_427.13.1.el9_4`), so one
/// repository holds the builds for every kernel of a rolling update
/// without two packages of one name, version and release. RPM releases
/// and Debian revisions both take `.` and `+`; `-` (the separator of
/// both) becomes `_` for RPM and `.` for Debian, where `_` is not allowed.
pub(crate) fn kernel_release(release: &str, kver: &str, format: Format) -> String {
    let sep = match format {
        Format::Rpm => "_",
        Format::Deb => ".",
    };
    format!("{release}.kver.{}", kver.replace('-', sep))
}

/// Packages `sets` (one kernel) into `repo`: per format one package per
/// set and one NAME-kernel-only over all of them.
pub(crate) fn package_sets(
    sets: &[ModuleSet],
    kernel: &KernelAbi,
    set_name: &str,
    repo: &Path,
    args: &PackagingArgs,
    key: Option<&RepoKey>,
) -> Result<Vec<Written>> {
    let time = time_of(sets);
    let mut out = Vec::new();
    let version = sets[0].version.clone();
    for format in &args.formats {
        match format {
            Format::Rpm => {
                let opts = RpmOptions {
                    time,
                    key,
                    packager: Some(args.packager.clone()),
                    vendor: None,
                    url: None,
                };
                let dir = repo.join("Packages");
                let release = kernel_release(&args.release, &sets[0].kernel, Format::Rpm);
                let mut members = Vec::new();
                for set in sets {
                    let mut set = set.clone();
                    set.release = release.clone();
                    let pkg = krpm::kmod_package(&set, kernel, &opts)?;
                    let file = write_into(&dir, &pkg.file_name, &pkg.bytes, time)?;
                    out.push(Written {
                        format: Format::Rpm,
                        package: pkg.name.clone(),
                        version: pkg.evr(),
                        file,
                        signed: key.is_some(),
                    });
                    members.push(pkg);
                }
                let meta =
                    krpm::kernel_only_package(set_name, &version, &release, &members, &opts)?;
                let file = write_into(&dir, &meta.file_name, &meta.bytes, time)?;
                out.push(Written {
                    format: Format::Rpm,
                    package: meta.name.clone(),
                    version: meta.evr(),
                    file,
                    signed: key.is_some(),
                });
            }
            Format::Deb => {
                let opts = kmodkit_package::deb::DebOptions {
                    time,
                    maintainer: args.packager.clone(),
                };
                let dir = repo.join("pool/main");
                let release = kernel_release(&args.release, &sets[0].kernel, Format::Deb);
                let mut members = Vec::new();
                for set in sets {
                    let mut set = set.clone();
                    set.release = release.clone();
                    let pkg = kmodkit_package::deb::module_package(&set, &opts)?;
                    let file = write_into(&dir, &pkg.file_name, &pkg.bytes, time)?;
                    out.push(Written {
                        format: Format::Deb,
                        package: pkg.package.clone(),
                        version: pkg.version.clone(),
                        file,
                        signed: false,
                    });
                    members.push((pkg.package.clone(), pkg.version.clone()));
                }
                let meta = kmodkit_package::deb::kernel_only_package(
                    set_name, &version, &release, &members, &opts,
                )?;
                let file = write_into(&dir, &meta.file_name, &meta.bytes, time)?;
                out.push(Written {
                    format: Format::Deb,
                    package: meta.package.clone(),
                    version: meta.version.clone(),
                    file,
                    signed: false,
                });
            }
        }
    }
    Ok(out)
}

/// What `repo` wrote and what the nodes run.
#[derive(Debug, Serialize)]
pub(crate) struct Indexed {
    pub dir: PathBuf,
    pub signed: bool,
    pub rpm_packages: usize,
    pub deb_packages: usize,
    pub read: usize,
    pub reused: usize,
    pub repo_file: Option<PathBuf>,
    pub sources_file: Option<PathBuf>,
    pub public_key: Option<PathBuf>,
}

pub(crate) fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Writes DIR's metadata for every format present.
pub(crate) fn index(
    dir: &Path,
    args: &PackagingArgs,
    key: Option<&RepoKey>,
    suite: &str,
    component: &str,
) -> Result<Indexed> {
    let url = args.url.clone().unwrap_or_else(|| file_url(dir));
    let time = kmodkit_package::source_date(newest_package_mtime(dir));
    let mut idx = Indexed {
        dir: dir.to_path_buf(),
        signed: key.is_some(),
        rpm_packages: 0,
        deb_packages: 0,
        read: 0,
        reused: 0,
        repo_file: None,
        sources_file: None,
        public_key: None,
    };
    let public_name = "kmodkit-repo-key.asc";
    if let Some(k) = key {
        let p = dir.join(public_name);
        kmodkit_commit::replace_file(&p, k.public_armored()?.as_bytes(), Some(0o644))?;
        idx.public_key = Some(p);
    }
    let key_url = key.map(|_| format!("{url}/{public_name}"));
    if has_files(dir, "rpm") {
        let report = kmodkit_package::yum::write_repository(
            dir,
            &kmodkit_package::yum::YumOptions { key, time },
        )?;
        idx.rpm_packages = report.packages;
        idx.read += report.read;
        idx.reused += report.reused;
        let text = kmodkit_package::yum::repo_file(
            "kmodkit",
            "kmodkit driver packages",
            &url,
            key_url.as_deref(),
        );
        let p = dir.join("kmodkit.repo");
        kmodkit_commit::replace_file(&p, text.as_bytes(), Some(0o644))?;
        idx.repo_file = Some(p);
    }
    if has_files(dir, "deb") {
        let report = kmodkit_package::apt::write_repository(
            dir,
            &kmodkit_package::apt::AptOptions {
                key,
                time,
                suite: suite.to_string(),
                component: component.to_string(),
            },
        )?;
        idx.deb_packages = report.packages;
        idx.read += report.read;
        idx.reused += report.reused;
        let keyring = "/etc/apt/keyrings/kmodkit-repo-key.asc";
        let text = kmodkit_package::apt::sources_file(&url, suite, component, keyring);
        let p = dir.join("kmodkit.sources");
        kmodkit_commit::replace_file(&p, text.as_bytes(), Some(0o644))?;
        idx.sources_file = Some(p);
    }
    Ok(idx)
}

fn walk(dir: &Path, ext: &str, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            let n = e.file_name();
            if n != "repodata" && n != "dists" {
                walk(&p, ext, f);
            }
        } else if p.extension().is_some_and(|x| x == ext) {
            f(&p);
        }
    }
}

fn has_files(dir: &Path, ext: &str) -> bool {
    let mut any = false;
    walk(dir, ext, &mut |_| any = true);
    any
}

fn newest_package_mtime(dir: &Path) -> u64 {
    let mut newest = 0;
    for ext in ["rpm", "deb"] {
        walk(dir, ext, &mut |p| {
            if let Some(t) = std::fs::metadata(p)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            {
                newest = newest.max(t.as_secs());
            }
        });
    }
    newest
}

/// The lines an administrator runs on each node.
pub(crate) fn node_commands(idx: &Indexed, url: &str, install: &str) -> Vec<String> {
    let mut out = Vec::new();
    if idx.repo_file.is_some() {
        out.push(format!(
            "dnf/yum nodes:  curl -fsSo /etc/yum.repos.d/kmodkit.repo {url}/kmodkit.repo && dnf install -y {install}"
        ));
    }
    if idx.sources_file.is_some() {
        let key = if idx.signed {
            format!(
                "curl -fsSo /etc/apt/keyrings/kmodkit-repo-key.asc {url}/kmodkit-repo-key.asc && "
            )
        } else {
            String::new()
        };
        out.push(format!(
            "apt nodes:      {key}curl -fsSo /etc/apt/sources.list.d/kmodkit.sources {url}/kmodkit.sources && apt-get update && apt-get install -y {install}"
        ));
    }
    out
}

fn is_module_file(s: &str) -> bool {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|e| s.ends_with(e))
}

/// The rebuild records of `kernel` under `root` matching `wanted`
/// (PACKAGE or PACKAGE/VERSION; empty: all), as module sets.
pub(crate) fn sets_from_records(
    root: &Path,
    kernel: &str,
    wanted: &[String],
    release: &str,
) -> Result<Vec<ModuleSet>> {
    let dir = kmodkit_rebuild::record::records_dir(root);
    let mut sets = Vec::new();
    let mut found = vec![false; wanted.len()];
    let mut packages: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    packages.sort();
    for pdir in packages {
        let Some(package) = pdir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if package == "log" || !pdir.is_dir() {
            continue;
        }
        let mut versions: Vec<_> = std::fs::read_dir(&pdir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        versions.sort();
        for vdir in versions {
            let version = vdir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let hit = wanted
                .iter()
                .position(|w| w == &package || *w == format!("{package}/{version}"));
            if !wanted.is_empty() && hit.is_none() {
                continue;
            }
            let Some(rec) = kmodkit_rebuild::record::Record::load(root, &package, &version, kernel)
            else {
                continue;
            };
            if let Some(i) = hit {
                found[i] = true;
            }
            let files = rec.files(root).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: the modules {package} {version} installed for {kernel} are no longer all there; run kmodkit rebuild",
                    kmodkit_rebuild::record::record_path(root, &package, &version, kernel).display()
                )
            })?;
            sets.push(
                ModuleSet::from_files(&package, &version, release, kernel, &files)
                    .map_err(|e| UsageError(e.to_string()))?,
            );
        }
    }
    for (w, f) in wanted.iter().zip(&found) {
        if !f {
            return Err(UsageError(format!(
                "{w}: kmodkit rebuild installed nothing of that name for {kernel} under {}",
                root.display()
            ))
            .into());
        }
    }
    if sets.is_empty() {
        return Err(UsageError(format!(
            "nothing to package: kmodkit rebuild recorded no package for {kernel} under {} (give module files with --name and --pkg-version)",
            root.display()
        ))
        .into());
    }
    Ok(sets)
}

/// The name of a kernel's NAME-kernel-only set: `--name`, or the one
/// package's own name.
pub(crate) fn set_name(given: Option<&str>, sets: &[ModuleSet], kernel: &str) -> Result<String> {
    match given {
        Some(n) => Ok(n.to_string()),
        None if sets.len() == 1 => Ok(sets[0].name.clone()),
        None => Err(UsageError(format!(
            "{} packages for {kernel}: name their NAME-kernel-only set with --name",
            sets.len()
        ))
        .into()),
    }
}

/// The kernel's exports, read only when an RPM needs them (Debian
/// packages depend on the kernel package instead).
pub(crate) fn kernel_abi(
    packaging: &PackagingArgs,
    root: &Path,
    kernel: &str,
    symvers: Option<&Path>,
) -> Result<KernelAbi> {
    Ok(if packaging.formats.contains(&Format::Rpm) {
        KernelAbi::load(root, kernel, symvers)?
    } else {
        KernelAbi::default()
    })
}

fn kernel_of_files(files: &[PathBuf]) -> Result<String> {
    let (_, m) = kmodkit_module::read_module(&files[0])?;
    let vermagic = m.modinfo_first("vermagic").unwrap_or_default();
    vermagic
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{}: no vermagic; give --kernel", files[0].display()))
}

pub fn run(args: &PackageArgs) -> Result<bool> {
    let root = crate::rebuild::absolute(&args.root);
    let repo = crate::rebuild::absolute(&args.repo);
    let files: Vec<PathBuf> = args
        .items
        .iter()
        .filter(|s| is_module_file(s))
        .map(|s| crate::rebuild::absolute(Path::new(s)))
        .collect();
    if !files.is_empty() && files.len() != args.items.len() {
        return Err(UsageError(
            "give either module files or rebuilt package names, not both".into(),
        )
        .into());
    }
    let (sets, set_name, kernel) = if files.is_empty() {
        let kernel = args.kernel.clone().ok_or_else(|| {
            UsageError("--kernel KVER: which kernel's rebuilt modules to package".into())
        })?;
        let sets = sets_from_records(&root, &kernel, &args.items, &args.packaging.release)?;
        let name = set_name(args.name.as_deref(), &sets, &kernel)?;
        (sets, name, kernel)
    } else {
        let (Some(name), Some(version)) = (&args.name, &args.pkg_version) else {
            return Err(UsageError("module files need --name and --pkg-version".into()).into());
        };
        let kernel = match &args.kernel {
            Some(k) => k.clone(),
            None => kernel_of_files(&files)?,
        };
        let set = ModuleSet::from_files(name, version, &args.packaging.release, &kernel, &files)
            .map_err(|e| UsageError(e.to_string()))?;
        (vec![set], name.clone(), kernel)
    };
    let abi = kernel_abi(&args.packaging, &root, &kernel, args.symvers.as_deref())?;
    let key = load_key(&args.packaging, &root)?;
    let written = package_sets(&sets, &abi, &set_name, &repo, &args.packaging, key.as_ref())?;
    for w in &written {
        if !args.json {
            diag!("package: wrote {}", w.file.display());
        }
    }
    let indexed = if args.no_index {
        None
    } else {
        Some(index(
            &repo,
            &args.packaging,
            key.as_ref(),
            "stable",
            "main",
        )?)
    };
    report(
        args.json,
        &written,
        indexed.as_ref(),
        &args.packaging,
        &format!("{set_name}-kernel-only"),
    )?;
    Ok(true)
}

pub(crate) fn report(
    json: bool,
    written: &[Written],
    indexed: Option<&Indexed>,
    packaging: &PackagingArgs,
    install: &str,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let nodes = indexed
        .map(|i| {
            let url = packaging.url.clone().unwrap_or_else(|| file_url(&i.dir));
            node_commands(i, &url, install)
        })
        .unwrap_or_default();
    if json {
        #[derive(Serialize)]
        struct J<'a> {
            packages: &'a [Written],
            repository: Option<&'a Indexed>,
            nodes: &'a [String],
        }
        serde_json::to_writer_pretty(
            &mut out,
            &J {
                packages: written,
                repository: indexed,
                nodes: &nodes,
            },
        )?;
        writeln!(out)?;
        return Ok(());
    }
    for w in written {
        writeln!(out, "{} {} ({:?})", w.package, w.version, w.format)?;
    }
    if let Some(i) = indexed {
        writeln!(
            out,
            "repository {}: {} rpm, {} deb, {} ({} read, {} unchanged)",
            i.dir.display(),
            i.rpm_packages,
            i.deb_packages,
            if i.signed {
                "signed"
            } else {
                "UNSIGNED (no --gpg-key)"
            },
            i.read,
            i.reused
        )?;
        for n in &nodes {
            writeln!(out, "{n}")?;
        }
    }
    Ok(())
}

pub fn run_repo(args: &RepoArgs) -> Result<bool> {
    let root = crate::rebuild::absolute(&args.root);
    let dir = crate::rebuild::absolute(&args.dir);
    if !dir.is_dir() {
        return Err(UsageError(format!("{}: no such directory", dir.display())).into());
    }
    let key = load_key(&args.packaging, &root)?;
    let idx = index(
        &dir,
        &args.packaging,
        key.as_ref(),
        &args.suite,
        &args.component,
    )?;
    report(
        args.json,
        &[],
        Some(&idx),
        &args.packaging,
        "NAME-kernel-only",
    )?;
    Ok(true)
}
