//! The commit primitives stopped at every step, in a child process
//! (`examples/commit_child.rs`, built by `cargo test`): by abort (what
//! kill -9 or a power cut leaves) and by SIGINT/SIGTERM (what the signal
//! cleanup must remove). No kmodkit binary involved.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use kmodkit_commit::{recover_set, Recovery, COMMIT_MARKER};

fn child() -> PathBuf {
    // target/<profile>/deps/crash-HASH → target/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join("examples/commit_child");
    assert!(p.is_file(), "{} not built", p.display());
    p
}

fn run(mode: &str, path: &Path, fault: Option<&str>) -> (ExitStatus, String) {
    let mut c = Command::new(child());
    c.arg(mode).arg(path);
    match fault {
        Some(f) => c.env("KMODKIT_FAULT", f),
        None => c.env_remove("KMODKIT_FAULT"),
    };
    let out = c.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every entry under `dir`, file contents included.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeMap<String, String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel.clone() + "/", String::new());
                walk(&p, base, out);
            } else {
                out.insert(rel, String::from_utf8_lossy(&fs::read(&p).unwrap()).into());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The old set: files and a `links` directory the child replaces.
fn old_set(dir: &Path) {
    for name in ["a", "b", "c"] {
        fs::write(dir.join(name), format!("old {name}")).unwrap();
    }
    fs::create_dir_all(dir.join("links")).unwrap();
    fs::write(dir.join("links/l"), b"old l").unwrap();
    fs::write(dir.join("links/gone"), b"only in the old set").unwrap();
}

/// The new set's entries, without the generation file's token.
fn visible(dir: &Path) -> BTreeMap<String, String> {
    let mut s = snapshot(dir);
    s.remove("links/.kmodkit-generation");
    s
}

fn new_state() -> BTreeMap<String, String> {
    let d = tempfile::tempdir().unwrap();
    old_set(d.path());
    let (st, err) = run("set", d.path(), None);
    assert!(st.success(), "{err}");
    visible(d.path())
}

#[test]
fn a_crash_at_any_step_leaves_the_old_set_or_one_recovery_makes_the_new() {
    let new = new_state();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let staging = dir.join(".staging");
    let (mut crashed, mut rolled, mut discarded) = (0, 0, 0);
    for n in 1..40 {
        fs::remove_dir_all(dir).unwrap();
        fs::create_dir(dir).unwrap();
        old_set(dir);
        let old = visible(dir);
        let (st, err) = run("set", dir, Some(&format!("any:{n}")));
        if st.success() {
            assert_eq!(visible(dir), new, "run {n} completed with a wrong set");
            break;
        }
        assert_eq!(st.signal(), Some(libc_sigabrt()), "run {n}: {st} {err}");
        crashed += 1;
        let committed = staging.join(COMMIT_MARKER).exists();
        if !committed {
            let mut state = visible(dir);
            state.retain(|k, _| !k.starts_with(".staging"));
            assert_eq!(state, old, "crash {n} before the marker changed the set");
        }
        match recover_set(dir, &staging).unwrap() {
            Recovery::RolledForward => {
                assert!(committed);
                rolled += 1;
                assert_eq!(visible(dir), new, "after rolling crash {n} forward");
            }
            Recovery::Discarded => {
                assert!(!committed);
                discarded += 1;
                assert_eq!(visible(dir), old, "after discarding crash {n}");
            }
            Recovery::Nothing => panic!("crash {n} left no staging directory"),
        }
        assert!(!staging.exists());
        // Recovery is idempotent: a second one finds nothing to do.
        assert_eq!(recover_set(dir, &staging).unwrap(), Recovery::Nothing);
    }
    // 3 writes + commit before the marker; swap, 3 renames, cleanup after.
    assert_eq!((crashed, discarded, rolled), (9, 4, 5));
}

/// A crash mid-install, repeated at every later step: each restart goes
/// on from where the last one stopped (the swapped directory is not
/// swapped back).
#[test]
fn recovery_interrupted_again_still_rolls_forward() {
    let new = new_state();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    old_set(dir);
    // Stop at the first step after the marker.
    let (st, _) = run("set", dir, Some("swap:1"));
    assert!(!st.success());
    assert!(dir.join(".staging").join(COMMIT_MARKER).exists());
    // The next run's begin() rolls forward first, then writes the same
    // set again; stop that one inside the rolling forward too.
    let (st, _) = run("set", dir, Some("rename:2"));
    assert!(!st.success());
    let (st, err) = run("set", dir, None);
    assert!(st.success(), "{err}");
    assert_eq!(visible(dir), new);
}

fn libc_sigabrt() -> i32 {
    6
}

#[test]
fn a_signal_before_the_marker_removes_everything_after_it_leaves_a_committed_set() {
    let new = new_state();
    for (point, sig) in [
        ("write:1:INT", 2),
        ("write:3:TERM", 15),
        ("commit:1:HUP", 1),
        ("swap:1:INT", 2),
        ("rename:2:TERM", 15),
    ] {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        old_set(dir);
        let old = snapshot(dir);
        let (st, err) = run("set", dir, Some(point));
        assert_eq!(st.signal(), Some(sig), "{point}: {st} {err}");
        let staging = dir.join(".staging");
        if point.starts_with("write") || point.starts_with("commit") {
            assert_eq!(snapshot(dir), old, "{point}: the signal left something");
        } else {
            // Decided: the signal must not remove it, recovery finishes it.
            assert!(staging.join(COMMIT_MARKER).exists(), "{point}");
            assert_eq!(recover_set(dir, &staging).unwrap(), Recovery::RolledForward);
            assert_eq!(visible(dir), new, "{point}");
        }
    }
}

#[test]
fn sets_left_by_older_releases_recover() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    old_set(dir);
    // kmodkit depmod before StagedSet: files only, an empty marker.
    let staging = dir.join(".kmodkit-depmod.staging");
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("a"), b"new a").unwrap();
    fs::write(staging.join(COMMIT_MARKER), b"").unwrap();
    assert_eq!(recover_set(dir, &staging).unwrap(), Recovery::RolledForward);
    assert_eq!(fs::read(dir.join("a")).unwrap(), b"new a");
    assert!(!staging.exists());
    // kmodkit weak-modules before StagedSet: the index files in `index/`,
    // the marker holding the token the staged link tree carries.
    let staging = dir.join(".weak.staging");
    fs::create_dir_all(staging.join("index")).unwrap();
    fs::create_dir_all(staging.join("links")).unwrap();
    fs::write(staging.join("links/.kmodkit-generation"), b"7-1").unwrap();
    fs::write(staging.join("links/l"), b"new l").unwrap();
    fs::write(staging.join("index/b"), b"new b").unwrap();
    fs::write(staging.join(COMMIT_MARKER), b"7-1").unwrap();
    kmodkit_commit::hoist_subdir(&staging, "index").unwrap();
    assert_eq!(recover_set(dir, &staging).unwrap(), Recovery::RolledForward);
    assert_eq!(fs::read(dir.join("b")).unwrap(), b"new b");
    assert_eq!(fs::read(dir.join("links/l")).unwrap(), b"new l");
    assert!(!dir.join("links/gone").exists());
    assert!(!dir.join("index").exists());
}

#[test]
fn a_dropped_set_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    old_set(dir);
    let old = snapshot(dir);
    let mut set = kmodkit_commit::StagedSet::begin(dir, &dir.join(".staging")).unwrap();
    set.write_file("a", b"new a").unwrap();
    set.stage_dir("links").unwrap();
    assert!(set.write_file("../x", b"").is_err());
    assert!(set.write_file(COMMIT_MARKER, b"").is_err());
    drop(set);
    assert_eq!(snapshot(dir), old);
}

/// kill -9 after the backup was made and before the rename: the old file
/// is in place, the next run reuses that backup (same inode) and an older
/// backup is never replaced.
#[test]
fn a_crash_after_the_backup_never_costs_an_older_backup() {
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("img");
    fs::write(&img, b"current").unwrap();
    fs::write(d.path().join("img.bak"), b"an older backup").unwrap();
    let (st, _) = run("staged", &img, Some("commit-backup:1"));
    assert_eq!(st.signal(), Some(libc_sigabrt()));
    assert_eq!(fs::read(&img).unwrap(), b"current");
    let bak1 = d.path().join("img.bak.1");
    assert_eq!(
        fs::metadata(&bak1).unwrap().ino(),
        fs::metadata(&img).unwrap().ino()
    );
    let (st, err) = run("staged", &img, None);
    assert!(st.success(), "{err}");
    assert_eq!(fs::read(&img).unwrap(), b"new");
    assert_eq!(
        fs::read(d.path().join("img.bak")).unwrap(),
        b"an older backup"
    );
    assert_eq!(fs::read(&bak1).unwrap(), b"current");
    let mut names: Vec<String> = fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // The killed run's temporary is gone too.
    assert_eq!(names, ["img", "img.bak", "img.bak.1"]);
}

/// A signal at each step of a single-file commit before its rename: the
/// directory is as it was (the new backup removed again).
#[test]
fn a_signal_during_a_staged_commit_leaves_the_directory_as_it_was() {
    for (point, sig) in [
        ("commit-staged:1:INT", 2),
        ("commit-synced:1:TERM", 15),
        ("commit-backup:1:HUP", 1),
    ] {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        fs::write(&img, b"current").unwrap();
        let before = snapshot(d.path());
        let (st, err) = run("staged", &img, Some(point));
        assert_eq!(st.signal(), Some(sig), "{point}: {st} {err}");
        assert_eq!(snapshot(d.path()), before, "{point}");
    }
}
