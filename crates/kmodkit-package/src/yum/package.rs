//! One package's repository entry, read from its RPM header with
//! createrepo_c's rules (`src/parsehdr.c` `cr_package_from_header`,
//! `src/parsepkg.c`, `src/misc.c` `cr_str_to_evr`/`cr_flag_to_str`/
//! `cr_is_primary`/`cr_get_header_byte_range`).
//!
//! What libsolv's `repo_rpmmd.c` (dnf's reader) takes from it: NEVRA,
//! `checksum pkgid`, `location href`, `header-range` (for range downloads
//! of the header), sizes, times, the dependency lists with `pre="1"`, and
//! the file lists (primary's subset answers file requires without
//! filelists.xml).

use std::io::{self, Read};

use rpm::{IndexSignatureTag, IndexTag};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A dependency entry (`<rpm:entry>`): createrepo_c's `cr_Dependency`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Dep {
    pub name: String,
    /// `EQ`, `LT`, `GT`, `LE`, `GE` (`cr_flag_to_str`), or none.
    pub flags: Option<String>,
    pub epoch: Option<String>,
    pub ver: Option<String>,
    pub rel: Option<String>,
    /// A requirement of a scriptlet (`%pre`, `%post`, `%pretrans`,
    /// `%posttrans`, legacy PreReq): `pre="1"`, which tells the solver to
    /// install it first.
    pub pre: bool,
}

/// What a path is in the file lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FileKind {
    File,
    Dir,
    Ghost,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PackageFile {
    pub path: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Changelog {
    pub author: String,
    pub date: u64,
    pub text: String,
}

/// Everything primary.xml, filelists.xml and other.xml say about one
/// package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Package {
    pub name: String,
    pub arch: String,
    pub epoch: String,
    pub version: String,
    pub release: String,
    /// sha256 of the whole file.
    pub pkgid: String,
    pub summary: String,
    pub description: String,
    pub packager: String,
    pub url: String,
    pub time_file: u64,
    pub time_build: u64,
    pub size_package: u64,
    pub size_installed: u64,
    pub size_archive: u64,
    /// Relative to the repository directory, `/`-separated.
    pub href: String,
    pub license: String,
    pub vendor: String,
    pub group: String,
    pub buildhost: String,
    pub sourcerpm: String,
    pub header_start: u64,
    pub header_end: u64,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub suggests: Vec<Dep>,
    pub enhances: Vec<Dep>,
    pub recommends: Vec<Dep>,
    pub supplements: Vec<Dep>,
    pub files: Vec<PackageFile>,
    pub changelogs: Vec<Changelog>,
}

/// How many changelog entries other.xml keeps (createrepo_c's
/// `DEFAULT_CHANGELOG_LIMIT`, `--changelog-limit`).
const CHANGELOG_LIMIT: usize = 10;

// rpmds.h's RPMSENSE_* bits createrepo_c looks at.
const SENSE_POSTTRANS: u32 = 1 << 5;
const SENSE_PREREQ: u32 = 1 << 6;
const SENSE_PRETRANS: u32 = 1 << 7;
const SENSE_SCRIPT_PRE: u32 = 1 << 9;
const SENSE_SCRIPT_POST: u32 = 1 << 10;
const SENSE_MISSINGOK: u32 = 1 << 19;
const SENSE_STRONG: u32 = 1 << 27;

/// A file read once: the RPM header parsed and the whole file hashed in
/// the same pass.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Why a file is not a package createrepo_c would list.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Rpm(String),
    /// XML 1.0 cannot carry ASCII control characters; createrepo_c refuses
    /// such a package too (`cr_Package_contains_forbidden_control_chars`).
    ControlChars(&'static str, String),
}

/// `cr_flag_to_str`: only the comparison bits count.
fn flag_str(flags: u32) -> Option<&'static str> {
    match flags & 0xf {
        2 => Some("LT"),
        4 => Some("GT"),
        8 => Some("EQ"),
        10 => Some("LE"),
        12 => Some("GE"),
        _ => None,
    }
}

/// `cr_str_to_evr`: `[E:]V[-R]`; an empty string has no parts, a missing
/// epoch is `0`. `None` for a non-numeric epoch (createrepo_c skips the
/// dependency with a warning).
#[allow(clippy::type_complexity)]
fn split_evr(s: &str) -> Option<(Option<String>, Option<String>, Option<String>)> {
    if s.is_empty() {
        return Some((None, None, None));
    }
    let (epoch, rest) = match s.find(':') {
        Some(colon) => {
            let e = &s[..colon];
            // strtol(string, &p, 10) == colon: optional space/sign, digits.
            let digits = e.trim_start().trim_start_matches(['+', '-']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            (Some(e.to_string()), &s[colon + 1..])
        }
        None => (Some("0".to_string()), s),
    };
    let (ver, rel) = match rest.find('-') {
        Some(dash) => {
            let rel = &rest[dash + 1..];
            (
                Some(rest[..dash].to_string()),
                (!rel.is_empty()).then(|| rel.to_string()),
            )
        }
        None => (Some(rest.to_string()), None),
    };
    Some((epoch, ver, rel))
}

/// `cr_is_primary`: the paths primary.xml lists (yum's rule: anything with
/// `bin/` in it, `/etc/…`, `/usr/lib/sendmail`).
pub(crate) fn is_primary(path: &str) -> bool {
    path.starts_with("/etc/") || path == "/usr/lib/sendmail" || path.contains("bin/")
}

/// `cr_compare_dependency` for two `libc.so.6…` requires: true when `b`
/// names a higher GLIBC version than `a`.
fn libc_higher(a: &str, b: &str) -> bool {
    fn inner(s: &str) -> Option<&str> {
        let open = s.find('(')?;
        let close = open + s[open..].find(')')?;
        let body = &s[open + 1..close];
        let start = body.find(|c: char| c.is_ascii_digit())?;
        Some(&body[start..])
    }
    let (pa, pb) = (a.find('('), b.find('('));
    match (pa, pb) {
        (None, None) => false,
        (None, Some(_)) => true,
        (Some(_), None) => false,
        _ => match (inner(a), inner(b)) {
            (None, None) => false,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (Some(va), Some(vb)) => {
                rpm_version::rpm_evr_compare(&format!("0:{va}-"), &format!("0:{vb}-"))
                    == std::cmp::Ordering::Less
            }
        },
    }
}

fn has_control_chars(s: &str) -> bool {
    s.bytes().any(|b| b < 32 && b != 9 && b != 10 && b != 13)
}

fn opt_string(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<String, ReadError> {
    match h.get_entry_data_as_string(tag) {
        Ok(s) => Ok(s.to_string()),
        Err(rpm::Error::TagNotFound(_)) => Ok(String::new()),
        Err(e) => Err(ReadError::Rpm(e.to_string())),
    }
}

fn opt_i18n(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Result<String, ReadError> {
    match h.get_entry_data_as_i18n_string(tag) {
        Ok(s) => Ok(s.to_string()),
        Err(rpm::Error::TagNotFound(_)) => Ok(String::new()),
        Err(_) => opt_string(h, tag),
    }
}

fn number(h: &rpm::Header<IndexTag>, tag: IndexTag) -> Option<u64> {
    h.get_entry_data_as_u64(tag)
        .ok()
        .or_else(|| h.get_entry_data_as_u32(tag).ok().map(u64::from))
}

fn sig_number(h: &rpm::Header<IndexSignatureTag>, tag: IndexSignatureTag) -> Option<u64> {
    h.get_entry_data_as_u64(tag)
        .ok()
        .or_else(|| h.get_entry_data_as_u32(tag).ok().map(u64::from))
}

fn rpm_err(e: rpm::Error) -> ReadError {
    ReadError::Rpm(e.to_string())
}

/// The raw (name, flags, version) triples of one dependency kind; none when
/// the tags are absent.
fn raw_deps(
    h: &rpm::Header<IndexTag>,
    names: IndexTag,
    flags: IndexTag,
    versions: IndexTag,
) -> Result<Vec<(String, u32, String)>, ReadError> {
    let n = match h.get_entry_data_as_string_array(names) {
        Ok(n) => n,
        Err(rpm::Error::TagNotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(rpm_err(e)),
    };
    // headerGet of all three, then zipped: the shortest wins.
    let (Ok(f), Ok(v)) = (
        h.get_entry_data_as_u32_array(flags),
        h.get_entry_data_as_string_array(versions),
    ) else {
        return Ok(Vec::new());
    };
    Ok(n.into_iter()
        .zip(f)
        .zip(v)
        .map(|((n, f), v)| (n.to_string(), f, v.to_string()))
        .collect())
}

/// Reads the package at `path` (shown as `href` in the metadata) the way
/// `createrepo_c` does; `time_file` is the file's modification time.
pub(crate) fn read_package(
    file: std::fs::File,
    href: &str,
    time_file: u64,
) -> Result<Package, ReadError> {
    let mut reader = HashingReader {
        inner: file,
        hash: Sha256::new(),
        read: 0,
    };
    let meta = {
        let mut buffered = io::BufReader::with_capacity(256 * 1024, &mut reader);
        let meta = rpm::PackageMetadata::parse(&mut buffered).map_err(rpm_err)?;
        // Whatever the BufReader read ahead is part of the file: hash the
        // rest through it.
        io::copy(&mut buffered, &mut io::sink()).map_err(ReadError::Io)?;
        meta
    };
    let pkgid = hex(&reader.hash.finalize());
    let size_package = reader.read;
    let h = &meta.header;
    let sig = &meta.signature;

    let name = opt_string(h, IndexTag::RPMTAG_NAME)?;
    let arch = if h.entry_is_present(IndexTag::RPMTAG_SOURCEPACKAGE) {
        "src".to_string()
    } else {
        opt_string(h, IndexTag::RPMTAG_ARCH)?
    };
    let offsets = meta.get_package_segment_offsets();

    // rpmReadPackageFile merges the signature header's size tags into the
    // header (headerMergeLegacySigs): PAYLOADSIZE is ARCHIVESIZE.
    let size_archive = number(h, IndexTag::RPMTAG_LONGARCHIVESIZE)
        .or_else(|| sig_number(sig, IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE))
        .or_else(|| number(h, IndexTag::RPMTAG_ARCHIVESIZE))
        .or_else(|| sig_number(sig, IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE))
        .unwrap_or(0);

    let mut pkg = Package {
        name,
        arch,
        epoch: number(h, IndexTag::RPMTAG_EPOCH).unwrap_or(0).to_string(),
        version: opt_string(h, IndexTag::RPMTAG_VERSION)?,
        release: opt_string(h, IndexTag::RPMTAG_RELEASE)?,
        pkgid,
        summary: opt_i18n(h, IndexTag::RPMTAG_SUMMARY)?,
        description: opt_i18n(h, IndexTag::RPMTAG_DESCRIPTION)?,
        packager: opt_string(h, IndexTag::RPMTAG_PACKAGER)?,
        url: opt_string(h, IndexTag::RPMTAG_URL)?,
        time_file,
        time_build: number(h, IndexTag::RPMTAG_BUILDTIME).unwrap_or(0),
        size_package,
        size_installed: number(h, IndexTag::RPMTAG_LONGSIZE)
            .or_else(|| number(h, IndexTag::RPMTAG_SIZE))
            .unwrap_or(0),
        size_archive,
        href: href.to_string(),
        license: opt_string(h, IndexTag::RPMTAG_LICENSE)?,
        vendor: opt_string(h, IndexTag::RPMTAG_VENDOR)?,
        group: opt_i18n(h, IndexTag::RPMTAG_GROUP)?,
        buildhost: opt_string(h, IndexTag::RPMTAG_BUILDHOST)?,
        sourcerpm: opt_string(h, IndexTag::RPMTAG_SOURCERPM)?,
        header_start: offsets.header,
        header_end: offsets.payload,
        provides: Vec::new(),
        requires: Vec::new(),
        conflicts: Vec::new(),
        obsoletes: Vec::new(),
        suggests: Vec::new(),
        enhances: Vec::new(),
        recommends: Vec::new(),
        supplements: Vec::new(),
        files: read_files(h)?,
        changelogs: read_changelogs(h)?,
    };
    read_dependencies(h, &mut pkg)?;
    check_control_chars(&pkg)?;
    Ok(pkg)
}

fn read_files(h: &rpm::Header<IndexTag>) -> Result<Vec<PackageFile>, ReadError> {
    // createrepo_c lists files only when all of these tags are present.
    let (Ok(basenames), Ok(indexes), Ok(flags), Ok(modes)) = (
        h.get_entry_data_as_string_array(IndexTag::RPMTAG_BASENAMES),
        h.get_entry_data_as_u32_array(IndexTag::RPMTAG_DIRINDEXES),
        h.get_entry_data_as_u32_array(IndexTag::RPMTAG_FILEFLAGS),
        h.get_entry_data_as_u16_array(IndexTag::RPMTAG_FILEMODES),
    ) else {
        return Ok(Vec::new());
    };
    if !h.entry_is_present(IndexTag::RPMTAG_FILEDIGESTS) {
        return Ok(Vec::new());
    }
    let dirs = h
        .get_entry_data_as_string_array(IndexTag::RPMTAG_DIRNAMES)
        .unwrap_or_default();
    const S_IFMT: u16 = 0o170000;
    const S_IFDIR: u16 = 0o040000;
    const RPMFILE_GHOST: u32 = 1 << 6;
    Ok(basenames
        .iter()
        .zip(indexes)
        .zip(flags)
        .zip(modes)
        .map(|(((base, dir), flags), mode)| {
            let dir = dirs.get(dir as usize).copied().unwrap_or("");
            let kind = if mode & S_IFMT == S_IFDIR {
                FileKind::Dir
            } else if flags & RPMFILE_GHOST != 0 {
                FileKind::Ghost
            } else {
                FileKind::File
            };
            PackageFile {
                path: format!("{dir}{base}"),
                kind,
            }
        })
        .collect())
}

/// Changelogs as createrepo_c keeps them: the newest [`CHANGELOG_LIMIT`]
/// entries (rpm stores newest first), written oldest first; an entry with
/// the same time as the one before it moves the earlier ones one second
/// later, so dates are unique; trailing spaces of the author removed.
fn read_changelogs(h: &rpm::Header<IndexTag>) -> Result<Vec<Changelog>, ReadError> {
    let (Ok(times), Ok(names), Ok(texts)) = (
        h.get_entry_data_as_u32_array(IndexTag::RPMTAG_CHANGELOGTIME),
        h.get_entry_data_as_string_array(IndexTag::RPMTAG_CHANGELOGNAME),
        h.get_entry_data_as_string_array(IndexTag::RPMTAG_CHANGELOGTEXT),
    ) else {
        return Ok(Vec::new());
    };
    // Built like createrepo_c's prepended list: index 0 is the latest added.
    let mut list: Vec<Changelog> = Vec::new();
    let mut last_time: Option<u64> = None;
    for ((time, name), text) in times
        .into_iter()
        .zip(names)
        .zip(texts)
        .take(CHANGELOG_LIMIT)
    {
        let time = u64::from(time);
        let mut author = name.to_string();
        // createrepo_c's loop stops before index 0.
        while author.len() > 1 && author.ends_with(' ') {
            author.pop();
        }
        list.insert(
            0,
            Changelog {
                author,
                date: time,
                text: text.to_string(),
            },
        );
        if last_time == Some(time) {
            for (t, prev) in (time..).zip(list.iter_mut().skip(1)) {
                if prev.date != t {
                    break;
                }
                prev.date += 1;
            }
        } else {
            last_time = Some(time);
        }
    }
    Ok(list)
}

fn read_dependencies(h: &rpm::Header<IndexTag>, pkg: &mut Package) -> Result<(), ReadError> {
    use IndexTag::*;
    let files: std::collections::HashSet<&str> =
        pkg.files.iter().map(|f| f.path.as_str()).collect();
    let make = |name: &str, flags: u32, version: &str| -> Option<Dep> {
        let (epoch, ver, rel) = split_evr(version)?;
        Some(Dep {
            name: name.to_string(),
            flags: flag_str(flags).map(str::to_string),
            epoch,
            ver,
            rel,
            pre: false,
        })
    };
    let nfv = |name: &str, flags: u32, version: &str| {
        format!("{name}{}{version}", flag_str(flags).unwrap_or(""))
    };

    // Provides first: requires satisfied by the package itself are left out.
    let mut provided = std::collections::HashSet::new();
    let mut provides = Vec::new();
    for (n, f, v) in raw_deps(
        h,
        RPMTAG_PROVIDENAME,
        RPMTAG_PROVIDEFLAGS,
        RPMTAG_PROVIDEVERSION,
    )? {
        if let Some(d) = make(&n, f, &v) {
            provided.insert(nfv(&n, f, &v));
            provides.push(d);
        }
    }
    let simple = |tags: (IndexTag, IndexTag, IndexTag)| -> Result<Vec<(Dep, u32)>, ReadError> {
        Ok(raw_deps(h, tags.0, tags.1, tags.2)?
            .into_iter()
            .filter_map(|(n, f, v)| make(&n, f, &v).map(|d| (d, f)))
            .collect())
    };
    let strip = |v: Vec<(Dep, u32)>| v.into_iter().map(|(d, _)| d).collect::<Vec<_>>();
    let conflicts = strip(simple((
        RPMTAG_CONFLICTNAME,
        RPMTAG_CONFLICTFLAGS,
        RPMTAG_CONFLICTVERSION,
    ))?);
    let obsoletes = strip(simple((
        RPMTAG_OBSOLETENAME,
        RPMTAG_OBSOLETEFLAGS,
        RPMTAG_OBSOLETEVERSION,
    ))?);

    let mut requires = Vec::new();
    let mut recommends = Vec::new();
    // name -> (flags, version, pre) of the last require kept.
    let mut seen: std::collections::HashMap<String, (Option<&'static str>, String, bool)> =
        Default::default();
    let mut libc: Option<Dep> = None;
    for (n, f, v) in raw_deps(
        h,
        RPMTAG_REQUIRENAME,
        RPMTAG_REQUIREFLAGS,
        RPMTAG_REQUIREVERSION,
    )? {
        if n.starts_with("rpmlib(") {
            continue;
        }
        if n.starts_with('/') && files.contains(n.as_str()) && is_primary(&n) {
            continue;
        }
        if provided.contains(&nfv(&n, f, &v)) {
            continue;
        }
        let pre = f
            & (SENSE_PREREQ
                | SENSE_SCRIPT_PRE
                | SENSE_POSTTRANS
                | SENSE_PRETRANS
                | SENSE_SCRIPT_POST)
            != 0;
        if let Some((sf, sv, sp)) = seen.get(&n) {
            if *sf == flag_str(f) && *sv == v && *sp == pre {
                continue;
            }
        }
        let Some(mut d) = make(&n, f, &v) else {
            continue;
        };
        // Debian's createrepo_c is built with ENABLE_LEGACY_WEAKDEPS.
        if f & SENSE_MISSINGOK != 0 {
            recommends.push(d);
            continue;
        }
        d.pre = pre;
        if d.name.starts_with("libc.so.6") {
            // Only the highest GLIBC version is kept, listed last.
            match &libc {
                Some(best) if !libc_higher(&best.name, &d.name) => {}
                _ => libc = Some(d),
            }
            continue;
        }
        seen.insert(n.clone(), (flag_str(f), v.clone(), pre));
        requires.push(d);
    }
    requires.extend(libc);

    let suggests = strip(simple((
        RPMTAG_SUGGESTNAME,
        RPMTAG_SUGGESTFLAGS,
        RPMTAG_SUGGESTVERSION,
    ))?);
    let enhances = strip(simple((
        RPMTAG_ENHANCENAME,
        RPMTAG_ENHANCEFLAGS,
        RPMTAG_ENHANCEVERSION,
    ))?);
    recommends.extend(strip(simple((
        RPMTAG_RECOMMENDNAME,
        RPMTAG_RECOMMENDFLAGS,
        RPMTAG_RECOMMENDVERSION,
    ))?));
    let supplements = strip(simple((
        RPMTAG_SUPPLEMENTNAME,
        RPMTAG_SUPPLEMENTFLAGS,
        RPMTAG_SUPPLEMENTVERSION,
    ))?);
    let (mut suggests, mut enhances, mut supplements) = (suggests, enhances, supplements);
    // Old SUSE weak dependencies: STRONG makes a suggests a recommends and
    // an enhances a supplements.
    for (d, f) in simple((
        RPMTAG_OLDSUGGESTSNAME,
        RPMTAG_OLDSUGGESTSFLAGS,
        RPMTAG_OLDSUGGESTSVERSION,
    ))? {
        if f & SENSE_STRONG != 0 {
            recommends.push(d);
        } else {
            suggests.push(d);
        }
    }
    for (d, f) in simple((
        RPMTAG_OLDENHANCESNAME,
        RPMTAG_OLDENHANCESFLAGS,
        RPMTAG_OLDENHANCESVERSION,
    ))? {
        if f & SENSE_STRONG != 0 {
            supplements.push(d);
        } else {
            enhances.push(d);
        }
    }
    pkg.provides = provides;
    pkg.requires = requires;
    pkg.conflicts = conflicts;
    pkg.obsoletes = obsoletes;
    pkg.suggests = suggests;
    pkg.enhances = enhances;
    pkg.recommends = recommends;
    pkg.supplements = supplements;
    Ok(())
}

fn check_control_chars(p: &Package) -> Result<(), ReadError> {
    let fields: [(&'static str, &str); 14] = [
        ("name", &p.name),
        ("arch", &p.arch),
        ("version", &p.version),
        ("release", &p.release),
        ("summary", &p.summary),
        ("description", &p.description),
        ("url", &p.url),
        ("license", &p.license),
        ("vendor", &p.vendor),
        ("group", &p.group),
        ("buildhost", &p.buildhost),
        ("sourcerpm", &p.sourcerpm),
        ("packager", &p.packager),
        ("location", &p.href),
    ];
    for (field, value) in fields {
        if has_control_chars(value) {
            return Err(ReadError::ControlChars(field, value.to_string()));
        }
    }
    let deps = [
        &p.provides,
        &p.requires,
        &p.conflicts,
        &p.obsoletes,
        &p.suggests,
        &p.enhances,
        &p.recommends,
        &p.supplements,
    ];
    for d in deps.into_iter().flatten() {
        for s in [&Some(d.name.clone()), &d.epoch, &d.ver, &d.rel]
            .into_iter()
            .flatten()
        {
            if has_control_chars(s) {
                return Err(ReadError::ControlChars("dependency", s.clone()));
            }
        }
    }
    for f in &p.files {
        if has_control_chars(&f.path) {
            return Err(ReadError::ControlChars("file name", f.path.clone()));
        }
    }
    for c in &p.changelogs {
        if has_control_chars(&c.author) || has_control_chars(&c.text) {
            return Err(ReadError::ControlChars("changelog", c.author.clone()));
        }
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evr_split_like_cr_str_to_evr() {
        let s = |x: &str| Some(x.to_string());
        assert_eq!(split_evr("1:2.0-3"), Some((s("1"), s("2.0"), s("3"))));
        assert_eq!(split_evr("2"), Some((s("0"), s("2"), None)));
        assert_eq!(split_evr("2-"), Some((s("0"), s("2"), None)));
        assert_eq!(split_evr(""), Some((None, None, None)));
        assert_eq!(split_evr("x:1"), None);
        assert_eq!(
            split_evr("0x1a2b3c4d"),
            Some((s("0"), s("0x1a2b3c4d"), None))
        );
    }

    #[test]
    fn primary_files_and_libc_order() {
        assert!(is_primary("/etc/x"));
        assert!(is_primary("/opt/foo/sbin/x"));
        assert!(is_primary("/usr/lib/sendmail"));
        assert!(!is_primary("/usr/lib/x"));
        assert!(libc_higher(
            "libc.so.6(GLIBC_2.3)(64bit)",
            "libc.so.6(GLIBC_2.14)(64bit)"
        ));
        assert!(!libc_higher(
            "libc.so.6(GLIBC_2.14)(64bit)",
            "libc.so.6(GLIBC_2.3)(64bit)"
        ));
        assert!(libc_higher(
            "libc.so.6()(64bit)",
            "libc.so.6(GLIBC_2.3)(64bit)"
        ));
    }
}
