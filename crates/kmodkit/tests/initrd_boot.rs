//! The kernel is the final oracle: a fetched Debian kernel boots in qemu
//! (TCG) with initrds made by `kmodkit initrd create`, one per compression
//! the kernel accepts plus a two-segment image, and its /init (busybox)
//! prints a marker. Every qemu run is bounded by a timeout.

mod initrd_common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use initrd_common::*;

const QEMU_TIMEOUT: Duration = Duration::from_secs(90);

fn kernel(series: &str) -> std::path::PathBuf {
    let root = fixture_root();
    let list = std::fs::read_to_string(root.join("kernels.list"))
        .expect("kernels.list missing: run scripts/fixtures");
    let kver = list
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let k = f.next()?;
            (f.next()? == series).then(|| k.to_string())
        })
        .unwrap_or_else(|| panic!("no {series} kernel in kernels.list; rerun scripts/fixtures"));
    let path = root.join("boot").join(format!("vmlinuz-{kver}"));
    assert!(
        path.is_file(),
        "{} missing; rerun scripts/fixtures",
        path.display()
    );
    path
}

/// A busybox root whose /init prints `marker` (and the content of
/// /early-marker when there is one) and powers off.
fn busybox_root(dir: &Path, marker: &str) {
    require("busybox", "busybox-static");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox");
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("dev")).unwrap();
    std::fs::create_dir_all(dir.join("proc")).unwrap();
    std::fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    std::fs::write(
        dir.join("init"),
        format!(
            "#!/bin/sh\n\
             if [ -e /early-marker ]; then /bin/busybox echo \"early says $(/bin/busybox cat /early-marker)\"; fi\n\
             /bin/busybox echo \"{marker}\"\n\
             /bin/busybox poweroff -f\n"
        ),
    )
    .unwrap();
    sh(&format!("chmod 755 '{}'", dir.join("init").display()));
}

/// Boots and returns the serial console output.
fn boot(kernel: &Path, initrd: &Path) -> String {
    require("qemu-system-x86_64", "qemu-system-x86");
    require("timeout", "coreutils");
    let out = Command::new("timeout")
        .arg("--kill-after=5")
        .arg(QEMU_TIMEOUT.as_secs().to_string())
        .args([
            "qemu-system-x86_64",
            "-m",
            "1024",
            "-nographic",
            "-no-reboot",
            "-kernel",
        ])
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("cannot run qemu");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn boots_with(compression: &str, series: &str) {
    let scratch = Scratch::new(&format!("boot-{compression}"));
    let root = scratch.join("root");
    let marker = format!("KMODKIT-INIT-OK {compression}");
    busybox_root(&root, &marker);
    let img = scratch.join("initrd.img");
    run(kmodkit()
        .args(["initrd", "create"])
        .arg(&root)
        .arg("-o")
        .arg(&img)
        .args(["--compress", compression]));
    assert_eq!(segments(&img)[0].compression, compression);
    let console = boot(&kernel(series), &img);
    assert!(
        console.lines().any(|l| l.trim_end() == marker),
        "{compression}: /init's marker not seen; console tail:\n{}",
        tail(&console)
    );
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(25)..].join("\n")
}

#[test]
fn boots_gzip() {
    boots_with("gzip", "6.1");
}

#[test]
fn boots_bzip2() {
    boots_with("bzip2", "6.12");
}

#[test]
fn boots_lzma() {
    boots_with("lzma", "6.1");
}

#[test]
fn boots_xz() {
    boots_with("xz", "6.12");
}

#[test]
fn boots_lz4() {
    boots_with("lz4", "6.1");
}

#[test]
fn boots_zstd() {
    boots_with("zstd", "6.12");
}

#[test]
fn boots_two_segments() {
    let scratch = Scratch::new("boot-two");
    let root = scratch.join("root");
    let marker = "KMODKIT-INIT-OK two segments";
    busybox_root(&root, marker);
    let early = scratch.join("early");
    std::fs::create_dir_all(early.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        early.join("kernel/x86/microcode/AuthenticAMD.bin"),
        vec![0u8; 4096],
    )
    .unwrap();
    std::fs::write(early.join("early-marker"), "from-the-early-segment\n").unwrap();
    let img = scratch.join("initrd.img");
    run(kmodkit()
        .args(["initrd", "create"])
        .arg(&root)
        .arg("--early")
        .arg(&early)
        .arg("-o")
        .arg(&img)
        .args(["--compress", "zstd"]));
    let segs = segments(&img);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].compression, "none");
    let console = boot(&kernel("6.12"), &img);
    assert!(
        console
            .lines()
            .any(|l| l.trim_end() == "early says from-the-early-segment")
            && console.lines().any(|l| l.trim_end() == marker),
        "two segments: markers not seen; console tail:\n{}",
        tail(&console)
    );
}
