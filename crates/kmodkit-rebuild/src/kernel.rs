//! A target kernel as a build needs it: its headers (`lib/modules/K/build`,
//! DKMS's `kernel_source_dir`), the compiler its headers name, its build
//! identity, how it signs and compresses its own modules.
//!
//! Everything is read under the given root: a kernel of an image or chroot
//! is never confused with the host's (DKMS issue #605).

use std::path::{Path, PathBuf};
use std::process::Command;

use kmodkit_module::compression::Compression;
use serde::Serialize;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel {release} is not installed under {root} (no {module_dir})")]
    NotInstalled {
        release: String,
        root: PathBuf,
        module_dir: PathBuf,
    },
    #[error("kernel {release} has no headers under {root}: {looked}; install {package}")]
    NoHeaders {
        release: String,
        root: PathBuf,
        looked: String,
        package: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One kernel a package is built for.
#[derive(Debug, Clone, Serialize)]
pub struct KernelEnv {
    pub release: String,
    /// `ROOT/lib/modules/RELEASE`.
    pub module_dir: PathBuf,
    /// The headers directory on this machine (`kernel_source_dir`).
    pub headers: PathBuf,
    /// `CC` as the headers name it (`.kernelvariables`, else the first word
    /// of `CONFIG_CC_VERSION_TEXT`), which DKMS exports for the build.
    pub cc: Option<String>,
    /// What the build's output depends on besides the source: `.config`,
    /// `Module.symvers` and the compiler's version line.
    pub identity: String,
    /// How the kernel's own modules are compressed (the suffix most of
    /// `kernel/` carries), which its installed modules must follow.
    pub compression: Compression,
    /// `CONFIG_MODULE_SIG_HASH`, when the kernel signs modules.
    pub sig_hash: Option<String>,
    /// `CONFIG_MODULE_SIG_FORCE=y`: unsigned modules are refused.
    pub sig_force: bool,
}

/// The distribution family of the system under `root`, from its
/// `etc/os-release` (`ID` and `ID_LIKE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Debian,
    RedHat,
    Suse,
}

impl Distribution {
    /// Debian when nothing else is recognised (DKMS on Debian-like systems
    /// and those without os-release behaves the same).
    pub fn of(root: &Path) -> Distribution {
        let os = std::fs::read_to_string(root.join("etc/os-release")).unwrap_or_default();
        let ids: Vec<&str> = os
            .lines()
            .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
            .flat_map(|v| v.trim_matches('"').split_whitespace())
            .collect();
        let has = |id: &str| ids.contains(&id);
        if has("rhel") || has("fedora") || has("centos") || has("ovm") {
            Distribution::RedHat
        } else if has("suse") || has("sles") || has("opensuse") {
            Distribution::Suse
        } else {
            Distribution::Debian
        }
    }

    /// Where DKMS installs modules (DKMS 3.0.10
    /// `override_dest_module_location`), under `lib/modules/K`.
    pub fn module_dest(self) -> &'static str {
        match self {
            Distribution::Debian => "updates/dkms",
            Distribution::RedHat => "extra",
            Distribution::Suse => "updates",
        }
    }

    /// The package that holds kernel `release`'s headers.
    pub fn headers_package(self, release: &str) -> String {
        match self {
            Distribution::Debian => format!("linux-headers-{release}"),
            Distribution::RedHat => format!("kernel-devel-{release}"),
            Distribution::Suse => "kernel-default-devel".to_string(),
        }
    }
}

/// `path` resolved inside `root`: an absolute symlink text names a file
/// of the root, not of the host.
fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let mut current = path.to_path_buf();
    for _ in 0..16 {
        match std::fs::read_link(&current) {
            Ok(text) => {
                current = if let Ok(rel) = text.strip_prefix("/") {
                    // The root's own file; a link that leaves the root (a
                    // headers tree kept outside an image) is taken as is.
                    let inside = root.join(rel);
                    if root == Path::new("/") || !inside.exists() && text.exists() {
                        text.clone()
                    } else {
                        inside
                    }
                } else {
                    current.parent().unwrap_or(Path::new("/")).join(text)
                };
            }
            Err(_) => break,
        }
    }
    current
}

fn config_value(config: &str, key: &str) -> Option<String> {
    config.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// `CC` from the headers' `.kernelvariables` (Debian: `CC = gcc-12`).
fn kernelvariables_cc(headers: &Path) -> Option<String> {
    let text = std::fs::read_to_string(headers.join(".kernelvariables")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        let k = k.trim().trim_end_matches([':', '?', '+']).trim();
        (k == "CC" || k == "override CC")
            .then(|| v.trim().to_string())
            .filter(|v| !v.is_empty() && !v.contains('$'))
    })
}

/// The compression most of the kernel's own modules use.
fn own_compression(module_dir: &Path) -> Compression {
    let mut counts = [0usize; 4];
    let mut stack = vec![module_dir.join("kernel")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                stack.push(e.path());
            } else if let Some(suffix) = kmodkit_index::name::module_suffix(name.as_bytes()) {
                let i = match suffix {
                    ".ko.gz" => 1,
                    ".ko.xz" => 2,
                    ".ko.zst" => 3,
                    _ => 0,
                };
                counts[i] += 1;
                seen += 1;
                // A sample is enough: a kernel compresses all or none.
                if seen >= 64 {
                    stack.clear();
                    break;
                }
            }
        }
    }
    let best = (0..4).max_by_key(|&i| counts[i]).unwrap_or(0);
    [
        Compression::None,
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
    ][best]
}

fn compiler_version(cc: &str) -> String {
    Command::new(cc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{cc}: not found"))
}

impl KernelEnv {
    /// Kernel `release` under `root`, with its headers.
    pub fn open(root: &Path, release: &str) -> Result<KernelEnv, KernelError> {
        let module_dir = root.join("lib/modules").join(release);
        if !module_dir.is_dir() {
            return Err(KernelError::NotInstalled {
                release: release.into(),
                root: root.into(),
                module_dir,
            });
        }
        let candidates = [
            module_dir.join("build"),
            root.join("usr/src")
                .join(format!("linux-headers-{release}")),
            root.join("usr/src/kernels").join(release),
        ];
        let headers = candidates
            .iter()
            .map(|c| resolve_in_root(root, c))
            .find(|h| h.join("Makefile").is_file() && h.join(".config").is_file())
            .ok_or_else(|| KernelError::NoHeaders {
                release: release.into(),
                root: root.into(),
                looked: candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                package: Distribution::of(root).headers_package(release),
            })?;
        let config_path = headers.join(".config");
        let config = std::fs::read_to_string(&config_path).map_err(|source| KernelError::Io {
            path: config_path.clone(),
            source,
        })?;
        let cc = kernelvariables_cc(&headers).or_else(|| {
            config_value(&config, "CONFIG_CC_VERSION_TEXT")
                .and_then(|t| t.split_whitespace().next().map(str::to_string))
        });
        let mut d = Digest::new();
        d.field("config", config.as_bytes());
        let symvers = headers.join("Module.symvers");
        match std::fs::read(&symvers) {
            Ok(b) => d.field("symvers", &b),
            Err(_) => d.field("symvers", b"missing"),
        }
        d.field(
            "cc",
            compiler_version(cc.as_deref().unwrap_or("gcc")).as_bytes(),
        );
        let sig_hash = (config_value(&config, "CONFIG_MODULE_SIG").as_deref() == Some("y"))
            .then(|| config_value(&config, "CONFIG_MODULE_SIG_HASH"))
            .flatten();
        Ok(KernelEnv {
            release: release.into(),
            compression: own_compression(&module_dir),
            module_dir,
            sig_force: config_value(&config, "CONFIG_MODULE_SIG_FORCE").as_deref() == Some("y"),
            headers,
            cc,
            identity: d.hex(),
            sig_hash,
        })
    }

    /// Kernels under `root` with headers, oldest first.
    pub fn with_headers(root: &Path) -> Vec<String> {
        kmodkit_abi::weak::installed_kernels(root)
            .into_iter()
            .filter(|k| KernelEnv::open(root, k).is_ok())
            .collect()
    }

    /// The suffix installed modules of this kernel get.
    pub fn module_suffix(&self) -> &'static str {
        match self.compression {
            Compression::None => ".ko",
            Compression::Gzip => ".ko.gz",
            Compression::Xz => ".ko.xz",
            Compression::Zstd => ".ko.zst",
        }
    }
}
