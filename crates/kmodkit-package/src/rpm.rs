//! RPM packages: the RHEL kABI-tracking `kmod-NAME` (what kernel-rpm-macros'
//! `kmodtool` and its dependency generators make) and the payload-less
//! `NAME-kernel-only` metapackage the vendor manuals install on every node.
//!
//! Written with the `rpm` crate in the v4 format (rpm ≥ 4.6 reads it;
//! rpm 6's v6 format is not read by the rpm of RHEL 8/9 or Debian 12).

use std::collections::BTreeSet;

use crate::abi::{KernelAbi, ModuleSet};
use crate::pgp::RepoKey;

/// How a package is built.
#[derive(Debug, Clone)]
pub struct RpmOptions<'a> {
    /// Every time in the package (file times, build time, signature).
    pub time: u64,
    /// Sign the header (`rpm -K` checks it against the imported key).
    pub key: Option<&'a RepoKey>,
    pub packager: Option<String>,
    pub vendor: Option<String>,
    pub url: Option<String>,
}

/// One built package.
#[derive(Debug, Clone)]
pub struct RpmFile {
    /// `kmod-jool-4.1.9-1.x86_64.rpm`
    pub file_name: String,
    pub bytes: Vec<u8>,
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// The License tag.
    pub license: String,
}

impl RpmFile {
    /// `VERSION-RELEASE`.
    pub fn evr(&self) -> String {
        format!("{}-{}", self.version, self.release)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    #[error("cannot build {package}: {cause}")]
    Build { package: String, cause: String },
}

/// Where `kmod-NAME` installs its modules: `/lib/modules/K/extra/NAME`
/// (kmodtool's `%{kernel_module_package_moddir}`), the directory RHEL's
/// weak-modules links from.
pub fn module_dir(set: &ModuleSet) -> String {
    format!("/lib/modules/{}/extra/{}", set.kernel, set.name)
}

/// The RPM package name of a set's modules.
pub fn kmod_name(set: &ModuleSet) -> String {
    format!("kmod-{}", set.name)
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `%post`, `%preun`, `%postun` as kmodtool writes them for kABI-tracking
/// kmods: depmod for the kernel the modules are for (with its System.map
/// when installed, as kmodtool; plain `depmod -a K` otherwise, which
/// kmodtool skips), then the package's modules to `weak-modules
/// --add-modules` so other kABI-compatible kernels get them; `%preun` keeps
/// the list for `%postun`'s `weak-modules --remove-modules`. RHEL's
/// `/usr/sbin/weak-modules` when installed, else `kmodkit weak-modules`.
/// The module list is written into the scripts (kmodtool asks `rpm -ql`,
/// which needs rpm inside the chroot).
fn scriptlets(set: &ModuleSet) -> (String, String, String) {
    let k = &set.kernel;
    let dir = module_dir(set);
    let list: Vec<String> = set
        .files
        .iter()
        .map(|f| format!("{dir}/{}", f.file_name))
        .collect();
    let list_q = shell_quote(&list.join("\n"));
    let saved = format!("/var/run/rpm-kmod-{}-modules", set.name);
    let weak = |op: &str, input: &str| {
        format!(
            "if [ -x /usr/sbin/weak-modules ]; then\n    {input} | /usr/sbin/weak-modules --{op}-modules\n\
             elif [ -x /usr/bin/kmodkit ]; then\n    {input} | /usr/bin/kmodkit weak-modules --{op}-modules\nfi\n"
        )
    };
    let depmod = |extra: &str| {
        format!(
            "if [ -e /boot/System.map-{k} ]; then\n    /sbin/depmod -a{extra}F /boot/System.map-{k} {k} > /dev/null || :\n\
             elif [ -d /lib/modules/{k}/kernel ]; then\n    /sbin/depmod -a {k} > /dev/null 2>&1 || :\nfi\n"
        )
    };
    let post = format!(
        "{}{}",
        depmod("e"),
        weak("add", &format!("printf '%s\\n' {list_q}"))
    );
    let preun = format!("printf '%s\\n' {list_q} > {saved}\n");
    let postun = format!(
        "{}if [ -e {saved} ]; then\n{}    rm -f {saved}\nfi\n",
        depmod(""),
        weak("remove", &format!("cat {saved}"))
            .lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    );
    (post, preun, postun)
}

fn build_err(package: &str) -> impl Fn(rpm::Error) -> RpmError + '_ {
    move |e| RpmError::Build {
        package: package.to_string(),
        cause: e.to_string(),
    }
}

/// zstd at level 3: a set's modules are usually compressed already
/// (`.ko.xz` from `kmodkit rebuild`); on 22 MB of unstripped modules level
/// 19 (Fedora's `w19.zstdio`) took 14 s for 17 % less.
fn config(time: u64) -> rpm::BuildConfig {
    rpm::BuildConfig::v4()
        .compression(rpm::CompressionWithLevel::Zstd(3))
        .source_date(time.min(u32::MAX as u64) as u32)
}

/// One changelog entry (rpm's `%changelog`; rpmlint wants one): who
/// built it, the version, what for. Its time is the package's.
fn changelog(
    b: &mut rpm::PackageBuilder,
    opts: &RpmOptions<'_>,
    version: &str,
    release: &str,
    what: &str,
) {
    let who = opts.packager.as_deref().unwrap_or("kmodkit");
    b.add_changelog_entry(
        format!("{who} - {version}-{release}"),
        format!("- Built by kmodkit ({what})"),
        u32::try_from(opts.time).unwrap_or(u32::MAX),
    );
}

fn finish(
    builder: &mut rpm::PackageBuilder,
    name: &str,
    opts: &RpmOptions<'_>,
) -> Result<Vec<u8>, RpmError> {
    if let Some(p) = &opts.packager {
        builder.packager(p);
    }
    if let Some(v) = &opts.vendor {
        builder.vendor(v);
    }
    if let Some(u) = &opts.url {
        builder.url(u);
    }
    // No host name, no build-time cookie: the same inputs, the same bytes.
    builder.build_host("kmodkit");
    let pkg = match opts.key {
        Some(key) => {
            let signer = key.rpm_signer().map_err(|e| RpmError::Build {
                package: name.to_string(),
                cause: e.to_string(),
            })?;
            // The rpm crate would sign at SOURCE_DATE_EPOCH, which may be
            // older than the key; the key's rule decides (see
            // RepoKey::signature_time).
            let mut pkg = builder.build().map_err(build_err(name))?;
            let t = key.signature_time(opts.time);
            let t = u32::try_from(t).map_err(|_| RpmError::Build {
                package: name.to_string(),
                cause: format!("time {t} does not fit an RPM timestamp"),
            })?;
            pkg.sign_with_timestamp(signer, t)
                .map_err(build_err(name))?;
            pkg
        }
        None => builder.build().map_err(build_err(name))?,
    };
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).map_err(build_err(name))?;
    Ok(bytes)
}

/// `kmod-NAME-VERSION-RELEASE.ARCH.rpm` for a set: its modules in
/// [`module_dir`], the ABI dependencies against `kernel`, kmodtool's
/// provides and scriptlets.
pub fn kmod_package(
    set: &ModuleSet,
    kernel: &KernelAbi,
    opts: &RpmOptions<'_>,
) -> Result<RpmFile, RpmError> {
    let name = kmod_name(set);
    let summary = format!("Kernel modules of {} for Linux {}", set.name, set.kernel);
    let license = set.spdx_license();
    let mut b = rpm::PackageBuilder::new(&name, &set.version, &license, &set.arch, &summary);
    b.using_config(config(opts.time));
    b.release(&set.release);
    b.group("System Environment/Kernel");
    let described: Vec<String> = set
        .files
        .iter()
        .map(|f| match &f.description {
            Some(d) => format!("  {}: {d}", f.module),
            None => format!("  {}", f.module),
        })
        .collect();
    b.description(format!(
        "This package provides the {} kernel modules built for the Linux\nkernel {} for the {} family of processors:\n{}",
        set.name,
        set.kernel,
        set.arch,
        described.join("\n")
    ));
    changelog(
        &mut b,
        opts,
        &set.version,
        &set.release,
        &format!("for Linux {}", set.kernel),
    );
    let dir = module_dir(set);
    b.with_dir_entry(rpm::FileOptions::dir(&dir).permissions(0o755))
        .map_err(build_err(&name))?;
    for f in &set.files {
        b.with_file_contents(
            f.contents.clone(),
            rpm::FileOptions::new(format!("{dir}/{}", f.file_name)).permissions(0o644),
        )
        .map_err(build_err(&name))?;
    }
    b.provides(rpm::Dependency::greater_eq("kernel-modules", &set.kernel));
    b.provides(rpm::Dependency::eq(
        format!("{}-kmod", set.name),
        format!("{}-{}", set.version, set.release),
    ));
    for f in &set.files {
        b.provides(rpm::Dependency::any(format!("kmod({}.ko)", f.module)));
    }
    for d in set.provides() {
        b.provides(rpm::Dependency::eq(d.rpm_name(None), d.rpm_version()));
    }
    for d in set.requires(kernel) {
        b.requires(rpm::Dependency::eq(d.rpm_name(None), d.rpm_version()));
    }
    let (post, preun, postun) = scriptlets(set);
    let sh = |s: String| rpm::Scriptlet::new(s).prog(vec!["/bin/sh"]);
    b.post_install_script(sh(post));
    b.pre_uninstall_script(sh(preun));
    b.post_uninstall_script(sh(postun));
    let bytes = finish(&mut b, &name, opts)?;
    Ok(RpmFile {
        file_name: format!("{name}-{}-{}.{}.rpm", set.version, set.release, set.arch),
        bytes,
        name,
        version: set.version.clone(),
        release: set.release.clone(),
        arch: set.arch.clone(),
        license,
    })
}

/// `NAME-kernel-only-VERSION-RELEASE.noarch.rpm`: no files, `Requires:`
/// exactly `members` at their versions (the vendor's "kernel-only"
/// metapackage: `dnf install NAME-kernel-only` on a node pulls the set).
pub fn kernel_only_package(
    name: &str,
    version: &str,
    release: &str,
    members: &[RpmFile],
    opts: &RpmOptions<'_>,
) -> Result<RpmFile, RpmError> {
    let pkg = format!("{name}-kernel-only");
    let summary = format!("Metapackage: the {name} kernel module packages");
    // No files of its own: the license of what it installs.
    let licenses: BTreeSet<&str> = members.iter().map(|m| m.license.as_str()).collect();
    let license = match licenses.len() {
        1 => licenses.into_iter().next().unwrap_or_default().to_string(),
        _ => licenses
            .into_iter()
            .map(|l| {
                if l.contains(' ') {
                    format!("({l})")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    let mut b = rpm::PackageBuilder::new(&pkg, version, &license, "noarch", &summary);
    b.using_config(config(opts.time));
    b.release(release);
    b.group("System Environment/Kernel");
    let list: Vec<String> = members
        .iter()
        .map(|m| format!("  {}-{}", m.name, m.evr()))
        .collect();
    b.description(format!(
        "Installs exactly these kernel module packages of {name}:\n{}",
        list.join("\n")
    ));
    changelog(&mut b, opts, version, release, "the kernel-only set");
    for m in members {
        b.requires(rpm::Dependency::eq(&m.name, m.evr()));
    }
    let bytes = finish(&mut b, &pkg, opts)?;
    Ok(RpmFile {
        file_name: format!("{pkg}-{version}-{release}.noarch.rpm"),
        bytes,
        name: pkg,
        version: version.to_string(),
        release: release.to_string(),
        arch: "noarch".to_string(),
        license,
    })
}
