//! The kernel module tree and its index: kmod 30's `depmod`, byte for byte.
//!
//! [`ModuleTree`] is the API later steps build on (ABI checks, initrd
//! driver injection): which file provides each module, which module
//! provides each symbol, dependency closures and load orders. [`output`]
//! renders the files kmod writes (`modules.dep`, `.bin` indexes, ...) and
//! [`write`] replaces them in a module directory as one atomic set.

pub mod cache;
pub mod config;
pub mod diagnostic;
pub mod graph;
pub mod index_file;
pub mod installed;
pub mod kmod_hash;
pub mod options;
pub mod output;
pub mod record;
pub mod scan;
pub mod symbols;
pub mod tree;
pub mod write;

use std::path::PathBuf;

pub use config::DepmodConfig;
pub use diagnostic::Diagnostic;
pub use index_file::OutputFile;
pub use options::{KernelSymbols, StepTime, TreeOptions};
pub use scan::TreeScan;
pub use tree::{ModuleTree, TreeModule};

/// Why a depmod run stopped. Nothing has been written when one is returned
/// (files are only installed after every step succeeded).
#[derive(Debug, thiserror::Error)]
pub enum DepmodError {
    // The OS error is only the source: the CLI prints the chain, and a
    // message holding it too said it twice.
    #[error("module directory {} is missing (install the kernel's modules, or name another KVER or -b ROOT)", dir.display())]
    MissingTree {
        dir: PathBuf,
        source: std::io::Error,
    },
    // Here the OS error is in the message instead, and not a source().
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    // The module error is in the message, not a source() (it would be
    // printed twice in the chain).
    #[error("{0} (fix or remove the module; the index was not changed)")]
    Module(kmodkit_module::Error),
    #[error("{}: not an absolute path", .0.display())]
    NotAbsolute(PathBuf),
    #[error("{}: a module named {name} was already given", path.display())]
    DuplicateModule { name: String, path: PathBuf },
    #[error("found {count} modules in dependency cycles: {}", cycles.join("; "))]
    Cycles { count: usize, cycles: Vec<String> },
    #[error("cannot write the index: {0}")]
    Index(String),
}

/// `depmod -A`: true when `modules.dep` is newer than every module file in
/// the directory (kmod's `depfile_up_to_date`; externals are not checked).
pub fn index_up_to_date(module_dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dep) = std::fs::metadata(module_dir.join("modules.dep")) else {
        return false;
    };
    fn newer(dir: &std::path::Path, mtime: i64) -> bool {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return false;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if name == "build" || name == "source" {
                continue;
            }
            let Ok(m) = std::fs::metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                if newer(&e.path(), mtime) {
                    return true;
                }
            } else if m.is_file() && kmodkit_index::name::is_module_file(name) && m.mtime() > mtime
            {
                return true;
            }
        }
        false
    }
    !newer(module_dir, dep.mtime())
}
