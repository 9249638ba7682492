//! Real modules for the signing and compression tests: the out-of-tree
//! modules `scripts/oot-fixtures` built (`<cache>/oot/manifest`) and a few
//! in-tree ones of every fixture kernel (6.1 plain `.ko`, 6.12 `.ko.xz`).
//! Out-of-tree builds are `strip -g`ed first, as Makefile.modinst and DKMS
//! do before signing. In-tree modules come signed by Debian: the tests
//! take the ELF image before that signature.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// One real module, unsigned and uncompressed.
pub struct RealModule {
    pub label: String,
    pub elf: Vec<u8>,
}

/// In-tree modules per kernel: a small and a large NIC driver (xz -6 of
/// anything much larger makes the tests slow on a shared machine).
pub const IN_TREE: &[&str] = &[
    "kernel/drivers/net/ethernet/intel/e100",
    "kernel/drivers/net/ethernet/intel/e1000e/e1000e",
];

pub fn real_modules() -> Vec<RealModule> {
    let mut out = Vec::new();
    let manifest = kmodkit_fixtures::cache_dir().join("oot/manifest");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| {
        panic!(
            "out-of-tree fixtures missing ({}: {e}); run scripts/oot-fixtures",
            manifest.display()
        )
    });
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 3 {
            out.push(load_stripped(
                &format!("{} {}", f[0], f[1]),
                Path::new(f[2]),
            ));
        }
    }
    for (kernel, _series) in kmodkit_fixtures::kernels() {
        let dir = kmodkit_fixtures::fixture_root()
            .join("lib/modules")
            .join(&kernel);
        for m in IN_TREE {
            let path = ["ko", "ko.xz", "ko.zst", "ko.gz"]
                .iter()
                .map(|s| dir.join(format!("{m}.{s}")))
                .find(|p| p.exists())
                .unwrap_or_else(|| panic!("{kernel}: no {m}.ko* in the fixture root"));
            out.push(load(&format!("{kernel} {m}"), &path));
        }
    }
    assert!(out.len() >= 10, "too few real modules found");
    out
}

/// An out-of-tree build as `make modules_install` and DKMS sign it:
/// after `strip -g` (the step before signing in Makefile.modinst).
fn load_stripped(label: &str, path: &Path) -> RealModule {
    kmodkit_fixtures::require_tool("strip", "binutils");
    let tmp = tempfile::tempdir().unwrap();
    let stripped = tmp.path().join("m.ko");
    run(Command::new("strip")
        .arg("-g")
        .arg("-o")
        .arg(&stripped)
        .arg(path));
    load(label, &stripped)
}

fn load(label: &str, path: &Path) -> RealModule {
    let file = kmodkit_module::ModuleFile::open(path).unwrap();
    let mut elf = file.data;
    if let Some(start) = kmodkit_module::signature::signature_start(&elf) {
        elf.truncate(start);
    }
    assert!(elf.starts_with(b"\x7fELF"), "{label}: not ELF");
    RealModule {
        label: label.to_string(),
        elf,
    }
}

/// Runs a command, asserting success; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `modinfo -F FIELD FILE` of kmod, trimmed, continuation lines joined.
pub fn modinfo_field(file: &Path, field: &str) -> String {
    let out = run(Command::new("modinfo").arg("-F").arg(field).arg(file));
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("")
}
