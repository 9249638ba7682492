//! A bounds-checked, read-only view of an ELF relocatable object (a kernel
//! module), 32- or 64-bit, little- or big-endian.
//!
//! On-disk layout (see `include/uapi/linux/elf.h` and kmod's
//! `libkmod/libkmod-elf.c`, which this mirrors for what it accepts):
//!
//! ```text
//! Ehdr   e_ident[16] (class at 4, data at 5), ..., e_machine @18 (u16),
//!        e_shoff @32/@40, e_shentsize @46/@58, e_shnum @48/@60,
//!        e_shstrndx @50/@62   (ELF32 / ELF64 offsets)
//! Shdr   name u32, type u32, flags, addr, offset, size, link u32, info u32,
//!        addralign, entsize   (flags..size are u32 on ELF32, u64 on ELF64)
//! Sym32  name u32, value u32, size u32, info u8, other u8, shndx u16
//! Sym64  name u32, info u8, other u8, shndx u16, value u64, size u64
//! ```
//!
//! Every offset read from the file is checked against the buffer; a bad one
//! yields an [`ElfError`] naming the structure and the offset, never a panic.

use std::fmt;

/// `SHN_UNDEF`: the symbol is not defined in this object.
pub const SHN_UNDEF: u16 = 0;
/// `SHN_ABS`: the symbol value is absolute (old-style modversions CRCs).
pub const SHN_ABS: u16 = 0xfff1;
/// `STB_WEAK` symbol binding.
pub const STB_WEAK: u8 = 2;
/// `STT_REGISTER` (SPARC): undefined-looking register symbols kmod ignores.
pub const STT_REGISTER: u8 = 13;
/// `EM_SPARC` and `EM_SPARCV9`.
pub const EM_SPARC: u16 = 2;
pub const EM_SPARCV9: u16 = 43;

/// Why the ELF structure could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file (bad magic bytes)")]
    BadMagic,
    #[error("file too short for an ELF header ({size} bytes)")]
    TooShort { size: usize },
    #[error("unsupported ELF class {0} (expected 1 = ELF32 or 2 = ELF64)")]
    BadClass(u8),
    #[error("unsupported ELF data encoding {0} (expected 1 = LSB or 2 = MSB)")]
    BadEncoding(u8),
    #[error("section header entry size is {found}, expected {expected}")]
    BadSectionEntrySize { found: u16, expected: u16 },
    #[error("section header table at offset {offset} with {count} entries runs past the end of the file ({size} bytes)")]
    SectionTableOutOfBounds {
        offset: u64,
        count: u16,
        size: usize,
    },
    #[error("section {index} ({name}) at offset {offset} with size {len} runs past the end of the file ({size} bytes)")]
    SectionOutOfBounds {
        index: u16,
        name: String,
        offset: u64,
        len: u64,
        size: usize,
    },
    #[error("section-name string table index {0} is invalid")]
    BadStringTableIndex(u16),
    #[error("section-name string table does not end with a NUL byte")]
    UnterminatedStringTable,
    #[error("section {section} has size {len}, not a multiple of its entry size {entry}")]
    BadEntrySize {
        section: &'static str,
        len: u64,
        entry: u64,
    },
    #[error("symbol {index} names offset {offset} past the end of .strtab ({len} bytes)")]
    SymbolNameOutOfBounds {
        index: usize,
        offset: u32,
        len: usize,
    },
}

/// ELF class: 32- or 64-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Class {
    Elf32,
    Elf64,
}

/// Byte order of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Endian {
    Little,
    Big,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Elf32 => "ELF32",
            Class::Elf64 => "ELF64",
        })
    }
}

/// One section header, with its location already checked against the file.
#[derive(Debug, Clone, Copy)]
pub struct Section<'a> {
    pub index: u16,
    pub name: &'a [u8],
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
}

/// One symbol-table entry.
#[derive(Debug, Clone, Copy)]
pub struct Symbol<'a> {
    pub index: usize,
    pub name: &'a [u8],
    pub value: u64,
    pub info: u8,
    pub shndx: u16,
}

impl Symbol<'_> {
    pub fn bind(&self) -> u8 {
        self.info >> 4
    }
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
}

/// A validated view of an ELF object held in memory.
#[derive(Debug, Clone)]
pub struct Elf<'a> {
    data: &'a [u8],
    class: Class,
    endian: Endian,
    machine: u16,
    sections: Vec<Section<'a>>,
}

fn read_uint(data: &[u8], offset: u64, size: usize, endian: Endian) -> Option<u64> {
    let start = usize::try_from(offset).ok()?;
    let bytes = data.get(start..start.checked_add(size)?)?;
    let mut v = 0u64;
    match endian {
        Endian::Big => {
            for b in bytes {
                v = (v << 8) | u64::from(*b);
            }
        }
        Endian::Little => {
            for b in bytes.iter().rev() {
                v = (v << 8) | u64::from(*b);
            }
        }
    }
    Some(v)
}

/// The NUL-terminated string at `offset` in `data` (to the end if no NUL).
pub fn c_str_at(data: &[u8], offset: usize) -> &[u8] {
    let tail = data.get(offset..).unwrap_or(&[]);
    match tail.iter().position(|&b| b == 0) {
        Some(n) => &tail[..n],
        None => tail,
    }
}

impl<'a> Elf<'a> {
    /// Validates the ELF header and section table, as kmod's `kmod_elf_new`
    /// does, and records every section whose bytes lie inside the file.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 4 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::BadMagic);
        }
        if data.len() <= 16 {
            return Err(ElfError::TooShort { size: data.len() });
        }
        let class = match data[4] {
            1 => Class::Elf32,
            2 => Class::Elf64,
            c => return Err(ElfError::BadClass(c)),
        };
        let endian = match data[5] {
            1 => Endian::Little,
            2 => Endian::Big,
            e => return Err(ElfError::BadEncoding(e)),
        };
        let (ehdr_size, shdr_size) = match class {
            Class::Elf32 => (52usize, 40u16),
            Class::Elf64 => (64usize, 64u16),
        };
        if data.len() <= ehdr_size {
            return Err(ElfError::TooShort { size: data.len() });
        }
        let rd = |off: u64, size: usize| read_uint(data, off, size, endian).unwrap_or(0);
        let machine = rd(18, 2) as u16;
        let (shoff, shentsize, shnum, shstrndx) = match class {
            Class::Elf32 => (
                rd(32, 4),
                rd(46, 2) as u16,
                rd(48, 2) as u16,
                rd(50, 2) as u16,
            ),
            Class::Elf64 => (
                rd(40, 8),
                rd(58, 2) as u16,
                rd(60, 2) as u16,
                rd(62, 2) as u16,
            ),
        };
        if shentsize != shdr_size {
            return Err(ElfError::BadSectionEntrySize {
                found: shentsize,
                expected: shdr_size,
            });
        }
        let table_end = u64::from(shdr_size)
            .checked_mul(u64::from(shnum))
            .and_then(|n| n.checked_add(shoff));
        if table_end.is_none_or(|end| end > data.len() as u64) {
            return Err(ElfError::SectionTableOutOfBounds {
                offset: shoff,
                count: shnum,
                size: data.len(),
            });
        }

        // Raw headers first: names need the string table, which is itself
        // one of the sections.
        let raw: Vec<(u32, u32, u64, u64)> = (0..shnum)
            .map(|i| {
                let base = shoff + u64::from(i) * u64::from(shdr_size);
                match class {
                    Class::Elf32 => (
                        rd(base, 4) as u32,
                        rd(base + 4, 4) as u32,
                        rd(base + 16, 4),
                        rd(base + 20, 4),
                    ),
                    Class::Elf64 => (
                        rd(base, 4) as u32,
                        rd(base + 4, 4) as u32,
                        rd(base + 24, 8),
                        rd(base + 32, 8),
                    ),
                }
            })
            .collect();
        let in_bounds = |off: u64, size: u64| {
            off.checked_add(size)
                .is_some_and(|e| e <= data.len() as u64)
        };

        if shstrndx == SHN_UNDEF || shstrndx >= shnum {
            return Err(ElfError::BadStringTableIndex(shstrndx));
        }
        let (_, _, str_off, str_size) = raw[usize::from(shstrndx)];
        if !in_bounds(str_off, str_size) {
            return Err(ElfError::SectionOutOfBounds {
                index: shstrndx,
                name: ".shstrtab".into(),
                offset: str_off,
                len: str_size,
                size: data.len(),
            });
        }
        let names = &data[str_off as usize..(str_off + str_size) as usize];
        if names.last() != Some(&0) {
            return Err(ElfError::UnterminatedStringTable);
        }

        // The kernel's loader (elf_validity_cache_copy in
        // kernel/module/main.c) refuses a module with any section past the
        // end of the file; kmod silently skips such a section. We refuse
        // too, so a damaged module is reported instead of read as empty.
        // SHT_NOBITS sections occupy no file bytes and are exempt.
        const SHT_NOBITS: u32 = 8;
        for (i, &(name_off, kind, off, size)) in raw.iter().enumerate().skip(1) {
            if kind != SHT_NOBITS && !in_bounds(off, size) {
                return Err(ElfError::SectionOutOfBounds {
                    index: i as u16,
                    name: String::from_utf8_lossy(c_str_at(names, name_off as usize)).into_owned(),
                    offset: off,
                    len: size,
                    size: data.len(),
                });
            }
        }
        // Index 0 is reserved.
        let sections = raw
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, &(name_off, _, off, size))| {
                in_bounds(off, size) && (name_off as usize) < names.len()
            })
            .map(|(i, &(name_off, kind, offset, size))| Section {
                index: i as u16,
                name: c_str_at(names, name_off as usize),
                kind,
                offset,
                size,
            })
            .collect();

        Ok(Elf {
            data,
            class,
            endian,
            machine,
            sections,
        })
    }

    pub fn class(&self) -> Class {
        self.class
    }
    pub fn endian(&self) -> Endian {
        self.endian
    }
    pub fn machine(&self) -> u16 {
        self.machine
    }
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
    pub fn sections(&self) -> &[Section<'a>] {
        &self.sections
    }

    /// The first section of that name (kmod's lookup order).
    pub fn section(&self, name: &str) -> Option<Section<'a>> {
        self.sections
            .iter()
            .copied()
            .find(|s| s.name == name.as_bytes())
    }

    /// The section with that index, if its bytes are inside the file.
    pub fn section_by_index(&self, index: u16) -> Option<Section<'a>> {
        self.sections.iter().copied().find(|s| s.index == index)
    }

    /// The bytes of a section (empty for `SHT_NOBITS` semantics is not
    /// applied: kmod reads `sh_offset..sh_offset+sh_size` regardless).
    pub fn section_bytes(&self, section: &Section<'a>) -> &'a [u8] {
        // In bounds: checked when the section list was built.
        &self.data[section.offset as usize..(section.offset + section.size) as usize]
    }

    pub fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        self.section(name).map(|s| self.section_bytes(&s))
    }

    /// Reads an unsigned integer of `size` bytes in the object's byte order.
    pub fn read_uint(&self, offset: u64, size: usize) -> Option<u64> {
        read_uint(self.data, offset, size, self.endian)
    }

    /// Reads an unsigned integer from a slice in the object's byte order.
    pub fn uint_in(&self, bytes: &[u8], offset: usize, size: usize) -> Option<u64> {
        read_uint(bytes, offset as u64, size, self.endian)
    }

    /// Iterates `.symtab`, skipping the reserved entry 0. Fails when the
    /// table size is not a whole number of entries or a name is outside
    /// `.strtab`, as kmod's `kmod_elf_get_dependency_symbols` does.
    pub fn symbols(&self) -> Result<Vec<Symbol<'a>>, ElfError> {
        let (Some(symtab), Some(strtab)) =
            (self.section_data(".symtab"), self.section_data(".strtab"))
        else {
            return Ok(Vec::new());
        };
        let entry = match self.class {
            Class::Elf32 => 16usize,
            Class::Elf64 => 24usize,
        };
        if symtab.len() % entry != 0 {
            return Err(ElfError::BadEntrySize {
                section: ".symtab",
                len: symtab.len() as u64,
                entry: entry as u64,
            });
        }
        let count = symtab.len() / entry;
        let mut out = Vec::with_capacity(count.saturating_sub(1));
        for index in 1..count {
            let base = index * entry;
            let rd = |off: usize, size: usize| self.uint_in(symtab, base + off, size).unwrap_or(0);
            let (name_off, value, info, shndx) = match self.class {
                Class::Elf32 => (rd(0, 4) as u32, rd(4, 4), rd(12, 1) as u8, rd(14, 2) as u16),
                Class::Elf64 => (rd(0, 4) as u32, rd(8, 8), rd(4, 1) as u8, rd(6, 2) as u16),
            };
            if name_off as usize >= strtab.len() {
                return Err(ElfError::SymbolNameOutOfBounds {
                    index,
                    offset: name_off,
                    len: strtab.len(),
                });
            }
            out.push(Symbol {
                index,
                name: c_str_at(strtab, name_off as usize),
                value,
                info,
                shndx,
            });
        }
        Ok(out)
    }
}
