//! dnf itself reads the signed repository (`gpgcheck=1 repo_gpgcheck=1`
//! through a `.repo` file from `repo_file`), refuses a changed repomd.xml
//! and a changed package, and makes the ABI decision of issue 15: with a
//! kernel package that provides `kernel(SYM) = 0xCRC` for its
//! Module.symvers (kernel-rpm-macros' find-provides.ksyms), `dnf install
//! jool-kernel-only` installs the modules and runs depmod for the kernel
//! they were built for, and refuses on a kernel whose CRCs differ, naming
//! the symbol.

#[path = "yum_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kmodkit_package::pgp::RepoKey;
use kmodkit_package::yum::{repo_file, write_repository, YumOptions};
use support::*;

const OTHER_KERNEL: &str = "6.1.0-55-amd64";

struct Dnf {
    reposdir: PathBuf,
    cachedir: PathBuf,
}

impl Dnf {
    fn new(tmp: &Path, repo: &Path, key_asc: &Path) -> Dnf {
        let reposdir = tmp.join("repos.d");
        std::fs::create_dir_all(&reposdir).unwrap();
        std::fs::write(
            reposdir.join("kmodkit.repo"),
            repo_file(
                "kmodkit",
                "kmodkit test",
                &format!("file://{}", repo.display()),
                Some(&format!("file://{}", key_asc.display())),
            ),
        )
        .unwrap();
        Dnf {
            reposdir,
            cachedir: tmp.join("dnf-cache"),
        }
    }

    fn command(&self, root: &Path) -> Command {
        let mut c = Command::new("dnf");
        c.arg("-y")
            .arg("--installroot")
            .arg(root)
            .args([
                "--releasever",
                "1",
                "--disablerepo=*",
                "--enablerepo=kmodkit",
            ])
            .arg(format!("--setopt=reposdir={}", self.reposdir.display()))
            .arg(format!("--setopt=cachedir={}", self.cachedir.display()))
            // A repository that fails verification is an error, not skipped.
            .args([
                "--setopt=install_weak_deps=False",
                "--setopt=tsflags=nodocs",
                "--setopt=skip_if_unavailable=False",
            ]);
        c
    }
}

fn combined(out: &std::process::Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn write_key(tmp: &Path, key: &RepoKey) -> PathBuf {
    let asc = tmp.join("key.asc");
    std::fs::write(&asc, key.public_armored().unwrap()).unwrap();
    asc
}

/// A package with one file and no dependencies, to tamper with.
fn plain_package(key: &RepoKey) -> Vec<u8> {
    let mut b = rpm::PackageBuilder::new("tamper-me", "1.0", "MIT", "noarch", "a plain package");
    b.using_config(rpm::BuildConfig::v4().source_date(TIME as u32));
    b.release("1");
    b.with_file_contents(
        vec![b'x'; 4096],
        rpm::FileOptions::new("/usr/share/tamper-me/data").permissions(0o644),
    )
    .unwrap();
    let pkg = b.build_and_sign(key.rpm_signer().unwrap()).unwrap();
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).unwrap();
    bytes
}

#[test]
fn dnf_reads_the_signed_repository_and_refuses_tampering() {
    kmodkit_fixtures::require_tool("dnf", "dnf");
    kmodkit_fixtures::require_tool("rpm", "rpm");
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let asc = write_key(tmp.path(), &key);
    let repo = tmp.path().join("repo");
    let (_, jool) = jool_packages(Some(&key));
    for p in &jool {
        put(&repo, &p.file_name, &p.bytes);
    }
    put(&repo, "synthetic-001.rpm", &synthetic(1, Some(&key)));
    put(&repo, "tamper-me-1.0-1.noarch.rpm", &plain_package(&key));
    let opts = YumOptions {
        time: TIME,
        key: Some(&key),
    };
    write_repository(&repo, &opts).unwrap();
    let dnf = Dnf::new(tmp.path(), &repo, &asc);
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();

    run(dnf.command(&root).arg("makecache"));
    let listed = run(dnf.command(&root).args([
        "repoquery",
        "-q",
        "--available",
        "--qf",
        "%{name}-%{epoch}:%{version}-%{release}.%{arch}",
    ]));
    let mut listed: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
    listed.sort();
    let mut expected: Vec<String> = [
        "kmod-jool-0:4.1.9-1.x86_64",
        "jool-kernel-only-0:4.1.9-1.noarch",
        "synthetic-001-1:1.1-2.el9.x86_64",
        "tamper-me-0:1.0-1.noarch",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    expected.sort();
    assert_eq!(listed, expected, "dnf repoquery");
    // What dnf read about dependencies is what rpm says of the file.
    let requires = run(dnf
        .command(&root)
        .args(["repoquery", "-q", "--requires", "synthetic-001"]));
    let rpm_requires = run(Command::new("rpm")
        .args(["-qp", "--requires", "--nosignature"])
        .arg(repo.join("synthetic-001.rpm")));
    for want in ["glibc >= 2:2.34-1", "oldlib < 3.0", "plain"] {
        assert!(rpm_requires.contains(want), "{rpm_requires}");
        assert!(requires.contains(want), "dnf lacks {want}:\n{requires}");
    }

    // One byte of repomd.xml changed (still valid XML): refused.
    let repomd = repo.join("repodata/repomd.xml");
    let good = std::fs::read(&repomd).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let bad = text.replacen(
        &format!("<revision>{TIME}"),
        &format!("<revision>{}", TIME + 1),
        1,
    );
    assert_ne!(bad, text);
    std::fs::write(&repomd, &bad).unwrap();
    let out = output(dnf.command(&root).args(["--refresh", "makecache"]));
    let said = combined(&out);
    eprintln!("dnf on a changed repomd.xml: {}", said.trim());
    assert!(
        !out.status.success(),
        "dnf accepted a changed repomd.xml:\n{said}"
    );
    let lower = said.to_lowercase();
    assert!(
        lower.contains("gpg") || lower.contains("signature"),
        "{said}"
    );
    std::fs::write(&repomd, &good).unwrap();

    // A package changed after signing, metadata rewritten to match it:
    // only the package signature can tell, and dnf refuses to install.
    let pkg = repo.join("tamper-me-1.0-1.noarch.rpm");
    let mut bytes = std::fs::read(&pkg).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    put(&repo, "tamper-me-1.0-1.noarch.rpm", &bytes);
    write_repository(&repo, &opts).unwrap();
    run(Command::new("rpm")
        .arg("--root")
        .arg(&root)
        .arg("--import")
        .arg(&asc));
    let out = output(
        dnf.command(&root)
            .args(["--refresh", "install", "tamper-me"]),
    );
    let said = combined(&out);
    eprintln!("dnf install of a changed package: {}", said.trim());
    assert!(
        !out.status.success(),
        "dnf installed a changed package:\n{said}"
    );
    let lower = said.to_lowercase();
    assert!(
        lower.contains("digest")
            || lower.contains("signature")
            || lower.contains("gpg")
            || lower.contains("checksum"),
        "{said}"
    );
    assert!(!root.join("usr/share/tamper-me/data").exists());
}

/// `SYM -> 0xCRC` (`%08x`) from a kernel's Module.symvers.
fn symvers(release: &str) -> BTreeMap<String, String> {
    let path = kmodkit_fixtures::kbuild_environment(release).join("Module.symvers");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", path.display()))
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let crc = u64::from_str_radix(f.next()?.trim_start_matches("0x"), 16).ok()?;
            Some((f.next()?.to_string(), format!("0x{crc:08x}")))
        })
        .collect()
}

/// A kernel package as the distribution's: `kernel-core`, version and
/// release from the kernel release, `kernel(SYM) = 0xCRC` for every
/// export (find-provides.ksyms), `kernel-uname-r`.
fn kernel_package(release: &str) -> (String, Vec<u8>) {
    let (version, rest) = release.split_once('-').unwrap();
    let rel = rest.replace('-', ".");
    let mut b = rpm::PackageBuilder::new(
        "kernel-core",
        version,
        "GPL-2.0-only",
        "x86_64",
        "fake kernel",
    );
    b.using_config(rpm::BuildConfig::v4().source_date(TIME as u32));
    b.release(&rel);
    b.provides(rpm::Dependency::eq("kernel-uname-r", release));
    for (sym, crc) in symvers(release) {
        b.provides(rpm::Dependency::eq(format!("kernel({sym})"), crc));
    }
    let pkg = b.build().unwrap();
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).unwrap();
    (format!("kernel-core-{version}-{rel}.x86_64.rpm"), bytes)
}

/// What an installroot needs so kmod's scriptlets run: `/bin/sh`
/// (busybox), `/sbin/depmod` (the host's kmod with its libraries), the
/// kernel's module directory with modules.order and modules.builtin, and
/// a package that provides `/bin/sh` to the solver.
fn prepare_root(root: &Path, release: &str, base_rpm: &Path, kernel_rpm: &Path, asc: &Path) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("sbin")).unwrap();
    std::fs::create_dir_all(root.join("dev")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/sh")).unwrap();
    let kmod = "/usr/bin/kmod";
    let ldd = run(Command::new("ldd").arg(kmod));
    let mut files = vec![kmod.to_string()];
    for l in ldd.lines() {
        if let Some(p) = l.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(p.to_string());
        }
    }
    for f in files {
        let dest = root.join(f.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    std::os::unix::fs::symlink("/usr/bin/kmod", root.join("sbin/depmod")).unwrap();
    let src = kmodkit_fixtures::fixture_root()
        .join("lib/modules")
        .join(KERNEL);
    let dir = root.join("lib/modules").join(release);
    std::fs::create_dir_all(dir.join("kernel")).unwrap();
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    run(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .arg("--import")
        .arg(asc));
    run(Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["-i", "--nodeps", "--noscripts", "--nosignature"])
        .arg(base_rpm)
        .arg(kernel_rpm));
}

fn base_package() -> Vec<u8> {
    let mut b =
        rpm::PackageBuilder::new("node-base", "1", "MIT", "noarch", "what the test root has");
    b.using_config(rpm::BuildConfig::v4().source_date(TIME as u32));
    b.provides(rpm::Dependency::any("/bin/sh"));
    b.provides(rpm::Dependency::any("/sbin/depmod"));
    let mut bytes = Vec::new();
    b.build().unwrap().write(&mut bytes).unwrap();
    bytes
}

#[test]
fn dnf_installs_jool_on_its_kernel_and_refuses_a_kernel_with_other_crcs() {
    kmodkit_fixtures::require_tool("dnf", "dnf");
    kmodkit_fixtures::require_tool("rpm", "rpm");
    kmodkit_fixtures::require_tool("busybox", "busybox-static");
    kmodkit_fixtures::require_tool("ldd", "libc-bin");
    let tmp = tempfile::tempdir().unwrap();
    let key = key();
    let asc = write_key(tmp.path(), &key);
    let repo = tmp.path().join("repo");
    let (set, jool) = jool_packages(Some(&key));
    for p in &jool {
        put(&repo, &p.file_name, &p.bytes);
    }
    write_repository(
        &repo,
        &YumOptions {
            time: TIME,
            key: Some(&key),
        },
    )
    .unwrap();
    let dnf = Dnf::new(tmp.path(), &repo, &asc);

    // The symbols jool takes from the kernel whose CRC differs in the other one.
    let (ours, other) = (symvers(KERNEL), symvers(OTHER_KERNEL));
    let imported: Vec<String> = set
        .requires(&kernel_abi(KERNEL))
        .iter()
        .map(|d| d.rpm_name(None))
        .filter_map(|n| {
            n.strip_prefix("kernel(")
                .and_then(|s| s.strip_suffix(')'))
                .map(str::to_string)
        })
        .collect();
    assert!(!imported.is_empty());
    let differing: Vec<&String> = imported
        .iter()
        .filter(|s| ours.get(*s) != other.get(*s))
        .collect();
    assert!(
        !differing.is_empty(),
        "{OTHER_KERNEL} exports every symbol jool imports with the same CRC: pick another kernel"
    );

    let pkgs = tmp.path().join("kernels");
    let base = put(&pkgs, "node-base-1-1.noarch.rpm", &base_package());
    for (release, root) in [(KERNEL, "root-match"), (OTHER_KERNEL, "root-other")] {
        let (name, bytes) = kernel_package(release);
        let kernel_rpm = put(&pkgs, &name, &bytes);
        prepare_root(&tmp.path().join(root), release, &base, &kernel_rpm, &asc);
    }

    // The kernel the modules were built for: installed, depmod ran.
    let root = tmp.path().join("root-match");
    let out = output(dnf.command(&root).args(["install", "jool-kernel-only"]));
    let said = combined(&out);
    assert!(out.status.success(), "dnf install on {KERNEL}:\n{said}");
    let moddir = root.join("lib/modules").join(KERNEL);
    for f in &set.files {
        assert!(
            moddir.join("extra/jool").join(&f.file_name).is_file(),
            "{} not installed",
            f.file_name
        );
    }
    let dep = std::fs::read_to_string(moddir.join("modules.dep"))
        .unwrap_or_else(|e| panic!("no modules.dep: the %post depmod did not run ({e})\n{said}"));
    for f in &set.files {
        let line = format!("extra/jool/{}:", f.file_name);
        assert!(
            dep.lines().any(|l| l.starts_with(&line)),
            "{line} not in modules.dep:\n{dep}"
        );
    }
    let q = run(Command::new("rpm").arg("--root").arg(&root).args([
        "-q",
        "kmod-jool",
        "jool-kernel-only",
    ]));
    assert!(
        q.contains("kmod-jool-4.1.9-1.x86_64") && q.contains("jool-kernel-only-4.1.9-1.noarch"),
        "{q}"
    );

    // The other kernel: refused, naming a symbol whose CRC differs.
    let root = tmp.path().join("root-other");
    let out = output(dnf.command(&root).args(["install", "jool-kernel-only"]));
    let said = combined(&out);
    eprintln!("dnf install on {OTHER_KERNEL}: {}", said.trim());
    assert!(
        !out.status.success(),
        "dnf installed jool on {OTHER_KERNEL}:\n{said}"
    );
    assert!(
        differing
            .iter()
            .any(|s| said.contains(&format!("kernel({s})"))),
        "dnf's refusal names none of {differing:?}:\n{said}"
    );
    assert!(!root.join("lib/modules").join(KERNEL).join("extra").exists());
}
