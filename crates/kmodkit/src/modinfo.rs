//! `kmodkit modinfo`: kmod 30's `tools/modinfo.c`, output byte for byte,
//! plus `--json`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kmodkit_index::lookup::{module_name_from_path, FoundModule, ModuleDirectory};
use kmodkit_module::{ModinfoEntry, ModuleFile};
use rayon::prelude::*;

use crate::cli::ModinfoArgs;

/// What one modinfo argument resolved to.
struct Target {
    name: String,
    /// `None` for a built-in module.
    path: Option<PathBuf>,
}

pub struct Options {
    pub field: Option<String>,
    pub separator: u8,
}

pub fn run(args: &ModinfoArgs, field: Option<String>) -> Result<bool> {
    let dir = module_directory(args.basedir.as_deref(), args.set_version.as_deref())?;
    // A name needs the kernel's module directory; files do not (kmod reads
    // them without one). Say which kernels are there instead of "not found".
    // Only for a kernel named by -k/-b: for the running kernel kmod's own
    // "Module X not found." stays.
    let named = args.set_version.is_some() || args.basedir.is_some();
    let needs_index = args.modname
        || args
            .modules
            .iter()
            .any(|m| !m.contains('/') && !is_module_filename(m));
    if named && needs_index && !Path::new(dir.dir()).is_dir() {
        let root = args
            .basedir
            .as_deref()
            .map_or("/".to_string(), crate::host::make_absolute);
        let release = match args.set_version.as_deref() {
            Some(k) => k.to_string(),
            None => crate::host::running_kernel_release("pass -k VERSION")?,
        };
        if let Some(msg) = kmodkit_depmod::installed::not_installed(Path::new(&root), &release) {
            anyhow::bail!("{msg}");
        }
    }
    let opts = Options {
        field,
        separator: if args.null { 0 } else { b'\n' },
    };
    // Resolve names first (index lookups, cheap), then read the modules in
    // parallel (decompression dominates), then print in argument order.
    let resolved: Vec<Result<Vec<Target>>> = args
        .modules
        .iter()
        .map(|arg| resolve(&dir, arg, args.modname))
        .collect();
    let jobs: Vec<&Target> = resolved.iter().flatten().flatten().collect();
    let rendered: Vec<(Vec<u8>, Result<Option<serde_json::Value>>)> = jobs
        .par_iter()
        .map(|target| {
            if args.json {
                (Vec::new(), describe_json(&dir, target).map(Some))
            } else {
                let mut buf = Vec::new();
                let r = print_module(&mut buf, &dir, target, &opts).map(|()| None);
                (buf, r)
            }
        })
        .collect();

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut json = Vec::new();
    let mut ok = true;
    let mut rendered = rendered.into_iter();
    for r in &resolved {
        let targets = match r {
            Ok(t) => t,
            Err(e) => {
                out.flush()?;
                diag!("modinfo: ERROR: {e:#}");
                ok = false;
                continue;
            }
        };
        for _ in targets {
            let (bytes, result) = rendered.next().context("one rendering per module")?;
            out.write_all(&bytes)?;
            match result {
                Ok(Some(v)) => json.push(v),
                Ok(None) => {}
                Err(e) => {
                    out.flush()?;
                    diag!("modinfo: ERROR: {e:#}");
                    ok = false;
                }
            }
        }
    }
    if args.json {
        serde_json::to_writer_pretty(&mut out, &json)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(ok)
}

/// The module directory as kmod's modinfo builds it: `ROOT/lib/modules/KVER`
/// when -b or -k is given (string concatenation, kept verbatim for output),
/// else `/lib/modules/$(uname -r)`.
fn module_directory(basedir: Option<&str>, kver: Option<&str>) -> Result<ModuleDirectory> {
    let release = match kver {
        Some(k) => k.to_string(),
        None => crate::host::running_kernel_release("pass -k VERSION")?,
    };
    let dir = match (basedir, kver) {
        (None, None) => format!("/lib/modules/{release}"),
        _ => format!("{}/lib/modules/{}", basedir.unwrap_or(""), release),
    };
    Ok(ModuleDirectory::new(crate::host::make_absolute(&dir)))
}

fn is_module_filename(arg: &str) -> bool {
    std::fs::metadata(arg).is_ok_and(|m| m.is_file())
        && kmodkit_index::name::module_suffix(arg.as_bytes()).is_some()
}

fn resolve(dir: &ModuleDirectory, arg: &str, by_name: bool) -> Result<Vec<Target>> {
    let found = |f: FoundModule| Target {
        name: f.name,
        path: f.path,
    };
    if by_name {
        return match dir.lookup_name(arg)? {
            Some(f) => Ok(vec![found(f)]),
            None => anyhow::bail!("Module name {arg} not found."),
        };
    }
    if is_module_filename(arg) {
        let name = module_name_from_path(Path::new(arg))
            .with_context(|| format!("Module file {arg} not found."))?;
        return Ok(vec![Target {
            name,
            path: Some(PathBuf::from(crate::host::make_absolute(arg))),
        }]);
    }
    let list = dir
        .lookup(arg)
        .with_context(|| format!("Module alias {arg} not found."))?;
    if list.is_empty() {
        anyhow::bail!("Module {arg} not found.");
    }
    Ok(list.into_iter().map(found).collect())
}

/// The `.modinfo` entries kmod lists for a module, signature fields last.
fn info_entries(dir: &ModuleDirectory, target: &Target) -> Result<Option<Vec<ModinfoEntry>>> {
    let Some(path) = &target.path else {
        let Some(strings) = dir.builtin_modinfo(&target.name)? else {
            return Ok(None);
        };
        return Ok(Some(
            strings
                .into_iter()
                .map(|s| match s.iter().position(|&b| b == b'=') {
                    Some(eq) => ModinfoEntry {
                        key: s[..eq].to_vec(),
                        value: s[eq + 1..].to_vec(),
                    },
                    None => ModinfoEntry {
                        key: s,
                        value: Vec::new(),
                    },
                })
                .collect(),
        ));
    };
    let module = ModuleFile::open(path)
        .and_then(|f| f.parse())
        .with_context(|| format!("could not get modinfo from '{}'", target.name))?;
    let mut entries = module.modinfo.clone();
    if let Some(sig) = module.signature.as_ref().filter(|s| s.pkcs7_decoded) {
        if let Some(hash) = &sig.hash_algorithm {
            let e = |k: &str, v: Vec<u8>| ModinfoEntry {
                key: k.as_bytes().to_vec(),
                value: v,
            };
            entries.push(e("sig_id", sig.id_type.clone().into_bytes()));
            entries.push(e("signer", sig.signer.clone()));
            entries.push(e("sig_key", hex_lines(&sig.key_id).into_bytes()));
            entries.push(e("sig_hashalgo", hash.clone().into_bytes()));
            entries.push(e("signature", hex_lines(&sig.signature).into_bytes()));
        }
    }
    Ok(Some(entries))
}

/// `kmod_module_hex_to_str`: `AB:CD:...`, a line break and two tabs after
/// every 20 bytes.
fn hex_lines(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3 + bytes.len() / 20 * 3);
    for (i, b) in bytes.iter().enumerate() {
        s.push_str(&format!("{b:02X}"));
        if i + 1 < bytes.len() {
            s.push(':');
            if (i + 1) % 20 == 0 {
                s.push_str("\n\t\t");
            }
        }
    }
    s
}

/// A module parameter assembled from `parm` and `parmtype` entries.
struct Param<'a> {
    name: &'a [u8],
    description: Option<&'a [u8]>,
    kind: Option<&'a [u8]>,
}

/// kmod keeps parameters in a list it prepends to, so they print in
/// reverse order of first appearance; a later entry for the same name
/// replaces the earlier description or type.
fn collect_params(entries: &[ModinfoEntry]) -> Vec<Param<'_>> {
    let mut params: Vec<Param<'_>> = Vec::new();
    for e in entries {
        let is_parm = e.key == b"parm";
        if !is_parm && e.key != b"parmtype" {
            continue;
        }
        let Some(colon) = e.value.iter().position(|&b| b == b':') else {
            diag!(
                "modinfo: ERROR: Found invalid \"{}={}\": missing ':'",
                e.key_str(),
                e.value_str()
            );
            continue;
        };
        let (name, rest) = (&e.value[..colon], &e.value[colon + 1..]);
        let idx = match params.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                params.push(Param {
                    name,
                    description: None,
                    kind: None,
                });
                params.len() - 1
            }
        };
        if is_parm {
            params[idx].description = Some(rest);
        } else {
            params[idx].kind = Some(rest);
        }
    }
    params.reverse();
    params
}

fn write_params(
    out: &mut impl Write,
    params: &[Param<'_>],
    sep: u8,
    with_key: bool,
) -> io::Result<()> {
    for p in params {
        if with_key {
            out.write_all(b"parm:           ")?;
        }
        out.write_all(p.name)?;
        match (p.description, p.kind) {
            (None, Some(kind)) if !with_key => {
                out.write_all(b": (")?;
                out.write_all(kind)?;
                out.write_all(b")")?;
            }
            (None, kind) => {
                out.write_all(b":")?;
                out.write_all(kind.unwrap_or_default())?;
            }
            (Some(desc), Some(kind)) => {
                out.write_all(b":")?;
                out.write_all(desc)?;
                out.write_all(b" (")?;
                out.write_all(kind)?;
                out.write_all(b")")?;
            }
            (Some(desc), None) => {
                out.write_all(b":")?;
                out.write_all(desc)?;
            }
        }
        out.write_all(&[sep])?;
    }
    Ok(())
}

/// `modinfo_do` from kmod's tools/modinfo.c.
fn print_module(
    out: &mut impl Write,
    dir: &ModuleDirectory,
    target: &Target,
    opts: &Options,
) -> Result<()> {
    let sep = opts.separator;
    let field = opts.field.as_deref();
    let filename = match &target.path {
        Some(p) => p.as_os_str().as_encoded_bytes().to_vec(),
        None => {
            match field {
                None => write!(out, "{:<16}{}", "name:", target.name)?,
                Some("name") => write!(out, "{}", target.name)?,
                _ => {}
            }
            if field.is_none() || field == Some("name") {
                out.write_all(&[sep])?;
            }
            b"(builtin)".to_vec()
        }
    };
    match field {
        Some("filename") => {
            out.write_all(&filename)?;
            out.write_all(&[sep])?;
            return Ok(());
        }
        None => {
            out.write_all(b"filename:       ")?;
            out.write_all(&filename)?;
            out.write_all(&[sep])?;
        }
        Some(_) => {}
    }
    let Some(entries) = info_entries(dir, target)? else {
        // A kernel without modules.builtin.modinfo: nothing more to say.
        return Ok(());
    };
    if field == Some("parm") {
        write_params(out, &collect_params(&entries), sep, false)?;
        return Ok(());
    }
    for e in &entries {
        if let Some(f) = field {
            if e.key == f.as_bytes() {
                out.write_all(&e.value)?;
                out.write_all(&[sep])?;
            }
            continue;
        }
        if e.key == b"parm" || e.key == b"parmtype" {
            continue;
        }
        out.write_all(&e.key)?;
        if sep == 0 {
            out.write_all(b"=")?;
        } else {
            out.write_all(b":")?;
            let pad = 15usize.saturating_sub(e.key.len());
            out.write_all(&b"               "[..pad])?;
        }
        out.write_all(&e.value)?;
        out.write_all(&[sep])?;
    }
    if field.is_none() {
        write_params(out, &collect_params(&entries), sep, true)?;
    }
    Ok(())
}

fn describe_json(dir: &ModuleDirectory, target: &Target) -> Result<serde_json::Value> {
    use serde_json::json;
    let Some(path) = &target.path else {
        let info = dir.builtin_modinfo(&target.name)?.unwrap_or_default();
        let pairs: Vec<[String; 2]> = info
            .iter()
            .map(|s| {
                let s = String::from_utf8_lossy(s);
                match s.split_once('=') {
                    Some((k, v)) => [k.to_string(), v.to_string()],
                    None => [s.to_string(), String::new()],
                }
            })
            .collect();
        return Ok(json!({
            "name": target.name,
            "filename": serde_json::Value::Null,
            "builtin": true,
            "modinfo": pairs,
        }));
    };
    let file = ModuleFile::open(path)?;
    let module = file.parse()?;
    let mut v = serde_json::to_value(&module)?;
    let obj = v
        .as_object_mut()
        .context("module serialises to an object")?;
    obj.insert("name".into(), json!(target.name));
    obj.insert("filename".into(), json!(path.to_string_lossy()));
    obj.insert("builtin".into(), json!(false));
    obj.insert("compression".into(), json!(file.compression));
    obj.insert("stored_size".into(), json!(file.stored_size));
    obj.insert("elf_size".into(), json!(file.data.len()));
    Ok(v)
}
