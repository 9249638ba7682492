//! [`ModuleRecord`]: what depmod needs of one module file — the part of
//! kmod 30's `depmod_load_modules` / `kmod_module_get_info` /
//! `kmod_module_get_dependency_symbols` that the indexes use. The module
//! cache stores exactly this.

use std::path::Path;

use crate::DepmodError;

/// What depmod needs of one module file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleRecord {
    /// Exported symbols with CRCs (`kmod_elf_get_symbols`).
    pub exports: Vec<(String, u64)>,
    /// `.modinfo` entries depmod uses: `alias` and `softdep`, in file order.
    pub info: Vec<(String, String)>,
    /// Symbols the module needs: (name, expected CRC, weak).
    pub needs: Vec<(String, u64, bool)>,
}

impl ModuleRecord {
    /// Reads a module file (decompressing up to `limit` bytes).
    pub fn read(path: &Path, limit: u64) -> Result<ModuleRecord, DepmodError> {
        let module =
            kmodkit_module::read_module_mapped(path, limit).map_err(DepmodError::Module)?;
        Ok(ModuleRecord {
            exports: module
                .depmod_exports
                .iter()
                .map(|s| (s.name.clone(), s.crc))
                .collect(),
            info: module
                .modinfo
                .iter()
                .filter(|e| e.key == b"alias" || e.key == b"softdep")
                .map(|e| (e.key_str().into_owned(), e.value_str().into_owned()))
                .collect(),
            needs: module
                .dependency_symbols()
                .into_iter()
                .map(|d| (d.name, d.crc, d.weak))
                .collect(),
        })
    }
}
