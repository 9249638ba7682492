//! Reads one Linux kernel module file: `.ko`, or `.ko.xz`, `.ko.zst`,
//! `.ko.gz` (detected by magic), ELF32 or ELF64 in either byte order.
//!
//! What a module carries, and where (kernel `scripts/mod/modpost.c`,
//! `include/linux/export-internal.h`, `include/linux/module.h`):
//!
//! * `.modinfo` — NUL-separated `key=value` strings (name, vermagic,
//!   depends, alias, softdep, firmware, parm/parmtype, license, ...).
//! * `__versions` — the CRCs the module expects of the symbols it imports:
//!   records of `{unsigned long crc; char name[64 - sizeof(long)]}`.
//! * `__version_ext_names` / `__version_ext_crcs` — extended modversions
//!   (Linux 6.14+): NUL-separated names and a parallel `u32` array.
//! * exports — `__ksymtab_<sym>` labels in `__ksymtab` or `__ksymtab_gpl`,
//!   the namespace string at `__kstrtabns_<sym>`, and the CRC in
//!   `__kcrctab*` at `__crc_<sym>` (or an absolute `__crc_` value).
//! * `.gnu.linkonce.this_module` — the module's `struct module`; its size
//!   must equal the running kernel's.
//! * an appended signature (see [`signature`]).
//!
//! Writing, in `make modules_install`'s order after `strip -g`: [`sign`]
//! appends a signature byte-identical to the kernel's `scripts/sign-file`,
//! [`compress`] compresses with `scripts/Makefile.modinst`'s options.
//!
//! Nothing here panics on hostile input: every failure is an [`Error`] that
//! names the file and the problem.

pub mod compress;
pub mod compression;
pub mod elf;
pub mod sign;
pub mod signature;
pub mod sparse;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use compress::{compress_module, CompressError};
pub use compression::{Compression, DecompressError};
pub use elf::{Class, ElfError, Endian};
pub use sign::{create_signing_key, sign_module, HashAlgorithm, NewKey, SignError, SigningKey};
pub use signature::Signature;

/// A module file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {kind}", path.display())]
pub struct Error {
    pub path: PathBuf,
    pub kind: ErrorKind,
}

/// What went wrong while reading a module file.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Decompress(#[from] DecompressError),
    #[error("{0}")]
    Elf(#[from] ElfError),
    #[error("{compression}-compressed data does not hold an ELF object: {source}")]
    CompressedNotElf {
        compression: Compression,
        source: ElfError,
    },
}

/// The raw (decompressed) bytes of a module file.
#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub path: PathBuf,
    pub compression: Compression,
    /// File size on disk.
    pub stored_size: u64,
    /// The ELF image, including any appended signature.
    pub data: Vec<u8>,
}

impl ModuleFile {
    /// Reads and, if needed, decompresses a module file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with_limit(path, compression::DEFAULT_LIMIT)
    }

    /// Like [`ModuleFile::open`], with a ceiling on the decompressed size.
    pub fn open_with_limit(path: impl AsRef<Path>, limit: u64) -> Result<Self, Error> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error {
            path: path.to_path_buf(),
            kind: e.into(),
        })?;
        Self::from_bytes(path, bytes, limit)
    }

    /// Wraps bytes already in memory; `path` is used in error messages.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>, limit: u64) -> Result<Self, Error> {
        let path = path.as_ref().to_path_buf();
        let compression = Compression::detect(&bytes);
        let stored_size = bytes.len() as u64;
        let data = if compression == Compression::None {
            bytes
        } else {
            compression::decompress(compression, &bytes, limit).map_err(|e| Error {
                path: path.clone(),
                kind: e.into(),
            })?
        };
        Ok(ModuleFile {
            path,
            compression,
            stored_size,
            data,
        })
    }

    /// Parses everything the module carries.
    pub fn parse(&self) -> Result<Module, Error> {
        Module::parse(&self.data).map_err(|e| Error {
            path: self.path.clone(),
            kind: if self.compression == Compression::None {
                ErrorKind::Elf(e)
            } else {
                ErrorKind::CompressedNotElf {
                    compression: self.compression,
                    source: e,
                }
            },
        })
    }
}

/// Reads and parses a module file, mapping an uncompressed file into
/// memory instead of copying it (only the pages holding headers, symbols
/// and `.modinfo` are touched, as kmod does). Compressed files are
/// decompressed as by [`ModuleFile::open_with_limit`].
///
/// The file must not be truncated by another process while it is read
/// (the same assumption kmod makes); use [`read_module`] for files that
/// may change underneath.
pub fn read_module_mapped(path: impl AsRef<Path>, limit: u64) -> Result<Module, Error> {
    let path = path.as_ref();
    let err = |kind: ErrorKind| Error {
        path: path.to_path_buf(),
        kind,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.into()))?;
    let len = file.metadata().map_err(|e| err(e.into()))?.len();
    if len == 0 {
        return Module::parse(&[]).map_err(|e| err(e.into()));
    }
    // A plain module: read just the parts the parser uses.
    if let Some(module) = sparse::read(&file, len).map_err(err)? {
        return Ok(module);
    }
    // SAFETY: the mapping is read-only and private; the documented
    // precondition is that nobody truncates the file meanwhile.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| err(e.into()))?;
    let compression = Compression::detect(&map);
    if compression == Compression::None {
        return Module::parse(&map).map_err(|e| err(e.into()));
    }
    // One buffer per thread, reused from module to module: no fresh
    // allocation (and page faults) per decompressed module.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUFFER.with(|buf| {
        let mut data = buf.borrow_mut();
        compression::decompress_into(compression, &map, limit, &mut data)
            .map_err(|e| err(e.into()))?;
        let parsed = Module::parse(&data).map_err(|source| {
            err(ErrorKind::CompressedNotElf {
                compression,
                source,
            })
        });
        // Keep a typical module's worth; give a giant one's memory back.
        if data.capacity() > 64 << 20 {
            *data = Vec::new();
        }
        parsed
    })
}

/// Reads and parses a module file in one step.
pub fn read_module(path: impl AsRef<Path>) -> Result<(ModuleFile, Module), Error> {
    let file = ModuleFile::open(path)?;
    let module = file.parse()?;
    Ok((file, module))
}

/// One `.modinfo` entry. Bytes are kept as found: values are C strings and
/// need not be UTF-8.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModinfoEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl ModinfoEntry {
    pub fn key_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.key)
    }
    pub fn value_str(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.value)
    }
}

/// CRCs in JSON as the strings `Module.symvers` and the text output
/// carry (`0x%08x`, `scripts/mod/modpost.c` `write_dump`), not integers.
pub mod crc_hex {
    use serde::Serializer;

    pub fn serialize<T: Copy + Into<u64>, S: Serializer>(crc: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:#010x}", (*crc).into()))
    }

    pub fn option<T: Copy + Into<u64>, S: Serializer>(
        crc: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match crc {
            Some(c) => serialize(c, s),
            None => s.serialize_none(),
        }
    }
}

/// A symbol version: an imported symbol and the CRC the module expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolVersion {
    pub name: String,
    /// The CRC value; `unsigned long` on disk, only the low 32 bits are
    /// meaningful on current kernels.
    #[serde(serialize_with = "crc_hex::serialize")]
    pub crc: u64,
}

/// A symbol this module exports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportedSymbol {
    pub name: String,
    /// The modversions CRC, when the kernel was built with modversions.
    #[serde(serialize_with = "crc_hex::option")]
    pub crc: Option<u32>,
    /// Exported with `EXPORT_SYMBOL_GPL` (in `__ksymtab_gpl`).
    pub gpl_only: bool,
    /// `EXPORT_SYMBOL_NS` namespace.
    pub namespace: Option<String>,
}

/// A symbol this module needs from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UndefinedSymbol {
    pub name: String,
    /// Weak references may stay unresolved.
    pub weak: bool,
}

/// A symbol a module depends on, as kmod's depmod sees it
/// (`kmod_elf_get_dependency_symbols`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencySymbol {
    pub name: String,
    /// The CRC from `__versions`, 0 when the module has no entry for it.
    #[serde(serialize_with = "crc_hex::serialize")]
    pub crc: u64,
    pub weak: bool,
}

/// Everything read from one module.
#[derive(Debug, Clone, Serialize)]
pub struct Module {
    pub class: Class,
    pub endian: Endian,
    pub machine: u16,
    /// `.modinfo` in file order.
    #[serde(serialize_with = "ser_modinfo")]
    pub modinfo: Vec<ModinfoEntry>,
    /// `__versions`, in file order.
    pub versions: Vec<SymbolVersion>,
    /// Whether a `__versions` section exists at all (even empty): the
    /// kernel then ignores the release part of vermagic.
    pub has_versions_section: bool,
    /// Extended modversions, when both sections are present.
    pub extended_versions: Option<Vec<SymbolVersion>>,
    pub exports: Vec<ExportedSymbol>,
    pub undefined: Vec<UndefinedSymbol>,
    /// Exported symbols as kmod's depmod lists them (`kmod_elf_get_symbols`):
    /// every `__crc_<sym>` in symbol-table order with its CRC; for a module
    /// without any (kernel built without modversions) every string of
    /// `__ksymtab_strings` with CRC 0 (namespace strings included, as kmod
    /// does).
    #[serde(skip)]
    pub depmod_exports: Vec<SymbolVersion>,
    /// Size of `.gnu.linkonce.this_module` (= `sizeof(struct module)`).
    pub this_module_size: Option<u64>,
    pub signature: Option<Signature>,
}

fn ser_modinfo<S: serde::Serializer>(v: &[ModinfoEntry], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for e in v {
        seq.serialize_element(&[e.key_str(), e.value_str()])?;
    }
    seq.end()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Module {
    /// Parses a decompressed module image.
    pub fn parse(data: &[u8]) -> Result<Module, ElfError> {
        Module::from_elf(&elf::Elf::parse(data)?, data)
    }

    /// Reads everything from a parsed object; `file` is the whole file
    /// (the signature trailer follows the ELF image).
    pub(crate) fn from_elf(elf: &elf::Elf<'_>, file: &[u8]) -> Result<Module, ElfError> {
        let symbols = elf.symbols()?;
        Ok(Module {
            class: elf.class(),
            endian: elf.endian(),
            machine: elf.machine(),
            modinfo: read_modinfo(elf),
            versions: read_versions(elf)?,
            has_versions_section: elf.section("__versions").is_some(),
            extended_versions: read_extended_versions(elf),
            exports: read_exports(elf, &symbols),
            undefined: read_undefined(elf, &symbols),
            depmod_exports: read_depmod_exports(elf, &symbols),
            this_module_size: elf.section(".gnu.linkonce.this_module").map(|s| s.size),
            signature: signature::parse_signature(file),
        })
    }

    /// All values of a `.modinfo` key, in file order.
    pub fn modinfo_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.modinfo
            .iter()
            .filter(move |e| e.key == key.as_bytes())
            .map(|e| e.value.as_slice())
    }

    /// Undefined symbols with the CRC the module expects, then the
    /// `__versions` entries no undefined symbol claimed (`module_layout`),
    /// as kmod's `kmod_elf_get_dependency_symbols` lists them.
    pub fn dependency_symbols(&self) -> Vec<DependencySymbol> {
        let mut claimed = vec![false; self.versions.len()];
        // First entry per name, as kmod's linear search finds it.
        let mut first: std::collections::HashMap<&str, usize> =
            std::collections::HashMap::with_capacity(self.versions.len());
        for (i, v) in self.versions.iter().enumerate() {
            first.entry(v.name.as_str()).or_insert(i);
        }
        let mut out: Vec<DependencySymbol> = self
            .undefined
            .iter()
            .map(|u| {
                let found = first.get(u.name.as_str()).copied();
                if let Some(i) = found {
                    claimed[i] = true;
                }
                DependencySymbol {
                    name: u.name.clone(),
                    crc: found.map_or(0, |i| self.versions[i].crc),
                    weak: u.weak,
                }
            })
            .collect();
        out.extend(
            self.versions
                .iter()
                .zip(&claimed)
                .filter(|(_, c)| !**c)
                .map(|(v, _)| DependencySymbol {
                    name: v.name.clone(),
                    crc: v.crc,
                    weak: false,
                }),
        );
        out
    }

    /// The first value of a `.modinfo` key, as text.
    pub fn modinfo_first(&self, key: &str) -> Option<String> {
        self.modinfo_values(key).next().map(lossy)
    }
}

/// Splits `.modinfo` as kmod's `kmod_elf_get_strings` does: leading NULs
/// skipped, runs of NULs separate strings, a final unterminated string
/// counts; a string without `=` is a key with an empty value.
fn read_modinfo(elf: &elf::Elf<'_>) -> Vec<ModinfoEntry> {
    let Some(bytes) = elf.section_data(".modinfo") else {
        return Vec::new();
    };
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    if bytes.len() <= 1 {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| match s.iter().position(|&b| b == b'=') {
            Some(eq) => ModinfoEntry {
                key: s[..eq].to_vec(),
                value: s[eq + 1..].to_vec(),
            },
            None => ModinfoEntry {
                key: s.to_vec(),
                value: Vec::new(),
            },
        })
        .collect()
}

/// `__versions`: 64-byte records on both ELF classes (`unsigned long crc`
/// then the name filling the rest, see `struct modversion_info`).
fn read_versions(elf: &elf::Elf<'_>) -> Result<Vec<SymbolVersion>, ElfError> {
    let Some(bytes) = elf.section_data("__versions") else {
        return Ok(Vec::new());
    };
    const RECORD: usize = 64;
    if bytes.len() % RECORD != 0 {
        return Err(ElfError::BadEntrySize {
            section: "__versions",
            len: bytes.len() as u64,
            entry: RECORD as u64,
        });
    }
    let crc_size = match elf.class() {
        Class::Elf32 => 4,
        Class::Elf64 => 8,
    };
    Ok(bytes
        .chunks_exact(RECORD)
        .map(|rec| SymbolVersion {
            crc: elf.uint_in(rec, 0, crc_size).unwrap_or(0),
            name: lossy(elf::c_str_at(&rec[crc_size..], 0)),
        })
        .collect())
}

/// Extended modversions (kernel 6.14, `CONFIG_EXTENDED_MODVERSIONS`): used
/// only when both sections exist, as in `kernel/module/version.c`.
fn read_extended_versions(elf: &elf::Elf<'_>) -> Option<Vec<SymbolVersion>> {
    let names = elf.section_data("__version_ext_names")?;
    let crcs = elf.section_data("__version_ext_crcs")?;
    let names = names.split(|&b| b == 0).filter(|s| !s.is_empty());
    Some(
        names
            .zip(crcs.chunks_exact(4))
            .map(|(name, crc)| SymbolVersion {
                name: lossy(name),
                crc: elf.uint_in(crc, 0, 4).unwrap_or(0),
            })
            .collect(),
    )
}

/// The CRC behind a `__crc_<sym>` symbol, as kmod's `kmod_elf_resolve_crc`:
/// an absolute symbol holds the value itself; otherwise the value is an
/// offset into the section (`__kcrctab*`) holding a `u32`.
fn resolve_crc(elf: &elf::Elf<'_>, sym: &elf::Symbol<'_>) -> Option<u32> {
    if sym.shndx == elf::SHN_ABS || sym.shndx == elf::SHN_UNDEF {
        return Some(sym.value as u32);
    }
    let sec = elf.section_by_index(sym.shndx)?;
    let bytes = elf.section_bytes(&sec);
    let off = usize::try_from(sym.value).ok()?;
    elf.uint_in(bytes, off, 4).map(|v| v as u32)
}

fn read_exports(elf: &elf::Elf<'_>, symbols: &[elf::Symbol<'_>]) -> Vec<ExportedSymbol> {
    use std::collections::HashMap;
    let mut crcs: HashMap<&[u8], u32> = HashMap::new();
    let mut namespaces: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut entries: Vec<(&[u8], bool)> = Vec::new();
    for sym in symbols {
        if let Some(name) = sym.name.strip_prefix(b"__crc_") {
            if let Some(crc) = resolve_crc(elf, sym) {
                crcs.insert(name, crc);
            }
        } else if let Some(name) = sym.name.strip_prefix(b"__kstrtabns_") {
            if let Some(sec) = elf.section_by_index(sym.shndx) {
                let bytes = elf.section_bytes(&sec);
                namespaces.insert(name, elf::c_str_at(bytes, sym.value as usize));
            }
        } else if let Some(name) = sym.name.strip_prefix(b"__ksymtab_") {
            if sym.shndx == elf::SHN_UNDEF {
                continue;
            }
            let Some(sec) = elf.section_by_index(sym.shndx) else {
                continue;
            };
            match sec.name {
                b"__ksymtab" => entries.push((name, false)),
                b"__ksymtab_gpl" => entries.push((name, true)),
                _ => {}
            }
        }
    }
    entries
        .into_iter()
        .map(|(name, gpl_only)| ExportedSymbol {
            name: lossy(name),
            crc: crcs.get(name).copied(),
            gpl_only,
            namespace: namespaces
                .get(name)
                .filter(|ns| !ns.is_empty())
                .map(|ns| lossy(ns)),
        })
        .collect()
}

fn read_depmod_exports(elf: &elf::Elf<'_>, symbols: &[elf::Symbol<'_>]) -> Vec<SymbolVersion> {
    let with_crc: Vec<SymbolVersion> = symbols
        .iter()
        .filter_map(|sym| {
            let name = sym.name.strip_prefix(b"__crc_")?;
            Some(SymbolVersion {
                name: lossy(name),
                // kmod_elf_resolve_crc yields (uint64_t)-1 when unresolvable.
                crc: resolve_crc(elf, sym).map_or(u64::MAX, u64::from),
            })
        })
        .collect();
    if !with_crc.is_empty() {
        return with_crc;
    }
    let Some(strings) = elf.section_data("__ksymtab_strings") else {
        return Vec::new();
    };
    strings
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| SymbolVersion {
            name: lossy(s),
            crc: 0,
        })
        .collect()
}

/// Undefined symbols as kmod's `kmod_elf_get_dependency_symbols` lists
/// them: section index `SHN_UNDEF`, non-empty name, SPARC register symbols
/// excluded.
fn read_undefined(elf: &elf::Elf<'_>, symbols: &[elf::Symbol<'_>]) -> Vec<UndefinedSymbol> {
    let sparc = matches!(elf.machine(), elf::EM_SPARC | elf::EM_SPARCV9);
    symbols
        .iter()
        .filter(|s| s.shndx == elf::SHN_UNDEF && !s.name.is_empty())
        .filter(|s| !(sparc && s.kind() == elf::STT_REGISTER))
        .map(|s| UndefinedSymbol {
            name: lossy(s.name),
            weak: s.bind() == elf::STB_WEAK,
        })
        .collect()
}
