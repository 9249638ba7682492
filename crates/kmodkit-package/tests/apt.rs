//! The apt repository against apt itself: `apt-ftparchive packages` gives
//! the same stanzas for the same pool, the Release checksums are those of
//! the files, gpgv accepts `InRelease` and `Release.gpg`, `apt-get`
//! installs `jool-kernel-only` into a test root trusting only the
//! generated key (`Signed-By:`), the postinst's depmod indexes the
//! modules there and the 6.1 kernel loads them in qemu; a changed Release
//! or Packages is refused; reruns reuse the cache and give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kmodkit_package::apt::{sources_file, write_repository, AptOptions};
use kmodkit_package::deb::{kernel_only_package, module_package, DebFile, DebOptions};
use kmodkit_package::pgp::{KeyAlgorithm, RepoKey};
use kmodkit_package::ModuleSet;

const KERNEL: &str = "6.1.0-53-amd64";
const TIME: u64 = 1_700_000_000;
const SUITE: &str = "stable";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn jool_files() -> Vec<PathBuf> {
    let files = kmodkit_fixtures::oot_modules(KERNEL, "jool-dkms");
    assert!(files.len() >= 2, "jool-dkms built fewer than 2 modules");
    files
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn key() -> RepoKey {
    RepoKey::generate(
        "kmodkit test <test@example.invalid>",
        TIME - 100,
        KeyAlgorithm::Ed25519,
    )
    .unwrap()
}

fn packages() -> (Vec<DebFile>, Vec<PathBuf>) {
    let files = jool_files();
    let set = ModuleSet::from_files("jool", "4.1.9", "1", KERNEL, &files).unwrap();
    let opts = DebOptions {
        time: TIME,
        maintainer: "kmodkit test <test@example.invalid>".into(),
    };
    let m = module_package(&set, &opts).unwrap();
    let meta = kernel_only_package(
        "jool",
        "4.1.9",
        "1",
        &[(m.package.clone(), m.version.clone())],
        &opts,
    )
    .unwrap();
    (vec![m, meta], files)
}

/// DIR with pool/main/*.deb and a signed dists/.
fn signed_repository(dir: &Path, key: &RepoKey) -> Vec<DebFile> {
    let (debs, _) = packages();
    let pool = dir.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    for d in &debs {
        std::fs::write(pool.join(&d.file_name), &d.bytes).unwrap();
    }
    let report = write_repository(dir, &options(Some(key))).unwrap();
    assert_eq!(report.packages, 2);
    assert!(report.signed);
    debs
}

fn options(key: Option<&RepoKey>) -> AptOptions<'_> {
    AptOptions {
        key,
        time: TIME,
        suite: SUITE.into(),
        component: "main".into(),
    }
}

/// Paragraphs of a control-format file: field → value (continuation lines
/// joined with `\n`, each trimmed).
fn paragraphs(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut out = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with(' ') {
            let v = cur.get_mut(&last).unwrap();
            v.push('\n');
            v.push_str(line.trim());
        } else {
            let (k, v) = line.split_once(':').unwrap();
            last = k.to_string();
            cur.insert(k.to_string(), v.trim().to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn packages_match_apt_ftparchive_and_release_checksums_and_signatures_verify() {
    kmodkit_fixtures::require_tool("apt-ftparchive", "apt-utils");
    kmodkit_fixtures::require_tool("gpgv", "gpgv");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let key = key();
    signed_repository(&dir, &key);
    let ours =
        std::fs::read_to_string(dir.join("dists/stable/main/binary-amd64/Packages")).unwrap();
    let theirs = run(Command::new("apt-ftparchive")
        .args(["packages", "pool"])
        .current_dir(&dir));
    let by_name = |t: &str| -> BTreeMap<String, BTreeMap<String, String>> {
        paragraphs(t)
            .into_iter()
            .map(|p| (p["Package"].clone(), p))
            .collect()
    };
    let (ours, theirs) = (by_name(&ours), by_name(&theirs));
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    // apt-ftparchive adds SHA1 and SHA512 (apt verifies the strongest hash
    // the Release lists: SHA256 here) and nothing else for these packages.
    let extra_allowed: BTreeSet<&str> = ["SHA1", "SHA512", "Description-md5"].into();
    for (name, t) in &theirs {
        let o = &ours[name];
        for (k, v) in t {
            if extra_allowed.contains(k.as_str()) {
                continue;
            }
            assert_eq!(o.get(k), Some(v), "{name}: {k} differs from apt-ftparchive");
        }
        for k in o.keys() {
            assert!(
                t.contains_key(k),
                "{name}: {k} not in apt-ftparchive's stanza"
            );
        }
    }

    // Release: every index file listed with its size and hashes, nothing else.
    let suite = dir.join("dists/stable");
    let release = std::fs::read_to_string(suite.join("Release")).unwrap();
    let head = &paragraphs(&release)[0];
    assert_eq!(head["Suite"], SUITE);
    assert_eq!(head["Architectures"], "amd64");
    assert_eq!(head["Components"], "main");
    let date = run(Command::new("date")
        .env("TZ", "UTC")
        .arg("-d")
        .arg(format!("@{TIME}"))
        .arg("+%a, %d %b %Y %H:%M:%S UTC"));
    assert_eq!(head["Date"], date.trim());
    let mut listed = BTreeSet::new();
    for (section, tool) in [("MD5Sum", "md5sum"), ("SHA256", "sha256sum")] {
        for line in head[section].lines().filter(|l| !l.is_empty()) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let path = suite.join(cols[2]);
            let sum = run(Command::new(tool).arg(&path));
            assert_eq!(
                sum.split_whitespace().next(),
                Some(cols[0]),
                "{section} of {}",
                cols[2]
            );
            assert_eq!(std::fs::metadata(&path).unwrap().len().to_string(), cols[1]);
            listed.insert(cols[2].to_string());
        }
    }
    let on_disk: BTreeSet<String> = ["Packages", "Packages.gz", "Packages.xz"]
        .iter()
        .map(|f| format!("main/binary-amd64/{f}"))
        .collect();
    assert_eq!(listed, on_disk);

    // gpgv with only the repository key.
    let keyring = tmp.path().join("key.gpg");
    std::fs::write(&keyring, key.public_binary().unwrap()).unwrap();
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(suite.join("Release.gpg"))
        .arg(suite.join("Release")));
    run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(suite.join("InRelease")));
}

/// A root apt and dpkg work in without touching the host: apt's state,
/// a dpkg database with a fake installed `linux-image-KERNEL`, the
/// repository as the one source, trusted through `Signed-By:` only;
/// static busybox as /bin/sh and kmod's depmod with its libraries for the
/// maintainer scripts dpkg runs chrooted.
fn test_root(root: &Path, repo_dir: &Path, key: &RepoKey) {
    for d in [
        "etc/apt/sources.list.d",
        "etc/apt/keyrings",
        "etc/apt/trusted.gpg.d",
        "etc/apt/preferences.d",
        "etc/apt/apt.conf.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log/apt",
        "bin",
        "sbin",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        format!(
            "Package: linux-image-{KERNEL}\nStatus: install ok installed\nPriority: optional\n\
             Section: kernel\nMaintainer: test <test@example.invalid>\nArchitecture: amd64\n\
             Version: 6.1.0-53\nDescription: fake kernel for the test\n\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("var/lib/dpkg/available"), "").unwrap();
    // APT_CONFIG points here: no host apt.conf.d is read.
    std::fs::write(root.join("etc/apt/apt.conf"), "").unwrap();
    let keyring = root.join("etc/apt/keyrings/kmodkit.asc");
    std::fs::write(&keyring, key.public_armored().unwrap()).unwrap();
    std::fs::write(
        root.join("etc/apt/sources.list.d/kmodkit.sources"),
        sources_file(
            &format!("file://{}", repo_dir.display()),
            SUITE,
            "main",
            &keyring.display().to_string(),
        ),
    )
    .unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/sh")).unwrap();
    std::fs::copy("/bin/kmod", root.join("sbin/depmod")).unwrap();
    let ldd = run(Command::new("ldd").arg("/bin/kmod"));
    for lib in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
        let dest = root.join(&lib[1..]);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(lib, dest).unwrap();
    }
}

fn apt_get(root: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_CONFIG", root.join("etc/apt/apt.conf"))
        .arg("-o")
        .arg(format!("Dir={}", root.display()))
        .arg("-o")
        .arg(format!(
            "Dir::State::status={}",
            root.join("var/lib/dpkg/status").display()
        ))
        .arg("-o")
        .arg(format!("DPkg::Options::=--root={}", root.display()))
        .arg("-o")
        .arg(format!("Dir::Etc={}", root.join("etc/apt").display()))
        .arg("-o")
        .arg(format!(
            "Dir::Etc::SourceParts={}",
            root.join("etc/apt/sources.list.d").display()
        ))
        .arg("-o")
        .arg(format!(
            "Dir::Etc::TrustedParts={}",
            root.join("etc/apt/trusted.gpg.d").display()
        ))
        .args([
            "-o",
            "APT::Sandbox::User=root",
            "-o",
            "Dir::Etc::SourceList=/dev/null",
        ])
        .args(["-o", "Acquire::Languages=none", "-o", "DPkg::Use-Pty=0"])
        .args(args);
    cmd.output().unwrap()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Boots the kernel in qemu and inserts `files` in order
/// (scripts/qemu-insmod, in-tree dependencies first); every module must
/// pass the loader.
fn kernel_loads(files: &[PathBuf]) {
    let out = Command::new(repo().join("scripts/qemu-insmod"))
        .args(["--kernel", KERNEL, "--deps-from-target", "--timeout", "300"])
        .args(files)
        .output()
        .expect("run scripts/qemu-insmod");
    assert!(
        out.status.success(),
        "qemu boot of {KERNEL}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["complete"].as_bool(), Some(true), "{doc}");
    let mut seen = 0;
    for r in doc["results"].as_array().unwrap() {
        if r["dependency"].as_bool() == Some(true) {
            continue;
        }
        seen += 1;
        let stage = r["stage"].as_str().unwrap_or("");
        assert!(
            stage == "loaded" || stage == "init",
            "{KERNEL} refused {}: {stage} {}",
            r["module"],
            r["reason"]
        );
    }
    assert_eq!(seen, files.len(), "{doc}");
}

#[test]
fn apt_installs_from_the_signed_repository_and_the_kernel_loads_the_modules() {
    kmodkit_fixtures::require_tool("apt-get", "apt");
    kmodkit_fixtures::require_tool("busybox", "busybox-static");
    kmodkit_fixtures::require_tool("qemu-system-x86_64", "qemu-system-x86");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let key = key();
    signed_repository(&dir, &key);
    let (_, inputs) = packages();
    let root = tmp.path().join("root");
    test_root(&root, &dir, &key);

    let up = apt_get(&root, &["update"]);
    assert!(up.status.success(), "apt-get update:\n{}", text(&up));
    let t = text(&up);
    assert!(
        !t.contains("W:") && !t.contains("E:"),
        "apt-get update warned:\n{t}"
    );
    let inst = apt_get(
        &root,
        &[
            "install",
            "-y",
            "--no-install-recommends",
            "jool-kernel-only",
        ],
    );
    let t = text(&inst);
    eprintln!("{t}");
    assert!(inst.status.success(), "apt-get install:\n{t}");
    let status = run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["-s", "jool-kernel-only", &format!("jool-modules-{KERNEL}")]));
    assert_eq!(
        status.matches("Status: install ok installed").count(),
        2,
        "{status}"
    );

    // The modules are where the package put them, byte for byte, and the
    // postinst's depmod indexed them (dependencies as modinfo names them).
    let moddir = root.join(format!("lib/modules/{KERNEL}"));
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .expect("no modules.dep: the postinst did not run depmod");
    let mut installed = Vec::new();
    for f in &inputs {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let at = moddir.join("updates/dkms").join(&name);
        assert!(std::fs::read(&at).unwrap() == std::fs::read(f).unwrap());
        let line = dep
            .lines()
            .find(|l| l.starts_with(&format!("updates/dkms/{name}:")))
            .unwrap_or_else(|| panic!("{name} not in modules.dep:\n{dep}"));
        let depends = run(Command::new("modinfo").args(["-F", "depends"]).arg(f));
        for d in depends.trim().split(',').filter(|d| d.starts_with("jool")) {
            assert!(
                line.contains(&format!("updates/dkms/{d}.ko")),
                "{line}: no {d}"
            );
        }
        installed.push(at);
    }
    // Load order: a module after what it depends on. The root has only
    // this set, so a modules.dep line names only the set's modules: fewer
    // names, earlier.
    installed.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        dep.lines()
            .find(|l| l.starts_with(&format!("updates/dkms/{name}:")))
            .map(|l| l.split_whitespace().count())
            .unwrap_or(0)
    });
    kernel_loads(&installed);

    // Removal: the postrm's depmod drops them from the index.
    let rm = apt_get(
        &root,
        &[
            "remove",
            "-y",
            "jool-kernel-only",
            &format!("jool-modules-{KERNEL}"),
        ],
    );
    assert!(rm.status.success(), "apt-get remove:\n{}", text(&rm));
    assert!(!moddir.join("updates/dkms").exists());
    let dep = std::fs::read_to_string(moddir.join("modules.dep")).unwrap();
    assert!(
        !dep.contains("updates/dkms"),
        "modules.dep after removal:\n{dep}"
    );
}

fn tamper(path: &Path, from: &str, to: &str) {
    let t = std::fs::read_to_string(path).unwrap();
    assert!(t.contains(from), "{}: no {from:?}", path.display());
    std::fs::write(path, t.replacen(from, to, 1)).unwrap();
}

#[test]
fn apt_refuses_a_changed_release_or_packages_file() {
    kmodkit_fixtures::require_tool("apt-get", "apt");
    kmodkit_fixtures::require_tool("busybox", "busybox-static");
    let tmp = tempfile::tempdir().unwrap();
    let key = key();

    // Release and InRelease changed after signing: a bad signature.
    let dir = tmp.path().join("repo1");
    signed_repository(&dir, &key);
    let suite = dir.join("dists/stable");
    tamper(&suite.join("Release"), "Label: kmodkit", "Label: kmodkix");
    tamper(&suite.join("InRelease"), "Label: kmodkit", "Label: kmodkix");
    let root = tmp.path().join("root1");
    test_root(&root, &dir, &key);
    let out = apt_get(&root, &["update"]);
    let t = text(&out);
    eprintln!("tampered Release:\n{t}");
    assert!(
        !out.status.success() && (t.contains("BADSIG") || t.contains("signatures were invalid")),
        "apt-get update accepted a changed Release:\n{t}"
    );

    // A Packages file (every compression) changed after the Release.
    let dir = tmp.path().join("repo2");
    signed_repository(&dir, &key);
    let bin = dir.join("dists/stable/main/binary-amd64");
    tamper(
        &bin.join("Packages"),
        "Priority: optional",
        "Priority: required",
    );
    let changed = std::fs::read(bin.join("Packages")).unwrap();
    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&changed).unwrap();
        e.finish().unwrap()
    };
    std::fs::write(bin.join("Packages.gz"), gz).unwrap();
    let xz = Command::new("xz")
        .arg("-c")
        .arg(bin.join("Packages"))
        .output()
        .unwrap();
    assert!(xz.status.success());
    let xz = xz.stdout;
    std::fs::write(bin.join("Packages.xz"), xz).unwrap();
    let root = tmp.path().join("root2");
    test_root(&root, &dir, &key);
    let out = apt_get(&root, &["update"]);
    let t = text(&out);
    eprintln!("tampered Packages:\n{t}");
    assert!(
        !out.status.success() && (t.contains("Hash Sum mismatch") || t.contains("unexpected size")),
        "apt-get update accepted a changed Packages:\n{t}"
    );
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &dir.join("dists"), &mut out);
    out
}

#[test]
fn reruns_reuse_the_cache_and_give_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let a = tmp.path().join("a");
    let debs = signed_repository(&a, &key);
    let first = snapshot(&a);
    let again = write_repository(&a, &options(Some(&key))).unwrap();
    assert_eq!((again.read, again.reused), (0, 2));
    assert!(snapshot(&a) == first, "a rerun changed dists/");

    // Another directory with copies of the same packages: the same bytes.
    let b = tmp.path().join("b");
    std::fs::create_dir_all(b.join("pool/main")).unwrap();
    for d in &debs {
        std::fs::write(b.join("pool/main").join(&d.file_name), &d.bytes).unwrap();
    }
    let report = write_repository(&b, &options(Some(&key))).unwrap();
    assert_eq!((report.read, report.reused), (2, 0));
    assert!(
        snapshot(&b) == first,
        "two repositories of the same packages differ"
    );

    // A new package: only it is read; a replaced one is read again.
    let opts = DebOptions {
        time: TIME,
        maintainer: "t <t@example.invalid>".into(),
    };
    let extra = kernel_only_package("other", "1.0", "1", &[], &opts).unwrap();
    std::fs::write(a.join("pool").join(&extra.file_name), &extra.bytes).unwrap();
    let r = write_repository(&a, &options(Some(&key))).unwrap();
    assert_eq!((r.read, r.reused, r.packages), (1, 2, 3));
    let meta = a.join("pool/main").join(&debs[1].file_name);
    let tmpfile = a.join("pool/main/new.tmp");
    std::fs::write(&tmpfile, &debs[1].bytes).unwrap();
    std::fs::rename(&tmpfile, &meta).unwrap();
    let r = write_repository(&a, &options(Some(&key))).unwrap();
    assert_eq!((r.read, r.reused), (1, 2));

    // Unsigned: no signature files left behind.
    let r = write_repository(&a, &options(None)).unwrap();
    assert!(!r.signed);
    assert!(!a.join("dists/stable/InRelease").exists());
    assert!(!a.join("dists/stable/Release.gpg").exists());
}

#[test]
fn timing_against_apt_ftparchive() {
    kmodkit_fixtures::require_tool("apt-ftparchive", "apt-utils");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let (debs, _) = packages();
    let pool = dir.join("pool/main");
    std::fs::create_dir_all(&pool).unwrap();
    for i in 0..100 {
        let d = &debs[i % 2];
        std::fs::write(pool.join(format!("{i:03}-{}", d.file_name)), &d.bytes).unwrap();
    }
    let key = key();
    let t = Instant::now();
    let r = write_repository(&dir, &options(Some(&key))).unwrap();
    let ours = t.elapsed();
    assert_eq!(r.packages, 100);
    let t = Instant::now();
    write_repository(&dir, &options(Some(&key))).unwrap();
    let rerun = t.elapsed();

    let peer = tmp.path().join("peer");
    std::fs::create_dir_all(peer.join("dists/stable/main/binary-amd64")).unwrap();
    let t = Instant::now();
    let packages = run(Command::new("apt-ftparchive")
        .args(["packages", "pool"])
        .current_dir(&dir));
    std::fs::write(
        peer.join("dists/stable/main/binary-amd64/Packages"),
        packages,
    )
    .unwrap();
    run(Command::new("sh").arg("-c").arg(format!(
        "cd {0} && xz -k dists/stable/main/binary-amd64/Packages && gzip -9nk dists/stable/main/binary-amd64/Packages && apt-ftparchive release dists/stable > Release.tmp",
        peer.display()
    )));
    let theirs = t.elapsed();
    eprintln!(
        "100 packages: kmodkit {:.3}s (rerun from cache {:.3}s, signed), apt-ftparchive packages+release {:.3}s (unsigned), ratio {:.2}",
        ours.as_secs_f64(),
        rerun.as_secs_f64(),
        theirs.as_secs_f64(),
        ours.as_secs_f64() / theirs.as_secs_f64()
    );
}
