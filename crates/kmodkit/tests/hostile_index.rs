//! `modinfo` on a root whose `modules.alias.bin` loops (issue 13,
//! failure 3): an error that names the file, not a stack overflow.

use std::process::Command;

/// An index whose root's '*' child is the root itself (kmod index format:
/// big-endian header, then the node at offset 12).
fn looping_alias_index() -> Vec<u8> {
    const CHILDS: u32 = 0x2000_0000;
    const VALUES: u32 = 0x4000_0000;
    let root = 12 | CHILDS | VALUES;
    let mut b = Vec::new();
    b.extend_from_slice(&0xB007_F457u32.to_be_bytes());
    b.extend_from_slice(&0x0002_0001u32.to_be_bytes());
    b.extend_from_slice(&root.to_be_bytes());
    b.extend_from_slice(b"**");
    b.extend_from_slice(&root.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(b"loop\0");
    b
}

#[test]
fn modinfo_on_a_looping_alias_index_fails_naming_the_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("lib/modules/6.1.0-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let index = dir.join("modules.alias.bin");
    std::fs::write(&index, looping_alias_index()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kmodkit"))
        .args(["modinfo", "-b"])
        .arg(root.path())
        .args([
            "-k",
            "6.1.0-hostile",
            "pci:v00008086d00001234sv0sd0bc02sc00i00",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(&index.display().to_string()) && stderr.contains("offset 0xc"),
        "the error must name the index and the node: {stderr}"
    );
}
