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

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Section names whose bytes the reader uses.
fn wanted(name: &[u8]) -> bool {
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

/// The tail kept for the appended signature (PKCS#7 blobs are ~1 KiB).
const TAIL: u64 = 16 << 10;

fn read_range(file: &File, buf: &mut [u8], offset: u64, size: u64) -> std::io::Result<()> {
    let Some(end) = offset.checked_add(size) else {
        return Ok(());
    };
    if end > buf.len() as u64 || size == 0 {
        return Ok(()); // out of bounds: left for the ELF parser to report
    }
    file.read_exact_at(&mut buf[offset as usize..end as usize], offset)
}

/// A file-sized buffer holding the parts of a plain ELF module the reader
/// needs, or `None` when the file does not start like an ELF object.
pub fn read(file: &File, len: u64) -> std::io::Result<Option<Vec<u8>>> {
    if len < 64 {
        return Ok(None);
    }
    let mut buf = vec![0u8; len as usize];
    read_range(file, &mut buf, 0, 64)?;
    if &buf[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let big = buf[5] == 2;
    let wide = buf[4] == 2;
    let rd = |b: &[u8], off: usize, size: usize| -> u64 {
        let s = &b[off..off + size];
        let mut v = 0u64;
        if big {
            for x in s {
                v = (v << 8) | u64::from(*x);
            }
        } else {
            for x in s.iter().rev() {
                v = (v << 8) | u64::from(*x);
            }
        }
        v
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (
            rd(&buf, 40, 8),
            rd(&buf, 58, 2),
            rd(&buf, 60, 2),
            rd(&buf, 62, 2),
        )
    } else {
        (
            rd(&buf, 32, 4),
            rd(&buf, 46, 2),
            rd(&buf, 48, 2),
            rd(&buf, 50, 2),
        )
    };
    let table = shentsize.saturating_mul(shnum);
    read_range(file, &mut buf, shoff, table)?;
    if shoff.saturating_add(table) > len || shentsize < if wide { 64 } else { 40 } {
        return Ok(Some(buf)); // the parser reports the bad table
    }
    let header = |b: &[u8], i: u64| -> (u64, u64, u64) {
        let base = (shoff + i * shentsize) as usize;
        if wide {
            (rd(b, base, 4), rd(b, base + 24, 8), rd(b, base + 32, 8))
        } else {
            (rd(b, base, 4), rd(b, base + 16, 4), rd(b, base + 20, 4))
        }
    };
    if shstrndx >= shnum {
        return Ok(Some(buf));
    }
    let (_, str_off, str_size) = header(&buf, shstrndx);
    read_range(file, &mut buf, str_off, str_size)?;
    let mut ranges = Vec::new();
    for i in 1..shnum {
        let (name_off, off, size) = header(&buf, i);
        let Some(name_start) = str_off.checked_add(name_off) else {
            continue;
        };
        if name_off >= str_size || name_start >= len {
            continue;
        }
        let names = &buf[name_start as usize..(str_off + str_size).min(len) as usize];
        let name = names.split(|&c| c == 0).next().unwrap_or(&[]);
        if wanted(name) {
            ranges.push((off, size));
        }
    }
    for (off, size) in ranges {
        read_range(file, &mut buf, off, size)?;
    }
    let tail = TAIL.min(len);
    read_range(file, &mut buf, len - tail, tail)?;
    Ok(Some(buf))
}
