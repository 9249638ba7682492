//! Loading the resolved modules with `finit_module(2)`, the way the
//! builder ordered them: each dependency level (modules whose dependencies
//! are all in earlier levels) in parallel threads, the levels in order.
//!
//! Compressed files (`.ko.xz`, `.ko.zst`, `.ko.gz`) are passed with
//! `MODULE_INIT_COMPRESSED_FILE` (include/uapi/linux/module.h) when the
//! kernel decompresses modules itself (kernel/module/decompress.c, 6.4+
//! with `CONFIG_MODULE_DECOMPRESS`, which creates
//! `/sys/module/compression`); otherwise, or when the kernel refuses the
//! flag (`EINVAL`, as kernels before it do for unknown flags), they are
//! decompressed here and given to `init_module(2)`, as kmod does.
//! `EEXIST` (built in or already loaded) counts as loaded.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::ModuleSpec;

/// `MODULE_INIT_COMPRESSED_FILE` of include/uapi/linux/module.h.
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// One module's failure.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The list names a dependency it does not contain, or has a cycle.
    #[error("module {module}: dependency {dependency} is not loaded before it (not in the list, or a cycle); rebuild the image")]
    Order {
        /// The module.
        module: String,
        /// The dependency.
        dependency: String,
    },
    /// Opening the file failed.
    #[error("module {module}: cannot open {path}: {source}")]
    Open {
        /// The module.
        module: String,
        /// Its path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The kernel refused it.
    #[error("module {module} ({path}): finit_module: {source}{hint}")]
    Refused {
        /// The module.
        module: String,
        /// Its path.
        path: String,
        /// The errno.
        source: std::io::Error,
        /// What to check.
        hint: &'static str,
    },
}

impl ModuleError {
    /// The module the error is about.
    pub fn module(&self) -> &str {
        match self {
            ModuleError::Order { module, .. }
            | ModuleError::Open { module, .. }
            | ModuleError::Refused { module, .. } => module,
        }
    }
}

/// Outcome of one module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The kernel took it now.
    New,
    /// The kernel took it now, decompressed here (no in-kernel decompression).
    Decompressed,
    /// It was there already (built in, or loaded): `EEXIST`.
    AlreadyPresent,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules loaded now.
    pub loaded: usize,
    /// Modules that were present already.
    pub present: usize,
    /// Of the loaded ones, those decompressed in userspace.
    pub decompressed: usize,
    /// Number of dependency levels.
    pub levels: usize,
    /// Per module, the time its `finit_module` took.
    pub timings: Vec<(String, Duration, Loaded)>,
}

/// Groups `modules` into dependency levels: level 0 needs nothing of the
/// list, level n needs something of level n-1. Dependencies must come
/// earlier in the list (the builder's load order).
pub fn levels(modules: &[ModuleSpec]) -> Result<Vec<Vec<&ModuleSpec>>, ModuleError> {
    let mut level_of: HashMap<&str, usize> = HashMap::new();
    let mut levels: Vec<Vec<&ModuleSpec>> = Vec::new();
    for module in modules {
        let mut level = 0;
        for dependency in &module.depends {
            match level_of.get(dependency.as_str()) {
                Some(l) => level = level.max(l + 1),
                None => {
                    return Err(ModuleError::Order {
                        module: module.name.clone(),
                        dependency: dependency.clone(),
                    })
                }
            }
        }
        level_of.insert(&module.name, level);
        if levels.len() <= level {
            levels.resize_with(level + 1, Vec::new);
        }
        levels[level].push(module);
    }
    Ok(levels)
}

/// Whether the running kernel decompresses modules (`/sys/module/compression`).
pub fn kernel_decompresses(sys_root: &Path) -> bool {
    sys_root.join("module/compression").exists()
}

fn is_compressed(path: &str) -> bool {
    [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|suffix| path.ends_with(suffix))
}

/// Loads one module; `root` prefixes its path (`/` in the initrd).
pub fn load_one(
    root: &Path,
    module: &ModuleSpec,
    kernel_decompresses: bool,
) -> Result<Loaded, ModuleError> {
    let path = root.join(module.path.trim_start_matches('/'));
    let file = File::open(&path).map_err(|source| ModuleError::Open {
        module: module.name.clone(),
        path: module.path.clone(),
        source,
    })?;
    let compressed = is_compressed(&module.path);
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let refused = |source: std::io::Error, hint: &'static str| ModuleError::Refused {
        module: module.name.clone(),
        path: module.path.clone(),
        source,
        hint,
    };
    let options = CString::new(module.options.as_str()).map_err(|_| {
        refused(
            std::io::Error::from_raw_os_error(libc::EINVAL),
            "; check: the options contain a NUL byte",
        )
    })?;
    let finit = |flags: u32| {
        // SAFETY: the fd is open for the call's duration and `options` is a
        // NUL-terminated string that outlives it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                file.as_raw_fd(),
                options.as_ptr(),
                flags,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let mut result = if compressed && !kernel_decompresses {
        Err(std::io::Error::from_raw_os_error(libc::EINVAL))
    } else {
        finit(flags)
    };
    if compressed && matches!(&result, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
        let image = decompress(&path, &module.path).map_err(|e| {
            refused(
                e,
                "; check: the file is a complete .xz/.zst/.gz module (the builder wrote it)",
            )
        })?;
        // SAFETY: `image` and `options` outlive the call; the length is the buffer's.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_init_module,
                image.as_ptr(),
                image.len() as libc::c_ulong,
                options.as_ptr(),
            )
        };
        if rc == 0 {
            return Ok(Loaded::Decompressed);
        }
        result = Err(std::io::Error::last_os_error());
    }
    let Err(error) = result else {
        return Ok(Loaded::New);
    };
    match error.raw_os_error() {
        Some(libc::EEXIST) => Ok(Loaded::AlreadyPresent),
        Some(libc::ENOEXEC) => Err(refused(error, "; check: built for another kernel (vermagic, struct module size) — the kernel log says which")),
        Some(libc::EINVAL) => Err(refused(error, "; check: a symbol CRC disagrees or an option is unknown — the kernel log names it")),
        Some(libc::ENOENT) => Err(refused(error, "; check: an unknown symbol (a dependency missing from the image)")),
        Some(libc::EKEYREJECTED) | Some(libc::EPERM) => Err(refused(error, "; check: module signature (Secure Boot / module.sig_enforce)")),
        Some(libc::ENODEV) => Err(refused(error, "; check: the module found no device (its init returned ENODEV)")),
        _ => Err(refused(error, "")),
    }
}

/// The decompressed module, by the file name's suffix.
fn decompress(path: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::io::BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new(file).read_to_end(&mut out)?;
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::with_buffer(file)?.read_to_end(&mut out)?;
    } else {
        flate2::bufread::MultiGzDecoder::new(file).read_to_end(&mut out)?;
    }
    Ok(out)
}

/// Loads every module, level by level, each level's modules in parallel.
/// Stops after the first level with a failure and returns all of its errors.
pub fn load_all(
    root: &Path,
    modules: &[ModuleSpec],
    kernel_decompresses: bool,
) -> Result<LoadReport, Vec<ModuleError>> {
    let levels = levels(modules).map_err(|e| vec![e])?;
    let mut report = LoadReport {
        levels: levels.len(),
        ..LoadReport::default()
    };
    for level in &levels {
        let results: Vec<(String, Duration, Result<Loaded, ModuleError>)> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = level
                    .iter()
                    .map(|module| {
                        scope.spawn(move || {
                            let started = Instant::now();
                            let result = load_one(root, module, kernel_decompresses);
                            (module.name.clone(), started.elapsed(), result)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("module loader thread panicked"))
                    .collect()
            });
        let mut errors = Vec::new();
        for (name, took, result) in results {
            match result {
                Ok(outcome) => {
                    match outcome {
                        Loaded::New => report.loaded += 1,
                        Loaded::Decompressed => {
                            report.loaded += 1;
                            report.decompressed += 1;
                        }
                        Loaded::AlreadyPresent => report.present += 1,
                    }
                    report.timings.push((name, took, outcome));
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, depends: &[&str]) -> ModuleSpec {
        ModuleSpec {
            name: name.into(),
            path: format!("/lib/modules/k/{name}.ko"),
            options: String::new(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn levels_follow_dependencies() {
        let modules = [
            spec("failover", &[]),
            spec("virtio", &[]),
            spec("net_failover", &["failover"]),
            spec("virtio_ring", &["virtio"]),
            spec(
                "virtio_net",
                &["net_failover", "failover", "virtio_ring", "virtio"],
            ),
        ];
        let names: Vec<Vec<&str>> = levels(&modules)
            .unwrap()
            .iter()
            .map(|l| l.iter().map(|m| m.name.as_str()).collect())
            .collect();
        assert_eq!(
            names,
            [
                vec!["failover", "virtio"],
                vec!["net_failover", "virtio_ring"],
                vec!["virtio_net"]
            ]
        );
    }

    #[test]
    fn a_dependency_after_its_user_is_refused() {
        let modules = [spec("net_failover", &["failover"]), spec("failover", &[])];
        let err = levels(&modules).unwrap_err();
        assert!(err.to_string().contains("dependency failover"), "{err}");
    }
}
