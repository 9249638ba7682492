//! A boot set: the files a diskless node fetches, in one directory.
//!
//! - `vmlinuz`: `ROOT/boot/vmlinuz-KVER`, copied;
//! - `initrd.img`: one newc cpio segment (gzip or zstd) holding `/init`
//!   (the static kmodkit-init), [`CONFIG_PATH`], the resolved modules at
//!   `/lib/modules/KVER/<path in the tree>`, their firmware under
//!   `/lib/firmware`, `/dev/console` and the mount points the init uses;
//! - `boot.ipxe`: `#!ipxe`, `isset ${ip} || dhcp` (no second exchange when
//!   the firmware that chained the script is configured), `kernel`, `initrd`, `boot` (relative
//!   URLs resolve against the script's own URL when no base is given);
//! - `manifest.json`: kernel, modules in load order with the reason each
//!   is there, firmware, every file's sha256, the settings.
//!
//! Same inputs, same bytes: entries sorted, owners 0, every mtime the
//! request's (0 or SOURCE_DATE_EPOCH), single-threaded compression. The
//! four files replace the old set as one step ([`kmodkit_commit::StagedSet`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmodkit_index::lookup::module_name_from_path;
use kmodkit_init::config::{
    Config, InterfaceSelector, ModuleSpec, NetworkMode, OnFailure, RootSource, Timeouts,
    CONFIG_PATH,
};
use kmodkit_init::rootfs::sha256_hex;
use kmodkit_initramfs::compression::{Compression, EncodeOptions};
use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::create::{plan, write_segments, CreateOptions, SegmentSpec, SourceEntry};
use kmodkit_initramfs::read::NoProgress;
use kmodkit_inject::resolve::{NameNote, Why};
use serde::Serialize;

use crate::{read, NetbootError};

/// The files of a boot set, in the order the manifest lists them.
pub const FILES: [&str; 4] = ["vmlinuz", "initrd.img", "boot.ipxe", "manifest.json"];

/// What an NFS root needs in the initrd when the kernel has it as modules
/// (Debian: CONFIG_NFS_FS=m, CONFIG_NFS_V3=m, CONFIG_NFS_V4=m): the mount
/// asks for `nfs4`/`nfs3` with request_module(), which has no modprobe to
/// run in a kmodkit initrd, so both versions are loaded up front.
const NFS_MODULES: [&str; 3] = ["nfs", "nfsv3", "nfsv4"];

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Root of the system the kernel, modules and firmware come from.
    pub root: PathBuf,
    pub kernel: String,
    /// The static kmodkit-init binary.
    pub init: PathBuf,
    pub drivers: Vec<String>,
    pub interface: InterfaceSelector,
    pub network: NetworkMode,
    pub root_source: RootSource,
    /// Where `vmlinuz` and `initrd.img` are served (`http://head/boot`);
    /// `None`: relative to the iPXE script's URL.
    pub boot_url: Option<String>,
    /// Kernel command line after `initrd=initrd.img`.
    pub cmdline: String,
    pub compression: Compression,
    pub firmware: bool,
    pub companions: bool,
    /// Keep modules the ABI guard refuses.
    pub force: bool,
    /// Modification time of every cpio entry (SOURCE_DATE_EPOCH or 0).
    pub mtime: u64,
    /// Where the build may keep a private scratch directory (the CLI
    /// passes its scratch base: TMPDIR, /dev/shm or the system's).
    pub scratch: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestModule {
    pub name: String,
    /// In the image.
    pub path: String,
    pub why: Why,
    pub depends: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ManifestSettings {
    pub interface: InterfaceSelector,
    pub network: NetworkMode,
    pub root: RootSource,
    pub boot_url: Option<String>,
    pub cmdline: String,
    pub compression: String,
    pub init: PathBuf,
}

/// `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub kernel: String,
    /// Load order, dependencies first.
    pub modules: Vec<ManifestModule>,
    pub firmware: Vec<String>,
    pub missing_firmware: Vec<String>,
    pub notes: Vec<NameNote>,
    pub abi_check: String,
    /// sha256 of `vmlinuz`, `initrd.img`, `boot.ipxe` and every file in the initrd.
    pub sha256: BTreeMap<String, String>,
    pub settings: ManifestSettings,
}

/// A built set, not yet written.
#[derive(Debug)]
pub struct BootSet {
    pub config: Config,
    pub manifest: Manifest,
    /// (name, bytes), [`FILES`] order.
    pub files: Vec<(&'static str, Vec<u8>)>,
}

fn entry(name: &str, file_type: FileType, perm: u32, mtime: u64) -> SourceEntry {
    let mut e = SourceEntry::new(name.as_bytes().to_vec(), file_type, perm);
    e.mtime = mtime;
    e
}

fn file_entry(
    name: &str,
    source: &Path,
    perm: u32,
    mtime: u64,
) -> Result<SourceEntry, NetbootError> {
    let mut e = entry(name, FileType::Regular, perm, mtime);
    e.size = std::fs::metadata(source)
        .map_err(|source_err| NetbootError::Io {
            path: source.to_path_buf(),
            source: source_err,
        })?
        .len();
    e.source = Some(source.to_path_buf());
    Ok(e)
}

/// Resolves, renders every file in memory, computes the manifest.
pub fn build(req: &BuildRequest) -> Result<BootSet, NetbootError> {
    let vmlinuz_path = req
        .root
        .join("boot")
        .join(format!("vmlinuz-{}", req.kernel));
    if !vmlinuz_path.is_file() {
        return Err(NetbootError::Invalid(format!(
            "{}: no kernel image; install the kernel package for {} under {} (or give --kernel the release that is there)",
            vmlinuz_path.display(),
            req.kernel,
            req.root.display()
        )));
    }
    let init_bytes = read(&req.init)?;
    if !init_bytes.starts_with(b"\x7fELF") {
        return Err(NetbootError::Invalid(format!(
            "{}: not an ELF binary; --init must name the static kmodkit-init",
            req.init.display()
        )));
    }
    let tree = req.root.join("lib/modules").join(&req.kernel);
    let dir = kmodkit_index::lookup::ModuleDirectory::new(tree.display().to_string());
    let mut drivers = req.drivers.clone();
    let mut for_nfs_root = Vec::new();
    if matches!(req.root_source, RootSource::Nfs { .. }) {
        for name in NFS_MODULES {
            // Built in (or not configured): nothing to load.
            let is_module = dir
                .dep_line(name)
                .map_err(kmodkit_inject::InjectError::from)?
                .is_some();
            if is_module && !drivers.iter().any(|d| d == name) {
                drivers.push(name.to_string());
                for_nfs_root.push(name);
            }
        }
    }
    let source = kmodkit_inject::plan::resolve_source(
        &req.root,
        &req.kernel,
        &drivers,
        req.firmware,
        req.companions,
        req.force,
    )?;
    let resolution = source.resolution;
    let in_set: Vec<&str> = resolution.modules.iter().map(|m| m.name.as_str()).collect();
    let mut modules = Vec::new();
    let mut specs = Vec::new();
    for m in &resolution.modules {
        // depends= of modules.dep, limited to the set (all of them are in
        // it: the closure is the resolution's).
        let line = dir
            .dep_line(&m.name)
            .map_err(kmodkit_inject::InjectError::from)?
            .unwrap_or_default();
        let depends: Vec<String> = line
            .split_once(':')
            .map(|(_, deps)| deps)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|p| module_name_from_path(Path::new(p)))
            .filter(|n| in_set.contains(&n.as_str()))
            .collect();
        let path = format!("/lib/modules/{}/{}", req.kernel, m.relpath);
        specs.push(ModuleSpec {
            name: m.name.clone(),
            path: path.clone(),
            options: String::new(),
            depends: depends.clone(),
        });
        modules.push(ManifestModule {
            name: m.name.clone(),
            path,
            why: if for_nfs_root.contains(&m.name.as_str()) {
                Why::Companion {
                    of: "the NFS root".into(),
                    why: "the kernel's NFS client, loaded before the mount".into(),
                }
            } else {
                m.why.clone()
            },
            depends,
        });
    }
    let config = Config {
        kernel: req.kernel.clone(),
        modules: specs,
        interface: req.interface.clone(),
        network: req.network.clone(),
        root: req.root_source.clone(),
        root_init: "/sbin/init".into(),
        timeouts: Timeouts::default(),
        on_failure: OnFailure::Halt,
        debug: false,
    };
    let config_json = config.to_json();

    // The initrd's entries; sha256 of each for the manifest.
    let mut sha256 = BTreeMap::new();
    let scratch = kmodkit_commit::ScratchDir::new(&req.scratch, "kmodkit-netboot.")?;
    let scratch_config = scratch.path().join("kmodkit-init.json");
    std::fs::write(&scratch_config, &config_json).map_err(|source| NetbootError::Io {
        path: scratch_config.clone(),
        source,
    })?;
    let mut entries = vec![
        file_entry("init", &req.init, 0o755, req.mtime)?,
        file_entry(
            CONFIG_PATH.trim_start_matches('/'),
            &scratch_config,
            0o644,
            req.mtime,
        )?,
    ];
    sha256.insert("initrd.img:/init".to_string(), sha256_hex(&init_bytes));
    sha256.insert(
        format!("initrd.img:{CONFIG_PATH}"),
        sha256_hex(config_json.as_bytes()),
    );
    for m in &resolution.modules {
        let path = format!("lib/modules/{}/{}", req.kernel, m.relpath);
        entries.push(file_entry(&path, &m.path, 0o644, req.mtime)?);
        sha256.insert(format!("initrd.img:/{path}"), sha256_hex(&read(&m.path)?));
    }
    let mut firmware = Vec::new();
    for fw in &resolution.firmware {
        let path = format!("lib/firmware/{}", fw.relpath);
        if firmware.contains(&fw.relpath) {
            continue;
        }
        entries.push(file_entry(&path, &fw.source, 0o644, req.mtime)?);
        sha256.insert(
            format!("initrd.img:/{path}"),
            sha256_hex(&read(&fw.source)?),
        );
        firmware.push(fw.relpath.clone());
    }
    let mut console = entry("dev/console", FileType::CharDevice, 0o600, req.mtime);
    console.rdev = (5, 1);
    entries.push(console);
    for d in ["dev", "proc", "sys", "run", "sysroot", "etc"] {
        entries.push(entry(d, FileType::Directory, 0o755, req.mtime));
    }
    let planned = plan(
        entries,
        &CreateOptions {
            clamp_mtime: Some(req.mtime),
            ..CreateOptions::default()
        },
    )?;
    let segments = [SegmentSpec {
        entries: &planned,
        format: Format::Newc,
        encode: EncodeOptions {
            compression: req.compression,
            level: None,
            threads: 1,
        },
    }];
    let mut initrd = Vec::new();
    write_segments(&segments, &mut initrd, &NoProgress)?;
    drop(scratch_config);

    let vmlinuz = read(&vmlinuz_path)?;
    let ipxe = ipxe_script(req.boot_url.as_deref(), &req.cmdline);
    sha256.insert("vmlinuz".into(), sha256_hex(&vmlinuz));
    sha256.insert("initrd.img".into(), sha256_hex(&initrd));
    sha256.insert("boot.ipxe".into(), sha256_hex(ipxe.as_bytes()));

    let manifest = Manifest {
        kernel: req.kernel.clone(),
        modules,
        firmware,
        missing_firmware: resolution
            .missing_firmware
            .iter()
            .map(|m| format!("{} (for {})", m.name, m.module))
            .collect(),
        notes: resolution.notes.clone(),
        abi_check: source.abi_check,
        sha256,
        settings: ManifestSettings {
            interface: req.interface.clone(),
            network: req.network.clone(),
            root: req.root_source.clone(),
            boot_url: req.boot_url.clone(),
            cmdline: req.cmdline.clone(),
            compression: req.compression.name().to_string(),
            init: req.init.clone(),
        },
    };
    let mut manifest_json = serde_json::to_string_pretty(&manifest)
        .map_err(|e| NetbootError::Invalid(format!("manifest: {e}")))?;
    manifest_json.push('\n');
    Ok(BootSet {
        config,
        manifest,
        files: vec![
            ("vmlinuz", vmlinuz),
            ("initrd.img", initrd),
            ("boot.ipxe", ipxe.into_bytes()),
            ("manifest.json", manifest_json.into_bytes()),
        ],
    })
}

/// The iPXE script: `kernel` names the initrd by its file name
/// (`initrd=initrd.img`, how iPXE hands it to an EFI kernel too).
pub fn ipxe_script(boot_url: Option<&str>, cmdline: &str) -> String {
    let url = |file: &str| match boot_url {
        Some(base) => format!("{}/{file}", base.trim_end_matches('/')),
        None => file.to_string(),
    };
    let args = if cmdline.is_empty() {
        String::new()
    } else {
        format!(" {cmdline}")
    };
    format!(
        "#!ipxe\nisset ${{ip}} || dhcp\nkernel {} initrd=initrd.img{args}\ninitrd {}\nboot\n",
        url("vmlinuz"),
        url("initrd.img")
    )
}

/// Writes the set into `out` (created if missing): the four files replace
/// the old ones as one step; other files in `out` are left alone.
pub fn write(set: &BootSet, out: &Path) -> Result<(), NetbootError> {
    std::fs::create_dir_all(out).map_err(|source| NetbootError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let staging = out.join(".kmodkit-netboot.staging");
    let mut staged = kmodkit_commit::StagedSet::begin(out, &staging)?;
    for (name, bytes) in &set.files {
        staged.write_file(name, bytes)?;
    }
    staged.commit()?;
    Ok(())
}
