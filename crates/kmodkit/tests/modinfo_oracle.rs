//! `kmodkit modinfo` against kmod's `modinfo` on every module of every
//! fetched Debian kernel (6.1 `.ko` and 6.12 `.ko.xz`): default form, `-0`,
//! lookup by module name and by alias, and `-F` of every field that occurs.
//! The expected output is whatever kmod prints, at test time.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, output, require_tool, Fixtures, Kernel};

/// Arguments per invocation, well under ARG_MAX.
const BATCH: usize = 800;

/// Runs kmod's modinfo and kmodkit's with the same arguments, concurrently
/// (one per core), over `args` in batches, and returns a description of
/// the first difference.
fn compare(label: &str, common_args: &[OsString], args: &[OsString]) -> Result<(), String> {
    for chunk in args.chunks(BATCH) {
        let run = |mut cmd: Command| {
            cmd.args(common_args).args(chunk);
            output(&mut cmd)
        };
        let (expected, actual) = std::thread::scope(|s| {
            let kmod = s.spawn(|| run(Command::new("modinfo")));
            let ours = run(kmodkit_modinfo());
            (kmod.join().expect("kmod thread"), ours)
        });
        if expected != actual {
            // Narrow down to the first argument that differs, for a clear report.
            for arg in chunk {
                let (e, es) = output(Command::new("modinfo").args(common_args).arg(arg));
                let (a, as_) = output(kmodkit_modinfo().args(common_args).arg(arg));
                if e != a || es != as_ {
                    return Err(format!(
                        "{label}: modinfo {common_args:?} {arg:?} differs\n--- kmod (exit ok: {es})\n{}\n--- kmodkit (exit ok: {as_})\n{}",
                        String::from_utf8_lossy(&e),
                        String::from_utf8_lossy(&a)
                    ));
                }
            }
            return Err(format!(
                "{label}: batch output differs but no single argument does"
            ));
        }
    }
    Ok(())
}

fn kmodkit_modinfo() -> Command {
    let mut c = kmodkit();
    c.arg("modinfo");
    c
}

/// Field name → the modules that carry it, from kmod's own `-0` output.
fn fields_by_module(files: &[PathBuf]) -> BTreeMap<String, BTreeSet<PathBuf>> {
    let mut fields: BTreeMap<String, BTreeSet<PathBuf>> = BTreeMap::new();
    for chunk in files.chunks(BATCH) {
        // -0 output is "filename:       PATH\0key=value\0..." per module.
        let (out, _) = output(Command::new("modinfo").arg("-0").args(chunk));
        let mut current: Option<PathBuf> = None;
        for item in out.split(|&b| b == 0).filter(|s| !s.is_empty()) {
            let text = String::from_utf8_lossy(item);
            if let Some(f) = text.strip_prefix("filename:       ") {
                current = Some(PathBuf::from(f));
                continue;
            }
            let key = match text.split_once('=') {
                Some((k, _)) => k.to_string(),
                None if text.starts_with("parm:") => "parm".to_string(),
                None => continue,
            };
            let key = if key.starts_with("parm:") {
                "parm".to_string()
            } else {
                key
            };
            if let Some(c) = &current {
                fields.entry(key).or_default().insert(c.clone());
            }
        }
    }
    fields
}

fn check_kernel(fx: &Fixtures, k: &Kernel) -> Vec<String> {
    let files = fx.module_files(k);
    assert!(
        files.len() > 3000,
        "{}: only {} modules found; the fixture tree looks incomplete",
        k.release,
        files.len()
    );
    let args: Vec<OsString> = files.iter().map(|p| p.clone().into_os_string()).collect();
    let mut failures = Vec::new();
    let mut check = |r: Result<(), String>| {
        if let Err(e) = r {
            failures.push(e);
        }
    };

    // Default form and -0, by path.
    check(compare(&format!("{} default", k.release), &[], &args));
    check(compare(&format!("{} -0", k.release), &["-0".into()], &args));

    // By module name, through the tree's index (kmod's depmod made it).
    let base: Vec<OsString> = vec![
        "-b".into(),
        fx.root.clone().into(),
        "-k".into(),
        k.release.clone().into(),
    ];
    let mut names: Vec<OsString> = files
        .iter()
        .map(|p| {
            let base = p.file_name().unwrap().to_string_lossy();
            base.split('.').next().unwrap().replace('-', "_").into()
        })
        .collect();
    names.sort();
    names.dedup();
    check(compare(&format!("{} by name", k.release), &base, &names));
    let mut by_modname = base.clone();
    by_modname.push("-m".into());
    check(compare(
        &format!("{} -m by name", k.release),
        &by_modname,
        &names[..names.len().min(400)],
    ));

    // Built-in modules, and aliases taken from the tree's modules.alias
    // (every 20th; each pattern looked up as a literal key).
    let dir = fx.module_dir(k);
    let builtin: Vec<OsString> = std::fs::read_to_string(dir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|b| b.trim_end_matches(".ko").replace('-', "_").into())
        .collect();
    check(compare(&format!("{} built-in", k.release), &base, &builtin));
    let aliases: Vec<OsString> = std::fs::read_to_string(dir.join("modules.alias"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("alias "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|a| !a.contains('[') && !a.contains(']'))
        .step_by(20)
        .map(OsString::from)
        .collect();
    check(compare(&format!("{} aliases", k.release), &base, &aliases));
    check(compare(
        &format!("{} symbols", k.release),
        &base,
        &[
            "symbol:ib_register_device".into(),
            "symbol:mlx4_register_interface".into(),
        ],
    ));

    // -F of every field that occurs, over the modules carrying it plus a
    // few that do not (which must print nothing).
    let fields = fields_by_module(&files);
    assert!(fields.contains_key("vermagic") && fields.contains_key("depends"));
    let sample_without: Vec<&PathBuf> = files.iter().step_by(97).collect();
    for (field, carriers) in &fields {
        let mut subset: Vec<OsString> = carriers
            .iter()
            .map(|p| p.clone().into_os_string())
            .collect();
        subset.extend(
            sample_without
                .iter()
                .filter(|p| !carriers.contains(**p))
                .map(|p| (*p).clone().into_os_string()),
        );
        check(compare(
            &format!("{} -F {field}", k.release),
            &["-F".into(), field.into()],
            &subset,
        ));
    }
    eprintln!(
        "{}: {} modules, {} names, {} built-in, {} aliases, {} fields compared",
        k.release,
        files.len(),
        names.len(),
        builtin.len(),
        aliases.len(),
        fields.len()
    );
    for flag in ["-a", "-d", "-l", "-p", "-n"] {
        check(compare(
            &format!("{} {flag}", k.release),
            &[flag.into()],
            &args[..args.len().min(600)],
        ));
    }
    check(compare(
        &format!("{} -F name builtin", k.release),
        &[&base[..], &["-F".into(), "name".into()]].concat(),
        &builtin,
    ));
    failures
}

#[test]
fn modinfo_matches_kmod_on_every_module_of_every_fetched_kernel() {
    require_tool("modinfo", "kmod");
    let fx = Fixtures::load();
    let mut failures = Vec::new();
    for k in &fx.kernels {
        let f = check_kernel(&fx, k);
        eprintln!("{}: {} differences", k.release, f.len());
        failures.extend(f);
    }
    assert!(
        failures.is_empty(),
        "{} comparisons differ from kmod:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn unknown_module_fails_like_kmod() {
    require_tool("modinfo", "kmod");
    let fx = Fixtures::load();
    let k = &fx.kernels[0];
    let args = [
        "-b".into(),
        fx.root.clone().into_os_string(),
        "-k".into(),
        k.release.clone().into(),
    ];
    let (e, es) = output(
        Command::new("modinfo")
            .args(&args)
            .arg("no_such_module_xyz"),
    );
    let (a, as_) = output(kmodkit_modinfo().args(&args).arg("no_such_module_xyz"));
    assert_eq!((e, es), (a, as_));
    assert!(!as_, "a missing module must fail");
}

const SIG_MAGIC: &[u8] = b"~Module signature appended~\n";

/// (the module without its signature, the PKCS#7 blob) of a signed module.
fn split_signature(module: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert!(module.ends_with(SIG_MAGIC), "module is not signed");
    let trailer = module.len() - SIG_MAGIC.len() - 12;
    let sig_len =
        u32::from_be_bytes(module[trailer + 8..trailer + 12].try_into().unwrap()) as usize;
    (
        module[..trailer - sig_len].to_vec(),
        module[trailer - sig_len..trailer].to_vec(),
    )
}

/// `openssl pkcs7 -print`'s digest_enc_alg: (long name, dotted OID).
fn openssl_signature_algorithm(blob: &Path) -> (String, String) {
    let out = Command::new("openssl")
        .args(["pkcs7", "-inform", "DER", "-print", "-noout", "-in"])
        .arg(blob)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .skip_while(|l| !l.contains("digest_enc_alg:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no digest_enc_alg in {text}"));
    // "algorithm: rsaEncryption (1.2.840.113549.1.1.1)"
    let value = line.trim().trim_start_matches("algorithm:").trim();
    let (name, oid) = value.split_once(" (").unwrap();
    (name.to_string(), oid.trim_end_matches(')').to_string())
}

fn json_signature_algorithm(module: &Path) -> String {
    let out = kmodkit_modinfo()
        .arg("--json")
        .arg(module)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = if v.is_array() { &v[0] } else { &v };
    m["signature"]["algorithm"]
        .as_str()
        .unwrap_or_else(|| panic!("no signature.algorithm in {m}"))
        .to_string()
}

/// `--json` names the public-key algorithm the PKCS#7 SignerInfo names, as
/// openssl decodes it: Debian's RSA signature, and an ECDSA one made by
/// openssl the way sign-file makes it (detached, no certificates, no
/// attributes) and appended with sign-file's trailer (algorithm byte 0).
#[test]
fn json_signature_algorithm_is_the_one_pkcs7_names() {
    require_tool("openssl", "openssl");
    let fx = Fixtures::load();
    let k = fx.kernels.iter().find(|k| k.series == "6.1").unwrap();
    let debian = fx.module_dir(k).join("kernel/drivers/net/dummy.ko");
    let tmp = tempfile::tempdir().unwrap();
    let (unsigned, rsa_blob) = split_signature(&std::fs::read(&debian).unwrap());
    std::fs::write(tmp.path().join("rsa.p7"), &rsa_blob).unwrap();
    std::fs::write(tmp.path().join("unsigned.ko"), &unsigned).unwrap();

    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=kmodkit test",
        "-days",
        "1",
    ]);
    openssl(&[
        "smime",
        "-sign",
        "-nocerts",
        "-noattr",
        "-binary",
        "-md",
        "sha256",
        "-in",
        "unsigned.ko",
        "-signer",
        "cert.pem",
        "-inkey",
        "key.pem",
        "-outform",
        "DER",
        "-out",
        "ec.p7",
    ]);
    let ec_blob = std::fs::read(tmp.path().join("ec.p7")).unwrap();
    let mut ec_module = unsigned.clone();
    ec_module.extend_from_slice(&ec_blob);
    // struct module_signature: algo, hash, id_type PKCS#7, signer_len,
    // key_id_len, pad[3], sig_len (big-endian).
    ec_module.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
    ec_module.extend_from_slice(&(ec_blob.len() as u32).to_be_bytes());
    ec_module.extend_from_slice(SIG_MAGIC);
    let ec_path = tmp.path().join("dummy-ec.ko");
    std::fs::write(&ec_path, &ec_module).unwrap();

    let mut seen = BTreeSet::new();
    for (module, blob) in [(debian.clone(), "rsa.p7"), (ec_path, "ec.p7")] {
        let (name, oid) = openssl_signature_algorithm(&tmp.path().join(blob));
        let ours = json_signature_algorithm(&module);
        // openssl's long name ("rsaEncryption", "ecdsa-with-SHA256") holds
        // the key algorithm's name.
        assert!(
            name.to_lowercase().contains(&ours.to_lowercase()) && ours.len() >= 3,
            "{}: openssl says {name} ({oid}), kmodkit says {ours}",
            module.display()
        );
        seen.insert(ours);
    }
    assert_eq!(seen.len(), 2, "RSA and ECDSA must be told apart: {seen:?}");
}
