//! A reader that stops early (`kmodkit initrd ls IMG | head -1`) is a
//! normal end of output: exit 0, nothing on stderr (issue 13, failure 4).
//! Each command below prints far more than a pipe holds (64 KiB), so it is
//! still writing when the reader closes its end.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn first_line_then_close(mut cmd: Command) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "{cmd:?} printed nothing");
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.is_empty(),
        "{cmd:?} after the reader closed: {}, stderr: {stderr}",
        out.status
    );
}

fn kmodkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmodkit"))
}

/// The first fetched kernel (release).
fn kernel() -> String {
    kmodkit_fixtures::kernels()
        .into_iter()
        .next()
        .expect("kernels.list lists a kernel")
        .0
}

#[test]
fn initrd_ls_into_a_closed_pipe_exits_zero() {
    let image: PathBuf = kmodkit_fixtures::cache_dir().join("initrd/mkinitramfs-gzip.img");
    assert!(
        image.is_file(),
        "{} missing: run scripts/initrd-fixtures",
        image.display()
    );
    let mut cmd = kmodkit();
    cmd.args(["initrd", "ls"]).arg(&image);
    first_line_then_close(cmd);
}

#[test]
fn modinfo_into_a_closed_pipe_exits_zero() {
    let root = kmodkit_fixtures::fixture_root();
    let kver = kernel();
    let dep =
        std::fs::read_to_string(root.join("lib/modules").join(&kver).join("modules.dep")).unwrap();
    // 500 modules' worth of modinfo output: well over 64 KiB.
    let names: Vec<String> = dep
        .lines()
        .take(500)
        .filter_map(|l| l.split(':').next())
        .filter_map(|p| p.rsplit('/').next())
        .filter_map(|f| f.split('.').next())
        .map(str::to_string)
        .collect();
    assert_eq!(names.len(), 500);
    let mut cmd = kmodkit();
    cmd.arg("modinfo")
        .arg("-b")
        .arg(&root)
        .args(["-k", &kver])
        .args(&names);
    first_line_then_close(cmd);
}

#[test]
fn depmod_dry_run_into_a_closed_pipe_exits_zero() {
    let root = kmodkit_fixtures::fixture_root();
    let mut cmd = kmodkit();
    cmd.args(["depmod", "-n", "-b"]).arg(&root).arg(kernel());
    first_line_then_close(cmd);
}

/// Diagnostics into a closed stderr (`kmodkit modinfo … 2>&1 | head -1`)
/// do not panic: the command ends with its own exit status (modinfo: 1
/// for names not found), not Rust's 101.
#[test]
fn diagnostics_into_a_closed_stderr_do_not_panic() {
    let root = kmodkit_fixtures::fixture_root();
    let names: Vec<String> = (0..5000).map(|i| format!("no_such_module_{i}")).collect();
    let mut child = kmodkit()
        .arg("modinfo")
        .arg("-b")
        .arg(&root)
        .args(["-k", &kernel()])
        .args(&names)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("no_such_module_"), "first line: {line}");
    drop(stderr);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(1),
        "modinfo after stderr closed: {status}"
    );
}
