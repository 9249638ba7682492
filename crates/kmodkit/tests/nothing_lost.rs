//! Issue 12 §2, "nothing lost, nothing left behind", on the real images of
//! scripts/initrd-fixtures: every command that replaces or writes an image
//! (`initrd repack`, `create`, `add-drivers --append/--rebuild`), stopped
//! by SIGINT or SIGTERM at each step, by a full filesystem, or run twice,
//! leaves the original byte for byte (sha256sum is the oracle), keeps the
//! pristine backup, and leaves no stray file.

mod initrd_common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use initrd_common::{fixture_root, image, kmodkit, run, segments, RealImage, Scratch};

const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// sha256sum's digest of a file.
fn sha(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Every name in `dir` (dot files too) with its sha256.
fn listing(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), sha(&e.path()))
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn copy_image(img: &RealImage, dir: &Path) -> PathBuf {
    let path = dir.join("initrd.img");
    std::fs::copy(&img.path, &path).unwrap();
    path
}

/// The module tree `create` packs: 77 MB of real modules, so the output
/// takes many writes.
fn create_input() -> PathBuf {
    fixture_root().join("lib/modules/6.1.0-53-amd64/kernel/drivers/net")
}

/// One writing command, run in `dir` on `initrd.img` there.
#[derive(Debug, Clone, Copy)]
enum Writer {
    RepackInPlace,
    RepackTo,
    Create,
    Append,
    Rebuild,
}

impl Writer {
    /// The command at the fastest compression level.
    fn command(self, dir: &Path, tmp: &Path) -> Command {
        self.command_at(dir, tmp, "1")
    }

    fn command_at(self, dir: &Path, tmp: &Path, level: &str) -> Command {
        let img = dir.join("initrd.img");
        let mut c = kmodkit();
        c.env("TMPDIR", tmp);
        match self {
            Writer::RepackInPlace => {
                c.args(["initrd", "repack", "-L", level]).arg(&img);
            }
            Writer::RepackTo => {
                c.args(["initrd", "repack", "-c", "zstd", "-L", level])
                    .arg(&img)
                    .arg("-o")
                    .arg(dir.join("out.img"));
            }
            Writer::Create => {
                c.args(["initrd", "create", "-L", level])
                    .arg(create_input())
                    .arg("-o")
                    .arg(dir.join("out.img"));
            }
            Writer::Append | Writer::Rebuild => {
                let mode = if matches!(self, Writer::Append) {
                    "--append"
                } else {
                    "--rebuild"
                };
                c.args(["initrd", "add-drivers", mode, "--level", level, "--root"])
                    .arg(fixture_root())
                    .arg(&img)
                    .arg("rdma_rxe");
            }
        }
        c
    }

    /// The steps a signal is sent at (fault points of kmodkit-commit and
    /// of add-drivers' writer).
    fn points(self) -> &'static [&'static str] {
        match self {
            Writer::RepackInPlace | Writer::Append | Writer::Rebuild => &[
                "commit-staged:1",
                "commit-write:2",
                "commit-synced:1",
                "commit-backup:1",
            ],
            Writer::RepackTo | Writer::Create => {
                &["commit-staged:1", "commit-write:2", "commit-synced:1"]
            }
        }
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A signal at each step of each writer: the process ends killed by that
/// signal (the cleanup re-raises it), and the directory holds exactly what
/// it held before, byte for byte; add-drivers' scratch tree is gone too.
#[test]
fn a_signal_at_any_step_of_any_writer_leaves_nothing_behind() {
    let img = image("initramfs-tools", "gzip");
    let mut runs = 0;
    for writer in [
        Writer::RepackInPlace,
        Writer::RepackTo,
        Writer::Create,
        Writer::Append,
        Writer::Rebuild,
    ] {
        let mut points: Vec<&str> = writer.points().to_vec();
        if matches!(writer, Writer::Append | Writer::Rebuild) {
            points.push("add-drivers-write:1");
        }
        for (i, point) in points.iter().enumerate() {
            let (sig, name) = if i % 2 == 0 {
                (SIGINT, "INT")
            } else {
                (SIGTERM, "TERM")
            };
            let dir = Scratch::new("signal");
            let tmp = Scratch::new("signal-tmp");
            copy_image(&img, dir.path());
            // An older output that a failed create/repack -o must not touch.
            std::fs::write(dir.join("out.img"), b"an older image").unwrap();
            let before = listing(dir.path());
            let out = output(
                writer
                    .command(dir.path(), tmp.path())
                    .env("KMODKIT_FAULT", format!("{point}:{name}")),
            );
            assert_eq!(
                out.status.signal(),
                Some(sig),
                "{writer:?} at {point}: not stopped by SIG{name} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                listing(dir.path()),
                before,
                "{writer:?} at {point} (SIG{name}): the directory changed"
            );
            assert_eq!(
                names(tmp.path()),
                Vec::<String>::new(),
                "{writer:?} at {point} (SIG{name}): scratch left in TMPDIR"
            );
            runs += 1;
        }
    }
    assert_eq!(runs, 3 * 4 + 2 * 3 + 2);
}

/// Waits until a `.NAME.kmodkit-PID.tmp` temporary shows up in `dir` and
/// a little more (the writer is mid-write), then sends `sig` from outside,
/// as a user's Ctrl-C or a service manager would.
fn signal_mid_write(mut cmd: Command, dir: &Path, sig: &str) -> std::process::ExitStatus {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let busy = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".kmodkit-"));
        if busy {
            std::thread::sleep(Duration::from_millis(300));
            assert!(
                child.try_wait().unwrap().is_none(),
                "{cmd:?} ended too soon to be interrupted mid-write"
            );
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{cmd:?} ended ({status}) before it wrote a temporary file");
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{cmd:?}: no temporary file after 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run(Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string()));
    child.wait().unwrap()
}

/// Real signals from outside, while the temporary file is being written:
/// the temporary goes, the originals stay (the old code left the
/// `.NAME.kmodkit-PID.tmp` behind).
#[test]
fn ctrl_c_and_sigterm_from_outside_mid_write_leave_nothing_behind() {
    let img = image("initramfs-tools", "gzip");
    // The slowest levels: each write takes seconds.
    let cases = [
        (Writer::RepackInPlace, "9", "INT"),
        (Writer::Create, "19", "TERM"),
        (Writer::Rebuild, "9", "INT"),
        (Writer::RepackTo, "19", "TERM"),
    ];
    for (writer, level, sig) in cases {
        let dir = Scratch::new("extsig");
        let tmp = Scratch::new("extsig-tmp");
        copy_image(&img, dir.path());
        let before = listing(dir.path());
        let cmd = writer.command_at(dir.path(), tmp.path(), level);
        let status = signal_mid_write(cmd, dir.path(), sig);
        let want = if sig == "INT" { SIGINT } else { SIGTERM };
        assert_eq!(status.signal(), Some(want), "{writer:?}: {status}");
        assert_eq!(
            listing(dir.path()),
            before,
            "{writer:?} stopped by SIG{sig} mid-write: the directory changed"
        );
        assert_eq!(
            names(tmp.path()),
            Vec::<String>::new(),
            "{writer:?}: scratch left"
        );
    }
}

/// A tmpfs of `size` bytes in a scratch directory, unmounted on drop.
struct Tmpfs(Scratch);

impl Tmpfs {
    fn new(size: u64) -> Tmpfs {
        let s = Scratch::new("tmpfs");
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size}"))
            .arg("kmodkit-test")
            .arg(s.path()));
        Tmpfs(s)
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// A filesystem with room for the image but not for a second copy: every
/// writer fails with ENOSPC, says nothing was changed, and leaves the
/// image alone and nothing beside it — on the first try and on a retry
/// (the old code left IMG.bak, then IMG.bak.PID.tmp).
#[test]
fn a_full_filesystem_leaves_only_the_original() {
    let img = image("initramfs-tools", "gzip");
    let len = std::fs::metadata(&img.path).unwrap().len();
    let fs = Tmpfs::new(len + len / 2);
    let path = copy_image(&img, fs.path());
    let original = sha(&path);
    let tmp = Scratch::new("full-tmp");
    let mut runs = 0;
    for writer in [Writer::Append, Writer::Rebuild, Writer::RepackInPlace] {
        for attempt in ["first", "retry"] {
            let out = output(&mut writer.command(fs.path(), tmp.path()));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{writer:?} {attempt}: {stderr}");
            assert_eq!(
                names(fs.path()),
                ["initrd.img"],
                "{writer:?} {attempt}: left behind ({stderr})"
            );
            assert_eq!(sha(&path), original, "{writer:?} {attempt}: image changed");
            assert!(
                stderr.contains("No space left on device")
                    && stderr.contains("nothing was changed"),
                "{writer:?} {attempt}: {stderr}"
            );
            runs += 1;
        }
    }
    assert_eq!(runs, 6);
}

/// Twice the same add-drivers: the second run says "nothing to do" and
/// writes nothing; IMG.bak stays the pristine original. A third run with
/// another driver keeps the once-modified image as IMG.bak.1 and still
/// does not touch IMG.bak.
#[test]
fn a_second_identical_run_writes_nothing_and_the_backup_stays_pristine() {
    for (generator, compression) in [("initramfs-tools", "gzip"), ("dracut", "zstd")] {
        let img = image(generator, compression);
        let dir = Scratch::new("twice");
        let path = copy_image(&img, dir.path());
        let pristine = sha(&path);
        let add = |drivers: &[&str]| -> String {
            let out = run(kmodkit()
                .args(["initrd", "add-drivers", "--root"])
                .arg(fixture_root())
                .arg(&path)
                .args(drivers));
            String::from_utf8_lossy(&out).into_owned()
        };
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let original_mode = mode(&img.path);
        add(&["rdma_rxe"]);
        let once = sha(&path);
        // dracut's images are 0600: the new one is never more readable.
        assert_eq!(mode(&path), original_mode, "{generator}: mode changed");
        assert_ne!(once, pristine, "{generator}: the first run changed nothing");
        let bak = dir.join("initrd.img.bak");
        assert_eq!(
            sha(&bak),
            pristine,
            "{generator}: backup is not the original"
        );
        let second = add(&["rdma_rxe"]);
        assert!(
            second.contains("nothing to do"),
            "{generator}: second run: {second}"
        );
        assert_eq!(sha(&path), once, "{generator}: the second run wrote");
        assert_eq!(sha(&bak), pristine, "{generator}: backup replaced");
        assert_eq!(names(dir.path()), ["initrd.img", "initrd.img.bak"]);
        // Something new: the image changes, the first backup stays.
        let third = add(&["rdma_rxe", "mlx4_en"]);
        assert!(!third.contains("nothing to do"), "{generator}: {third}");
        assert_ne!(sha(&path), once, "{generator}: third run wrote nothing");
        assert_eq!(sha(&bak), pristine, "{generator}: backup replaced");
        assert_eq!(
            sha(&dir.join("initrd.img.bak.1")),
            once,
            "{generator}: the once-modified image is not kept as .bak.1"
        );
        assert_eq!(
            names(dir.path()),
            ["initrd.img", "initrd.img.bak", "initrd.img.bak.1"]
        );
    }
}

/// `repack IMG` without -c keeps each segment's compression (the early
/// uncompressed one too), keeps the original as IMG.bak, and the content
/// stays the same (`initrd diff` against the backup finds nothing).
#[test]
fn repack_in_place_keeps_the_compression_and_the_original() {
    for (generator, compression) in [("initramfs-tools", "gzip"), ("initramfs-tools", "xz")] {
        let img = image(generator, compression);
        let dir = Scratch::new("repack");
        let path = copy_image(&img, dir.path());
        let original = sha(&path);
        let kinds =
            |p: &Path| -> Vec<String> { segments(p).into_iter().map(|s| s.compression).collect() };
        let before = kinds(&path);
        assert!(before.contains(&compression.to_string()), "{before:?}");
        // The fastest level: the compression is what is checked.
        let level = if compression == "xz" { "0" } else { "1" };
        run(kmodkit().args(["initrd", "repack", "-L", level]).arg(&path));
        assert_eq!(kinds(&path), before, "{compression}: compression changed");
        let bak = dir.join("initrd.img.bak");
        assert_eq!(sha(&bak), original, "{compression}: no pristine backup");
        run(kmodkit().args(["initrd", "diff"]).arg(&bak).arg(&path));
        assert_eq!(names(dir.path()), ["initrd.img", "initrd.img.bak"]);
    }
}

/// Extracting a truncated image fails and says what it wrote: the entry
/// count in the message is what is on disk (counted by find), and that the
/// tree is incomplete.
#[test]
fn extract_of_a_truncated_image_says_what_was_written() {
    let img = image("initramfs-tools", "gzip");
    let dir = Scratch::new("trunc");
    let path = copy_image(&img, dir.path());
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len * 6 / 10)
        .unwrap();
    let tree = dir.join("tree");
    let out = output(kmodkit().args(["initrd", "extract"]).arg(&path).arg(&tree));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let on_disk = String::from_utf8_lossy(&run(Command::new("find")
        .arg(&tree)
        .arg("-mindepth")
        .arg("1")))
    .lines()
    .count();
    assert!(on_disk > 0, "nothing was extracted before the truncation");
    assert!(
        stderr.contains(&format!("{on_disk} entries"))
            && stderr.contains("incomplete")
            && stderr.contains("truncated")
            && stderr.matches("truncated").count() == 1
            && stderr.contains(&tree.display().to_string()),
        "{on_disk} paths on disk; the message: {stderr}"
    );
}
