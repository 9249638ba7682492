//! Debian packages of a module set: `NAME-modules-KVER` (the binary
//! module package DKMS' `mkbmdeb` made from its `template-dkms-mkbmdeb`)
//! and the `NAME-kernel-only` metapackage that depends on exactly the set.
//!
//! A `.deb` is an `ar` archive of `debian-binary` (`2.0\n`),
//! `control.tar.xz` and `data.tar.xz` (dpkg-deb's default compression
//! since dpkg 1.17.6 reads `control.tar.xz`; see [`archive`] for the
//! byte layout). The control archive holds `control`, `md5sums` and the
//! maintainer scripts; the data archive every directory and file, owned
//! by root, sorted, each time the options' `time`.

mod archive;

use std::collections::BTreeSet;

pub(crate) use archive::{ar_members, decompress, gzip, tar_files, xz};
use archive::{TarEntry, TAR_MAX_SIZE};
use md5::{Digest, Md5};

use crate::abi::ModuleSet;

/// How a package is built.
#[derive(Debug, Clone)]
pub struct DebOptions {
    /// Every time in the package (ar members, tar entries, changelog).
    pub time: u64,
    /// `Maintainer:`, "Name <address>" (Debian policy 5.6.2).
    pub maintainer: String,
}

/// One built package.
#[derive(Debug, Clone)]
pub struct DebFile {
    /// `jool-modules-6.1.0-53-amd64_4.1.9-1_amd64.deb`
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// `Package:`
    pub package: String,
    /// `Version:`, `VERSION-RELEASE`.
    pub version: String,
    /// `Architecture:` (`amd64`, `all`).
    pub arch: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{package}: {field} {value:?} {why}")]
    BadField {
        package: String,
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("{package}: no Debian architecture for {arch:?} (known: x86_64, i686, aarch64, armv7hl, ppc64le, s390x, riscv64)")]
    Arch { package: String, arch: String },
    #[error("{package}: {file} is {size} bytes, more than a tar entry holds")]
    TooLarge {
        package: String,
        file: String,
        size: u64,
    },
    #[error("{package}: cannot compress the {what} archive: {cause}")]
    Compress {
        package: String,
        what: &'static str,
        cause: std::io::Error,
    },
}

/// The Debian architecture of an RPM/ELF one (the names `dpkg
/// --print-architecture` uses).
pub fn debian_arch(arch: &str) -> Option<&'static str> {
    Some(match arch {
        "x86_64" => "amd64",
        "i686" | "i586" | "i386" => "i386",
        "aarch64" => "arm64",
        "armv7hl" => "armhf",
        "ppc64le" => "ppc64el",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        _ => return None,
    })
}

/// The package that holds a set's modules: `NAME-modules-KVER` (mkbmdeb's
/// `DEBIAN_PACKAGE-modules-KERNEL_VERSION`).
pub fn module_package_name(set: &ModuleSet) -> String {
    format!("{}-modules-{}", set.name, set.kernel)
}

/// Where the modules are installed: `/lib/modules/KVER/updates/dkms`.
///
/// That is where Debian's DKMS puts what it builds and where the
/// packages `dkms mkbmdeb` made installed them (its template's Makefile:
/// `install -m 644 … $(DESTDIR)/lib/modules/$(KVER)/updates/dkms/`), so a
/// node that moves from DKMS to these packages keeps the same paths (dpkg
/// takes over the files DKMS left) and depmod's default `search updates`
/// priority lets them replace in-tree modules of the same name, which a
/// NIC/IB driver stack needs (`extra/` ranks below `kernel/` on Debian).
pub fn module_dir(set: &ModuleSet) -> String {
    format!("/lib/modules/{}/updates/dkms", set.kernel)
}

/// A package name as policy 5.6.1 allows: lower-case letters, digits,
/// `+ - .`, at least two characters, starting with a letter or digit.
fn check_name(package: &str) -> Result<(), DebError> {
    let ok = package.len() >= 2
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DebError::BadField {
            package: package.to_string(),
            field: "package name",
            value: package.to_string(),
            why: "is not a Debian package name (lower-case letters, digits, + - . only; \
                  a kernel release or driver name with capitals or _ cannot be one)"
                .to_string(),
        })
    }
}

/// `VERSION-RELEASE`; dpkg refuses an upstream version that does not
/// start with a digit, and a revision with anything but alphanumerics and
/// `+ . ~`.
fn debian_version(package: &str, version: &str, release: &str) -> Result<String, DebError> {
    let bad = |field, value: &str, why: &str| DebError::BadField {
        package: package.to_string(),
        field,
        value: value.to_string(),
        why: why.to_string(),
    };
    if !version.starts_with(|c: char| c.is_ascii_digit())
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c))
    {
        return Err(bad(
            "version",
            version,
            "must start with a digit and hold only letters, digits and . + ~ -",
        ));
    }
    if release.is_empty()
        || !release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c))
    {
        return Err(bad(
            "release",
            release,
            "must be letters, digits and . + ~ (a Debian revision)",
        ));
    }
    Ok(format!("{version}-{release}"))
}

fn check_maintainer(package: &str, m: &str) -> Result<(), DebError> {
    if m.trim().is_empty() || m.contains('\n') || !(m.contains('<') && m.ends_with('>')) {
        return Err(DebError::BadField {
            package: package.to_string(),
            field: "maintainer",
            value: m.to_string(),
            why: "must be one line, \"Name <address>\" (policy 5.6.2)".to_string(),
        });
    }
    Ok(())
}

/// `time` as RFC 2822 in UTC: `Tue, 14 Nov 2023 22:13:20 ZONE` (ZONE
/// `+0000` in changelogs, `UTC` in apt's `Release`, as apt-ftparchive).
pub(crate) fn rfc2822(time: u64, zone: &str) -> String {
    let days = (time / 86400) as i64;
    let secs = time % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} {zone}",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Text wrapped to 79 columns for a `Description:` continuation (policy
/// 5.6.13: lines start with a space, an empty line is ` .`).
fn description_lines(paragraphs: &[String]) -> String {
    let mut out = String::new();
    for (i, p) in paragraphs.iter().enumerate() {
        if i > 0 {
            out.push_str(" .\n");
        }
        for raw in p.lines() {
            // A line that starts with spaces is kept as a verbatim line
            // (two leading spaces in the field), as the policy displays it.
            let indent = raw.len() - raw.trim_start().len();
            let lead = if indent > 0 { "  " } else { " " };
            let cont = if indent > 0 { "    " } else { " " };
            let mut line = String::from(lead);
            let mut empty = true;
            for word in raw.split_whitespace() {
                if !empty && line.len() + 1 + word.len() > 79 {
                    out.push_str(&line);
                    out.push('\n');
                    line = cont.to_string();
                } else if !empty {
                    line.push(' ');
                }
                line.push_str(word);
                empty = false;
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// A package's files before archiving: absolute paths, modes, contents.
struct Payload {
    files: Vec<(String, u32, Vec<u8>)>,
}

impl Payload {
    fn new() -> Payload {
        Payload { files: Vec::new() }
    }

    fn add(&mut self, path: String, mode: u32, contents: Vec<u8>) {
        self.files.push((path, mode, contents));
    }

    /// The data archive's entries: every parent directory once, then the
    /// files, all sorted by path (bytewise, as `LC_ALL=C sort`), each
    /// directory before what it holds.
    fn entries(&self) -> Vec<TarEntry> {
        let mut dirs = BTreeSet::new();
        for (path, _, _) in &self.files {
            let mut p = path.as_str();
            while let Some((parent, _)) = p.rsplit_once('/') {
                if parent.is_empty() {
                    break;
                }
                dirs.insert(format!(".{parent}/"));
                p = parent;
            }
        }
        let mut all: Vec<TarEntry> = dirs
            .into_iter()
            .map(|d| TarEntry {
                path: d,
                mode: 0o755,
                contents: None,
            })
            .collect();
        for (path, mode, contents) in &self.files {
            all.push(TarEntry {
                path: format!(".{path}"),
                mode: *mode,
                contents: Some(contents.clone()),
            });
        }
        // "./a/" sorts before "./a/b" bytewise: directories come first.
        all.sort_by(|a, b| a.path.cmp(&b.path));
        let mut out = vec![TarEntry {
            path: "./".into(),
            mode: 0o755,
            contents: None,
        }];
        out.extend(all);
        out
    }

    /// `Installed-Size:` as dpkg-gencontrol computes it: KiB rounded up
    /// per file, 1 per directory.
    fn installed_size(&self, entries: &[TarEntry]) -> u64 {
        entries
            .iter()
            .map(|e| match &e.contents {
                Some(c) => (c.len() as u64).div_ceil(1024),
                None => 1,
            })
            .sum()
    }

    /// `md5sums`: `HASH  path` per file, paths without the leading `/`
    /// (dh_md5sums).
    fn md5sums(&self) -> String {
        let mut lines: Vec<String> = self
            .files
            .iter()
            .map(|(path, _, c)| format!("{}  {}\n", hex(&Md5::digest(c)), &path[1..]))
            .collect();
        lines.sort();
        lines.concat()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The documentation every binary package carries (policy 12.5, 12.7):
/// `copyright` and, for a version with a Debian revision,
/// `changelog.Debian.gz`.
fn add_docs(
    payload: &mut Payload,
    package: &str,
    source: &str,
    version: &str,
    license: &str,
    changes: &str,
    opts: &DebOptions,
) -> Result<(), DebError> {
    let doc = format!("/usr/share/doc/{package}");
    let common = if license.contains("GPL") && !license.contains("LGPL") {
        "\n On Debian systems, the complete text of the GNU General Public License\n \
         version 2 can be found in `/usr/share/common-licenses/GPL-2'.\n"
    } else {
        ""
    };
    let copyright = format!(
        "This package holds the {source} kernel modules as built from the {source}\n\
         sources by kmodkit; the copyright and license are those of the {source}\n\
         sources, which the modules record in their modinfo.\n\n\
         Copyright: the {source} authors\n\n\
         License: {license}\n{common}"
    );
    payload.add(format!("{doc}/copyright"), 0o644, copyright.into_bytes());
    let changelog = format!(
        "{source} ({version}) unstable; urgency=medium\n\n  * {changes}\n\n -- {}  {}\n",
        opts.maintainer,
        rfc2822(opts.time, "+0000")
    );
    let gz = gzip(changelog.as_bytes()).map_err(|cause| DebError::Compress {
        package: package.to_string(),
        what: "changelog",
        cause,
    })?;
    payload.add(format!("{doc}/changelog.Debian.gz"), 0o644, gz);
    Ok(())
}

/// The `.deb` of a control text, maintainer scripts and payload.
fn assemble(
    package: &str,
    control_fields: &str,
    description: &str,
    scripts: &[(&str, String)],
    payload: &Payload,
    time: u64,
) -> Result<Vec<u8>, DebError> {
    let entries = payload.entries();
    for e in &entries {
        if let Some(c) = &e.contents {
            if c.len() as u64 > TAR_MAX_SIZE {
                return Err(DebError::TooLarge {
                    package: package.to_string(),
                    file: e.path.clone(),
                    size: c.len() as u64,
                });
            }
        }
    }
    // Installed-Size after Maintainer, where dpkg-gencontrol puts it.
    let size_line = format!("Installed-Size: {}\n", payload.installed_size(&entries));
    let mut control = String::new();
    for line in control_fields.split_inclusive('\n') {
        control.push_str(line);
        if line.starts_with("Maintainer:") {
            control.push_str(&size_line);
        }
    }
    control.push_str(description);
    let mut control_entries = vec![
        TarEntry {
            path: "./".into(),
            mode: 0o755,
            contents: None,
        },
        TarEntry {
            path: "./control".into(),
            mode: 0o644,
            contents: Some(control.into_bytes()),
        },
        TarEntry {
            path: "./md5sums".into(),
            mode: 0o644,
            contents: Some(payload.md5sums().into_bytes()),
        },
    ];
    for (name, body) in scripts {
        control_entries.push(TarEntry {
            path: format!("./{name}"),
            mode: 0o755,
            contents: Some(body.clone().into_bytes()),
        });
    }
    control_entries.sort_by(|a, b| a.path.cmp(&b.path));
    let compress = |what, data: Vec<u8>| {
        xz(&data).map_err(|cause| DebError::Compress {
            package: package.to_string(),
            what,
            cause,
        })
    };
    let control_tar = compress("control", archive::tar(&control_entries, time))?;
    let data_tar = compress("data", archive::tar(&entries, time))?;
    Ok(archive::ar(
        &[
            ("debian-binary", b"2.0\n"),
            ("control.tar.xz", &control_tar),
            ("data.tar.xz", &data_tar),
        ],
        time,
    ))
}

/// postinst and postrm: `depmod -a KVER` after the modules arrive or
/// leave, as dh_installmodules' autoscripts (which mkbmdeb's template
/// called) do, but only while `/lib/modules/KVER` exists: after the
/// kernel itself is purged there is nothing to index, and depmod would
/// recreate the directory. Policy 6.5/6.6: postinst acts on `configure`,
/// postrm on `remove` and `purge`, the abort/upgrade cases do nothing and
/// an unknown argument is an error.
fn maintainer_scripts(kernel: &str) -> Vec<(&'static str, String)> {
    let depmod = format!(
        "        if [ -d /lib/modules/{kernel} ]; then\n            depmod -a {kernel}\n        fi\n"
    );
    let script = |name: &str, act: &str, quiet: &str| {
        format!(
            "#!/bin/sh\nset -e\n\ncase \"$1\" in\n    {act})\n{depmod}        ;;\n    {quiet})\n        ;;\n    *)\n        echo \"{name} called with unknown argument '$1'\" >&2\n        exit 1\n        ;;\nesac\n\nexit 0\n"
        )
    };
    vec![
        (
            "postinst",
            script(
                "postinst",
                "configure",
                "abort-upgrade|abort-remove|abort-deconfigure|triggered",
            ),
        ),
        (
            "postrm",
            script(
                "postrm",
                "remove|purge",
                "upgrade|failed-upgrade|abort-install|abort-upgrade|disappear",
            ),
        ),
    ]
}

/// `NAME-modules-KVER_VERSION-RELEASE_ARCH.deb`: the set's modules in
/// [`module_dir`], `Depends: linux-image-KVER`, `Provides: NAME-modules`
/// (mkbmdeb's control), depmod in postinst/postrm.
pub fn module_package(set: &ModuleSet, opts: &DebOptions) -> Result<DebFile, DebError> {
    let package = module_package_name(set);
    check_name(&package)?;
    check_name(&set.name)?;
    check_maintainer(&package, &opts.maintainer)?;
    let version = debian_version(&package, &set.version, &set.release)?;
    let arch = debian_arch(&set.arch).ok_or_else(|| DebError::Arch {
        package: package.clone(),
        arch: set.arch.clone(),
    })?;
    let dir = module_dir(set);
    let mut payload = Payload::new();
    for f in &set.files {
        payload.add(format!("{dir}/{}", f.file_name), 0o644, f.contents.clone());
    }
    add_docs(
        &mut payload,
        &package,
        &set.name,
        &version,
        &set.license(),
        &format!("{} modules built for Linux {}.", set.name, set.kernel),
        opts,
    )?;
    let fields = format!(
        "Package: {package}\nSource: {}\nVersion: {version}\nArchitecture: {arch}\n\
         Maintainer: {}\nDepends: linux-image-{}\nProvides: {}-modules\n\
         Section: kernel\nPriority: optional\n",
        set.name, opts.maintainer, set.kernel, set.name
    );
    let modules: Vec<String> = set
        .files
        .iter()
        .map(|f| match &f.description {
            Some(d) => format!(
                "  {}: {}",
                f.module,
                d.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
            None => format!("  {}", f.module),
        })
        .collect();
    let description = format!(
        "Description: {} binary drivers for linux-image-{}\n{}",
        set.name,
        set.kernel,
        description_lines(&[
            format!(
                "This package contains the {} drivers for the {} Linux kernel, \
                 built for the {arch} architecture:",
                set.name, set.kernel
            ),
            modules.join("\n"),
        ])
    );
    let bytes = assemble(
        &package,
        &fields,
        &description,
        &maintainer_scripts(&set.kernel),
        &payload,
        opts.time,
    )?;
    Ok(DebFile {
        file_name: format!("{package}_{version}_{arch}.deb"),
        bytes,
        package,
        version,
        arch: arch.to_string(),
    })
}

/// `NAME-kernel-only_VERSION-RELEASE_all.deb`: `Depends:` on each member
/// `(= version)`; only the documentation policy requires as files.
pub fn kernel_only_package(
    name: &str,
    version: &str,
    release: &str,
    members: &[(String, String)],
    opts: &DebOptions,
) -> Result<DebFile, DebError> {
    let package = format!("{name}-kernel-only");
    check_name(&package)?;
    check_maintainer(&package, &opts.maintainer)?;
    let full = debian_version(&package, version, release)?;
    let members: BTreeSet<&(String, String)> = members.iter().collect();
    for (p, _) in &members {
        check_name(p)?;
    }
    let mut payload = Payload::new();
    add_docs(
        &mut payload,
        &package,
        name,
        &full,
        "see the member packages",
        &format!("{name} kernel-only metapackage."),
        opts,
    )?;
    let depends: Vec<String> = members
        .iter()
        .map(|(p, v)| format!("{p} (= {v})"))
        .collect();
    let mut fields = format!(
        "Package: {package}\nSource: {name}\nVersion: {full}\nArchitecture: all\n\
         Maintainer: {}\n",
        opts.maintainer
    );
    if !depends.is_empty() {
        fields.push_str(&format!("Depends: {}\n", depends.join(", ")));
    }
    fields.push_str("Section: metapackages\nPriority: optional\n");
    let listed: Vec<String> = members.iter().map(|(p, v)| format!("  {p} {v}")).collect();
    let description = format!(
        "Description: {name} kernel modules only (metapackage)\n{}",
        description_lines(&[
            format!(
                "This metapackage installs exactly the kernel module packages of \
                 {name} {full}, without the user-space tools:"
            ),
            listed.join("\n"),
        ])
    );
    let bytes = assemble(&package, &fields, &description, &[], &payload, opts.time)?;
    Ok(DebFile {
        file_name: format!("{package}_{full}_all.deb"),
        bytes,
        package,
        version: full,
        arch: "all".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc2822_utc() {
        assert_eq!(rfc2822(0, "UTC"), "Thu, 01 Jan 1970 00:00:00 UTC");
        assert_eq!(
            rfc2822(1_700_000_000, "+0000"),
            "Tue, 14 Nov 2023 22:13:20 +0000"
        );
        assert_eq!(rfc2822(951_782_400, "UTC"), "Tue, 29 Feb 2000 00:00:00 UTC");
    }

    #[test]
    fn names_and_versions_follow_policy() {
        assert!(check_name("jool-modules-6.1.0-53-amd64").is_ok());
        assert!(check_name("Jool").is_err());
        assert!(check_name("a_b").is_err());
        assert!(debian_version("p", "4.1.9", "1").is_ok());
        assert!(debian_version("p", "v4.1", "1").is_err());
        assert!(check_maintainer("p", "kmodkit").is_err());
        assert!(check_maintainer("p", "A B <a@b.c>").is_ok());
    }

    #[test]
    fn descriptions_wrap_and_separate_paragraphs() {
        let long = "word ".repeat(40);
        let text = description_lines(&[long, "  verbatim line".to_string()]);
        assert!(text.lines().all(|l| l.len() <= 80 && l.starts_with(' ')));
        assert!(text.contains("\n .\n  verbatim line\n"));
    }
}
