//! [`TreeOptions`]: what to index and how — depmod's command line
//! (`-b`, `-C`, `-E`/`-F`, `-e`, `-P`, explicit files) as plain data. The
//! caller resolves everything that depends on the process (the current
//! directory, the running kernel, the environment) before filling it in.

use std::path::PathBuf;
use std::time::Duration;

/// Where vmlinux's exported symbols come from.
#[derive(Debug, Clone)]
pub enum KernelSymbols {
    /// `Module.symvers` / `symvers` (`-E`): names and CRCs of the `vmlinux`
    /// rows.
    Symvers(PathBuf),
    /// `System.map` (`-F`): names from `__ksymtab_*` lines, no CRCs.
    SystemMap(PathBuf),
}

/// What to index and how.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    /// The image root (`-b`), absolute, `None` for `/`.
    pub basedir: Option<String>,
    pub kernel_release: String,
    /// depmod.d directories or files replacing the defaults (`-C`).
    pub config_paths: Vec<PathBuf>,
    pub kernel_symbols: Option<KernelSymbols>,
    /// `-e`: report unknown symbols and CRC mismatches.
    pub report_unresolved: bool,
    /// `-P`: architecture symbol prefix.
    pub symbol_prefix: Option<u8>,
    /// Explicit module files (absolute) instead of scanning the tree.
    pub modules: Vec<PathBuf>,
    /// Reuse parsed modules across runs (keyed by path, size, mtime, inode).
    pub cache: Option<PathBuf>,
    /// Scan a staged directory in place of one top-level subdirectory:
    /// (`weak-updates`, `/lib/modules/K/.staging/weak-updates`). Paths in
    /// the index are those the subdirectory will have once the staged one
    /// is renamed into place; files are read from the staged location.
    /// Lets a link set and its index be prepared before either is visible.
    pub staged_subdir: Option<(String, PathBuf)>,
    /// Ceiling for one decompressed module.
    pub decompress_limit: u64,
}

impl TreeOptions {
    pub fn new(basedir: Option<String>, kernel_release: impl Into<String>) -> Self {
        TreeOptions {
            basedir,
            kernel_release: kernel_release.into(),
            config_paths: Vec::new(),
            kernel_symbols: None,
            report_unresolved: false,
            symbol_prefix: None,
            modules: Vec::new(),
            cache: None,
            staged_subdir: None,
            decompress_limit: kmodkit_module::compression::DEFAULT_LIMIT,
        }
    }

    /// `ROOT/lib/modules/KVER`, built by string concatenation as kmod does
    /// (paths in the indexes and messages depend on it byte for byte).
    pub fn module_dir(&self) -> String {
        format!(
            "{}/lib/modules/{}",
            self.basedir.as_deref().unwrap_or(""),
            self.kernel_release
        )
    }
}

/// How long one step of a run took. The library only measures; the caller
/// decides whether to show it (the CLI prints them with `KMODKIT_PROFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepTime {
    pub step: &'static str,
    pub elapsed: Duration,
}

impl StepTime {
    /// The time since `since`, for `step`.
    pub fn since(step: &'static str, since: std::time::Instant) -> StepTime {
        StepTime {
            step,
            elapsed: since.elapsed(),
        }
    }
}
