//! Hostile module files through the commands that read whole trees
//! (issue 13): an error exit that names the file, never a panic (exit 101).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{kmodkit, Fixtures};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Issue 13, failure 1: 192 bytes of ELF64 LE (`e_shoff` 64,
/// `e_shentsize` 64, `e_shnum` 2, `e_shstrndx` 1) whose section-name
/// table has offset 100 and size 2^64 - 50: `offset + size` wraps to 50.
fn wrapping_name_table() -> Vec<u8> {
    let mut bytes = vec![0u8; 192];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2; // ELFCLASS64
    bytes[5] = 1; // ELFDATA2LSB
    bytes[6] = 1; // EV_CURRENT
    bytes[40..48].copy_from_slice(&64u64.to_le_bytes()); // e_shoff
    bytes[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    bytes[60..62].copy_from_slice(&2u16.to_le_bytes()); // e_shnum
    bytes[62..64].copy_from_slice(&1u16.to_le_bytes()); // e_shstrndx
    let shdr1 = 64 + 64;
    bytes[shdr1 + 24..shdr1 + 32].copy_from_slice(&100u64.to_le_bytes()); // sh_offset
    bytes[shdr1 + 32..shdr1 + 40].copy_from_slice(&(u64::MAX - 49).to_le_bytes()); // sh_size
    bytes
}

/// An error exit, no panic, the file named, and what is wrong with it.
fn assert_error_naming(what: &str, o: &Output, file: &Path, expected_code: i32) {
    let msg = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(expected_code), "{what}: {msg}");
    assert!(!msg.contains("panicked"), "{what}: {msg}");
    assert!(
        msg.contains(&file.display().to_string()),
        "{what} does not name {}: {msg}",
        file.display()
    );
    assert!(
        msg.contains(".shstrtab") && msg.contains("runs past the end"),
        "{what} does not say what is wrong: {msg}"
    );
}

#[test]
fn depmod_and_abi_check_refuse_a_module_whose_name_table_wraps() {
    let fx = Fixtures::load();
    let k = fx
        .kernels
        .iter()
        .find(|k| k.series == "6.1")
        .expect("a 6.1 kernel in the fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let kernel_dir = root.join("lib/modules").join(&k.release).join("kernel");
    std::fs::create_dir_all(&kernel_dir).unwrap();
    let hostile = kernel_dir.join("hostile.ko");
    std::fs::write(&hostile, wrapping_name_table()).unwrap();

    let mut depmod = kmodkit();
    depmod.arg("depmod").arg("-b").arg(&root).arg(&k.release);
    assert_error_naming("depmod", &run(&mut depmod), &hostile, 1);
    assert!(
        !root
            .join("lib/modules")
            .join(&k.release)
            .join("modules.dep")
            .exists(),
        "depmod wrote an index for a tree it could not read"
    );

    // abi check against the real kernel: the module is no verdict.
    let mut abi = kmodkit();
    abi.args(["abi", "check", "--kernel", &k.release, "--root"])
        .arg(&fx.root)
        .arg(&hostile);
    assert_error_naming("abi check", &run(&mut abi), &hostile, 2);
}
