//! What the yum and dnf tests share: jool's kmod packages from the
//! fixtures, synthetic packages made with the rpm crate, a test key.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kmodkit_package::pgp::{KeyAlgorithm, RepoKey};
use kmodkit_package::rpm::{kernel_only_package, kmod_package, RpmFile, RpmOptions};
use kmodkit_package::{KernelAbi, ModuleSet};

pub const KERNEL: &str = "6.1.0-53-amd64";
pub const TIME: u64 = 1_700_000_000;

pub fn key() -> RepoKey {
    RepoKey::generate(
        "kmodkit test <test@example.invalid>",
        TIME,
        KeyAlgorithm::Ed25519,
    )
    .unwrap()
}

pub fn jool_files() -> Vec<PathBuf> {
    let dir = kmodkit_fixtures::oot_dir().join(KERNEL).join("jool-dkms");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ko"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "jool-dkms built fewer than 2 modules");
    files
}

pub fn kernel_abi(release: &str) -> KernelAbi {
    let symvers = kmodkit_fixtures::kbuild_environment(release).join("Module.symvers");
    let table = kmodkit_abi::symvers::SymbolTable::load(&symvers)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", symvers.display()));
    KernelAbi::from_table(release, &table)
}

/// `kmod-jool` for [`KERNEL`] and `jool-kernel-only`, signed with `key`.
pub fn jool_packages(key: Option<&RepoKey>) -> (ModuleSet, Vec<RpmFile>) {
    let set = ModuleSet::from_files("jool", "4.1.9", "1", KERNEL, &jool_files()).unwrap();
    let opts = RpmOptions {
        time: TIME,
        key,
        packager: Some("kmodkit test".into()),
        vendor: Some("kmodkit".into()),
        url: Some("https://example.invalid/jool".into()),
    };
    let kmod = kmod_package(&set, &kernel_abi(KERNEL), &opts).unwrap();
    let meta =
        kernel_only_package("jool", "4.1.9", "1", std::slice::from_ref(&kmod), &opts).unwrap();
    (set, vec![kmod, meta])
}

fn config() -> rpm::BuildConfig {
    rpm::BuildConfig::v4()
        .compression(rpm::CompressionWithLevel::Gzip(1))
        .source_date(TIME as u32)
}

/// A synthetic package with what the kmod packages lack: an epoch, every
/// dependency kind with each comparison, weak dependencies, directories,
/// `/usr/bin` and `/etc` files (primary files), a ghost, a `%pre`
/// requiring `/bin/sh`, changelogs with equal times.
pub fn synthetic(index: usize, key: Option<&RepoKey>) -> Vec<u8> {
    let name = format!("synthetic-{index:03}");
    let mut b = rpm::PackageBuilder::new(
        &name,
        &format!("1.{index}"),
        "MIT",
        "x86_64",
        "A synthetic package <&> \"quoted\"",
    );
    b.using_config(config());
    b.release(format!("{}.el9", index % 3 + 1));
    if index % 2 == 1 {
        b.epoch(index as u32);
    }
    b.description(format!("Line one of {name}\nline two: a < b & c > d\n"));
    b.packager("Jörg Packager <j@example.invalid>");
    b.vendor("kmodkit tests");
    b.url("https://example.invalid/synthetic");
    b.group("Applications/System");
    b.build_host("builder.example.invalid");
    use rpm::Dependency as D;
    b.requires(D::greater_eq("glibc", "2:2.34-1"));
    b.requires(D::less("oldlib", "3.0"));
    b.requires(D::greater("newlib", "1.0-1"));
    b.requires(D::less_eq("capped", "4"));
    b.requires(D::eq("exact", "1:1.0-1"));
    b.requires(D::any("plain"));
    b.requires(D::any("/usr/bin/python3"));
    b.requires(D::any("libc.so.6()(64bit)"));
    b.requires(D::any("libc.so.6(GLIBC_2.14)(64bit)"));
    b.requires(D::any("libc.so.6(GLIBC_2.34)(64bit)"));
    b.requires(D::any("libc.so.6(GLIBC_2.3)(64bit)"));
    // Satisfied by the package itself: createrepo_c leaves it out.
    b.requires(D::eq("synthetic-cap", "5"));
    b.requires(D::any(format!("/usr/bin/{name}")));
    b.provides(D::eq("synthetic-cap", "5"));
    b.provides(D::any(format!("config({name})")));
    b.conflicts(D::greater("conflicting", "0:2.0"));
    b.conflicts(D::any("never-together"));
    b.obsoletes(D::less_eq("synthetic-old", "1.0-9"));
    b.obsoletes(D::less("older", "1"));
    b.recommends(D::any("recommended"));
    b.suggests(D::greater_eq("suggested", "1"));
    b.enhances(D::any("enhanced"));
    b.supplements(D::any("supplemented"));
    b.pre_install_script(rpm::Scriptlet::new("echo pre").prog(vec!["/bin/sh"]));
    b.post_uninstall_script(rpm::Scriptlet::new("echo postun").prog(vec!["/bin/sh"]));
    b.add_changelog_entry(
        "A Packager <a@example.invalid> - 1.0-1",
        "- first",
        1_690_000_000u32,
    );
    b.add_changelog_entry(
        "A Packager <a@example.invalid> - 1.0-2",
        "- second",
        1_690_000_000u32,
    );
    b.add_changelog_entry(
        "B Packager <b@example.invalid> - 1.0-3  ",
        "- third\n- with <markup> & more",
        1_695_000_000u32,
    );
    let file = |path: String| rpm::FileOptions::new(path).permissions(0o644);
    b.with_dir_entry(rpm::FileOptions::dir(format!("/usr/share/{name}")).permissions(0o755))
        .unwrap();
    b.with_dir_entry(rpm::FileOptions::dir(format!("/usr/share/{name}/sub")).permissions(0o755))
        .unwrap();
    b.with_file_contents(
        format!("data {index}\n"),
        file(format!("/usr/share/{name}/sub/data")),
    )
    .unwrap();
    b.with_file_contents(
        format!("#!/bin/sh\necho {index}\n"),
        rpm::FileOptions::new(format!("/usr/bin/{name}")).permissions(0o755),
    )
    .unwrap();
    b.with_file_contents("x=1\n", file(format!("/etc/{name}.conf")).config())
        .unwrap();
    b.with_file_contents("", file(format!("/opt/{name}/sbin/tool")))
        .unwrap();
    b.with_ghost(rpm::FileOptions::ghost(format!("/var/log/{name}.log")))
        .unwrap();
    let pkg = match key {
        Some(k) => b.build_and_sign(k.rpm_signer().unwrap()),
        None => b.build(),
    }
    .unwrap();
    let mut bytes = Vec::new();
    pkg.write(&mut bytes).unwrap();
    bytes
}

/// Writes `bytes` as `dir/name` with a fixed mtime (`<time file>` is the
/// file's mtime, for createrepo_c and for kmodkit).
pub fn put(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(TIME))
        .unwrap();
    path
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

pub fn run(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir/repodata`, name -> bytes.
pub fn repodata_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir.join("repodata"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}
