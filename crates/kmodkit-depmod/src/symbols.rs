//! The symbol table and symbol resolution: which module (or vmlinux)
//! provides each symbol, and which providers each module needs. Follows
//! kmod 30's `tools/depmod.c`: `depmod_load_symvers` (`-E`),
//! `depmod_load_system_map` (`-F`), `depmod_add_fake_syms`,
//! `depmod_symbol_add`/`depmod_symbol_find` and `depmod_load_dependencies`.

use std::collections::HashMap;
use std::path::Path;

use crate::diagnostic::Diagnostic;
use crate::options::KernelSymbols;
use crate::record::ModuleRecord;
use crate::DepmodError;

/// A provider of a symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolProvider {
    /// Module index, or `None` for vmlinux / a fake loader symbol.
    pub owner: Option<usize>,
    pub crc: u64,
}

/// Every known symbol and its provider; a later provider replaces an
/// earlier one (kmod's `hash_add` on the symbol table).
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    providers: HashMap<String, SymbolProvider>,
    /// `-P`: architecture symbol prefix, ignored when adding and finding.
    prefix: Option<u8>,
}

fn strip_prefix(name: &str, prefix: Option<u8>) -> &str {
    match prefix {
        // The prefix is one ASCII byte, so cutting after it stays on a
        // character boundary.
        Some(p) if p.is_ascii() && name.as_bytes().first() == Some(&p) => &name[1..],
        _ => name,
    }
}

impl SymbolTable {
    pub fn new(prefix: Option<u8>) -> SymbolTable {
        SymbolTable {
            providers: HashMap::new(),
            prefix,
        }
    }

    fn add(&mut self, name: &str, prefix_skipped: bool, crc: u64, owner: Option<usize>) {
        let name = if prefix_skipped {
            name
        } else {
            strip_prefix(name, self.prefix)
        };
        self.providers
            .insert(name.to_string(), SymbolProvider { owner, crc });
    }

    /// `depmod_symbol_find`: a leading '.' (PPC64) and the prefix are ignored.
    pub fn find(&self, name: &str) -> Option<&SymbolProvider> {
        let name = name.strip_prefix('.').unwrap_or(name);
        self.providers.get(strip_prefix(name, self.prefix))
    }

    /// Every symbol and its provider, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &SymbolProvider)> {
        self.providers.iter().map(|(n, p)| (n.as_str(), p))
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// `depmod_add_fake_syms`: `__this_module` is inserted by the kernel
    /// loader; the others are architecture linker symbols (s390,
    /// PowerPC64 ABIv2).
    fn add_fake_symbols(&mut self) {
        self.add("__this_module", true, 0, None);
        self.add("_GLOBAL_OFFSET_TABLE_", true, 0, None);
        if self.find("TOC.").is_none() {
            self.add("TOC.", true, 0, None);
        }
    }

    /// vmlinux's symbols from `-E` or `-F`; lines kmod rejects become
    /// diagnostics.
    pub fn add_kernel_symbols(
        &mut self,
        source: &KernelSymbols,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Result<(), DepmodError> {
        match source {
            KernelSymbols::Symvers(path) => {
                let text = read_text(path)?;
                for (n, line) in text.split_inclusive('\n').enumerate() {
                    let mut it = line.split([' ', '\t']).filter(|w| !w.is_empty());
                    let (Some(ver), Some(sym), Some(place)) = (it.next(), it.next(), it.next())
                    else {
                        continue;
                    };
                    if place != "vmlinux" {
                        continue;
                    }
                    match parse_strtoull_hex(ver) {
                        Some(crc) => self.add(sym, false, crc, None),
                        None => diagnostics.push(Diagnostic::Error(format!(
                            "{}:{} Invalid symbol version {ver}: Success",
                            path.display(),
                            n + 1
                        ))),
                    }
                }
            }
            KernelSymbols::SystemMap(path) => {
                let text = read_text(path)?;
                for (n, line) in text.split_inclusive('\n').enumerate() {
                    let rest = line
                        .split_once(' ')
                        .and_then(|(_, r)| r.split_once(' '))
                        .map(|(_, r)| r);
                    let Some(p) = rest else {
                        diagnostics.push(Diagnostic::Error(format!(
                            "{}:{}: invalid line: {line}",
                            path.display(),
                            n + 1
                        )));
                        continue;
                    };
                    let p = strip_prefix(p, self.prefix);
                    let Some(sym) = p.strip_prefix("__ksymtab_") else {
                        continue;
                    };
                    let sym = sym.split('\n').next().unwrap_or("");
                    self.add(sym, true, 0, None);
                }
            }
        }
        self.add_fake_symbols();
        Ok(())
    }

    /// A module's exports, owned by module index `owner`.
    pub fn add_exports(&mut self, owner: usize, exports: &[(String, u64)]) {
        for (name, crc) in exports {
            self.add(name, false, *crc, Some(owner));
        }
    }
}

/// How [`resolve`] treats symbols it cannot match.
#[derive(Debug, Clone, Copy)]
pub struct ResolveRules {
    /// `-E`: CRCs are known, so mismatches can be told.
    pub check_crc: bool,
    /// `-e` with `-E` or `-F`: report unknown symbols and mismatches.
    pub report: bool,
}

/// `depmod_load_dependencies`: each module's direct dependencies (module
/// indexes, in the order of the first symbol needing each); unknown and
/// mismatched symbols are reported under the module's `path`.
pub fn resolve<'a>(
    symbols: &SymbolTable,
    modules: impl Iterator<Item = (String, &'a ModuleRecord)>,
    rules: ResolveRules,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Vec<usize>> {
    modules
        .map(|(path, record)| {
            let mut deps: Vec<usize> = Vec::new();
            for (name, crc, weak) in &record.needs {
                let Some(sym) = symbols.find(name) else {
                    if rules.report && !weak {
                        diagnostics.push(Diagnostic::UnknownSymbol {
                            module: path.clone(),
                            symbol: name.clone(),
                        });
                    }
                    continue;
                };
                if rules.check_crc && sym.crc != *crc && !weak && rules.report {
                    diagnostics.push(Diagnostic::VersionMismatch {
                        module: path.clone(),
                        symbol: name.clone(),
                        expected: *crc,
                        found: sym.crc,
                    });
                }
                if let Some(owner) = sym.owner {
                    if !deps.contains(&owner) {
                        deps.push(owner);
                    }
                }
            }
            deps
        })
        .collect()
}

/// Reads a symbol file; a compressed one (RHEL's `/boot/symvers-K.gz`,
/// `symvers.xz`) is expanded first.
fn read_text(path: &Path) -> Result<String, DepmodError> {
    let bytes = kmodkit_module::compression::read_maybe_compressed(path).map_err(|source| {
        DepmodError::Io {
            path: path.to_path_buf(),
            cause: source,
        }
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `strtoull(s, &end, 16)` requiring the whole token to be consumed.
fn parse_strtoull_hex(s: &str) -> Option<u64> {
    let t = s.trim_start();
    let t = t.strip_prefix('+').unwrap_or(t);
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if t.is_empty() {
        return if s.trim_start().trim_start_matches('+') == "0x" {
            Some(0)
        } else {
            None
        };
    }
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u64::from_str_radix(t, 16).unwrap_or(u64::MAX))
}
