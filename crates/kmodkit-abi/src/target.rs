//! The kernel a set of modules is checked against: its exports with CRCs,
//! its vermagic and `sizeof(struct module)` (read from one of its own
//! modules), and its module tree with depmod.d priorities.

use std::path::{Path, PathBuf};

use kmodkit_depmod::tree::TreeScan;
use kmodkit_depmod::{ModuleTree, TreeOptions};

use crate::symvers::{SymbolTable, SymversError};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no symbol versions for kernel {release}: looked for {}; install the kernel's headers or pass --symvers FILE", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoSymvers {
        release: String,
        tried: Vec<PathBuf>,
    },
    #[error(transparent)]
    Symvers(#[from] SymversError),
    #[error(transparent)]
    Tree(#[from] kmodkit_depmod::DepmodError),
    #[error("kernel {release} has no module under {dir} to read its vermagic and struct module size from")]
    NoReferenceModule { release: String, dir: PathBuf },
    #[error(transparent)]
    Module(#[from] kmodkit_module::Error),
}

/// A target kernel.
#[derive(Debug)]
pub struct Target {
    pub release: String,
    /// `ROOT/lib/modules/RELEASE`.
    pub module_dir: String,
    pub symbols: SymbolTable,
    pub vermagic: String,
    pub struct_module_size: u64,
    /// The in-tree module both were read from.
    pub reference_module: PathBuf,
    pub scan: TreeScan,
}

/// Where the symbol versions of `release` live under `root`, in the order
/// the distributions put them.
pub fn symvers_candidates(root: &Path, release: &str) -> Vec<PathBuf> {
    vec![
        root.join(format!("boot/symvers-{release}.gz")),
        root.join(format!("lib/modules/{release}/symvers.gz")),
        root.join(format!("lib/modules/{release}/build/Module.symvers")),
        root.join(format!("usr/src/linux-headers-{release}/Module.symvers")),
    ]
}

impl Target {
    /// Loads kernel `release` under `root`; `symvers` overrides the search.
    pub fn load(root: &Path, release: &str, symvers: Option<&Path>) -> Result<Target, TargetError> {
        Target::load_with_config(root, release, symvers, &[])
    }

    /// As [`Target::load`], with depmod.d directories or files replacing
    /// kmod's defaults (see `kmodkit_depmod::config::root_config_dirs`).
    pub fn load_with_config(
        root: &Path,
        release: &str,
        symvers: Option<&Path>,
        config_paths: &[PathBuf],
    ) -> Result<Target, TargetError> {
        let symvers_path = match symvers {
            Some(p) => p.to_path_buf(),
            None => {
                let tried = symvers_candidates(root, release);
                tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
                    TargetError::NoSymvers {
                        release: release.to_string(),
                        tried: tried.clone(),
                    }
                })?
            }
        };
        let symbols = SymbolTable::load(&symvers_path)?;
        let root_s = root.display().to_string();
        let basedir = if root_s == "/" {
            None
        } else {
            Some(root_s.trim_end_matches('/').to_string())
        };
        let mut options = TreeOptions::new(basedir, release);
        options.config_paths = config_paths.to_vec();
        let module_dir = options.module_dir();
        let scan = ModuleTree::scan(options)?;
        // Any in-tree module carries the kernel's vermagic and struct module
        // size; prefer one under kernel/ (an out-of-tree one may be stale).
        let kernel_dir = Path::new(&module_dir).join("kernel");
        let reference = scan
            .modules()
            .map(|(_, p)| p)
            .find(|p| p.starts_with(&kernel_dir))
            .or_else(|| scan.modules().map(|(_, p)| p).next())
            .map(PathBuf::from)
            .ok_or_else(|| TargetError::NoReferenceModule {
                release: release.to_string(),
                dir: PathBuf::from(&module_dir),
            })?;
        let module = kmodkit_module::read_module_mapped(
            &reference,
            kmodkit_module::compression::DEFAULT_LIMIT,
        )?;
        Ok(Target {
            release: release.to_string(),
            module_dir,
            symbols,
            vermagic: module.modinfo_first("vermagic").unwrap_or_default(),
            struct_module_size: module.this_module_size.unwrap_or(0),
            reference_module: reference,
            scan,
        })
    }
}
