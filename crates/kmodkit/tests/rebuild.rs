//! `kmodkit rebuild` against its oracles: real Debian `*-dkms` sources
//! (openvpn-dco, jool, v4l2loopback, acpi-call) and a test pair where one
//! package builds against the other's exports, rebuilt for a 6.1 base, the
//! 6.1 ABI with identical CRCs, the newest 6.1 ABI in the archive and 6.12
//! (`.ko.xz`). What was built, linked or left alone must agree with
//! `kmodkit abi check` and with the target kernel itself booted in qemu
//! (scripts/qemu-insmod); signatures with the kernel's own `sign-file`
//! (byte for byte) and kmod's `modinfo`; compression with the `xz` command
//! line of the kernel's `scripts/Makefile.modinst`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, Fixtures};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn test_packages() -> PathBuf {
    repo().join("crates/kmodkit-rebuild/tests/data/dkms")
}

/// `rebuild --package --repo`: per kernel, a kmod RPM and a Debian module
/// package of each package rebuilt for it (and only those), one
/// site-drivers-kernel-only per kernel and format, all RPMs signed as
/// `rpm -K` checks with the root's public key, the repository signed, and
/// the node commands printed.
fn check_packaged(
    run: &Run,
    root: &Path,
    repo: &Path,
    rebuilt: &BTreeMap<String, BTreeSet<String>>,
) {
    let j = &run.doc;
    let mut got: BTreeSet<(String, String)> = BTreeSet::new();
    let db = repo.with_extension("rpmdb");
    let public = root.join("var/lib/kmodkit/repo-key.pub.asc");
    let import = Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(&public)
        .output()
        .unwrap();
    assert!(import.status.success(), "{import:?}");
    for p in j["packages"].as_array().expect("no packages in the JSON") {
        let file = PathBuf::from(p["file"].as_str().unwrap());
        assert!(file.starts_with(repo) && file.is_file(), "{p}");
        got.insert((
            p["format"].as_str().unwrap().to_string(),
            p["package"].as_str().unwrap().to_string(),
        ));
        if p["format"] == "rpm" {
            let k = Command::new("rpm")
                .arg("--dbpath")
                .arg(&db)
                .arg("-K")
                .arg(&file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&k.stdout);
            assert!(
                k.status.success() && text.contains("signatures OK"),
                "{text}"
            );
        }
    }
    let mut want = BTreeSet::new();
    for (k, packages) in rebuilt {
        for p in packages {
            want.insert(("rpm".to_string(), format!("kmod-{p}")));
            want.insert(("deb".to_string(), format!("{p}-modules-{k}")));
        }
    }
    want.insert(("rpm".to_string(), "site-drivers-kernel-only".to_string()));
    want.insert(("deb".to_string(), "site-drivers-kernel-only".to_string()));
    assert_eq!(got, want, "packaged vs rebuilt");
    assert_eq!(j["repository"]["signed"], true, "{}", j["repository"]);
    assert!(repo.join("repodata/repomd.xml.asc").is_file());
    assert!(repo.join("dists/stable/InRelease").is_file());
    let nodes = j["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    assert!(nodes
        .iter()
        .all(|n| n.as_str().unwrap().contains("site-drivers-kernel-only")));
}

/// A system root for rebuilding: each kernel's tree (`kernel/` linked to
/// the fixture tree, the metadata depmod reads copied, `build` → its
/// unpacked Kbuild environment), Debian's os-release, and the sources
/// under `usr/src`.
fn rebuild_root(fx: &Fixtures, root: &Path, kernels: &[&str], sources: &[PathBuf]) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
    for k in kernels {
        let kernel = fx
            .kernels
            .iter()
            .find(|x| x.release == *k)
            .unwrap_or_else(|| panic!("{k} is not a fixture kernel; rerun scripts/fixtures"))
            .clone();
        let dir = common::link_tree(fx, &kernel, root);
        for f in std::fs::read_dir(fx.module_dir(&kernel)).unwrap().flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("modules.") && !dir.join(&*name).exists() {
                std::fs::copy(f.path(), dir.join(&*name)).unwrap();
            }
        }
        std::os::unix::fs::symlink(kmodkit_fixtures::kbuild_environment(k), dir.join("build"))
            .unwrap();
    }
    std::fs::create_dir_all(root.join("usr/src")).unwrap();
    for s in sources {
        std::os::unix::fs::symlink(s, root.join("usr/src").join(s.file_name().unwrap())).unwrap();
    }
}

struct Run {
    doc: serde_json::Value,
    code: i32,
    stderr: String,
}

fn rebuild(root: &Path, args: &[&str]) -> Run {
    let out = kmodkit()
        .args(["rebuild", "--json", "--root"])
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("rebuild {args:?}: no JSON ({e}); stderr:\n{stderr}"));
    Run {
        doc,
        code: out.status.code().unwrap_or(-1),
        stderr,
    }
}

/// (package, kernel) → (action, outcome).
fn outcomes(run: &Run) -> BTreeMap<(String, String), (String, serde_json::Value)> {
    run.doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                (
                    o["package"].as_str().unwrap().to_string(),
                    o["kernel"].as_str().unwrap().to_string(),
                ),
                (o["action"].as_str().unwrap().to_string(), o.clone()),
            )
        })
        .collect()
}

fn installed_files(root: &Path, outcome: &serde_json::Value) -> Vec<PathBuf> {
    outcome["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| root.join(m["path"].as_str().unwrap().trim_start_matches('/')))
        .collect()
}

/// A signing key pair made the way DKMS makes its MOK (`dkms` 3.0.10).
fn make_key(dir: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("mok.key");
    let cert = dir.join("mok.pub");
    let st = Command::new("openssl")
        .args([
            "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "36500", "-batch", "-x509",
        ])
        .args([
            "-outform",
            "DER",
            "-newkey",
            "rsa:2048",
            "-subj",
            "/CN=kmodkit rebuild test key/",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    (key, cert)
}

fn modinfo_field(file: &Path, field: &str) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "modinfo {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The cert's serial number as kmod prints a key id (`AB:CD:...`).
fn cert_serial(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-serial", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex
    };
    hex.as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The stripped, unsigned module the build cache holds for an outcome.
fn cached_module(
    cache: &Path,
    root: &Path,
    package: &str,
    version: &str,
    kernel: &str,
    name: &str,
) -> PathBuf {
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(format!(
            "var/lib/kmodkit/rebuild/{package}/{version}/{kernel}.json"
        )))
        .unwrap(),
    )
    .unwrap();
    let key = record["key"].as_str().unwrap();
    let dir = cache.join(key);
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "ko")
                && kmodkit_index::name::module_name_from_path(p).as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("no cached {name} in {}", dir.display()));
    file
}

/// The kernel's sign-file applied to a copy of `module`.
fn sign_file(kernel: &str, hash: &str, key: &Path, cert: &Path, module: &Path) -> Vec<u8> {
    let tool = kmodkit_fixtures::kbuild_environment(kernel).join("scripts/sign-file");
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::copy(module, tmp.path()).unwrap();
    let out = Command::new(&tool)
        .arg(hash)
        .arg(key)
        .arg(cert)
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(tmp.path()).unwrap()
}

fn kernel_config(kernel: &str, key: &str) -> Option<String> {
    let text =
        std::fs::read_to_string(kmodkit_fixtures::kbuild_environment(kernel).join(".config"))
            .unwrap();
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{key}="))
            .map(|v| v.trim_matches('"').to_string())
    })
}

/// Signature and compression of one installed module, against sign-file,
/// kmod's modinfo and the kernel's xz command line.
fn check_signed(kernel: &str, key: &Path, cert: &Path, installed: &Path, cached: &Path) {
    let hash = kernel_config(kernel, "CONFIG_MODULE_SIG_HASH").expect("the kernel signs modules");
    let expected = sign_file(kernel, &hash, key, cert, cached);
    let name = installed
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let bytes = std::fs::read(installed).unwrap();
    let signed = if name.ends_with(".ko.xz") {
        // Makefile.modinst: xz --check=crc32 --lzma2=dict=1MiB.
        let mut xz = Command::new("xz")
            .args(["--check=crc32", "--lzma2=dict=1MiB", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        xz.stdin.take().unwrap().write_all(&expected).unwrap();
        let out = xz.wait_with_output().unwrap();
        assert!(
            bytes == out.stdout,
            "{}: not the kernel's xz of sign-file's output",
            installed.display()
        );
        let out = Command::new("xz")
            .args(["-dc"])
            .arg(installed)
            .output()
            .unwrap();
        out.stdout
    } else {
        assert!(name.ends_with(".ko"), "{name}");
        bytes
    };
    assert!(
        signed == expected,
        "{}: not byte-identical to sign-file {hash}",
        installed.display()
    );
    assert_eq!(
        modinfo_field(installed, "signer"),
        "kmodkit rebuild test key",
        "{}",
        installed.display()
    );
    assert_eq!(
        modinfo_field(installed, "sig_key"),
        cert_serial(cert),
        "{}",
        installed.display()
    );
    assert_eq!(
        modinfo_field(installed, "sig_hashalgo"),
        hash,
        "{}",
        installed.display()
    );
}

/// `kmodkit abi check` (the ABI oracle the decisions must agree with):
/// does `kernel` accept every file of the set?
fn abi_accepts(root: &Path, kernel: &str, files: &[PathBuf]) -> bool {
    let out = kmodkit()
        .args(["abi", "check", "--json", "--root"])
        .arg(root)
        .args(["-k", kernel])
        .args(files)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["compatible"].as_bool() == Some(true))
}

/// Boots `kernel` in qemu and inserts each group of module files in order
/// (scripts/qemu-insmod, in-tree dependencies loaded first); returns, per
/// group, whether the loader accepted every module and the reasons.
fn kernel_accepts(kernel: &str, groups: &[Vec<PathBuf>]) -> Vec<(bool, Vec<String>)> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let text: String = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect();
    std::fs::write(tmp.path(), text).unwrap();
    let out = Command::new(repo().join("scripts/qemu-insmod"))
        .args([
            "--kernel",
            kernel,
            "--deps-from-target",
            "--timeout",
            "300",
            "--groups",
        ])
        .arg(tmp.path())
        .output()
        .expect("run scripts/qemu-insmod");
    assert!(
        out.status.success(),
        "qemu boot of {kernel}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["complete"].as_bool(),
        Some(true),
        "{kernel}: the boot did not finish: {doc}"
    );
    let mut per_group = vec![(true, Vec::new()); groups.len()];
    for r in doc["results"].as_array().unwrap() {
        if r["dependency"].as_bool() == Some(true) {
            continue;
        }
        let g = r["group"].as_u64().unwrap() as usize - 1;
        let stage = r["stage"].as_str().unwrap_or("");
        // "init": the loader accepted it and its init ran (no hardware).
        if stage != "loaded" && stage != "init" {
            per_group[g].0 = false;
            per_group[g].1.push(format!(
                "{}: {stage} {}",
                r["module"].as_str().unwrap_or(""),
                r["reason"].as_str().unwrap_or("")
            ));
        }
    }
    per_group
}

/// Packages in install order (a package's dependencies first), with the
/// group of files qemu inserts for it: kmk-user needs kmk-core's module,
/// which is not in the kernel's own tree.
fn groups_for(
    root: &Path,
    outs: &BTreeMap<(String, String), (String, serde_json::Value)>,
    kernel: &str,
    files_of: &dyn Fn(&serde_json::Value) -> Vec<PathBuf>,
) -> Vec<(String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    let mut core = Vec::new();
    for ((p, k), (_, o)) in outs {
        if k != kernel {
            continue;
        }
        let files = files_of(o);
        if p == "kmk-core" {
            core = files.clone();
        }
        out.push((p.clone(), files));
    }
    for (p, files) in &mut out {
        if p == "kmk-user" {
            let mut all = core.clone();
            all.append(files);
            *files = all;
        }
    }
    let _ = root;
    out
}

#[test]
fn rebuilds_only_what_broke_and_every_kernel_accepts_the_result() {
    common::require_tool("openssl", "openssl");
    common::require_tool("modinfo", "kmod");
    let fx = Fixtures::load();
    let base = "6.1.0-55-amd64";
    let same_crcs = "6.1.0-56-amd64";
    let newest_61 = kmodkit_fixtures::newest_kernel("6.1");
    let k612 = kmodkit_fixtures::newest_kernel("6.12");
    assert!(
        ![base, same_crcs].contains(&newest_61.as_str()),
        "the newest 6.1 ABI must be a third one"
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // Debian's current dkms packages (trixie's: bookworm's jool, ovpn-dco
    // and v4l2loopback do not compile for 6.12, see
    // a_package_that_does_not_compile_fails_alone).
    let mut sources = kmodkit_fixtures::rebuild_sources();
    sources.push(test_packages().join("kmk-core-1.0"));
    sources.push(test_packages().join("kmk-user-1.0"));
    rebuild_root(&fx, &root, &[base, same_crcs, &newest_61, &k612], &sources);
    let (key, cert) = make_key(dir.path());
    // Builds are cached across test runs (the inputs key them); the
    // rebuild of the small pair below is never cached.
    let cache = kmodkit_fixtures::cache_dir().join("rebuild-test-cache");
    let cache_s = cache.display().to_string();
    let key_s = key.display().to_string();
    let cert_s = cert.display().to_string();
    let common_args = [
        "--cache", &cache_s, "--key", &key_s, "--cert", &cert_s, "-j", "2",
    ];

    // 1. The base: everything built and installed, signed as the kernel's
    // sign-file would sign it.
    let mut args = vec!["--kernel", base];
    args.extend(common_args);
    let run = rebuild(&root, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let first = outcomes(&run);
    assert_eq!(first.len(), sources.len());
    for ((p, _), (action, o)) in &first {
        assert!(action == "built" || action == "cached", "{p}: {o}");
        for f in installed_files(&root, o) {
            let name = kmodkit_index::name::module_name_from_path(&f).unwrap();
            let cached = cached_module(
                &cache,
                &root,
                p,
                o["version"].as_str().unwrap(),
                base,
                &name,
            );
            check_signed(base, &key, &cert, &f, &cached);
        }
    }

    // 2. Identical CRCs: nothing rebuilt, every package linked, as the ABI
    // check says.
    let mut args = vec!["--kernel", same_crcs];
    args.extend(common_args);
    let run = rebuild(&root, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let second = outcomes(&run);
    let base_files: BTreeMap<String, Vec<PathBuf>> = first
        .iter()
        .map(|((p, _), (_, o))| (p.clone(), installed_files(&root, o)))
        .collect();
    let all_base: Vec<PathBuf> = base_files.values().flatten().cloned().collect();
    assert!(
        abi_accepts(&root, same_crcs, &all_base),
        "the ABI check refuses the base build on {same_crcs}"
    );
    for ((p, _), (action, o)) in &second {
        assert_eq!(action, "compatible", "{p}: {o}");
        assert!(o["reason"].as_str().unwrap().contains(base), "{o}");
    }

    // 3. The newest 6.1 ABI and 6.12: rebuilt exactly where the ABI check
    // refuses the base build.
    // With --package: the manual's whole procedure in one command, the
    // packages signed with the root's OpenPGP key (checked below).
    let out = kmodkit()
        .args([
            "signing-key",
            "create",
            "--openpgp",
            "--algorithm",
            "ed25519",
            "--root",
        ])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pkg_repo = dir.path().join("repo");
    let pkg_repo_s = pkg_repo.display().to_string();
    let mut args = vec!["--kernel", &newest_61, "--kernel", &k612];
    args.extend(common_args);
    args.extend(["--package", "--repo", &pkg_repo_s, "--name", "site-drivers"]);
    let run = rebuild(&root, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let third = outcomes(&run);
    let mut rebuilt: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for ((p, k), (action, o)) in &third {
        // The package's base build with its build dependencies' (kmk-user
        // needs kmk-core's exports to be checked at all).
        let mut set = base_files[p].clone();
        if p == "kmk-user" {
            set.extend(base_files["kmk-core"].iter().cloned());
        }
        let accepted = abi_accepts(&root, k, &set);
        let core_rebuilt =
            p == "kmk-user" && rebuilt.get(k).is_some_and(|s| s.contains("kmk-core"));
        if accepted && !core_rebuilt {
            assert_eq!(
                action, "compatible",
                "{p} for {k}: the ABI check accepts the base build: {o}"
            );
        } else {
            assert!(
                action == "built" || action == "cached",
                "{p} for {k}: the ABI check refuses the base build: {o}"
            );
            rebuilt.entry(k.clone()).or_default().insert(p.clone());
        }
    }
    assert!(
        rebuilt.get(&k612).is_some_and(|s| s.len() == sources.len()),
        "6.12 refuses every 6.1 build: {rebuilt:?}"
    );
    check_packaged(&run, &root, &pkg_repo, &rebuilt);

    // 4. The kernels agree: each target boots in qemu and inserts, per
    // package, the base build (accepted exactly where nothing was rebuilt)
    // and what is installed for it now (always accepted).
    for k in [same_crcs, newest_61.as_str(), k612.as_str()] {
        let outs = if k == same_crcs { &second } else { &third };
        let old = groups_for(&root, outs, k, &|o: &serde_json::Value| {
            base_files[o["package"].as_str().unwrap()].clone()
        });
        let new = groups_for(&root, outs, k, &|o: &serde_json::Value| {
            installed_files(&root, o)
        });
        let mut groups: Vec<Vec<PathBuf>> = old.iter().map(|(_, g)| g.clone()).collect();
        groups.extend(new.iter().map(|(_, g)| g.clone()));
        let verdicts = kernel_accepts(k, &groups);
        for (i, (p, _)) in old.iter().enumerate() {
            let action = &outs[&(p.clone(), k.to_string())].0;
            let (ok, why) = &verdicts[i];
            assert_eq!(
                *ok,
                action == "compatible",
                "{k}: kernel accepts the base build of {p}: {ok} ({why:?}), kmodkit: {action}"
            );
            let (ok_new, why_new) = &verdicts[old.len() + i];
            assert!(
                ok_new,
                "{k}: the kernel refuses the installed {p}: {why_new:?}"
            );
        }
    }
    // The 6.12 builds: signed and compressed like its own modules.
    for ((p, k), (action, o)) in &third {
        if k != &k612 || action == "compatible" {
            continue;
        }
        for f in installed_files(&root, o) {
            assert!(f.to_string_lossy().ends_with(".ko.xz"), "{}", f.display());
            let name = kmodkit_index::name::module_name_from_path(&f).unwrap();
            let cached = cached_module(&cache, &root, p, o["version"].as_str().unwrap(), k, &name);
            check_signed(k, &key, &cert, &f, &cached);
        }
    }
    // The base itself.
    let new = groups_for(&root, &first, base, &|o: &serde_json::Value| {
        installed_files(&root, o)
    });
    for (i, (ok, why)) in kernel_accepts(
        base,
        &new.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>(),
    )
    .iter()
    .enumerate()
    {
        assert!(ok, "{base} refuses the installed {}: {why:?}", new[i].0);
    }

    // 5. modprobe (kmod, reading the index kmodkit wrote) finds every
    // installed module where it was installed.
    for ((_, k), (_, o)) in third.iter().chain(&second) {
        for m in o["modules"].as_array().unwrap() {
            let out = Command::new("modprobe")
                .arg("-d")
                .arg(&root)
                .args(["-S", k, "--show-depends", m["name"].as_str().unwrap()])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines()
                    .last()
                    .is_some_and(|l| l.contains(m["path"].as_str().unwrap())),
                "{k} {m}: {text}"
            );
        }
    }

    // 6. Unchanged inputs: nothing built again.
    let mut args = vec!["--kernel", &newest_61, "--kernel", &k612];
    args.extend(common_args);
    let run = rebuild(&root, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for ((p, k), (action, o)) in outcomes(&run) {
        assert!(
            action == "up_to_date" || action == "compatible",
            "{p} for {k}: {o}"
        );
    }

    // 7. --force on the newest 6.1 ABI (which accepts the base build, so
    // nothing was rebuilt for it): a real build for a third kernel, signed
    // as sign-file would, and every module loaded by that kernel.
    let mut args = vec!["--kernel", &newest_61, "--force"];
    args.extend(common_args);
    let run = rebuild(&root, &args);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let forced = outcomes(&run);
    for ((p, k), (action, o)) in &forced {
        assert!(action == "built" || action == "cached", "{p} for {k}: {o}");
        for f in installed_files(&root, o) {
            assert!(
                f.starts_with(root.join("lib/modules").join(k).join("updates/dkms")),
                "{}",
                f.display()
            );
            let name = kmodkit_index::name::module_name_from_path(&f).unwrap();
            let cached = cached_module(&cache, &root, p, o["version"].as_str().unwrap(), k, &name);
            check_signed(k, &key, &cert, &f, &cached);
        }
    }
    let new = groups_for(&root, &forced, &newest_61, &|o: &serde_json::Value| {
        installed_files(&root, o)
    });
    for (i, (ok, why)) in kernel_accepts(
        &newest_61,
        &new.iter().map(|(_, g)| g.clone()).collect::<Vec<_>>(),
    )
    .iter()
    .enumerate()
    {
        assert!(
            ok,
            "{newest_61} refuses the installed {}: {why:?}",
            new[i].0
        );
    }
}

/// A root with the given sources under `usr/src` (copied, so a test may
/// change them) and a fresh build cache (these builds always run).
fn small_root(fx: &Fixtures, dir: &Path, kernels: &[&str], packages: &[PathBuf]) -> PathBuf {
    let root = dir.join("root");
    rebuild_root(fx, &root, kernels, &[]);
    for p in packages {
        let to = root.join("usr/src").join(p.file_name().unwrap());
        let st = Command::new("cp")
            .arg("-a")
            .arg(p)
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
    }
    root
}

#[test]
fn a_package_that_does_not_compile_fails_alone() {
    let fx = Fixtures::load();
    let base = "6.1.0-55-amd64";
    let k612 = kmodkit_fixtures::newest_kernel("6.12");
    let dir = tempfile::tempdir().unwrap();
    let mut packages: Vec<PathBuf> = ["kmk-core-1.0", "kmk-user-1.0", "kmk-broken-1.0"]
        .iter()
        .map(|p| test_packages().join(p))
        .collect();
    // The real case: digimend-dkms does not compile for 6.12.
    packages.extend(kmodkit_fixtures::in_tree_replacing_sources());
    let root = small_root(&fx, dir.path(), &[base, &k612], &packages);
    let cache = dir.path().join("cache").display().to_string();
    let run = rebuild(
        &root,
        &[
            "--kernel",
            base,
            "--kernel",
            &k612,
            "--no-sign",
            "--cache",
            &cache,
            "-j",
            "2",
        ],
    );
    assert_eq!(
        run.code, 1,
        "one package fails for one kernel: exit 1\n{}",
        run.stderr
    );
    let outs = outcomes(&run);
    assert_eq!(outs.len(), 2 * packages.len());
    for ((p, k), (action, o)) in &outs {
        let expect_fail = k == &k612 && (p == "kmk-broken" || p.starts_with("digimend"));
        if expect_fail {
            assert_eq!(action, "failed", "{p} {k}: {o}");
            let error = o["error"].as_str().unwrap();
            let log = PathBuf::from(o["log"].as_str().unwrap());
            assert!(log.is_file(), "{o}");
            assert!(
                error.contains(&log.display().to_string()),
                "the error names the log: {error}"
            );
            assert!(
                error.contains(p.as_str()) && error.contains(k.as_str()),
                "{error}"
            );
            // The first error line of the log, as the compiler wrote it.
            let text = std::fs::read_to_string(&log).unwrap();
            let first = text.lines().find(|l| l.contains("error")).unwrap().trim();
            assert!(
                error.contains(first),
                "{error}\nfirst error in the log: {first}"
            );
            assert!(o["modules"].as_array().unwrap().is_empty());
        } else {
            assert_eq!(action, "built", "{p} {k}: {o}");
            for f in installed_files(&root, o) {
                assert!(f.is_file(), "{}", f.display());
            }
        }
    }
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);
    // digimend replaces in-tree HID modules, as the RDMA vendor stacks
    // replace ib_core & co: `status` says which file modprobe loads for
    // each — the vendor build on the base, the in-tree module on 6.12,
    // where it failed — and kmod's modprobe on the index kmodkit wrote
    // agrees.
    let digimend = root.join("usr/src").join(
        kmodkit_fixtures::in_tree_replacing_sources()[0]
            .file_name()
            .unwrap(),
    );
    let out = kmodkit()
        .args(["status", "--json", "--root"])
        .arg(&root)
        .arg(&digimend)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "6.12 needs an action: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kinds = BTreeSet::new();
    for k in doc["kernels"].as_array().unwrap() {
        let kernel = k["kernel"].as_str().unwrap();
        for m in k["modules"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let kind = m["loads"]["kind"].as_str().unwrap_or("nothing");
            let shown = m["loads"]["path"].as_str().unwrap_or("");
            let probe = Command::new("modprobe")
                .arg("-d")
                .arg(&root)
                .args(["-S", kernel, "--show-depends", name])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&probe.stdout);
            let last = text.lines().last().unwrap_or("").trim();
            if kind == "nothing" {
                assert!(
                    !probe.status.success() && !text.contains("insmod"),
                    "{kernel} {name}: status shows nothing, modprobe: {text}"
                );
            } else {
                assert!(
                    last.starts_with("insmod ") && !shown.is_empty() && last.contains(shown),
                    "{kernel} {name}: status shows {kind} {shown}, modprobe: {text}"
                );
            }
            if kernel == k612 {
                // No vendor build: the kernel's own module, or nothing.
                assert!(
                    kind == "in_tree" || kind == "nothing",
                    "{kernel} {name}: {m}"
                );
                assert_eq!(m["action"].as_str(), Some("rebuild"), "{m}");
            } else {
                assert_eq!(kind, "vendor", "{kernel} {name}: {m}");
            }
            kinds.insert(kind.to_string());
        }
    }
    assert!(
        kinds.contains("in_tree") && kinds.contains("vendor"),
        "{kinds:?}"
    );
    // kmk-user got kmk-core's symbols: its CRC of kmk_core_register is the
    // one kmk-core exports (modpost had it, or the build would have failed).
    for k in [base, k612.as_str()] {
        let user = installed_files(&root, &outs[&("kmk-user".to_string(), k.to_string())].1);
        let core = installed_files(&root, &outs[&("kmk-core".to_string(), k.to_string())].1);
        let mut set = core.clone();
        set.extend(user);
        assert!(
            abi_accepts(&root, k, &set),
            "kmk-user and kmk-core for {k} do not fit"
        );
    }
}

#[test]
fn missing_headers_bad_conf_and_missing_dependency_are_clear_errors() {
    let fx = Fixtures::load();
    let base = "6.1.0-55-amd64";
    let dir = tempfile::tempdir().unwrap();
    let root = small_root(
        &fx,
        dir.path(),
        &[base],
        &[test_packages().join("kmk-user-1.0")],
    );
    let cache = dir.path().join("cache").display().to_string();

    // A kernel without headers: an error naming the package to install.
    let other = fx
        .kernels
        .iter()
        .find(|k| k.release != base)
        .unwrap()
        .clone();
    common::link_tree(&fx, &other, &root);
    let run = kmodkit()
        .args(["rebuild", "--root"])
        .arg(&root)
        .args(["--kernel", &other.release, "--no-sign", "--cache", &cache])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("linux-headers-{}", other.release)),
        "{stderr}"
    );
    std::fs::remove_dir_all(root.join("lib/modules").join(&other.release)).unwrap();

    // A BUILD_DEPENDS package that is neither in the run nor installed.
    let run = rebuild(&root, &["--kernel", base, "--no-sign", "--cache", &cache]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let outs = outcomes(&run);
    let (action, o) = &outs[&("kmk-user".to_string(), base.to_string())];
    assert_eq!(action, "failed", "{o}");
    assert!(o["error"].as_str().unwrap().contains("kmk-core"), "{o}");
    assert!(
        !root.join("lib/modules").join(base).join("updates").exists(),
        "nothing installed"
    );

    // A dkms.conf DKMS would refuse: the file and the problem named,
    // nothing built.
    let conf = root.join("usr/src/kmk-user-1.0/dkms.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "DEST_MODULE_LOCATION[0]=\"/updates\"",
            "DEST_MODULE_LOCATION[0]=\"/usr/lib\"",
        ),
    )
    .unwrap();
    let run = kmodkit()
        .args(["rebuild", "--root"])
        .arg(&root)
        .args(["--kernel", base, "--no-sign", "--cache", &cache])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&conf.display().to_string()) && stderr.contains("DEST_MODULE_LOCATION"),
        "{stderr}"
    );
}

#[test]
fn wrong_key_password_and_a_kill_mid_install_lose_nothing() {
    let fx = Fixtures::load();
    let base = "6.1.0-55-amd64";
    let dir = tempfile::tempdir().unwrap();
    let root = small_root(
        &fx,
        dir.path(),
        &[base],
        &[test_packages().join("kmk-core-1.0")],
    );
    let cache = dir.path().join("cache").display().to_string();
    let module_dir = root.join("lib/modules").join(base);

    // An encrypted key and the wrong password: refused before any build.
    let key = dir.path().join("enc.key");
    let cert = dir.path().join("enc.der");
    let out = Command::new("openssl")
        .args([
            "req", "-new", "-utf8", "-sha256", "-days", "36500", "-batch", "-x509", "-outform",
            "DER",
        ])
        .args([
            "-newkey",
            "rsa:2048",
            "-subj",
            "/CN=encrypted test key/",
            "-passout",
            "pass:right horse",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pass = dir.path().join("pass");
    std::fs::write(&pass, "wrong horse\n").unwrap();
    let run = kmodkit()
        .args(["rebuild", "--root"])
        .arg(&root)
        .args(["--kernel", base, "--cache", &cache, "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .arg("--key-password-file")
        .arg(&pass)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&key.display().to_string()) && stderr.contains("wrong password"),
        "{stderr}"
    );
    assert!(!module_dir.join("updates").exists(), "nothing installed");
    // The right one signs.
    std::fs::write(&pass, "right horse\n").unwrap();
    let ok = kmodkit()
        .args(["rebuild", "--json", "--root"])
        .arg(&root)
        .args(["--kernel", base, "--cache", &cache, "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&cert)
        .arg("--key-password-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let installed = module_dir.join("updates/dkms/kmk_core.ko");
    assert_eq!(modinfo_field(&installed, "signer"), "encrypted test key");
    let old = std::fs::read(&installed).unwrap();
    let old_dep = std::fs::read(module_dir.join("modules.dep")).unwrap();

    // A new version of the source; the install is killed (as by kill -9)
    // at each step before it is decided: the old module and the old index
    // stay, the staging is gone after the next run, which installs.
    let src = root.join("usr/src/kmk-core-1.0/kmk_core.c");
    let mut text = std::fs::read_to_string(&src).unwrap();
    text.push_str("\n/* changed */\n");
    std::fs::write(&src, text).unwrap();
    for point in [
        "install-module:1",
        "install-commit:1",
        "write:1",
        "commit:1",
    ] {
        let run = kmodkit()
            .args(["rebuild", "--root"])
            .arg(&root)
            .args(["--kernel", base, "--no-sign", "--cache", &cache])
            .env("KMODKIT_FAULT", point)
            .output()
            .unwrap();
        assert!(
            !run.status.success(),
            "{point}: the kill did not happen: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            old,
            "{point}: the old module changed"
        );
        assert_eq!(
            std::fs::read(module_dir.join("modules.dep")).unwrap(),
            old_dep,
            "{point}: the index changed"
        );
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(&root)
            .args(["-S", base, "--show-depends", "kmk_core"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("updates/dkms/kmk_core.ko"),
            "{point}: modprobe: {out:?}"
        );
    }
    let run = rebuild(&root, &["--kernel", base, "--no-sign", "--cache", &cache]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_ne!(
        std::fs::read(&installed).unwrap(),
        old,
        "the new build is installed"
    );
    assert!(
        !root
            .join("lib/modules")
            .join(format!(".kmodkit-rebuild-{base}.staging"))
            .exists(),
        "staging left behind"
    );
    let out = Command::new("modprobe")
        .arg("-d")
        .arg(&root)
        .args(["-S", base, "--show-depends", "kmk_core"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("updates/dkms/kmk_core.ko"));

    // A package built later against a dependency installed by an earlier
    // run: kmk-core's recorded Module.symvers reaches kmk-user's modpost.
    let user = root.join("usr/src/kmk-user-1.0");
    let st = Command::new("cp")
        .arg("-a")
        .arg(test_packages().join("kmk-user-1.0"))
        .arg(&user)
        .status()
        .unwrap();
    assert!(st.success());
    let user_s = user.display().to_string();
    let run = rebuild(
        &root,
        &[
            "--kernel",
            base,
            "--no-sign",
            "--cache",
            &cache,
            "--src",
            &user_s,
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let outs = outcomes(&run);
    assert_eq!(
        outs[&("kmk-user".to_string(), base.to_string())].0,
        "built",
        "{outs:?}"
    );
    let mut set = vec![installed.clone()];
    set.push(module_dir.join("updates/dkms/kmk_user.ko"));
    assert!(abi_accepts(&root, base, &set));
}
