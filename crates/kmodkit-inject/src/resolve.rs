//! Which module files to add, in which order, and why: the dependency
//! closure from the source tree's `modules.dep` (as modprobe reads it),
//! softdeps from `modules.softdep`, the run-time relations of
//! [`crate::names`], firmware the modules name, built-ins and names that no
//! longer exist.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use kmodkit_index::lookup::{module_name_from_path, ModuleDirectory};
use serde::Serialize;

use crate::names::{self, COMPANIONS, RDMA_ULPS, RDMA_ULP_WHY};
use crate::InjectError;

/// Why a module is in the set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Why {
    Requested,
    /// `modules.dep`: a symbol of this module is used by `of`.
    DependencyOf {
        of: String,
    },
    /// `softdep` of `of` (`pre:` or `post:`).
    Softdep {
        of: String,
        pre: bool,
    },
    /// A run-time relation modules.dep does not show.
    Companion {
        of: String,
        why: String,
    },
    /// Replaces a legacy name that was asked for.
    Replacement {
        of: String,
    },
}

/// One module to add.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedModule {
    pub name: String,
    /// The file in the source tree.
    pub path: PathBuf,
    /// Relative to the module directory (`kernel/drivers/...ko`).
    pub relpath: String,
    pub why: Why,
    /// Loaded explicitly by the image (asked for, or a run-time relation);
    /// dependencies come with them.
    pub load: bool,
}

impl ResolvedModule {
    /// Parses the module file (its .modinfo: parameters, firmware).
    pub fn read(&self) -> Result<kmodkit_module::Module, InjectError> {
        kmodkit_module::read_module_mapped(&self.path, kmodkit_module::compression::DEFAULT_LIMIT)
            .map_err(|source| InjectError::Module {
                name: self.name.clone(),
                source,
            })
    }
}

/// A message about a name that was asked for.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NameNote {
    /// Part of the kernel image: nothing to add.
    BuiltIn { name: String },
    /// Does not exist any more (see [`names::LegacyName`]).
    Legacy {
        name: String,
        fate: String,
        replacement: Option<String>,
        /// The replacement is added unless already there.
        replacement_added: bool,
    },
}

/// A firmware file to add.
#[derive(Debug, Clone, Serialize)]
pub struct FirmwareFile {
    /// As the module names it (`mellanox/mlxsw_spectrum-13.2010.1006.mfa2`).
    pub name: String,
    /// The file found (possibly `.xz`/`.zst`).
    pub source: PathBuf,
    /// Path under the firmware directory, with the compression suffix.
    pub relpath: String,
    pub module: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissingFirmware {
    pub name: String,
    pub module: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Resolution {
    /// In load order (dependencies first).
    pub modules: Vec<ResolvedModule>,
    pub notes: Vec<NameNote>,
    pub firmware: Vec<FirmwareFile>,
    pub missing_firmware: Vec<MissingFirmware>,
}

impl Resolution {
    /// The names the image should load explicitly, in load order.
    pub fn load_list(&self) -> Vec<&str> {
        self.modules
            .iter()
            .filter(|m| m.load)
            .map(|m| m.name.as_str())
            .collect()
    }
}

/// What to resolve.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Add the run-time relations of [`crate::names`].
    pub companions: bool,
    /// Look for the firmware files the modules name.
    pub firmware: bool,
    /// Firmware search root (`ROOT/lib/firmware`).
    pub firmware_dir: PathBuf,
    /// modprobe.d directories whose `softdep` lines count, in kmod's
    /// precedence order (see [`modprobe_dirs`]).
    pub modprobe_dirs: Vec<PathBuf>,
}

/// kmod's default configuration directories under `root`, in precedence
/// order (libkmod.c default_config_paths).
pub fn modprobe_dirs(root: &Path) -> Vec<PathBuf> {
    [
        "etc/modprobe.d",
        "run/modprobe.d",
        "usr/local/lib/modprobe.d",
        "usr/lib/modprobe.d",
        "lib/modprobe.d",
    ]
    .iter()
    .map(|d| root.join(d))
    .collect()
}

/// Resolves `requested` against the module directory `dir` (which must
/// have an up-to-date `modules.dep.bin`, as modprobe needs).
pub fn resolve(
    dir: &ModuleDirectory,
    kernel_release: &str,
    requested: &[String],
    opts: &ResolveOptions,
) -> Result<Resolution, InjectError> {
    let mut res = Resolution::default();
    // Roots to load explicitly, with why, in the order given.
    let mut roots: Vec<(String, Why)> = Vec::new();
    let mut unknown = Vec::new();
    for raw in requested {
        let name = raw.trim_end_matches(".ko").replace('-', "_");
        match dir.lookup_name(&name)? {
            Some(found) if found.path.is_none() => res.notes.push(NameNote::BuiltIn { name }),
            Some(found) => roots.push((found.name, Why::Requested)),
            None => match names::legacy(&name) {
                Some(l) => {
                    let replacement = l
                        .replacement
                        .filter(|r| dir.path_of(r).ok().flatten().is_some());
                    if let Some(r) = replacement {
                        roots.push((r.to_string(), Why::Replacement { of: name.clone() }));
                    }
                    res.notes.push(NameNote::Legacy {
                        name,
                        fate: l.fate.to_string(),
                        replacement: l.replacement.map(str::to_string),
                        replacement_added: replacement.is_some(),
                    });
                }
                None => unknown.push(name),
            },
        }
    }
    if !unknown.is_empty() {
        let all = module_names(dir)?;
        return Err(InjectError::UnknownModules {
            release: kernel_release.to_string(),
            unknown: unknown
                .into_iter()
                .map(|n| {
                    let close = names::close_matches(&n, all.iter().map(String::as_str));
                    (n, close)
                })
                .collect(),
        });
    }

    // Run-time relations: companions of asked-for modules, then the RDMA
    // upper layers when an RDMA provider is in the set.
    if opts.companions {
        let asked: Vec<String> = roots.iter().map(|(n, _)| n.clone()).collect();
        for c in COMPANIONS {
            if asked.iter().any(|a| a == c.trigger) {
                for m in c.modules {
                    if dir.path_of(m)?.is_some() {
                        roots.push((
                            m.to_string(),
                            Why::Companion {
                                of: c.trigger.to_string(),
                                why: c.why.to_string(),
                            },
                        ));
                    }
                }
            }
        }
    }

    let mut walk = ProbeList {
        dir,
        softdeps: Softdeps::load(Path::new(dir.dir()), &opts.modprobe_dirs),
        visited: HashSet::new(),
        order: LoadOrder::default(),
    };
    let mut provider: Option<String> = None;
    let mut i = 0;
    while i < roots.len() {
        let (name, why) = roots[i].clone();
        i += 1;
        walk.probe(&name, why, true)?;
        if opts.companions && provider.is_none() {
            provider = walk
                .order
                .modules
                .iter()
                .find(|m| names::is_rdma_provider(&m.relpath))
                .map(|m| m.name.clone());
            if let Some(p) = &provider {
                for ulp in RDMA_ULPS {
                    if dir.path_of(ulp)?.is_some() {
                        roots.push((
                            ulp.to_string(),
                            Why::Companion {
                                of: p.clone(),
                                why: RDMA_ULP_WHY.to_string(),
                            },
                        ));
                    }
                }
            }
        }
    }
    let order = walk.order;
    res.modules = order.modules;
    // A module asked for by name is "requested" even when a legacy name or
    // a dependency brought it in first.
    let asked: HashSet<String> = requested
        .iter()
        .map(|r| r.trim_end_matches(".ko").replace('-', "_"))
        .collect();
    for m in &mut res.modules {
        if asked.contains(&m.name) {
            m.why = Why::Requested;
            m.load = true;
        }
    }
    if opts.firmware {
        find_firmware(&mut res, &opts.firmware_dir, kernel_release)?;
    }
    Ok(res)
}

/// The order modprobe loads `names` in (each with its dependencies and
/// softdeps, as [`resolve`] computes it), and the names `modules.dep` does
/// not have. For reading an image's own index (`initrd modules`).
pub fn probe_order(
    dir: &ModuleDirectory,
    names: &[String],
    modprobe_dirs: &[PathBuf],
) -> Result<(Vec<String>, Vec<String>), InjectError> {
    let mut walk = ProbeList {
        dir,
        softdeps: Softdeps::load(Path::new(dir.dir()), modprobe_dirs),
        visited: HashSet::new(),
        order: LoadOrder::default(),
    };
    let mut missing = Vec::new();
    for n in names {
        if dir.dep_line(n)?.is_none() {
            missing.push(n.clone());
            continue;
        }
        walk.probe(n, Why::Requested, true)?;
    }
    Ok((
        walk.order.modules.into_iter().map(|m| m.name).collect(),
        missing,
    ))
}

/// Every module name in `modules.dep` (for close matches).
fn module_names(dir: &ModuleDirectory) -> Result<Vec<String>, InjectError> {
    let path = PathBuf::from(format!("{}/modules.dep", dir.dir()));
    let text = std::fs::read_to_string(&path).map_err(|source| InjectError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| module_name_from_path(Path::new(p)))
        .collect())
}

/// The set in load order.
#[derive(Default)]
struct LoadOrder {
    modules: Vec<ResolvedModule>,
    index: HashMap<String, usize>,
}

impl LoadOrder {
    fn push(&mut self, dir: &ModuleDirectory, name: String, rel: &str, why: Why, load: bool) {
        let path = if rel.starts_with('/') {
            PathBuf::from(rel)
        } else {
            PathBuf::from(format!("{}/{}", dir.dir(), rel))
        };
        self.index.insert(name.clone(), self.modules.len());
        self.modules.push(ResolvedModule {
            name,
            path,
            relpath: rel.to_string(),
            why,
            load,
        });
    }
}

/// The order libkmod's `kmod_module_get_probe_list` gives (what
/// `modprobe --show-depends` prints): for a module, each dependency
/// (modules.dep lists the whole closure; loaded from its end) with its own
/// softdeps around it, then the module with its softdeps. Softdep names are
/// looked up like modprobe does (aliases too: `crypto-crc32c` is every
/// module with that alias).
struct ProbeList<'d> {
    dir: &'d ModuleDirectory,
    softdeps: Softdeps,
    visited: HashSet<String>,
    order: LoadOrder,
}

impl ProbeList<'_> {
    fn err(&self, message: String) -> InjectError {
        InjectError::Index {
            dir: PathBuf::from(self.dir.dir()),
            message,
        }
    }

    /// `__kmod_module_get_probe_list`.
    fn probe(&mut self, name: &str, why: Why, load: bool) -> Result<(), InjectError> {
        if !self.visited.insert(name.to_string()) {
            if let Some(&i) = self.order.index.get(name) {
                self.order.modules[i].load |= load;
            }
            return Ok(());
        }
        let line = self
            .dir
            .dep_line(name)?
            .ok_or_else(|| self.err(format!("{name} is not in modules.dep")))?;
        let (own, deps) = line.split_once(':').unwrap_or((line.as_str(), ""));
        let own = own.to_string();
        let deps: Vec<String> = deps.split_whitespace().rev().map(str::to_string).collect();
        for dep in &deps {
            let Some(dep_name) = module_name_from_path(Path::new(dep)) else {
                continue;
            };
            self.fill(
                &dep_name,
                dep,
                Why::DependencyOf {
                    of: name.to_string(),
                },
                false,
            )?;
        }
        self.fill(name, &own, why, load)
    }

    /// `__kmod_module_fill_softdep`: pre softdeps, the module, post
    /// softdeps.
    fn fill(&mut self, name: &str, rel: &str, why: Why, load: bool) -> Result<(), InjectError> {
        for pre in self.softdeps.get(name, true) {
            for m in self.lookup(&pre)? {
                self.probe(
                    &m,
                    Why::Softdep {
                        of: name.to_string(),
                        pre: true,
                    },
                    false,
                )?;
            }
        }
        match self.order.index.get(name) {
            Some(&i) => self.order.modules[i].load |= load,
            None => self.order.push(self.dir, name.to_string(), rel, why, load),
        }
        for post in self.softdeps.get(name, false) {
            for m in self.lookup(&post)? {
                self.probe(
                    &m,
                    Why::Softdep {
                        of: name.to_string(),
                        pre: false,
                    },
                    false,
                )?;
            }
        }
        Ok(())
    }

    /// Module files a softdep name stands for (built-ins need nothing).
    fn lookup(&self, name: &str) -> Result<Vec<String>, InjectError> {
        Ok(self
            .dir
            .lookup(name)?
            .into_iter()
            .filter(|f| f.path.is_some())
            .map(|f| f.name)
            .collect())
    }
}

/// `modules.softdep` of the source tree: `softdep NAME pre: A B post: C`.
/// The `softdep` lines of modprobe.d files and of the tree's
/// `modules.softdep` (the only modprobe.d directive add-drivers follows).
#[derive(Debug, Default)]
pub struct Softdeps {
    map: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl Softdeps {
    /// The configuration files first (sorted by file name; a name in an
    /// earlier directory hides the same name in later ones, as kmod's
    /// conf_files_list does), then the tree's modules.softdep.
    fn load(dir: &Path, config_dirs: &[PathBuf]) -> Softdeps {
        let mut files: std::collections::BTreeMap<std::ffi::OsString, PathBuf> =
            std::collections::BTreeMap::new();
        for d in config_dirs {
            let Ok(rd) = std::fs::read_dir(d) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name();
                if name.to_string_lossy().ends_with(".conf") {
                    files.entry(name).or_insert_with(|| e.path());
                }
            }
        }
        let mut softdeps = Softdeps {
            map: HashMap::new(),
        };
        for path in files.values() {
            // An unreadable file is skipped, as kmod does; bytes that are
            // not UTF-8 do not hide the file's other lines.
            if let Ok(bytes) = std::fs::read(path) {
                softdeps.parse(&String::from_utf8_lossy(&bytes));
            }
        }
        // A missing file means no softdeps (depmod writes it even when
        // empty; older trees may lack it).
        softdeps.parse(&std::fs::read_to_string(dir.join("modules.softdep")).unwrap_or_default());
        softdeps
    }

    /// Adds the `softdep` lines of one file's text.
    pub fn parse(&mut self, text: &str) {
        let map = &mut self.map;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("softdep") {
                continue;
            }
            let Some(name) = words.next() else { continue };
            // Only the first line for a module counts: libkmod's
            // kmod_module_get_softdeps stops at the first match, "as
            // modprobe from module-init-tools does".
            let std::collections::hash_map::Entry::Vacant(slot) = map.entry(name.replace('-', "_"))
            else {
                continue;
            };
            let entry: &mut (Vec<String>, Vec<String>) = slot.insert(Default::default());
            // Words before "pre:" or "post:" are ignored, as libkmod's
            // kmod_config_parse_softdep does.
            let mut pre: Option<bool> = None;
            for w in words {
                match (w, pre) {
                    ("pre:", _) => pre = Some(true),
                    ("post:", _) => pre = Some(false),
                    (m, Some(true)) => entry.0.push(m.to_string()),
                    (m, Some(false)) => entry.1.push(m.to_string()),
                    (_, None) => {}
                }
            }
        }
    }

    /// The `pre:` (or `post:`) modules of `name`'s first softdep line.
    pub fn get(&self, name: &str, pre: bool) -> Vec<String> {
        self.map
            .get(name)
            .map(|(a, b)| if pre { a.clone() } else { b.clone() })
            .unwrap_or_default()
    }
}

/// Firmware files the modules name (`firmware=` in .modinfo), searched as
/// the kernel's firmware loader does (fw_path: updates/KVER, updates, KVER,
/// then the directory itself), with the compressed variants it accepts.
fn find_firmware(res: &mut Resolution, dir: &Path, release: &str) -> Result<(), InjectError> {
    let mut seen = HashSet::new();
    for m in &res.modules {
        let module = m.read()?;
        for fw in module.modinfo_values("firmware") {
            let name = String::from_utf8_lossy(fw).into_owned();
            if !seen.insert(name.clone()) {
                continue;
            }
            let found = [
                "updates/".to_string() + release + "/",
                "updates/".into(),
                release.to_string() + "/",
                String::new(),
            ]
            .iter()
            .flat_map(|sub| ["", ".zst", ".xz"].map(|ext| format!("{sub}{name}{ext}")))
            .find(|rel| dir.join(rel).is_file());
            match found {
                Some(relpath) => res.firmware.push(FirmwareFile {
                    name,
                    source: dir.join(&relpath),
                    relpath,
                    module: m.name.clone(),
                }),
                None => res.missing_firmware.push(MissingFirmware {
                    name,
                    module: m.name.clone(),
                }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A modprobe.d file with bytes that are not UTF-8 still counts (kmod
    /// reads bytes); the first softdep line of a module wins; an earlier
    /// directory's file hides the same name in a later one.
    #[test]
    fn softdeps_follow_kmod_precedence_and_survive_odd_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let (etc, lib) = (tmp.path().join("etc"), tmp.path().join("lib"));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(
            etc.join("a.conf"),
            b"# caf\xe9\nsoftdep mlx4-core pre: x post: y\nsoftdep mlx4_core pre: z\n",
        )
        .unwrap();
        std::fs::write(lib.join("a.conf"), "softdep hidden pre: w\n").unwrap();
        std::fs::write(lib.join("b.conf"), "softdep ib_core post: ib_uverbs\n").unwrap();
        let s = Softdeps::load(tmp.path(), &[etc, lib]);
        assert_eq!(s.get("mlx4_core", true), ["x"]);
        assert_eq!(s.get("mlx4_core", false), ["y"]);
        assert_eq!(s.get("ib_core", false), ["ib_uverbs"]);
        assert!(s.get("hidden", true).is_empty());
    }

    /// The first fixture kernel's module directory (a real Debian tree).
    fn tree() -> (ModuleDirectory, String) {
        let (release, _) = kmodkit_fixtures::kernels()
            .into_iter()
            .next()
            .expect("a fixture kernel");
        let dir = kmodkit_fixtures::fixture_root()
            .join("lib/modules")
            .join(&release);
        (ModuleDirectory::new(dir.display().to_string()), release)
    }

    fn opts(companions: bool) -> ResolveOptions {
        ResolveOptions {
            companions,
            firmware: false,
            firmware_dir: PathBuf::new(),
            modprobe_dirs: Vec::new(),
        }
    }

    fn position(res: &Resolution, name: &str) -> Option<usize> {
        res.modules.iter().position(|m| m.name == name)
    }

    /// modules.dep's line for `name`, read as text (the oracle depmod
    /// wrote): the files it depends on, as module names.
    fn deps_in_modules_dep(dir: &ModuleDirectory, name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(Path::new(dir.dir()).join("modules.dep")).unwrap();
        let line = text
            .lines()
            .find(|l| {
                l.split(':')
                    .next()
                    .and_then(|p| kmodkit_index::name::module_name_from_path(Path::new(p)))
                    .as_deref()
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("{name} is not in modules.dep"));
        line.split_once(':')
            .unwrap()
            .1
            .split_whitespace()
            .filter_map(|p| kmodkit_index::name::module_name_from_path(Path::new(p)))
            .collect()
    }

    #[test]
    fn the_closure_holds_every_dependency_before_its_user() {
        let (dir, release) = tree();
        let res = resolve(&dir, &release, &["mlx5-ib.ko".into()], &opts(false)).unwrap();
        let me = position(&res, "mlx5_ib").expect("mlx5_ib resolved");
        assert_eq!(res.modules[me].why, Why::Requested);
        assert!(res.modules[me].load);
        let deps = deps_in_modules_dep(&dir, "mlx5_ib");
        assert!(deps.iter().any(|d| d == "mlx5_core"), "{deps:?}");
        for d in &deps {
            let at = position(&res, d).unwrap_or_else(|| panic!("{d} missing"));
            assert!(at < me, "{d} must come before mlx5_ib");
            assert!(!res.modules[at].load, "{d} comes as a dependency");
        }
        assert_eq!(res.load_list(), ["mlx5_ib"]);
        // Without companions, nothing modules.dep does not show.
        assert!(position(&res, "ib_ipoib").is_none());
    }

    #[test]
    fn companions_add_the_run_time_relations() {
        let (dir, release) = tree();
        let res = resolve(&dir, &release, &["mlx5_core".into()], &opts(true)).unwrap();
        let ib = position(&res, "mlx5_ib").expect("mlx5_ib comes with mlx5_core");
        assert!(
            matches!(&res.modules[ib].why, Why::Companion { of, .. } if of == "mlx5_core"),
            "{:?}",
            res.modules[ib].why
        );
        // mlx5_ib is an RDMA provider: the upper layers rdma-core's udev
        // rules would load come too, loaded explicitly.
        let ulps: Vec<&str> = RDMA_ULPS
            .iter()
            .copied()
            .filter(|u| dir.path_of(u).unwrap().is_some())
            .collect();
        assert!(!ulps.is_empty());
        let loads = res.load_list();
        for u in &ulps {
            assert!(loads.contains(u), "{u} not loaded: {loads:?}");
        }
        let without = resolve(&dir, &release, &["mlx5_core".into()], &opts(false)).unwrap();
        assert!(position(&without, "mlx5_ib").is_none());
    }

    #[test]
    fn old_built_in_and_unknown_names() {
        let (dir, release) = tree();
        // A name merged into another module: its replacement comes instead.
        let res = resolve(&dir, &release, &["ib_addr".into()], &opts(false)).unwrap();
        assert!(
            matches!(&res.notes[..], [NameNote::Legacy { name, replacement: Some(r), replacement_added: true, .. }]
                if name == "ib_addr" && r == "ib_core"),
            "{:?}",
            res.notes
        );
        let core = position(&res, "ib_core").expect("ib_core replaces ib_addr");
        assert_eq!(
            res.modules[core].why,
            Why::Replacement {
                of: "ib_addr".into()
            }
        );
        // Built in (modules.builtin, which depmod's input lists): a note,
        // nothing to add.
        let builtin =
            std::fs::read_to_string(Path::new(dir.dir()).join("modules.builtin")).unwrap();
        let name = builtin
            .lines()
            .find_map(|l| kmodkit_index::name::module_name_from_path(Path::new(l)))
            .expect("a built-in module");
        let res = resolve(&dir, &release, std::slice::from_ref(&name), &opts(false)).unwrap();
        assert!(res.modules.is_empty(), "{:?}", res.modules);
        assert!(
            matches!(&res.notes[..], [NameNote::BuiltIn { name: n }] if *n == name),
            "{:?}",
            res.notes
        );
        // A typo: an error with the close match.
        let err = resolve(&dir, &release, &["e1000ee".into()], &opts(false)).unwrap_err();
        let InjectError::UnknownModules { unknown, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(unknown[0].0, "e1000ee");
        assert!(unknown[0].1.iter().any(|c| c == "e1000e"), "{err}");
    }

    /// The module error is the source, and the path is said once (by it).
    #[test]
    fn a_module_error_keeps_its_cause() {
        use std::error::Error as _;
        let m = ResolvedModule {
            name: "gone".into(),
            path: PathBuf::from("/nonexistent/kmodkit/gone.ko"),
            relpath: "kernel/gone.ko".into(),
            why: Why::Requested,
            load: true,
        };
        let err = m.read().unwrap_err();
        let source = err.source().expect("the module error is the source");
        assert!(source.to_string().contains("/nonexistent/kmodkit/gone.ko"));
        assert!(!err.to_string().contains("gone.ko"), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }

    #[test]
    fn firmware_is_found_where_the_kernel_looks_first() {
        let (dir, release) = tree();
        let scratch = tempfile::tempdir().unwrap();
        let fw_dir = scratch.path().join("firmware");
        let mut o = opts(false);
        o.firmware = true;
        o.firmware_dir = fw_dir.clone();
        // No firmware directory: every file the module names is missing.
        let res = resolve(&dir, &release, &["bnx2x".into()], &o).unwrap();
        let bnx2x = &res.modules[position(&res, "bnx2x").unwrap()];
        let named: Vec<String> = bnx2x
            .read()
            .unwrap()
            .modinfo_values("firmware")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        assert!(!named.is_empty(), "bnx2x names its firmware");
        let missing: Vec<&str> = res
            .missing_firmware
            .iter()
            .filter(|m| m.module == "bnx2x")
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(
            missing,
            named.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert!(res.firmware.is_empty());
        // The first one both under the release (compressed) and at the
        // top: fw_path order (drivers/base/firmware_loader/main.c) takes
        // the release's.
        let first = &named[0];
        for rel in [format!("{release}/{first}.zst"), first.clone()] {
            let p = fw_dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"fw").unwrap();
        }
        let res = resolve(&dir, &release, &["bnx2x".into()], &o).unwrap();
        let found: Vec<(&str, &str)> = res
            .firmware
            .iter()
            .map(|f| (f.name.as_str(), f.relpath.as_str()))
            .collect();
        assert_eq!(
            found,
            [(first.as_str(), format!("{release}/{first}.zst").as_str())]
        );
        assert_eq!(res.missing_firmware.len(), missing.len() - 1);
    }
}
