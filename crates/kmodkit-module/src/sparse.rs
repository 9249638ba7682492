//! Reading only the parts of an uncompressed module that [`crate::Module`]
//! looks at.
//!
//! A 6.1 tree holds ~400 MB of modules, but the reader needs only the ELF
//! header, the section table, a few sections (`.modinfo`, `.symtab`,
//! `.strtab`, `__versions`, `__ksymtab*`, `__kcrctab*`, the extended
//! version tables) and the signature trailer: a few percent of each file.
//! The buffer has the file's length (so every offset means what it means
//! in the file) but is zero-allocated, so untouched pages cost nothing;
//! the wanted ranges are read into place with `pread`.
//!
//! There is no second ELF parser here: [`crate::elf::Layout::read`] reads
//! the header and section table through [`FileRanges`], asking for each
//! range after checking it, and the module parser then runs on the buffer.
//! Which sections it actually read comes back from
//! [`crate::elf::Elf::touched_sections`]; any it read that were not
//! fetched yet are fetched and the parse repeated, so the result is the
//! one the whole file would give.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::elf::{Elf, ElfError, Layout, RangeSource};
use crate::{signature, ErrorKind, Module};

/// Sections the module parser reads in every module that has them:
/// fetched before the first parse so that one parse is the usual case.
/// Only a hint for speed; correctness comes from the touched sections.
fn prefetch(name: &[u8]) -> bool {
    matches!(
        name,
        b".modinfo"
            | b".symtab"
            | b".strtab"
            | b"__versions"
            | b"__version_ext_names"
            | b"__version_ext_crcs"
    ) || name.starts_with(b"__ksymtab")
        || name.starts_with(b"__kcrctab")
}

/// The tail read in one go for the signature: a PKCS#7 blob from
/// sign-file is under 1 KiB; a longer one costs a second read.
const TAIL: u64 = 4 << 10;

/// A file-sized buffer, filled range by range from the file.
struct FileRanges<'f> {
    file: &'f File,
    buf: Vec<u8>,
}

impl RangeSource for FileRanges<'_> {
    type Error = ErrorKind;

    fn size(&self) -> u64 {
        self.buf.len() as u64
    }

    fn fetch(&mut self, offset: u64, size: u64) -> Result<&[u8], ErrorKind> {
        let Some(start) = usize::try_from(offset).ok() else {
            return Ok(&[]);
        };
        let Some(end) = usize::try_from(size)
            .ok()
            .and_then(|size| start.checked_add(size))
            .filter(|&end| end <= self.buf.len())
        else {
            // The parser asks only for checked ranges; nothing to read.
            return Ok(&[]);
        };
        let part = &mut self.buf[start..end];
        if !part.is_empty() {
            self.file.read_exact_at(part, offset)?;
        }
        Ok(part)
    }
}

/// Parses a plain ELF module of `len` bytes from `file`, reading only the
/// ranges the parser needs; `None` when the file does not start like an
/// ELF object (compressed, or not a module at all).
pub(crate) fn read(file: &File, len: u64) -> Result<Option<Module>, ErrorKind> {
    let Ok(size) = usize::try_from(len) else {
        return Ok(None);
    };
    let mut src = FileRanges {
        file,
        buf: vec![0u8; size],
    };
    let layout = match Layout::read(&mut src) {
        Ok(layout) => layout,
        Err(ErrorKind::Elf(ElfError::BadMagic)) => return Ok(None),
        Err(e) => return Err(e),
    };

    let mut fetched: Vec<u16> = Vec::new();
    for section in layout.sections() {
        if prefetch(layout.name(&src.buf, section)) {
            src.fetch(section.offset, section.size)?;
            fetched.push(section.index);
        }
    }
    let tail = TAIL.min(len);
    src.fetch(len - tail, tail)?;
    if let Some(start) = signature::signature_start(&src.buf) {
        let start = start as u64;
        if start < len - tail {
            src.fetch(start, len - tail - start)?;
        }
    }

    // Each round fetches at least one more section, so this ends; real
    // modules need one round, hostile ones rarely more than two.
    loop {
        let elf = Elf::with_layout(&src.buf, &layout);
        let parsed = Module::from_elf(&elf, &src.buf);
        let missing: Vec<u16> = elf
            .touched_sections()
            .into_iter()
            .filter(|i| !fetched.contains(i))
            .collect();
        if missing.is_empty() {
            return parsed.map(Some).map_err(ErrorKind::Elf);
        }
        drop(elf);
        for index in missing {
            if let Some(s) = layout.sections().iter().find(|s| s.index == index) {
                src.fetch(s.offset, s.size)?;
            }
            fetched.push(index);
        }
    }
}
