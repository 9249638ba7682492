//! From a request to the exact files an image must gain: the resolved
//! modules at their place in the image's module directory, firmware, the
//! module index regenerated for the image's new module set (as depmod
//! would write it inside the image), and the generator's own load list,
//! module options and network settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmodkit_abi::target::Target;
use kmodkit_abi::Verdict;
use kmodkit_commit::ScratchDir;
use kmodkit_depmod::output::render_all;
use kmodkit_depmod::tree::{ModuleTree, TreeOptions};
use kmodkit_index::lookup::ModuleDirectory;
use kmodkit_initramfs::read::Progress;
use serde::Serialize;

use crate::generator::Generator;
use crate::image::ImageFacts;
use crate::net::NetConfig;
use crate::resolve::{self, Resolution, ResolveOptions};
use crate::InjectError;

pub use crate::options::ModuleOption;

/// What add-drivers is asked to do.
#[derive(Debug, Clone)]
pub struct Request {
    pub image: PathBuf,
    /// Root of the system the modules come from (`/` normally).
    pub root: PathBuf,
    /// The image's kernel: needed only when the image has the modules of
    /// several kernels (or none); when given it must be the image's.
    pub image_kernel: Option<String>,
    /// Release of the source modules; the image's own when `None`.
    pub source_kernel: Option<String>,
    pub drivers: Vec<String>,
    pub options: Vec<ModuleOption>,
    pub firmware: bool,
    pub companions: bool,
    pub net: Option<NetConfig>,
    /// Add modules the ABI check refuses.
    pub force: bool,
    pub max_output: u64,
    /// depmod.d configuration for the image's index (empty: depmod's
    /// defaults, as the generators ran it).
    pub depmod_config: Vec<PathBuf>,
    /// Where the scratch directory is made (see [`SCRATCH_PREFIX`]).
    pub scratch_base: PathBuf,
}

/// Where an added file's bytes come from.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// A file on the host (modules, firmware).
    Source(PathBuf),
    /// Written by kmodkit (index, configuration).
    Generated(#[serde(skip)] Vec<u8>),
}

/// One file the image gains (or whose content changes).
#[derive(Debug, Clone, Serialize)]
pub struct Addition {
    /// Canonical path in the image (no symlinked components).
    pub path: String,
    pub content: Content,
    pub mode: u32,
    /// What it is, for the report.
    pub what: String,
}

/// Everything that will be done, with the reasons.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub image: PathBuf,
    pub image_kernel: String,
    pub source_kernel: String,
    pub generator: Generator,
    pub resolution: Resolution,
    /// Modules the image already carries byte for byte.
    pub already_in_image: Vec<String>,
    /// ABI verdicts of the modules the check refused (added only with
    /// `--force`).
    pub refused: Vec<Verdict>,
    /// How ABI compatibility was decided.
    pub abi_check: String,
    /// Modules the image loads explicitly, in order.
    pub load_list: Vec<String>,
    /// Where the load list, options and network settings went.
    pub mechanism: Vec<String>,
    /// The network stacks configured for `--net`.
    pub network_stacks: Vec<String>,
    pub warnings: Vec<String>,
    pub additions: Vec<Addition>,
    #[serde(skip)]
    pub facts: ImageFacts,
    #[serde(skip)]
    /// Removed on drop and on SIGINT/SIGTERM/SIGHUP.
    pub scratch: ScratchDir,
}

const MARK_BEGIN: &str = "# kmodkit initrd add-drivers: begin";
const MARK_END: &str = "# kmodkit initrd add-drivers: end";

/// `text` with kmodkit's block replaced by `block` (appended when absent).
pub(crate) fn with_block(text: &str, block: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line == MARK_BEGIN {
            inside = true;
        } else if line == MARK_END {
            inside = false;
        } else if !inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(MARK_BEGIN);
    out.push('\n');
    out.push_str(block);
    out.push_str(MARK_END);
    out.push('\n');
    out
}

/// The name prefix of add-drivers' scratch directories (see
/// [`kmodkit_commit::ScratchDir`] for the naming contract).
pub const SCRATCH_PREFIX: &str = "kmodkit-add-drivers.";

/// The image's module directory is unpacked into a scratch directory
/// under `base` (the caller picks it: memory-backed when possible, since
/// hundreds of files cost far more on a disk-backed /tmp). Scratch
/// directories of killed runs are removed here.
fn scratch_dir(base: &Path) -> Result<ScratchDir, InjectError> {
    ScratchDir::new(base, SCRATCH_PREFIX).map_err(|e| InjectError::Io {
        source: std::io::Error::new(
            e.source.kind(),
            format!("cannot {}: {}", e.action, e.source),
        ),
        path: e.path,
    })
}

/// Builds the plan: reads the image once, resolves, checks, and renders
/// every file.
pub fn build(req: &Request, progress: &dyn Progress) -> Result<Plan, InjectError> {
    let scratch = scratch_dir(&req.scratch_base)?;
    let image_root = scratch.path().join("image");
    // The source side (index check, resolution, ABI check) only needs the
    // image's kernel release, which the reader sees early: it runs while
    // the rest of the image is still being decompressed.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (facts, early) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            ImageFacts::read_notify(&req.image, &image_root, req.max_output, progress, Some(tx))
        });
        let early = rx.recv().ok().map(|k| {
            let side = source_side(req, &k);
            (k, side)
        });
        let facts = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (facts, early)
    });
    let facts = facts?;
    let image_kernel = match (facts.kernel_releases.as_slice(), &req.image_kernel) {
        ([one], Some(k)) if one != k => {
            return Err(InjectError::Invalid(format!(
                "{}: the image holds the modules of {one}, not {k}; --kernel names the image's kernel (to add modules built for {k}, give --source-kernel {k})",
                req.image.display()
            )))
        }
        ([one], _) => one.clone(),
        (many, Some(k)) if many.iter().any(|r| r == k) => k.clone(),
        ([], Some(k)) => k.clone(),
        ([], None) => {
            return Err(InjectError::Invalid(format!(
                "{}: the image has no lib/modules/<release> directory; name its kernel with --kernel",
                req.image.display()
            )))
        }
        (many, _) => {
            return Err(InjectError::Invalid(format!(
                "{}: the image has modules of several kernels ({}); name one with --kernel",
                req.image.display(),
                many.join(", ")
            )))
        }
    };
    let side = match early {
        Some((k, side)) if k == image_kernel => side?,
        _ => source_side(req, &image_kernel)?,
    };
    let generator = Generator::detect(&facts);
    let mut plan = Plan {
        image: req.image.clone(),
        image_kernel,
        source_kernel: side.source_kernel,
        generator,
        load_list: side
            .resolution
            .load_list()
            .into_iter()
            .map(str::to_string)
            .collect(),
        resolution: side.resolution,
        already_in_image: Vec::new(),
        refused: side.refused,
        abi_check: side.abi_check,
        mechanism: Vec::new(),
        network_stacks: Vec::new(),
        warnings: Vec::new(),
        additions: Vec::new(),
        facts,
        scratch,
    };
    for m in &plan.resolution.missing_firmware {
        plan.warnings.push(format!(
            "{} names firmware {} but it is not under {}/lib/firmware; the device may not start without it",
            m.module,
            m.name,
            req.root.display()
        ));
    }
    check_image_options(&plan, &req.options)?;
    add_modules(&mut plan, req)?;
    add_index(&mut plan, req)?;
    add_firmware(&mut plan);
    add_machinery(&mut plan, req)?;
    Ok(plan)
}

/// What comes from the source tree alone.
struct SourceSide {
    source_kernel: String,
    resolution: Resolution,
    refused: Vec<Verdict>,
    abi_check: String,
}

/// Index check, resolution, `--option` check and the ABI guard for an image
/// of kernel `image_kernel`.
fn source_side(req: &Request, image_kernel: &str) -> Result<SourceSide, InjectError> {
    let source_kernel = req
        .source_kernel
        .clone()
        .unwrap_or_else(|| image_kernel.to_string());
    if let Some(message) = kmodkit_depmod::installed::not_installed(&req.root, &source_kernel) {
        let hint = if req.source_kernel.is_some() {
            ""
        } else {
            " (the modules come from the image's own kernel unless --source-kernel names another)"
        };
        return Err(InjectError::Invalid(format!("{message}{hint}")));
    }
    let source_dir = req.root.join("lib/modules").join(&source_kernel);
    if !source_dir.join("modules.dep.bin").is_file() {
        return Err(InjectError::Invalid(format!(
            "{}: no modules.dep.bin; run `kmodkit depmod -b {} {source_kernel}` first",
            source_dir.display(),
            req.root.display()
        )));
    }
    if !kmodkit_depmod::index_up_to_date(&source_dir) {
        return Err(InjectError::Invalid(format!(
            "{}: modules.dep is older than some module files; run `kmodkit depmod -b {} {source_kernel}` first",
            source_dir.display(),
            req.root.display()
        )));
    }
    let dir = ModuleDirectory::new(source_dir.display().to_string());
    let resolution = resolve::resolve(
        &dir,
        &source_kernel,
        &req.drivers,
        &ResolveOptions {
            companions: req.companions,
            firmware: req.firmware,
            firmware_dir: req.root.join("lib/firmware"),
            modprobe_dirs: resolve::modprobe_dirs(&req.root),
        },
    )?;
    check_options(&resolution, &req.options)?;
    let (refused, abi_check) = check_abi(&resolution, req, image_kernel, &source_kernel)?;
    Ok(SourceSide {
        source_kernel,
        resolution,
        refused,
        abi_check,
    })
}

/// What add-drivers resolves from the source tree alone, for a builder of
/// new images (`kmodkit netboot build`): the same index checks, resolution
/// (closure, softdeps, companions, firmware, old names) and ABI guard.
#[derive(Debug)]
pub struct SourceResolution {
    pub resolution: Resolution,
    /// Refused by the ABI guard (kept only with `force`).
    pub refused: Vec<Verdict>,
    pub abi_check: String,
}

/// Resolves `drivers` for kernel `kernel` under `root` exactly as
/// add-drivers does for an image of that kernel.
pub fn resolve_source(
    root: &Path,
    kernel: &str,
    drivers: &[String],
    firmware: bool,
    companions: bool,
    force: bool,
) -> Result<SourceResolution, InjectError> {
    let req = Request {
        image: PathBuf::new(),
        root: root.to_path_buf(),
        image_kernel: Some(kernel.to_string()),
        source_kernel: Some(kernel.to_string()),
        drivers: drivers.to_vec(),
        options: Vec::new(),
        firmware,
        companions,
        net: None,
        force,
        max_output: 0,
        depmod_config: Vec::new(),
        scratch_base: PathBuf::new(),
    };
    let side = source_side(&req, kernel)?;
    Ok(SourceResolution {
        resolution: side.resolution,
        refused: side.refused,
        abi_check: side.abi_check,
    })
}

/// Every `--option` for a module of the set names one of its parameters
/// with a value of its type; options for other modules are checked
/// against the image's copy once the image is read
/// ([`check_image_options`]).
fn check_options(resolution: &Resolution, options: &[ModuleOption]) -> Result<(), InjectError> {
    for o in options {
        if let Some(m) = resolution.modules.iter().find(|m| m.name == o.module) {
            crate::options::check(o, &m.path)?;
        }
    }
    Ok(())
}

/// `--option`s for modules the image already has (and the request does
/// not add): checked against the image's own copy of the module.
fn check_image_options(plan: &Plan, options: &[ModuleOption]) -> Result<(), InjectError> {
    let scratch_dir = plan
        .facts
        .module_root
        .join("lib/modules")
        .join(&plan.image_kernel);
    let image_files = plan.facts.module_files(&plan.image_kernel);
    for o in options {
        if plan.resolution.modules.iter().any(|m| m.name == o.module) {
            continue;
        }
        let in_image = image_files.iter().find(|f| {
            kmodkit_index::lookup::module_name_from_path(Path::new(f)).as_deref()
                == Some(o.module.as_str())
        });
        let Some(rel) = in_image else {
            return Err(InjectError::Invalid(format!(
                "--option {o}: {} is neither among the modules being added ({}) nor in the image",
                o.module,
                plan.resolution
                    .modules
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        crate::options::check(o, &scratch_dir.join(rel))?;
    }
    Ok(())
}

/// The ABI guard: the kernel's loader decides with vermagic, struct module
/// size and symbol CRCs (kmodkit-abi); modules it would refuse are not
/// added unless forced.
fn check_abi(
    resolution: &Resolution,
    req: &Request,
    image_kernel: &str,
    source_kernel: &str,
) -> Result<(Vec<Verdict>, String), InjectError> {
    let set: Vec<PathBuf> = resolution.modules.iter().map(|m| m.path.clone()).collect();
    if set.is_empty() {
        return Ok((Vec::new(), "nothing to check".into()));
    }
    let (refused, how): (Vec<Verdict>, String) = match Target::load(&req.root, image_kernel, None) {
        Ok(target) => {
            let verdicts = kmodkit_abi::check(&target, &set, "updates");
            (
                verdicts.into_iter().filter(|v| !v.compatible).collect(),
                format!(
                    "checked against {image_kernel} (vermagic, struct module size, symbol CRCs of {})",
                    target.symbols.source.display()
                ),
            )
        }
        Err(e) if source_kernel == image_kernel => (
            Vec::new(),
            format!("modules come from the image's own kernel {image_kernel}; symbol CRCs not checked ({e})"),
        ),
        Err(e) => {
            if !req.force {
                return Err(InjectError::Invalid(format!(
                    "cannot check modules of {source_kernel} against the image's kernel {image_kernel}: {e}; install that kernel's headers (Module.symvers) or pass --force"
                )));
            }
            (Vec::new(), format!("not checked ({e}); --force"))
        }
    };
    if !refused.is_empty() && !req.force {
        let lines: Vec<String> = refused
            .iter()
            .map(|v| {
                format!(
                    "  {} ({}): {}",
                    v.name,
                    v.path.display(),
                    v.reasons
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })
            .collect();
        return Err(InjectError::Invalid(format!(
            "the kernel {image_kernel} would refuse {} module(s):\n{}\nnothing was written; rebuild the modules for {image_kernel} or pass --force",
            refused.len(),
            lines.join("\n"),
        )));
    }
    Ok((refused, how))
}

/// Where a source module goes in the image's module directory: the same
/// relative path for the image's own kernel, `updates/kmodkit/` (searched
/// first by depmod's default configuration) for another kernel's.
impl Plan {
    pub(crate) fn placement(&self, relpath: &str) -> String {
        if self.source_kernel == self.image_kernel && !relpath.starts_with('/') {
            relpath.to_string()
        } else {
            let base = relpath.rsplit('/').next().unwrap_or(relpath);
            format!("updates/kmodkit/{base}")
        }
    }

    /// Adds (or replaces) a file kmodkit writes at `path` (resolved through
    /// the image's symlinks).
    pub(crate) fn generated(&mut self, path: &str, text: String, mode: u32, what: &str) {
        let path = self.facts.canonical(path);
        self.additions.retain(|a| a.path != path);
        self.additions.push(Addition {
            path,
            content: Content::Generated(text.into_bytes()),
            mode,
            what: what.to_string(),
        });
    }

    /// The text this plan already writes at `path`, if any.
    pub(crate) fn generated_text(&self, path: &str) -> Option<String> {
        let path = self.facts.canonical(path);
        self.additions
            .iter()
            .find(|a| a.path == path)
            .and_then(|a| match &a.content {
                Content::Generated(b) => Some(String::from_utf8_lossy(b).into_owned()),
                Content::Source(_) => None,
            })
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> InjectError + '_ {
    move |source| InjectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Modules the image lacks (or has with other bytes) are added and copied
/// into the scratch copy of the image's module directory.
fn add_modules(plan: &mut Plan, _req: &Request) -> Result<(), InjectError> {
    let module_dir = plan.facts.module_dir(&plan.image_kernel);
    let scratch_dir = plan
        .facts
        .module_root
        .join("lib/modules")
        .join(&plan.image_kernel);
    let modules = plan.resolution.modules.clone();
    for m in &modules {
        let rel = plan.placement(&m.relpath);
        let in_scratch = scratch_dir.join(&rel);
        let source = std::fs::read(&m.path).map_err(io_err(&m.path))?;
        if std::fs::read(&in_scratch).ok().as_deref() == Some(&source[..]) {
            plan.already_in_image.push(m.name.clone());
            continue;
        }
        if let Some(parent) = in_scratch.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        std::fs::write(&in_scratch, &source).map_err(io_err(&in_scratch))?;
        plan.additions.push(Addition {
            path: format!("{module_dir}/{rel}"),
            content: Content::Source(m.path.clone()),
            mode: 0o644,
            what: format!("module {}", m.name),
        });
    }
    Ok(())
}

/// The image's module index, regenerated for its new module set with
/// kmodkit's depmod (byte-identical to kmod's); only files that change are
/// added.
fn add_index(plan: &mut Plan, req: &Request) -> Result<(), InjectError> {
    let scratch_dir = plan
        .facts
        .module_root
        .join("lib/modules")
        .join(&plan.image_kernel);
    std::fs::create_dir_all(&scratch_dir).map_err(io_err(&scratch_dir))?;
    // Built-in lists the image lacks come from the source tree when it is
    // the same kernel (depmod needs them for modules.builtin.bin).
    if plan.source_kernel == plan.image_kernel {
        let src = req.root.join("lib/modules").join(&plan.source_kernel);
        for f in [
            "modules.order",
            "modules.builtin",
            "modules.builtin.modinfo",
        ] {
            let dst = scratch_dir.join(f);
            if !dst.exists() && src.join(f).is_file() {
                std::fs::copy(src.join(f), &dst).map_err(io_err(&dst))?;
            }
        }
    }
    let mut options = TreeOptions::new(
        Some(plan.facts.module_root.display().to_string()),
        plan.image_kernel.clone(),
    );
    options.config_paths = req.depmod_config.clone();
    let tree = ModuleTree::load(options)?;
    let (files, _warnings) = render_all(&tree)?;
    let module_dir = plan.facts.module_dir(&plan.image_kernel);
    for f in files {
        let current = std::fs::read(scratch_dir.join(f.name)).ok();
        if current.as_deref() == Some(&f.contents[..]) {
            continue;
        }
        plan.additions.push(Addition {
            path: format!("{module_dir}/{}", f.name),
            content: Content::Generated(f.contents),
            mode: 0o644,
            what: "index (depmod)".into(),
        });
    }
    Ok(())
}

fn add_firmware(plan: &mut Plan) {
    let base = if plan.facts.is_dir("usr/lib/firmware")
        || !plan.facts.is_dir("lib/firmware") && plan.facts.is_dir("usr/lib")
    {
        "usr/lib/firmware".to_string()
    } else {
        plan.facts.canonical("lib/firmware")
    };
    for fw in plan.resolution.firmware.clone() {
        plan.additions.push(Addition {
            path: format!("{base}/{}", fw.relpath),
            content: Content::Source(fw.source.clone()),
            mode: 0o644,
            what: format!("firmware for {}", fw.module),
        });
    }
}

fn options_conf(req: &Request) -> Option<String> {
    if req.options.is_empty() {
        return None;
    }
    let mut by_module: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for o in &req.options {
        by_module
            .entry(&o.module)
            .or_default()
            .push(format!("{}={}", o.param, o.value));
    }
    let mut text = String::from("# Written by kmodkit initrd add-drivers (--option).\n");
    for (m, opts) in by_module {
        text.push_str(&format!("options {m} {}\n", opts.join(" ")));
    }
    Some(text)
}

/// Load list, options and network settings where the generator's own code
/// reads them.
fn add_machinery(plan: &mut Plan, req: &Request) -> Result<(), InjectError> {
    let list = plan.load_list.clone();
    if let Some(text) = options_conf(req) {
        plan.generated("etc/modprobe.d/kmodkit.conf", text, 0o644, "module options");
        plan.mechanism
            .push("module options in etc/modprobe.d/kmodkit.conf (read by modprobe)".into());
    }
    plan.generator.add_load_list(plan, req, &list)?;
    if let Some(net) = &req.net {
        crate::netstack::configure(plan, net)?;
    }
    Ok(())
}
