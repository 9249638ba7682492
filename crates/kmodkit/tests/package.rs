//! `kmodkit package` and `kmodkit repo` from the command line: real jool
//! modules built for a Debian 6.1 kernel become kmod/kernel-only RPMs and
//! Debian module packages in one signed repository. The signatures are
//! checked by `rpm -K` and `gpgv` (not by kmodkit), a second run of the
//! same inputs gives the same bytes, a rerun of `repo` reads nothing again,
//! and bad input ends with the file and the problem named.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::kmodkit;

const KERNEL: &str = "6.1.0-53-amd64";
const EPOCH: &str = "1700000000";
const URL: &str = "http://head.example.invalid/kmodkit";

fn jool_files() -> Vec<PathBuf> {
    let files = kmodkit_fixtures::oot_modules(KERNEL, "jool-dkms");
    assert!(files.len() >= 2, "jool-dkms built fewer than 2 modules");
    files
}

fn symvers() -> PathBuf {
    kmodkit_fixtures::kbuild_environment(KERNEL).join("Module.symvers")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A root with kmodkit's OpenPGP key, made by `signing-key create`.
fn keyed_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).unwrap();
    ok(kmodkit()
        .args([
            "signing-key",
            "create",
            "--openpgp",
            "--algorithm",
            "ed25519",
            "--root",
        ])
        .arg(&root));
    assert!(root.join("var/lib/kmodkit/repo-key.asc").is_file());
    root
}

fn package(root: &Path, repo: &Path) -> serde_json::Value {
    let out = ok(kmodkit()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["package", "--json", "--kernel", KERNEL, "--root"])
        .arg(root)
        .arg("--symvers")
        .arg(symvers())
        .args([
            "--name",
            "jool",
            "--pkg-version",
            "4.1.9",
            "--url",
            URL,
            "--repo",
        ])
        .arg(repo)
        .args(jool_files()));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Every file under `dir` by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
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
    walk(dir, dir, &mut out);
    out
}

#[test]
fn packages_go_into_a_signed_repository_with_the_same_bytes_every_run() {
    common::require_tool("rpm", "rpm");
    common::require_tool("dpkg-deb", "dpkg");
    common::require_tool("gpgv", "gpgv");
    let tmp = tempfile::tempdir().unwrap();
    let root = keyed_root(tmp.path());
    let repo = tmp.path().join("repo");
    let j = package(&root, &repo);

    // Four packages: kmod-jool and its kernel-only set, jool-modules-KVER
    // and its kernel-only set, each at its real path in the repository.
    let packages = j["packages"].as_array().unwrap();
    let names: Vec<(&str, &str)> = packages
        .iter()
        .map(|p| {
            (
                p["format"].as_str().unwrap(),
                p["package"].as_str().unwrap(),
            )
        })
        .collect();
    let modules_deb = format!("jool-modules-{KERNEL}");
    for want in [
        ("rpm", "kmod-jool"),
        ("rpm", "jool-kernel-only"),
        ("deb", modules_deb.as_str()),
        ("deb", "jool-kernel-only"),
    ] {
        assert!(names.contains(&want), "{want:?} not in {names:?}");
    }
    for p in packages {
        let file = PathBuf::from(p["file"].as_str().unwrap());
        assert!(file.starts_with(&repo) && file.is_file(), "{p}");
        let version = p["version"].as_str().unwrap();
        assert!(
            version.starts_with("4.1.9-1.kver."),
            "the release names the kernel: {p}"
        );
    }
    let repository = &j["repository"];
    assert_eq!(repository["signed"], true, "{repository}");
    assert_eq!(repository["rpm_packages"], 2, "{repository}");
    assert_eq!(repository["deb_packages"], 2, "{repository}");
    let nodes: Vec<&str> = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for n in &nodes {
        assert!(n.contains("jool-kernel-only") && n.contains(URL), "{n}");
    }

    // rpm itself checks the header signatures against the imported key.
    let public = root.join("var/lib/kmodkit/repo-key.pub.asc");
    assert!(public.is_file(), "signing-key create wrote no public key");
    let db = tmp.path().join("rpmdb");
    ok(Command::new("rpm")
        .arg("--dbpath")
        .arg(&db)
        .arg("--import")
        .arg(&public));
    for p in packages.iter().filter(|p| p["format"] == "rpm") {
        let file = p["file"].as_str().unwrap();
        let k = ok(Command::new("rpm")
            .arg("--dbpath")
            .arg(&db)
            .args(["-K", file]));
        assert!(k.contains("signatures OK"), "rpm -K {file}: {k}");
    }
    // gpgv checks the repository signatures, with the key the repository
    // publishes (binary keyring, as gpgv reads it).
    let keyring = tmp.path().join("keyring.gpg");
    let key =
        kmodkit_package::pgp::RepoKey::load(&root.join("var/lib/kmodkit/repo-key.asc")).unwrap();
    std::fs::write(&keyring, key.public_binary().unwrap()).unwrap();
    ok(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(repo.join("repodata/repomd.xml.asc"))
        .arg(repo.join("repodata/repomd.xml")));
    ok(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(repo.join("dists/stable/InRelease")));
    ok(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(repo.join("dists/stable/Release.gpg"))
        .arg(repo.join("dists/stable/Release")));
    // A changed byte in the Release file is refused.
    let release = std::fs::read(repo.join("dists/stable/Release")).unwrap();
    let mut bad = release.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x20;
    let tampered = tmp.path().join("Release");
    std::fs::write(&tampered, &bad).unwrap();
    let out = run(Command::new("gpgv")
        .arg("--keyring")
        .arg(&keyring)
        .arg(repo.join("dists/stable/Release.gpg"))
        .arg(&tampered));
    assert!(!out.status.success(), "gpgv accepts a tampered Release");

    // The same inputs in another root and repository: the same bytes (the
    // key is the same file; the OpenPGP signatures are deterministic for
    // Ed25519 and their time is SOURCE_DATE_EPOCH).
    let root2 = tmp.path().join("root2");
    std::fs::create_dir_all(root2.join("var/lib/kmodkit")).unwrap();
    std::fs::copy(
        root.join("var/lib/kmodkit/repo-key.asc"),
        root2.join("var/lib/kmodkit/repo-key.asc"),
    )
    .unwrap();
    let repo2 = tmp.path().join("repo2");
    package(&root2, &repo2);
    // (The .kmodkit-*-cache.json files are each repository's own state,
    // keyed by inode and ctime: not output.)
    let output = |t: BTreeMap<PathBuf, Vec<u8>>| -> BTreeMap<PathBuf, Vec<u8>> {
        t.into_iter()
            .filter(|(p, _)| !p.to_string_lossy().starts_with(".kmodkit-"))
            .collect()
    };
    let (a, b) = (output(tree(&repo)), output(tree(&repo2)));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the two repositories hold different files"
    );
    for (path, bytes) in &a {
        assert!(
            &b[path] == bytes,
            "{} differs between two runs",
            path.display()
        );
    }

    // `repo` again: nothing read again, nothing changed.
    let out = ok(kmodkit()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args(["repo", "--json", "--url", URL, "--root"])
        .arg(&root)
        .arg(&repo));
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["repository"]["read"], 0, "{r}");
    assert_eq!(r["repository"]["reused"], 4, "{r}");
    assert_eq!(
        output(tree(&repo)),
        a,
        "a rerun of repo changed the repository"
    );
}

#[test]
fn bad_input_names_the_file_and_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let files = jool_files();
    // Modules built for 53 are not packaged for another kernel.
    let out = run(kmodkit()
        .args([
            "package",
            "--no-gpg-sign",
            "--kernel",
            "6.1.0-55-amd64",
            "--symvers",
        ])
        .arg(symvers())
        .args(["--name", "jool", "--pkg-version", "4.1.9", "--repo"])
        .arg(&repo)
        .args(&files));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&*files[0].to_string_lossy()) && err.contains(KERNEL),
        "no file or vermagic named: {err}"
    );
    assert!(
        !repo.join("Packages").exists(),
        "a refused run wrote packages"
    );

    // A key file that is not there.
    let missing = tmp.path().join("no-such-key.asc");
    let out = run(kmodkit()
        .args(["package", "--kernel", KERNEL, "--gpg-key"])
        .arg(&missing)
        .arg("--symvers")
        .arg(symvers())
        .args(["--name", "jool", "--pkg-version", "4.1.9", "--repo"])
        .arg(&repo)
        .args(&files));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");

    // Module files without a name to package them under: a usage error.
    let out = run(kmodkit()
        .args(["package", "--no-gpg-sign", "--kernel", KERNEL, "--repo"])
        .arg(&repo)
        .args(&files));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--name"));

    // repo on a directory that does not exist.
    let out = run(kmodkit()
        .args(["repo", "--no-gpg-sign"])
        .arg(tmp.path().join("nope")));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}
