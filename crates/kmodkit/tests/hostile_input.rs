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
    std::fs::write(&hostile, kmodkit_fixtures::hostile::wrapping_name_table()).unwrap();

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
