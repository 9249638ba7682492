//! `kmod-NAME` RPMs against rpm itself: what `rpm -qp --requires
//! --provides --scripts` reads back is what kernel-rpm-macros' generators
//! would give for the same modules — computed here at test time with the
//! tools those scripts use (`modprobe --dump-modversions`, the kernel's
//! `Module.symvers`, `objdump -t` and `readelf -x` for `__crc_` values) —
//! `rpm -K` verifies the signature with the key imported, and two builds
//! give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kmodkit_package::pgp::{KeyAlgorithm, RepoKey};
use kmodkit_package::rpm::{kernel_only_package, kmod_package, RpmOptions};
use kmodkit_package::{KernelAbi, ModuleSet};

const KERNEL: &str = "6.1.0-53-amd64";

fn jool_files() -> Vec<PathBuf> {
    let files = kmodkit_fixtures::oot_modules(KERNEL, "jool-dkms");
    assert!(files.len() >= 2, "jool-dkms built fewer than 2 modules");
    files
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `SYM -> 0xCRC` as the kernel's Module.symvers writes it.
fn kernel_symvers(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let crc = f.next()?;
            let sym = f.next()?;
            Some((sym.to_string(), crc.to_string()))
        })
        .collect()
}

/// find-requires.ksyms' answer: every `modprobe --dump-modversions`
/// entry, `kernel()` when Module.symvers has the same symbol:CRC pair,
/// `ksym()` otherwise.
fn oracle_requires(files: &[PathBuf], symvers: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let dump = run(Command::new("modprobe").arg("--dump-modversions").arg(f));
        for line in dump.lines() {
            let (crc, sym) = line.split_once('\t').unwrap();
            let crc = format!("0x{:08x}", u64::from_str_radix(&crc[2..], 16).unwrap());
            if symvers.get(sym) == Some(&crc) {
                out.insert(format!("kernel({sym}) = {crc}"));
            } else {
                out.insert(format!("ksym({sym}) = {crc}"));
            }
        }
    }
    out
}

/// find-provides.ksyms' answer for modules outside /lib/modules/K/kernel:
/// `ksym(SYM) = 0xCRC` with the CRC read from the section `objdump -t`
/// names, at the symbol's offset (`readelf -x`, little endian).
fn oracle_provides(files: &[PathBuf]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for f in files {
        let table = run(Command::new("objdump").arg("-t").arg(f));
        let mut by_section: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for line in table.lines() {
            let Some(name) = line.split_whitespace().last() else {
                continue;
            };
            let Some(sym) = name.strip_prefix("__crc_") else {
                continue;
            };
            let (head, _) = line.split_once('\t').unwrap();
            let section = head.split_whitespace().last().unwrap().to_string();
            let offset =
                usize::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap();
            by_section
                .entry(section)
                .or_default()
                .push((offset, sym.to_string()));
        }
        for (section, syms) in by_section {
            let dump = run(Command::new("readelf").arg("-x").arg(&section).arg(f));
            let mut bytes = Vec::new();
            for line in dump.lines().filter(|l| l.trim_start().starts_with("0x")) {
                for word in line.split_whitespace().skip(1).take(4) {
                    if word.len() == 8 && word.chars().all(|c| c.is_ascii_hexdigit()) {
                        for i in 0..4 {
                            bytes.push(u8::from_str_radix(&word[i * 2..i * 2 + 2], 16).unwrap());
                        }
                    }
                }
            }
            for (off, sym) in syms {
                let crc = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap());
                out.insert(format!("ksym({sym}) = 0x{crc:08x}"));
            }
        }
    }
    out
}

fn rpm_query(pkg: &Path, what: &str) -> String {
    run(Command::new("rpm").args(["-qp", what]).arg(pkg))
}

#[test]
fn kmod_rpm_dependencies_scripts_and_signature_match_the_oracles() {
    kmodkit_fixtures::require_tool("rpm", "rpm");
    let tmp = tempfile::tempdir().unwrap();
    let files = jool_files();
    let set = ModuleSet::from_files("jool", "4.1.9", "1", KERNEL, &files).unwrap();
    let symvers_path = kmodkit_fixtures::kbuild_environment(KERNEL).join("Module.symvers");
    let table = kmodkit_abi::symvers::SymbolTable::load(&symvers_path).unwrap();
    let abi = KernelAbi::from_table(KERNEL, &table);
    let key = RepoKey::generate(
        "kmodkit test <test@example.invalid>",
        1_700_000_000,
        KeyAlgorithm::Ed25519,
    )
    .unwrap();
    let opts = RpmOptions {
        time: 1_700_000_000,
        key: Some(&key),
        packager: Some("kmodkit test".into()),
        vendor: None,
        url: None,
    };
    let kmod = kmod_package(&set, &abi, &opts).unwrap();
    assert_eq!(kmod.file_name, "kmod-jool-4.1.9-1.x86_64.rpm");
    let path = tmp.path().join(&kmod.file_name);
    std::fs::write(&path, &kmod.bytes).unwrap();

    // Requires: the kernel() and ksym() lines are exactly the oracle's.
    let requires: BTreeSet<String> = rpm_query(&path, "--requires")
        .lines()
        .filter(|l| l.starts_with("kernel(") || l.starts_with("ksym("))
        .map(str::to_string)
        .collect();
    let expected = oracle_requires(&files, &kernel_symvers(&symvers_path));
    assert!(expected.iter().any(|l| l.starts_with("kernel(")));
    // jool and jool_siit import jool_common's exports: not the kernel's.
    assert!(expected.iter().any(|l| l.starts_with("ksym(")));
    assert_eq!(
        requires, expected,
        "rpm -qp --requires vs find-requires.ksyms"
    );

    // Provides: ksym() of the exports, kmod(NAME.ko), NAME-kmod, kernel-modules.
    let provides_text = rpm_query(&path, "--provides");
    let provides: BTreeSet<String> = provides_text.lines().map(str::to_string).collect();
    let ksyms: BTreeSet<String> = provides
        .iter()
        .filter(|l| l.starts_with("ksym("))
        .cloned()
        .collect();
    let expected_provides = oracle_provides(&files);
    assert!(
        !expected_provides.is_empty(),
        "jool_common exports nothing?"
    );
    assert_eq!(
        ksyms, expected_provides,
        "rpm -qp --provides vs find-provides.ksyms"
    );
    for f in &files {
        let module = run(Command::new("modinfo").args(["-F", "name"]).arg(f));
        assert!(
            provides.contains(&format!("kmod({}.ko)", module.trim())),
            "no kmod({}.ko) in\n{provides_text}",
            module.trim()
        );
    }
    assert!(provides.contains("jool-kmod = 4.1.9-1"), "{provides_text}");
    assert!(
        provides.contains(&format!("kernel-modules >= {KERNEL}")),
        "{provides_text}"
    );

    // Files: under /lib/modules/K/extra/jool/.
    let listed = rpm_query(&path, "-l");
    for f in &files {
        let want = format!(
            "/lib/modules/{KERNEL}/extra/jool/{}",
            f.file_name().unwrap().to_string_lossy()
        );
        assert!(listed.lines().any(|l| l == want), "{want} not in\n{listed}");
    }

    // Scripts: depmod for the kernel, weak-modules with the module list.
    let scripts = rpm_query(&path, "--scripts");
    assert!(
        scripts.contains("postinstall scriptlet (using /bin/sh)"),
        "{scripts}"
    );
    assert!(scripts.contains(&format!(
        "/sbin/depmod -aeF /boot/System.map-{KERNEL} {KERNEL}"
    )));
    assert!(scripts.contains("/usr/sbin/weak-modules --add-modules"));
    assert!(scripts.contains("preuninstall scriptlet"));
    assert!(scripts.contains("/usr/sbin/weak-modules --remove-modules"));
    for tag in ["POSTIN", "PREUN", "POSTUN"] {
        let body = rpm_query(&path, &format!("--qf=%{{{tag}}}"));
        let check = Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&body)
            .output()
            .unwrap();
        assert!(check.status.success(), "{tag} is not valid sh:\n{body}");
    }

    // rpm -K: NOKEY without the key, OK with it imported.
    let db = tmp.path().join("db");
    std::fs::create_dir(&db).unwrap();
    let check = |label| {
        let out = Command::new("rpm")
            .arg("--dbpath")
            .arg(&db)
            .arg("-K")
            .arg(&path)
            .output()
            .unwrap();
        eprintln!(
            "rpm -K ({label}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = check("no key");
    assert!(!ok, "rpm -K passed without the key: {text}");
    let asc = tmp.path().join("key.asc");
    std::fs::write(&asc, key.public_armored().unwrap()).unwrap();
    run(Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(&asc));
    let (ok, text) = check("key imported");
    assert!(ok && text.contains("signatures OK"), "{text}");
    let mut tampered = kmod.bytes.clone();
    let n = tampered.len();
    tampered[n - 100] ^= 1;
    std::fs::write(&path, &tampered).unwrap();
    let (ok, text) = check("tampered");
    assert!(!ok, "rpm -K accepted a changed payload: {text}");

    // Same inputs, same bytes (the signature too).
    let again = kmod_package(&set, &abi, &opts).unwrap();
    assert!(again.bytes == kmod.bytes, "two builds differ");

    // The metapackage requires exactly the set, versioned.
    let meta =
        kernel_only_package("jool", "4.1.9", "1", std::slice::from_ref(&kmod), &opts).unwrap();
    let mpath = tmp.path().join(&meta.file_name);
    std::fs::write(&mpath, &meta.bytes).unwrap();
    let reqs: Vec<String> = rpm_query(&mpath, "--requires")
        .lines()
        .filter(|l| !l.starts_with("rpmlib("))
        .map(str::to_string)
        .collect();
    assert_eq!(reqs, vec!["kmod-jool = 4.1.9-1".to_string()]);
    assert_eq!(rpm_query(&mpath, "-l").trim(), "(contains no files)");

    // rpmlint: no error on either package, signed (its signature check runs
    // `rpm -K` against the database a private HOME's ~/.rpmmacros names,
    // which trusts the key: a bad signature would still be an error).
    // Warnings are printed for the log.
    kmodkit_fixtures::require_tool("rpmlint", "rpmlint");
    std::fs::write(&path, &kmod.bytes).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(
        home.join(".rpmmacros"),
        format!("%_dbpath {}\n", db.display()),
    )
    .unwrap();
    let lint = Command::new("rpmlint")
        .env("HOME", &home)
        .arg(&path)
        .arg(&mpath)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&lint.stdout);
    eprintln!("rpmlint:\n{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(": E: ")).collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
    assert!(
        text.contains("2 packages and 0 specfiles checked; 0 errors"),
        "rpmlint did not check both packages:\n{text}"
    );
}
