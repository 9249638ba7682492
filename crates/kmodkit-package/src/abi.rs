//! A driver package's modules for one kernel, and the ABI dependencies
//! they carry: what every package format below writes its dependencies
//! from.
//!
//! The rules are kernel-rpm-macros' (`find-requires.ksyms`,
//! `find-provides.ksyms`):
//! - every `__versions` entry of every module (`modprobe
//!   --dump-modversions`) is required; when the kernel's `Module.symvers`
//!   exports that symbol *with that CRC* the requirement is
//!   `kernel(SYM) = 0xCRC`, otherwise (another out-of-tree package's
//!   export, or a kernel symbol whose CRC changed) `ksym(SYM) = 0xCRC`;
//! - every `__crc_SYM` of a module outside `/lib/modules/K/kernel` is
//!   provided as `ksym(SYM) = 0xCRC`;
//! - CRCs are written `0x%08x`, the lists sorted and without duplicates.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use kmodkit_module::{ModuleFile, SymbolVersion};

/// Where a symbol requirement is satisfied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SymbolSource {
    /// The kernel exports it with this CRC: `kernel(SYM)`.
    Kernel,
    /// Anything else: `ksym(SYM)`.
    Ksym,
}

/// One ABI dependency: `kernel(SYM) = 0xCRC` or `ksym(SYM) = 0xCRC`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SymbolDep {
    pub source: SymbolSource,
    pub symbol: String,
    pub crc: u32,
}

impl SymbolDep {
    /// The RPM capability name, `kernel(SYM)`/`ksym(SYM)`; with a flavor
    /// (SUSE KMPs) `ksym(FLAVOR:SYM)`.
    pub fn rpm_name(&self, flavor: Option<&str>) -> String {
        let prefix = match self.source {
            SymbolSource::Kernel => "kernel",
            SymbolSource::Ksym => "ksym",
        };
        match flavor {
            Some(f) => format!("{prefix}({f}:{})", self.symbol),
            None => format!("{prefix}({})", self.symbol),
        }
    }

    /// The capability version, `0x%08x`.
    pub fn rpm_version(&self) -> String {
        format!("0x{:08x}", self.crc)
    }
}

/// A kernel's exports with their CRCs (its `Module.symvers`).
#[derive(Debug, Clone, Default)]
pub struct KernelAbi {
    pub release: String,
    pub exports: HashMap<String, u32>,
    /// The file the exports were read from.
    pub source: PathBuf,
}

impl KernelAbi {
    /// The exports of `release` as installed under `root` (headers'
    /// `Module.symvers`, `/boot/symvers-K.gz`, …), or the given file.
    pub fn load(root: &Path, release: &str, symvers: Option<&Path>) -> Result<KernelAbi, SetError> {
        // A given Module.symvers is the whole answer: a build host packages
        // for kernels whose module tree it does not have.
        if let Some(path) = symvers {
            let table = kmodkit_abi::symvers::SymbolTable::load(path)
                .map_err(|e| SetError::Kernel(e.to_string()))?;
            return Ok(KernelAbi::from_table(release, &table));
        }
        let target = kmodkit_abi::target::Target::load(root, release, symvers)
            .map_err(|e| SetError::Kernel(e.to_string()))?;
        Ok(KernelAbi::from_table(release, &target.symbols))
    }

    /// From an already loaded symbol table.
    pub fn from_table(release: &str, table: &kmodkit_abi::symvers::SymbolTable) -> KernelAbi {
        KernelAbi {
            release: release.to_string(),
            exports: table
                .exports
                .iter()
                .filter_map(|(name, e)| e.crc.map(|crc| (name.clone(), crc)))
                .collect(),
            source: table.source.clone(),
        }
    }
}

/// One module file of a set.
#[derive(Debug, Clone)]
pub struct PackageFile {
    /// The module's name (`jool_common`).
    pub module: String,
    /// The file name as shipped (`jool_common.ko.xz`): each format puts it
    /// in its own directory of `/lib/modules/K/`.
    pub file_name: String,
    /// The bytes as shipped (signed and compressed as built).
    pub contents: Vec<u8>,
    /// The modification time the package records.
    pub mtime: u64,
    /// `__versions`: the symbols it imports with their CRCs.
    pub imports: Vec<SymbolVersion>,
    /// `__crc_SYM`: what it exports with CRCs.
    pub exports: Vec<SymbolVersion>,
    /// `.modinfo` `license`, `description`, `version`.
    pub license: Option<String>,
    pub description: Option<String>,
}

/// The modules one driver package built for one kernel.
#[derive(Debug, Clone)]
pub struct ModuleSet {
    /// The driver package's name (`jool`, `mlnx-en`): packages are
    /// `kmod-NAME`, `NAME-modules-K`, `NAME-kernel-only`.
    pub name: String,
    pub version: String,
    /// The package release (`1`), never a build time.
    pub release: String,
    /// The kernel release the modules are for (`uname -r`).
    pub kernel: String,
    /// The RPM architecture of the modules (`x86_64`).
    pub arch: String,
    pub files: Vec<PackageFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error(transparent)]
    Module(#[from] kmodkit_module::Error),
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{0}")]
    Kernel(String),
    #[error("no modules given for {0}")]
    Empty(String),
    #[error("{field} {value:?}: {why}")]
    BadField {
        field: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The RPM architecture name of an ELF machine.
fn rpm_arch(machine: u16) -> Option<&'static str> {
    Some(match machine {
        62 => "x86_64",
        3 => "i686",
        183 => "aarch64",
        40 => "armv7hl",
        21 => "ppc64le",
        22 => "s390x",
        243 => "riscv64",
        _ => return None,
    })
}

/// A name or version as every format accepts it: no spaces, no `/`, not
/// empty; RPM forbids `-` in versions and releases.
fn check_field(field: &'static str, value: &str, dash_ok: bool) -> Result<(), SetError> {
    let bad = |why| {
        Err(SetError::BadField {
            field,
            value: value.to_string(),
            why,
        })
    };
    if value.is_empty() {
        return bad("is empty");
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
    {
        return bad("may hold only letters, digits and . _ + ~ -");
    }
    if !dash_ok && value.contains('-') {
        return bad("may not contain '-' (RPM splits NAME-VERSION-RELEASE at dashes)");
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

impl ModuleSet {
    /// Reads `files` (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`) as one set.
    /// Every module must be built for `kernel` (its vermagic) and for one
    /// architecture.
    pub fn from_files(
        name: &str,
        version: &str,
        release: &str,
        kernel: &str,
        files: &[PathBuf],
    ) -> Result<ModuleSet, SetError> {
        check_field("package name", name, true)?;
        check_field("version", version, false)?;
        check_field("release", release, false)?;
        check_field("kernel release", kernel, true)?;
        if files.is_empty() {
            return Err(SetError::Empty(name.to_string()));
        }
        let mut arch: Option<&'static str> = None;
        let mut out = Vec::with_capacity(files.len());
        let mut names = BTreeSet::new();
        for path in files {
            let contents = std::fs::read(path).map_err(|cause| SetError::Io {
                path: path.clone(),
                cause,
            })?;
            let file = ModuleFile::from_bytes(path, contents.clone(), u64::MAX)?;
            let module = file.parse()?;
            let invalid = |what: String| SetError::Invalid {
                path: path.clone(),
                what,
            };
            let vermagic = module.modinfo_first("vermagic").unwrap_or_default();
            let built_for = vermagic.split_whitespace().next().unwrap_or("");
            if built_for != kernel {
                return Err(invalid(format!(
                    "built for kernel {built_for:?} (vermagic), not {kernel}"
                )));
            }
            let a = rpm_arch(module.machine)
                .ok_or_else(|| invalid(format!("unknown ELF machine {}", module.machine)))?;
            match arch {
                Some(prev) if prev != a => {
                    return Err(invalid(format!("is {a}, the other modules are {prev}")))
                }
                _ => arch = Some(a),
            }
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let module_name = module
                .modinfo_first("name")
                .unwrap_or_else(|| module_name_of(&file_name));
            if !names.insert(file_name.clone()) {
                return Err(invalid(format!("a second module file named {file_name}")));
            }
            let mtime = std::fs::metadata(path)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            out.push(PackageFile {
                module: module_name,
                file_name,
                contents,
                mtime,
                imports: module.versions.clone(),
                exports: module.depmod_exports.clone(),
                license: module.modinfo_first("license"),
                description: module.modinfo_first("description"),
            });
        }
        out.sort_by(|a, b| a.file_name.cmp(&b.file_name));
        Ok(ModuleSet {
            name: name.to_string(),
            version: version.to_string(),
            release: release.to_string(),
            kernel: kernel.to_string(),
            arch: arch.unwrap_or("x86_64").to_string(),
            files: out,
        })
    }

    /// What the modules need: every `__versions` entry, `kernel()` when
    /// the kernel exports it with that CRC, `ksym()` otherwise. Sorted,
    /// without duplicates, `kernel()` first (the order `rpm -qp
    /// --requires` prints them in).
    pub fn requires(&self, kernel: &KernelAbi) -> Vec<SymbolDep> {
        let mut out = BTreeSet::new();
        for f in &self.files {
            for v in &f.imports {
                let crc = v.crc as u32;
                let source = if kernel.exports.get(&v.name) == Some(&crc) {
                    SymbolSource::Kernel
                } else {
                    SymbolSource::Ksym
                };
                out.insert(SymbolDep {
                    source,
                    symbol: v.name.clone(),
                    crc,
                });
            }
        }
        out.into_iter().collect()
    }

    /// What the modules export with CRCs, as `ksym()`.
    pub fn provides(&self) -> Vec<SymbolDep> {
        let mut out = BTreeSet::new();
        for f in &self.files {
            for e in &f.exports {
                out.insert(SymbolDep {
                    source: SymbolSource::Ksym,
                    symbol: e.name.clone(),
                    crc: e.crc as u32,
                });
            }
        }
        out.into_iter().collect()
    }

    /// The kernel symbols whose CRC the modules expect but `kernel` does
    /// not have (absent or another CRC): why a package manager would
    /// refuse this set on that kernel, before any symbol the set itself
    /// provides.
    pub fn unsatisfied_on(&self, kernel: &KernelAbi) -> Vec<SymbolDep> {
        let own: BTreeSet<(String, u32)> = self
            .provides()
            .into_iter()
            .map(|d| (d.symbol, d.crc))
            .collect();
        self.requires(kernel)
            .into_iter()
            .filter(|d| d.source == SymbolSource::Ksym && !own.contains(&(d.symbol.clone(), d.crc)))
            .collect()
    }

    /// The license RPM and Debian record: the modules' `license` values,
    /// joined when they differ.
    pub fn license(&self) -> String {
        let set: BTreeSet<&str> = self
            .files
            .iter()
            .filter_map(|f| f.license.as_deref())
            .collect();
        if set.is_empty() {
            "Unknown".to_string()
        } else {
            set.into_iter().collect::<Vec<_>>().join(" and ")
        }
    }

    /// The license as an SPDX expression (what rpmlint and Fedora's RPM
    /// guidelines want), from the kernel's module license strings
    /// (`include/linux/module.h`: "GPL" and "GPL v2" both mean GPL v2;
    /// "Dual MIT/GPL", "Dual MPL/GPL" name the other license). Strings
    /// without one exact SPDX meaning ("Dual BSD/GPL": which BSD?,
    /// "GPL and additional rights", "Proprietary") are kept as they are.
    pub fn spdx_license(&self) -> String {
        let set: BTreeSet<String> = self
            .files
            .iter()
            .filter_map(|f| f.license.as_deref())
            .map(|l| {
                match l {
                    "GPL" | "GPL v2" => "GPL-2.0-only",
                    "Dual MIT/GPL" => "GPL-2.0-only OR MIT",
                    "Dual MPL/GPL" => "GPL-2.0-only OR MPL-1.1",
                    other => other,
                }
                .to_string()
            })
            .collect();
        match set.len() {
            0 => "Unknown".to_string(),
            1 => set.into_iter().next().unwrap_or_default(),
            _ => set
                .into_iter()
                .map(|l| if l.contains(' ') { format!("({l})") } else { l })
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    /// The newest file time of the set: the default for timestamps when
    /// `SOURCE_DATE_EPOCH` is not set.
    pub fn newest_mtime(&self) -> u64 {
        self.files.iter().map(|f| f.mtime).max().unwrap_or(0)
    }
}

/// `jool_common.ko.xz` → `jool_common`, `-` read as `_` (the kernel's
/// module names).
fn module_name_of(file_name: &str) -> String {
    let base = file_name.split(".ko").next().unwrap_or(file_name);
    base.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_rpm_would_split_are_refused() {
        assert!(check_field("version", "1.0-2", false).is_err());
        assert!(check_field("version", "", false).is_err());
        assert!(check_field("version", "1 0", false).is_err());
        assert!(check_field("package name", "mlnx-en", true).is_ok());
        assert!(check_field("version", "24.10~rc1", false).is_ok());
    }

    #[test]
    fn capability_names_follow_kernel_rpm_macros() {
        let d = SymbolDep {
            source: SymbolSource::Kernel,
            symbol: "printk".into(),
            crc: 0xabc,
        };
        assert_eq!(d.rpm_name(None), "kernel(printk)");
        assert_eq!(d.rpm_name(Some("default")), "kernel(default:printk)");
        assert_eq!(d.rpm_version(), "0x00000abc");
        assert_eq!(module_name_of("ovpn-dco-v2.ko.xz"), "ovpn_dco_v2");
    }
}
