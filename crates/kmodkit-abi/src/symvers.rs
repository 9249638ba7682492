//! `Module.symvers` (Debian headers, kernel build trees) and RHEL's
//! `symvers-K.gz`: one export per line,
//! `0xCRC<TAB>symbol<TAB>vmlinux|module path<TAB>EXPORT_SYMBOL[_GPL]<TAB>namespace`
//! (`scripts/mod/modpost.c`, `write_dump`). Compressed files (gzip, xz,
//! zstd) are expanded first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One exported symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub crc: Option<u32>,
    pub gpl_only: bool,
    pub namespace: Option<String>,
    /// The exporting module's name, `None` for vmlinux.
    pub module: Option<String>,
}

/// Every export of a kernel.
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    pub exports: HashMap<String, Export>,
    pub source: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SymversError {
    // The OS error is in the message and not a source(): shown with
    // anyhow's `{:#}` a source would say it twice.
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}: malformed row (expected 0xCRC, symbol, module, export type)", path.display())]
    Malformed { path: PathBuf, line: usize },
}

impl SymbolTable {
    pub fn load(path: &Path) -> Result<SymbolTable, SymversError> {
        let bytes = kmodkit_module::compression::read_maybe_compressed(path).map_err(|source| {
            SymversError::Io {
                path: path.to_path_buf(),
                cause: source,
            }
        })?;
        let text = String::from_utf8_lossy(&bytes);
        let mut exports = HashMap::with_capacity(32 * 1024);
        for (n, line) in text.lines().enumerate() {
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 4 {
                return Err(SymversError::Malformed {
                    path: path.to_path_buf(),
                    line: n + 1,
                });
            }
            let crc = u32::from_str_radix(f[0].trim_start_matches("0x"), 16).ok();
            let module = (f[2] != "vmlinux").then(|| {
                let base = f[2].rsplit('/').next().unwrap_or(f[2]);
                base.split('.').next().unwrap_or(base).replace('-', "_")
            });
            exports.insert(
                f[1].to_string(),
                Export {
                    crc,
                    gpl_only: f[3].ends_with("_GPL") || f[3].ends_with("_GPL_FUTURE"),
                    namespace: f.get(4).filter(|s| !s.is_empty()).map(|s| s.to_string()),
                    module,
                },
            );
        }
        Ok(SymbolTable {
            exports,
            source: path.to_path_buf(),
        })
    }
}
