//! The files kmod 30's depmod writes, rendered byte for byte
//! (`output_deps`, `output_deps_bin`, `output_aliases`, ... in
//! tools/depmod.c), in kmod's order.

use kmodkit_index::lookup::normalize_alias;
use kmodkit_index::writer::IndexBuilder;
use rayon::prelude::*;

use crate::diagnostic::{strerror, Diagnostic};
pub use crate::index_file::OutputFile;
use crate::kmod_hash;
use crate::tree::ModuleTree;
use crate::DepmodError;

/// Every file, in the order kmod writes them, rendered in parallel.
/// The second value holds what kmod reports while writing (bracket and
/// devname problems, missing `modules.builtin*`), in kmod's file order.
pub fn render_all(tree: &ModuleTree) -> Result<(Vec<OutputFile>, Vec<Diagnostic>), DepmodError> {
    type Rendered = Result<(Option<OutputFile>, Vec<Diagnostic>), DepmodError>;
    let dep_lines = dependency_lines(tree);
    let jobs: Vec<Box<dyn Fn() -> Rendered + Sync + '_>> = vec![
        Box::new(|| Ok((text("modules.dep", render_deps(&dep_lines)), vec![]))),
        Box::new(|| {
            Ok((
                bin("modules.dep.bin", render_deps_bin(tree, &dep_lines)?),
                vec![],
            ))
        }),
        Box::new(|| Ok((text("modules.alias", render_aliases(tree)), vec![]))),
        Box::new(|| {
            let mut w = Vec::new();
            Ok((
                bin("modules.alias.bin", render_aliases_bin(tree, &mut w)?),
                w,
            ))
        }),
        Box::new(|| Ok((text("modules.softdep", render_softdeps(tree)), vec![]))),
        Box::new(|| Ok((text("modules.symbols", render_symbols(tree)), vec![]))),
        Box::new(|| {
            Ok((
                bin("modules.symbols.bin", render_symbols_bin(tree)?),
                vec![],
            ))
        }),
        Box::new(|| {
            let mut w = Vec::new();
            Ok((
                bin("modules.builtin.bin", render_builtin_bin(tree, &mut w)?),
                w,
            ))
        }),
        Box::new(|| {
            let mut w = Vec::new();
            Ok((
                bin(
                    "modules.builtin.alias.bin",
                    render_builtin_alias_bin(tree, &mut w)?,
                ),
                w,
            ))
        }),
        Box::new(|| {
            let mut w = Vec::new();
            Ok((text("modules.devname", render_devname(tree, &mut w)), w))
        }),
    ];
    let rendered: Vec<Rendered> = jobs.par_iter().map(|job| job()).collect();
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    for r in rendered {
        let (file, w) = r?;
        files.extend(file);
        warnings.extend(w);
    }
    Ok((files, warnings))
}

fn text(name: &'static str, contents: Vec<u8>) -> Option<OutputFile> {
    Some(OutputFile {
        name,
        contents,
        text: true,
    })
}

fn bin(name: &'static str, contents: Option<Vec<u8>>) -> Option<OutputFile> {
    contents.map(|contents| OutputFile {
        name,
        contents,
        text: false,
    })
}

/// `path: dep dep ...` for every module, in array order. Paths are the
/// file names' bytes, as kmod writes them (`output_deps`).
fn dependency_lines(tree: &ModuleTree) -> Vec<Vec<u8>> {
    tree.modules
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut line = Vec::with_capacity(128);
            line.extend_from_slice(m.index_path());
            line.push(b':');
            for d in tree.dependency_closure(i) {
                line.push(b' ');
                line.extend_from_slice(tree.modules[d].index_path());
            }
            line
        })
        .collect()
}

fn render_deps(lines: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.extend_from_slice(l);
        out.push(b'\n');
    }
    out
}

fn index_error(e: kmodkit_index::writer::NotAscii) -> DepmodError {
    DepmodError::Index(e.to_string())
}

fn render_deps_bin(tree: &ModuleTree, lines: &[Vec<u8>]) -> Result<Option<Vec<u8>>, DepmodError> {
    let mut idx = IndexBuilder::new();
    for (i, (m, line)) in tree.modules.iter().zip(lines).enumerate() {
        idx.insert(&m.name, line, i as u32).map_err(index_error)?;
    }
    Ok(Some(idx.to_bytes()))
}

fn render_aliases(tree: &ModuleTree) -> Vec<u8> {
    let mut out = b"# Aliases extracted from modules themselves.\n".to_vec();
    for m in &tree.modules {
        for (k, v) in &m.record.info {
            if k == "alias" {
                line(&mut out, &[b"alias ", v.as_bytes(), b" ", &m.name]);
            }
        }
    }
    out
}

fn render_aliases_bin(
    tree: &ModuleTree,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<Vec<u8>>, DepmodError> {
    let mut idx = IndexBuilder::new();
    for (i, m) in tree.modules.iter().enumerate() {
        for (k, v) in &m.record.info {
            if k != "alias" {
                continue;
            }
            match normalize_alias(v) {
                Ok(alias) => {
                    idx.insert(alias.as_bytes(), &m.name, i as u32)
                        .map_err(index_error)?;
                }
                // WRN in kmod's output_aliases_bin.
                Err(_) => warnings.push(Diagnostic::Warning(format!("Unmatched bracket in {v}"))),
            }
        }
    }
    Ok(Some(idx.to_bytes()))
}

fn render_softdeps(tree: &ModuleTree) -> Vec<u8> {
    let mut out = b"# Soft dependencies extracted from modules themselves.\n".to_vec();
    for m in &tree.modules {
        for (k, v) in &m.record.info {
            if k == "softdep" {
                line(&mut out, &[b"softdep ", &m.name, b" ", v.as_bytes()]);
            }
        }
    }
    out
}

/// Symbols with a module owner, in kmod's symbol-table iteration order
/// (2048 buckets).
fn owned_symbols(tree: &ModuleTree) -> Vec<(&str, usize)> {
    let mut syms: Vec<(&str, usize)> = tree
        .symbols
        .iter()
        .filter_map(|(name, p)| p.owner.map(|o| (name, o)))
        .collect();
    kmod_hash::sort_in_iteration_order(&mut syms, 2048, |(n, _)| n.as_bytes());
    syms
}

fn render_symbols(tree: &ModuleTree) -> Vec<u8> {
    let mut out = b"# Aliases for symbols, used by symbol_request().\n".to_vec();
    for (name, owner) in owned_symbols(tree) {
        line(
            &mut out,
            &[
                b"alias symbol:",
                name.as_bytes(),
                b" ",
                &tree.modules[owner].name,
            ],
        );
    }
    out
}

fn render_symbols_bin(tree: &ModuleTree) -> Result<Option<Vec<u8>>, DepmodError> {
    let mut idx = IndexBuilder::new();
    for (name, owner) in owned_symbols(tree) {
        let key = format!("symbol:{name}");
        idx.insert(key.as_bytes(), &tree.modules[owner].name, owner as u32)
            .map_err(index_error)?;
    }
    Ok(Some(idx.to_bytes()))
}

/// kmod's `output_builtin_bin` / `output_builtin_alias_bin` when the source
/// file cannot be opened: `dfdopen` warns and the callback writes nothing,
/// so the index is installed as an empty file. Writing it matters: an index
/// left from an earlier run would keep naming modules built in.
fn missing_source(
    file: &'static str,
    tree: &ModuleTree,
    e: &std::io::Error,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<u8> {
    warnings.push(Diagnostic::CannotOpen {
        file,
        dir: tree.dir.clone(),
        reason: strerror(e),
    });
    Vec::new()
}

/// From `modules.builtin`: every line's basename up to the first '.', with
/// '-' as '_' (kmod's `path_to_modname`), value "" priority 0.
fn render_builtin_bin(
    tree: &ModuleTree,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<Vec<u8>>, DepmodError> {
    let data = match std::fs::read(format!("{}/modules.builtin", tree.dir)) {
        Ok(d) => d,
        Err(e) => return Ok(Some(missing_source("modules.builtin", tree, &e, warnings))),
    };
    let mut idx = IndexBuilder::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if !line.first().is_some_and(|b| b.is_ascii_alphabetic()) {
            warnings.push(Diagnostic::Error(format!(
                "Invalid modules.builtin line: {}",
                String::from_utf8_lossy(line)
            )));
            continue;
        }
        let base = line.rsplit(|&b| b == b'/').next().unwrap_or(line);
        let name: Vec<u8> = base
            .iter()
            .take_while(|&&b| b != b'.' && b != 0)
            .map(|&b| if b == b'-' { b'_' } else { b })
            .collect();
        idx.insert(&name, b"", 0).map_err(index_error)?;
    }
    Ok(Some(idx.to_bytes()))
}

/// From `modules.builtin.modinfo` (`modname.key=value\0`...): every
/// `alias` entry, normalised, value = module name, priority 0. Follows
/// kmod's stream parsing, quirks included.
fn render_builtin_alias_bin(
    tree: &ModuleTree,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Option<Vec<u8>>, DepmodError> {
    let data = match std::fs::read(format!("{}/modules.builtin.modinfo", tree.dir)) {
        Ok(d) => d,
        Err(e) => {
            return Ok(Some(missing_source(
                "modules.builtin.modinfo",
                tree,
                &e,
                warnings,
            )))
        }
    };
    let mut idx = IndexBuilder::new();
    let mut pos = 0usize;
    // flush_stream_to: read until `end`, NUL or EOF; returns the text only
    // when `end` was found.
    let read_to = |pos: &mut usize, end: u8| -> Option<Vec<u8>> {
        let start = *pos;
        while *pos < data.len() {
            let c = data[*pos];
            *pos += 1;
            if c == end {
                return Some(data[start..*pos - 1].to_vec());
            }
            if c == 0 {
                return None;
            }
        }
        None
    };
    while pos < data.len() {
        let Some(modname) = read_to(&mut pos, b'.').filter(|m| !m.is_empty()) else {
            continue;
        };
        let key = read_to(&mut pos, b'=').unwrap_or_default();
        if key != b"alias" {
            // flush_stream(in, '\0')
            while pos < data.len() {
                let c = data[pos];
                pos += 1;
                if c == 0 {
                    break;
                }
            }
            continue;
        }
        let Some(value) = read_to(&mut pos, 0).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = String::from_utf8_lossy(&value).into_owned();
        match normalize_alias(&value) {
            Ok(alias) => {
                idx.insert(alias.as_bytes(), &modname, 0)
                    .map_err(index_error)?;
            }
            Err(_) => warnings.push(Diagnostic::Warning(format!("Unmatched bracket in {value}"))),
        }
    }
    Ok(Some(idx.to_bytes()))
}

/// `sscanf(s, "<prefix>%u-%u")`: two unsigned numbers (optional sign and
/// leading white space, as scanf allows).
fn scan_major_minor(s: &str, prefix: &str) -> Option<(u32, u32)> {
    fn number(s: &str) -> Option<(u32, &str)> {
        let t = s.trim_start();
        let (neg, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let digits = t.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let v = t[..digits].parse::<u64>().unwrap_or(u64::MAX) as u32;
        Some((if neg { v.wrapping_neg() } else { v }, &t[digits..]))
    }
    let rest = s.strip_prefix(prefix)?;
    let (major, rest) = number(rest)?;
    let rest = rest.strip_prefix('-')?;
    let (minor, _) = number(rest)?;
    Some((major, minor))
}

fn render_devname(tree: &ModuleTree, warnings: &mut Vec<Diagnostic>) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &tree.modules {
        let mut devname: Option<&str> = None;
        let mut kind: Option<(char, u32, u32)> = None;
        for (k, v) in &m.record.info {
            if k != "alias" {
                continue;
            }
            if let Some(d) = v.strip_prefix("devname:") {
                devname = Some(d);
            } else if let Some((a, b)) = scan_major_minor(v, "char-major-") {
                kind = Some(('c', a, b));
            } else if let Some((a, b)) = scan_major_minor(v, "block-major-") {
                kind = Some(('b', a, b));
            }
            if kind.is_some() && devname.is_some() {
                break;
            }
        }
        let Some(devname) = devname else { continue };
        match kind {
            Some((t, major, minor)) => {
                if out.is_empty() {
                    out.extend_from_slice(b"# Device nodes to trigger on-demand module loading.\n");
                }
                let rest = format!(" {devname} {t}{major}:{minor}");
                line(&mut out, &[&m.name, rest.as_bytes()]);
            }
            None => warnings.push(Diagnostic::Error(format!(
                "Module '{}' has devname ({devname}) but lacks major and minor information. Ignoring.",
                m.display_name()
            ))),
        }
    }
    out
}

/// Appends the parts and a newline: text lines that hold module names,
/// which are bytes (kmod prints them with `%s`).
fn line(out: &mut Vec<u8>, parts: &[&[u8]]) {
    for p in parts {
        out.extend_from_slice(p);
    }
    out.push(b'\n');
}
