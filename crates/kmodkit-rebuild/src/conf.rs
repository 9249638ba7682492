//! A package's recipe: DKMS's `dkms.conf`, evaluated as DKMS evaluates it.
//!
//! `dkms.conf` is a bash file, not a key=value file: packages compute
//! `MAKE[0]` from `${kernelver}`, test the kernel's `.config`, or source a
//! generated file. DKMS (3.0.10 `read_conf`, `safe_source`) sources it in a
//! subshell with `kernelver`, `arch`, `kernel_source_dir`, `dkms_tree` and
//! `source_tree` set, then the site overrides `/etc/dkms/NAME.conf`,
//! `NAME-VERSION.conf`, `NAME-VERSION-KERNEL.conf` and
//! `NAME-VERSION-KERNEL-ARCH.conf` in that order, and reads back the arrays
//! it knows. The regex matches (`MAKE_MATCH`, `PATCH_MATCH`,
//! `BUILD_EXCLUSIVE_KERNEL`/`_ARCH`) are bash's `=~`, so they are evaluated
//! by bash here too: one `bash` per (package, kernel), printing every value
//! NUL-separated. The rules after that (defaults, `STRIP`, the errors) are
//! DKMS's, restated in Rust.
//!
//! A plain Kbuild directory (no `dkms.conf`) gets DKMS's default recipe:
//! `make -C KDIR M=BUILD`, every `.ko` the build produces, installed under
//! the distribution's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// The file names of one source tree.
pub const DKMS_CONF: &str = "dkms.conf";

#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: bash could not evaluate it: {message}")]
    Shell { path: PathBuf, message: String },
    #[error("{path}: cannot run bash to evaluate it: {source}")]
    NoShell {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where a package's source lives and what kind of tree it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The source directory (`/usr/src/NAME-VERSION` for DKMS).
    pub dir: PathBuf,
    /// True when the directory has a `dkms.conf`.
    pub dkms: bool,
}

impl Source {
    /// A source directory: a DKMS tree when it holds `dkms.conf`, else a
    /// Kbuild directory (it must hold a `Makefile` or `Kbuild`).
    pub fn open(dir: &Path) -> Result<Source, ConfError> {
        let meta = std::fs::metadata(dir).map_err(|source| ConfError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(ConfError::Invalid {
                path: dir.to_path_buf(),
                message:
                    "not a directory (give a DKMS source tree with dkms.conf or a Kbuild directory)"
                        .into(),
            });
        }
        if dir.join(DKMS_CONF).is_file() {
            return Ok(Source {
                dir: dir.to_path_buf(),
                dkms: true,
            });
        }
        if dir.join("Makefile").is_file() || dir.join("Kbuild").is_file() {
            return Ok(Source {
                dir: dir.to_path_buf(),
                dkms: false,
            });
        }
        Err(ConfError::Invalid {
            path: dir.to_path_buf(),
            message: "has neither dkms.conf nor a Makefile/Kbuild file".into(),
        })
    }

    /// Every DKMS source tree under `ROOT/usr/src` (`*/dkms.conf`), sorted.
    pub fn all_dkms(root: &Path) -> Vec<Source> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(root.join("usr/src")) else {
            return out;
        };
        for e in dir.flatten() {
            let p = e.path();
            if p.join(DKMS_CONF).is_file() {
                out.push(Source { dir: p, dkms: true });
            }
        }
        out.sort_by(|a, b| a.dir.cmp(&b.dir));
        out
    }
}

/// One module a package builds (one index of DKMS's arrays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleSpec {
    /// `BUILT_MODULE_NAME`: the file name without `.ko`.
    pub built_name: String,
    /// `BUILT_MODULE_LOCATION`, relative to the build directory, "" or
    /// ending in `/`.
    pub built_location: String,
    /// `DEST_MODULE_NAME` (defaults to the built name).
    pub dest_name: String,
    /// `DEST_MODULE_LOCATION` as written (`/kernel/...`, `/updates...`,
    /// `/extra...`); the distribution decides the real place.
    pub dest_location: String,
    /// `STRIP`: `strip -g` before signing (DKMS's default: yes).
    pub strip: bool,
}

/// What the kernel needs for the build: the inputs the recipe was
/// evaluated with.
#[derive(Debug, Clone)]
pub struct EvalContext<'a> {
    /// The system the package is for (its `/etc/dkms` overrides apply).
    pub root: &'a Path,
    pub kernel: &'a str,
    /// `uname -m` of the target (`x86_64`).
    pub arch: &'a str,
    /// The kernel's headers (`kernel_source_dir`).
    pub kernel_source_dir: &'a Path,
    /// DKMS's tree: the build happens in `DKMS_TREE/NAME/VERSION/build`,
    /// which some recipes name in `MAKE` (jool).
    pub dkms_tree: &'a Path,
}

/// A package's recipe for one kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Recipe {
    pub source: Source,
    pub name: String,
    pub version: String,
    pub kernel: String,
    pub modules: Vec<ModuleSpec>,
    /// The make command line, run by bash in the build directory, with
    /// `KERNELRELEASE=K` as DKMS adds it (`actual_build`).
    pub make: String,
    /// Patches under `patches/`, applied with `patch -p1` in order.
    pub patches: Vec<String>,
    /// `PRE_BUILD` / `POST_BUILD`: scripts relative to the build directory.
    pub pre_build: Option<String>,
    pub post_build: Option<String>,
    /// `BUILD_DEPENDS`: package names that must be built first.
    pub build_depends: Vec<String>,
    /// Why this kernel is excluded (`BUILD_EXCLUSIVE_*`), if it is.
    pub excluded: Option<String>,
    pub autoinstall: bool,
    /// `NO_WEAK_MODULES="yes"`: no weak-updates links for other kernels.
    pub no_weak_modules: bool,
    /// Site signing key and certificate (`/etc/dkms/framework.conf`'s
    /// `mok_signing_key`, `mok_certificate`), when set.
    pub mok_signing_key: Option<PathBuf>,
    pub mok_certificate: Option<PathBuf>,
    /// Plain Kbuild directory: the modules are whatever the build made.
    pub discover_modules: bool,
}

/// The variables read back from the shell (DKMS's `dkms_conf_variables`
/// that matter for building, and the results of the bash regex tests).
const VARIABLES: &[&str] = &[
    "PACKAGE_NAME",
    "PACKAGE_VERSION",
    "BUILT_MODULE_NAME",
    "BUILT_MODULE_LOCATION",
    "DEST_MODULE_NAME",
    "DEST_MODULE_LOCATION",
    "STRIP",
    "MAKE",
    "MAKE_MATCH",
    "PATCH",
    "PATCH_MATCH",
    "PRE_BUILD",
    "POST_BUILD",
    "BUILD_DEPENDS",
    "BUILD_EXCLUSIVE_KERNEL",
    "BUILD_EXCLUSIVE_KERNEL_MIN",
    "BUILD_EXCLUSIVE_KERNEL_MAX",
    "BUILD_EXCLUSIVE_ARCH",
    "BUILD_EXCLUSIVE_CONFIG",
    "AUTOINSTALL",
    "NO_WEAK_MODULES",
    "mok_signing_key",
    "mok_certificate",
    "kmodkit_make",
    "kmodkit_patches",
    "kmodkit_exclude",
];

/// The evaluation script. Arguments: kernelver arch kernel_source_dir
/// dkms_tree source_tree conf root. Errors of the sourced files go to
/// stderr; their stdout is discarded, as DKMS's `safe_source` does.
const SCRIPT: &str = r#"
set +u
kernelver=$1 arch=$2 kernel_source_dir=$3 dkms_tree=$4 source_tree=$5
conf=$6 root=${7%/}
kernel_config=$kernel_source_dir/.config
for f in "$root/etc/dkms/framework.conf" "$root"/etc/dkms/framework.conf.d/*.conf; do
  [ -e "$f" ] && . "$f" >/dev/null
done
cd "$(dirname "$conf")" || exit 3
. "$conf" >/dev/null || exit 4
module=$PACKAGE_NAME module_version=$PACKAGE_VERSION
for f in "$root/etc/dkms/$module.conf" "$root/etc/dkms/$module-$module_version.conf" \
    "$root/etc/dkms/$module-$module_version-$kernelver.conf" \
    "$root/etc/dkms/$module-$module_version-$kernelver-$arch.conf"; do
  [ -e "$f" ] && . "$f" >/dev/null
done
# DKMS read_conf: the make command MAKE_MATCH selects, the patches
# PATCH_MATCH selects, BUILD_EXCLUSIVE_* (bash regexes).
[[ ${MAKE_MATCH[0]} ]] || kmodkit_make=${MAKE[0]}
for ((i = 0; i < ${#MAKE[@]}; i++)); do
  [[ ${MAKE[$i]} && ${MAKE_MATCH[$i]} && $kernelver =~ ${MAKE_MATCH[$i]} ]] && kmodkit_make=${MAKE[$i]}
done
kmodkit_patches=()
for ((i = 0; i < ${#PATCH[@]}; i++)); do
  if [[ ${PATCH[$i]} && (! ${PATCH_MATCH[$i]} || $kernelver =~ ${PATCH_MATCH[$i]}) ]]; then
    kmodkit_patches+=("${PATCH[$i]}")
  fi
done
kmodkit_exclude=
if [[ $BUILD_EXCLUSIVE_KERNEL && ! $kernelver =~ $BUILD_EXCLUSIVE_KERNEL ]]; then
  kmodkit_exclude="BUILD_EXCLUSIVE_KERNEL=\"$BUILD_EXCLUSIVE_KERNEL\" does not match kernel $kernelver"
elif [[ $BUILD_EXCLUSIVE_ARCH && ! $arch =~ $BUILD_EXCLUSIVE_ARCH ]]; then
  kmodkit_exclude="BUILD_EXCLUSIVE_ARCH=\"$BUILD_EXCLUSIVE_ARCH\" does not match $arch"
elif [[ $BUILD_EXCLUSIVE_CONFIG && -e $kernel_config ]]; then
  for kconf in $BUILD_EXCLUSIVE_CONFIG; do
    case $kconf in
      !*) grep -q -E "^${kconf#!}=[ym]" "$kernel_config" && kmodkit_exclude="BUILD_EXCLUSIVE_CONFIG: the kernel has ${kconf#!} set" ;;
      *) grep -q -E "^${kconf}=[ym]" "$kernel_config" || kmodkit_exclude="BUILD_EXCLUSIVE_CONFIG: the kernel does not have $kconf set" ;;
    esac
    [[ $kmodkit_exclude ]] && break
  done
fi
for v in "${kmodkit_variables[@]}"; do
  eval "keys=(\"\${!$v[@]}\")"
  for k in "${keys[@]}"; do
    eval "val=\${$v[$k]}"
    printf '%s\0%s\0%s\0' "$v" "$k" "$val"
  done
done
"#;

/// Values read back: variable → index → value.
type Values = BTreeMap<String, BTreeMap<u32, String>>;

fn run_script(source: &Source, cx: &EvalContext<'_>) -> Result<Values, ConfError> {
    let conf = source.dir.join(DKMS_CONF);
    let vars = VARIABLES.join(" ");
    let script = format!("kmodkit_variables=({vars})\n{SCRIPT}");
    let out = Command::new("bash")
        .arg("--noprofile")
        .arg("--norc")
        .arg("-c")
        .arg(&script)
        .arg("kmodkit-dkms-conf")
        .arg(cx.kernel)
        .arg(cx.arch)
        .arg(cx.kernel_source_dir)
        .arg(cx.dkms_tree)
        .arg(cx.root.join("usr/src"))
        .arg(&conf)
        .arg(cx.root)
        .env_remove("BASH_ENV")
        .env_remove("ENV")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ConfError::NoShell {
            path: conf.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ConfError::Shell {
            path: conf,
            message: format!(
                "{}{}",
                out.status,
                stderr
                    .lines()
                    .next()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            ),
        });
    }
    let mut values = Values::new();
    let mut parts = out.stdout.split(|b| *b == 0);
    while let (Some(var), Some(index), Some(value)) = (parts.next(), parts.next(), parts.next()) {
        let var = String::from_utf8_lossy(var).into_owned();
        let Ok(index) = String::from_utf8_lossy(index).parse::<u32>() else {
            continue;
        };
        values
            .entry(var)
            .or_default()
            .insert(index, String::from_utf8_lossy(value).into_owned());
    }
    Ok(values)
}

fn scalar(values: &Values, var: &str) -> Option<String> {
    values
        .get(var)
        .and_then(|m| m.get(&0))
        .filter(|s| !s.is_empty())
        .cloned()
}

fn array(values: &Values, var: &str) -> BTreeMap<u32, String> {
    values.get(var).cloned().unwrap_or_default()
}

fn yes(v: Option<String>) -> bool {
    v.is_some_and(|s| s.starts_with(['y', 'Y']))
}

/// DKMS's `actual_build`: `make` at the start of the command becomes
/// `make KERNELRELEASE=K` (DKMS also adds `-jN`; here the jobserver sets
/// the job count for every make at once).
fn with_kernelrelease(make: &str, kernel: &str) -> String {
    match make.strip_prefix("make") {
        Some(rest) => format!("make KERNELRELEASE={kernel}{rest}"),
        None => make.to_string(),
    }
}

impl Recipe {
    /// Evaluates `source` for one kernel.
    pub fn evaluate(source: &Source, cx: &EvalContext<'_>) -> Result<Recipe, ConfError> {
        if !source.dkms {
            return Ok(Recipe::kbuild(source, cx));
        }
        let conf = source.dir.join(DKMS_CONF);
        let invalid = |message: String| ConfError::Invalid {
            path: conf.clone(),
            message,
        };
        let values = run_script(source, cx)?;
        let name = scalar(&values, "PACKAGE_NAME")
            .ok_or_else(|| invalid("no PACKAGE_NAME directive".into()))?;
        let version = scalar(&values, "PACKAGE_VERSION")
            .ok_or_else(|| invalid("no PACKAGE_VERSION directive".into()))?;
        let built = array(&values, "BUILT_MODULE_NAME");
        let built_loc = array(&values, "BUILT_MODULE_LOCATION");
        let dest = array(&values, "DEST_MODULE_NAME");
        let dest_loc = array(&values, "DEST_MODULE_LOCATION");
        let strip = array(&values, "STRIP");
        // DKMS sizes the records by the longest of the four arrays.
        let count = [&built, &built_loc, &dest, &dest_loc]
            .iter()
            .filter_map(|m| m.keys().next_back().map(|k| k + 1))
            .max()
            .unwrap_or(0);
        if count == 0 {
            return Err(invalid(
                "no DEST_MODULE_LOCATION directive (and no BUILT_MODULE_NAME)".into(),
            ));
        }
        let first_strip = strip.get(&0).cloned();
        let mut modules = Vec::new();
        for i in 0..count {
            let get = |m: &BTreeMap<u32, String>| m.get(&i).cloned().unwrap_or_default();
            let mut built_name = get(&built);
            if built_name.is_empty() && dest_loc.len() == 1 {
                built_name = name.clone();
            }
            if built_name.is_empty() {
                return Err(invalid(format!(
                    "no BUILT_MODULE_NAME directive for record #{i}"
                )));
            }
            let mut dest_name = get(&dest);
            if dest_name.is_empty() {
                dest_name = built_name.clone();
            }
            for (what, v) in [
                ("BUILT_MODULE_NAME", &built_name),
                ("DEST_MODULE_NAME", &dest_name),
            ] {
                if v.ends_with(".o") || v.ends_with(".ko") || v.contains('/') {
                    return Err(invalid(format!(
                        "{what}[{i}]=\"{v}\" must be a module name without .o/.ko and without a directory"
                    )));
                }
            }
            let mut built_location = get(&built_loc);
            if !built_location.is_empty() && !built_location.ends_with('/') {
                built_location.push('/');
            }
            if built_location.split('/').any(|c| c == "..") || built_location.starts_with('/') {
                return Err(invalid(format!(
                    "BUILT_MODULE_LOCATION[{i}]=\"{built_location}\" must stay inside the build directory"
                )));
            }
            let dest_location = get(&dest_loc);
            if dest_location.is_empty() {
                return Err(invalid(format!(
                    "no DEST_MODULE_LOCATION directive for record #{i}"
                )));
            }
            if !["/kernel", "/updates", "/extra"]
                .iter()
                .any(|p| dest_location.starts_with(p))
                || dest_location.split('/').any(|c| c == "..")
            {
                return Err(invalid(format!(
                    "DEST_MODULE_LOCATION[{i}]=\"{dest_location}\" does not begin with /kernel, /updates or /extra"
                )));
            }
            let strip_value = strip.get(&i).cloned().filter(|s| !s.is_empty());
            let strip = match strip_value.or(first_strip.clone()) {
                Some(s) => !s.starts_with(['n', 'N']),
                None => true,
            };
            modules.push(ModuleSpec {
                built_name,
                built_location,
                dest_name,
                dest_location,
                strip,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &modules {
            if !seen.insert(&m.dest_name) {
                return Err(invalid(format!(
                    "two records install a module named {}",
                    m.dest_name
                )));
            }
        }
        let build_dir = cx.dkms_tree.join(&name).join(&version).join("build");
        let make = scalar(&values, "kmodkit_make").unwrap_or_else(|| {
            format!(
                "make -C {} M={}",
                cx.kernel_source_dir.display(),
                build_dir.display()
            )
        });
        let mut excluded = scalar(&values, "kmodkit_exclude");
        let kmin = scalar(&values, "BUILD_EXCLUSIVE_KERNEL_MIN");
        let kmax = scalar(&values, "BUILD_EXCLUSIVE_KERNEL_MAX");
        if excluded.is_none() {
            use std::cmp::Ordering::*;
            let cmp = |a: &str| kmodkit_abi::weak::compare_releases(cx.kernel, a);
            if let Some(min) = kmin.filter(|m| cmp(m) == Less) {
                excluded = Some(format!(
                    "BUILD_EXCLUSIVE_KERNEL_MIN=\"{min}\": kernel {} is older",
                    cx.kernel
                ));
            } else if let Some(max) = kmax.filter(|m| cmp(m) == Greater) {
                excluded = Some(format!(
                    "BUILD_EXCLUSIVE_KERNEL_MAX=\"{max}\": kernel {} is newer",
                    cx.kernel
                ));
            }
        }
        let patches: Vec<String> = array(&values, "kmodkit_patches").into_values().collect();
        for p in &patches {
            if p.contains('/') {
                return Err(invalid(format!(
                    "PATCH \"{p}\" must name a file in the package's patches/ directory"
                )));
            }
        }
        let build_depends = array(&values, "BUILD_DEPENDS")
            .into_values()
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect();
        Ok(Recipe {
            source: source.clone(),
            make: with_kernelrelease(&make, cx.kernel),
            name,
            version,
            kernel: cx.kernel.to_string(),
            modules,
            patches,
            pre_build: scalar(&values, "PRE_BUILD"),
            post_build: scalar(&values, "POST_BUILD"),
            build_depends,
            excluded,
            autoinstall: yes(scalar(&values, "AUTOINSTALL")),
            no_weak_modules: yes(scalar(&values, "NO_WEAK_MODULES")),
            mok_signing_key: scalar(&values, "mok_signing_key").map(PathBuf::from),
            mok_certificate: scalar(&values, "mok_certificate").map(PathBuf::from),
            discover_modules: false,
        })
    }

    /// DKMS's default recipe for a plain Kbuild directory: the package is
    /// named after the directory (`NAME-VERSION` split at the last `-`
    /// followed by a digit, as `/usr/src` trees are named).
    fn kbuild(source: &Source, cx: &EvalContext<'_>) -> Recipe {
        let base = source
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "module".into());
        let (name, version) = match base.rfind('-') {
            Some(i) if base[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                (base[..i].to_string(), base[i + 1..].to_string())
            }
            _ => (base.clone(), "0".to_string()),
        };
        let build_dir = cx.dkms_tree.join(&name).join(&version).join("build");
        Recipe {
            source: source.clone(),
            make: with_kernelrelease(
                &format!(
                    "make -C {} M={} modules",
                    cx.kernel_source_dir.display(),
                    build_dir.display()
                ),
                cx.kernel,
            ),
            name,
            version,
            kernel: cx.kernel.to_string(),
            modules: Vec::new(),
            patches: Vec::new(),
            pre_build: None,
            post_build: None,
            build_depends: Vec::new(),
            excluded: None,
            autoinstall: true,
            no_weak_modules: false,
            mok_signing_key: None,
            mok_certificate: None,
            discover_modules: true,
        }
    }

    /// `NAME/VERSION`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(conf: &str, kernel: &str) -> Result<Recipe, ConfError> {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("usr/src/pkg-1.0");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join(DKMS_CONF), conf).unwrap();
        let kdir = dir.path().join("kdir");
        std::fs::create_dir_all(&kdir).unwrap();
        std::fs::write(
            kdir.join(".config"),
            "CONFIG_NET=y\n# CONFIG_FOO is not set\n",
        )
        .unwrap();
        let tree = dir.path().join("tree");
        let cx = EvalContext {
            root: dir.path(),
            kernel,
            arch: "x86_64",
            kernel_source_dir: &kdir,
            dkms_tree: &tree,
        };
        let source = Source::open(&src)?;
        Recipe::evaluate(&source, &cx)
    }

    #[test]
    fn make_match_and_kernelver() {
        let r = eval(
            r#"PACKAGE_NAME=pkg
PACKAGE_VERSION=1.0
BUILT_MODULE_NAME[0]=a
BUILT_MODULE_LOCATION[0]=src
DEST_MODULE_LOCATION[0]=/extra
BUILT_MODULE_NAME[1]=b
DEST_MODULE_LOCATION[1]=/kernel/drivers
STRIP[1]=no
MAKE[0]="make -C ${kernel_source_dir} M=x"
MAKE[1]="make V=$kernelver"
MAKE_MATCH[1]="^6\.12"
BUILD_DEPENDS[0]="core other"
"#,
            "6.12.1",
        )
        .unwrap();
        assert_eq!(r.make, "make KERNELRELEASE=6.12.1 V=6.12.1");
        assert_eq!(r.modules.len(), 2);
        assert_eq!(r.modules[0].built_location, "src/");
        assert!(r.modules[0].strip);
        assert!(!r.modules[1].strip);
        assert_eq!(r.build_depends, ["core", "other"]);
        assert!(r.excluded.is_none());
    }

    #[test]
    fn exclusive_mismatch_is_a_reason() {
        let base = "PACKAGE_NAME=pkg\nPACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/updates\n";
        let r = eval(
            &format!("{base}BUILD_EXCLUSIVE_KERNEL=\"^5\\.\"\n"),
            "6.1.0-55-amd64",
        )
        .unwrap();
        assert!(r.excluded.unwrap().contains("BUILD_EXCLUSIVE_KERNEL"));
        let r = eval(
            &format!("{base}BUILD_EXCLUSIVE_CONFIG=\"CONFIG_FOO\"\n"),
            "6.1",
        )
        .unwrap();
        assert!(r.excluded.unwrap().contains("CONFIG_FOO"));
        let r = eval(
            &format!("{base}BUILD_EXCLUSIVE_CONFIG=\"CONFIG_NET\"\n"),
            "6.1",
        )
        .unwrap();
        assert!(r.excluded.is_none());
        let r = eval(
            &format!("{base}BUILD_EXCLUSIVE_KERNEL_MIN=\"6.12\"\n"),
            "6.1.0-55-amd64",
        )
        .unwrap();
        assert!(r.excluded.unwrap().contains("older"));
        // One record and no BUILT_MODULE_NAME: the package's name.
        let r = eval(base, "6.1").unwrap();
        assert_eq!(r.modules[0].built_name, "pkg");
    }

    #[test]
    fn bad_confs_are_named_errors() {
        for (conf, needle) in [
            ("PACKAGE_VERSION=1\nDEST_MODULE_LOCATION[0]=/extra\n", "PACKAGE_NAME"),
            ("PACKAGE_NAME=p\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=a.ko\nDEST_MODULE_LOCATION[0]=/extra\n", ".ko"),
            ("PACKAGE_NAME=p\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=a\nDEST_MODULE_LOCATION[0]=/usr/lib\n", "does not begin"),
            ("PACKAGE_NAME=p\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=a\n", "DEST_MODULE_LOCATION"),
            ("PACKAGE_NAME=p\nPACKAGE_VERSION=1\nBUILT_MODULE_NAME[0]=a\nBUILT_MODULE_LOCATION[0]=../x\nDEST_MODULE_LOCATION[0]=/extra\n", "inside"),
            ("PACKAGE_NAME=p\nexit 9\n", "bash"),
        ] {
            let e = eval(conf, "6.1").unwrap_err().to_string();
            assert!(e.contains(needle), "{conf:?}: {e}");
            assert!(e.contains("dkms.conf"), "{e}");
        }
    }

    #[test]
    fn site_override_applies() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("usr/src/pkg-1.0");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/dkms")).unwrap();
        std::fs::write(
            src.join(DKMS_CONF),
            "PACKAGE_NAME=pkg\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=a\nDEST_MODULE_LOCATION[0]=/extra\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/dkms/pkg-1.0-6.1.conf"),
            "STRIP[0]=no\necho noise\n",
        )
        .unwrap();
        let kdir = dir.path().join("kdir");
        let tree = dir.path().join("tree");
        let cx = EvalContext {
            root: dir.path(),
            kernel: "6.1",
            arch: "x86_64",
            kernel_source_dir: &kdir,
            dkms_tree: &tree,
        };
        let r = Recipe::evaluate(&Source::open(&src).unwrap(), &cx).unwrap();
        assert!(!r.modules[0].strip);
        let cx = EvalContext {
            kernel: "6.2",
            ..cx
        };
        let r = Recipe::evaluate(&Source::open(&src).unwrap(), &cx).unwrap();
        assert!(r.modules[0].strip);
    }
}
