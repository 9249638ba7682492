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

use std::cell::RefCell;
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

/// Where the parser reads bytes from: a buffer in memory, or a file read
/// range by range (`crate::sparse`). The idea of the object crate's
/// `ReadRef`: one parser, whatever holds the bytes.
pub trait RangeSource {
    /// What a failed read is; a bad structure arrives as [`ElfError`].
    type Error: From<ElfError>;
    /// Size of the whole object (the file size).
    fn size(&self) -> u64;
    /// The bytes `offset..offset + size`. The parser asks only for ranges
    /// it has checked against [`RangeSource::size`].
    fn fetch(&mut self, offset: u64, size: u64) -> Result<&[u8], Self::Error>;
}

impl RangeSource for &[u8] {
    type Error = ElfError;
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn fetch(&mut self, offset: u64, size: u64) -> Result<&[u8], ElfError> {
        // Unreachable for a checked range; an empty slice rather than a panic.
        Ok(range(self, offset, size).unwrap_or(&[]))
    }
}

/// `data[offset..offset + size]`, or `None` when any part is outside.
pub fn range(data: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    data.get(start..end)
}

/// One section header as read from the table, located in bounds.
#[derive(Debug, Clone, Copy)]
pub struct SectionHeader {
    pub index: u16,
    /// Offset of the name in the section-name string table.
    pub name_offset: u32,
    pub kind: u32,
    pub offset: u64,
    pub size: u64,
}

/// What the ELF header and section table say, validated: where every
/// section lies, with no section bytes read beyond the name table.
#[derive(Debug, Clone)]
pub struct Layout {
    class: Class,
    endian: Endian,
    machine: u16,
    /// The section-name string table (`e_shstrndx`): offset and size.
    names: (u64, u64),
    /// Index 0 excluded; only sections inside the file with a name offset
    /// inside the name table (as kmod keeps them).
    sections: Vec<SectionHeader>,
}

impl Layout {
    /// Validates the ELF header and section table, as kmod's `kmod_elf_new`
    /// does, reading from `src` only the header, the table and the
    /// section-name table.
    pub fn read<S: RangeSource>(src: &mut S) -> Result<Layout, S::Error> {
        let len = src.size();
        let head = src.fetch(0, len.min(64))?;
        if head.len() < 4 || &head[..4] != b"\x7fELF" {
            return Err(ElfError::BadMagic.into());
        }
        let too_short = ElfError::TooShort {
            size: usize::try_from(len).unwrap_or(usize::MAX),
        };
        if len <= 16 {
            return Err(too_short.into());
        }
        let class = match head[4] {
            1 => Class::Elf32,
            2 => Class::Elf64,
            c => return Err(ElfError::BadClass(c).into()),
        };
        let endian = match head[5] {
            1 => Endian::Little,
            2 => Endian::Big,
            e => return Err(ElfError::BadEncoding(e).into()),
        };
        let (ehdr_size, shdr_size) = match class {
            Class::Elf32 => (52u64, 40u16),
            Class::Elf64 => (64u64, 64u16),
        };
        if len <= ehdr_size {
            return Err(too_short.into());
        }
        let rd =
            |data: &[u8], off: u64, size: usize| read_uint(data, off, size, endian).unwrap_or(0);
        let machine = rd(head, 18, 2) as u16;
        let (shoff, shentsize, shnum, shstrndx) = match class {
            Class::Elf32 => (
                rd(head, 32, 4),
                rd(head, 46, 2) as u16,
                rd(head, 48, 2) as u16,
                rd(head, 50, 2) as u16,
            ),
            Class::Elf64 => (
                rd(head, 40, 8),
                rd(head, 58, 2) as u16,
                rd(head, 60, 2) as u16,
                rd(head, 62, 2) as u16,
            ),
        };
        let file_size = usize::try_from(len).unwrap_or(usize::MAX);
        if shentsize != shdr_size {
            return Err(ElfError::BadSectionEntrySize {
                found: shentsize,
                expected: shdr_size,
            }
            .into());
        }
        let table_size = u64::from(shdr_size) * u64::from(shnum);
        if shoff.checked_add(table_size).is_none_or(|end| end > len) {
            return Err(ElfError::SectionTableOutOfBounds {
                offset: shoff,
                count: shnum,
                size: file_size,
            }
            .into());
        }

        // Raw headers first: names need the string table, which is itself
        // one of the sections.
        let table = src.fetch(shoff, table_size)?;
        let raw: Vec<SectionHeader> = (0..shnum)
            .map(|index| {
                let base = u64::from(index) * u64::from(shdr_size);
                let (name_offset, kind, offset, size) = match class {
                    Class::Elf32 => (
                        rd(table, base, 4) as u32,
                        rd(table, base + 4, 4) as u32,
                        rd(table, base + 16, 4),
                        rd(table, base + 20, 4),
                    ),
                    Class::Elf64 => (
                        rd(table, base, 4) as u32,
                        rd(table, base + 4, 4) as u32,
                        rd(table, base + 24, 8),
                        rd(table, base + 32, 8),
                    ),
                };
                SectionHeader {
                    index,
                    name_offset,
                    kind,
                    offset,
                    size,
                }
            })
            .collect();
        let in_bounds = |off: u64, size: u64| off.checked_add(size).is_some_and(|e| e <= len);

        if shstrndx == SHN_UNDEF || shstrndx >= shnum {
            return Err(ElfError::BadStringTableIndex(shstrndx).into());
        }
        let strtab = raw[usize::from(shstrndx)];
        if !in_bounds(strtab.offset, strtab.size) {
            return Err(ElfError::SectionOutOfBounds {
                index: shstrndx,
                name: ".shstrtab".into(),
                offset: strtab.offset,
                len: strtab.size,
                size: file_size,
            }
            .into());
        }
        let names = src.fetch(strtab.offset, strtab.size)?;
        if names.last() != Some(&0) {
            return Err(ElfError::UnterminatedStringTable.into());
        }

        // The kernel's loader (elf_validity_cache_copy in
        // kernel/module/main.c) refuses a module with any section past the
        // end of the file; kmod silently skips such a section. We refuse
        // too, so a damaged module is reported instead of read as empty.
        // SHT_NOBITS sections occupy no file bytes and are exempt.
        const SHT_NOBITS: u32 = 8;
        for h in raw.iter().skip(1) {
            if h.kind != SHT_NOBITS && !in_bounds(h.offset, h.size) {
                return Err(ElfError::SectionOutOfBounds {
                    index: h.index,
                    name: String::from_utf8_lossy(c_str_at(names, h.name_offset as usize))
                        .into_owned(),
                    offset: h.offset,
                    len: h.size,
                    size: file_size,
                }
                .into());
            }
        }
        let names_len = names.len();
        // Index 0 is reserved.
        let sections = raw
            .into_iter()
            .skip(1)
            .filter(|h| in_bounds(h.offset, h.size) && (h.name_offset as usize) < names_len)
            .collect();
        Ok(Layout {
            class,
            endian,
            machine,
            names: (strtab.offset, strtab.size),
            sections,
        })
    }

    /// The sections kept, in table order (index 0 excluded).
    pub fn sections(&self) -> &[SectionHeader] {
        &self.sections
    }

    /// The name of a section, read from `data` (which must hold at least
    /// the bytes [`Layout::read`] fetched, at their file offsets).
    pub fn name<'a>(&self, data: &'a [u8], section: &SectionHeader) -> &'a [u8] {
        let names = range(data, self.names.0, self.names.1).unwrap_or(&[]);
        c_str_at(names, section.name_offset as usize)
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
    /// Indices of the sections whose bytes were asked for, so a reader
    /// that filled `data` only in part (`crate::sparse`) can tell whether
    /// the parse saw real bytes everywhere it looked.
    touched: RefCell<Vec<u16>>,
}

fn read_uint(data: &[u8], offset: u64, size: usize, endian: Endian) -> Option<u64> {
    let bytes = range(data, offset, size as u64)?;
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
    /// Validates the ELF header and section table (see [`Layout::read`])
    /// and records every section whose bytes lie inside the buffer.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        let layout = Layout::read(&mut &*data)?;
        Ok(Elf::with_layout(data, &layout))
    }

    /// The view of `data` that `layout` describes. `data` has the file's
    /// length and holds at least the bytes [`Layout::read`] fetched; a
    /// section whose bytes were not filled in reads as whatever `data`
    /// holds there (see [`Elf::touched_sections`]).
    pub fn with_layout(data: &'a [u8], layout: &Layout) -> Self {
        let sections = layout
            .sections
            .iter()
            .map(|h| Section {
                index: h.index,
                name: layout.name(data, h),
                kind: h.kind,
                offset: h.offset,
                size: h.size,
            })
            .collect();
        Elf {
            data,
            class: layout.class,
            endian: layout.endian,
            machine: layout.machine,
            sections,
            touched: RefCell::new(Vec::new()),
        }
    }

    /// The sections whose bytes [`Elf::section_bytes`] handed out so far.
    pub fn touched_sections(&self) -> Vec<u16> {
        self.touched.borrow().clone()
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
        let mut touched = self.touched.borrow_mut();
        if !touched.contains(&section.index) {
            touched.push(section.index);
        }
        // In bounds when `data` is the whole object: checked by Layout::read.
        range(self.data, section.offset, section.size).unwrap_or(&[])
    }

    pub fn section_data(&self, name: &str) -> Option<&'a [u8]> {
        self.section(name).map(|s| self.section_bytes(&s))
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
