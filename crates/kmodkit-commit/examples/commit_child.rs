//! The process the crash tests (`tests/crash.rs`) stop at a fault point:
//! `commit_child set DIR` replaces DIR's set (files `a`, `b`, `c` and the
//! directory `links`) with the new one; `commit_child staged FILE` replaces
//! FILE keeping a backup. `KMODKIT_FAULT` says where to stop (see
//! `kmodkit_commit::fault_point`).

use std::io::Write;
use std::path::Path;

fn main() {
    kmodkit_commit::cleanup_on_signals().expect("signal thread");
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: commit_child set DIR | staged FILE");
        std::process::exit(2);
    };
    let path = Path::new(path);
    let result = match mode.as_str() {
        "set" => write_set(path),
        "staged" => write_staged(path),
        _ => {
            eprintln!("unknown mode {mode}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(1);
    }
}

fn write_set(dir: &Path) -> Result<(), kmodkit_commit::CommitError> {
    let mut set = kmodkit_commit::StagedSet::begin(dir, &dir.join(".staging"))?;
    for name in ["a", "b", "c"] {
        set.write_file(name, format!("new {name}").as_bytes())?;
    }
    let links = set.stage_dir("links")?;
    std::fs::write(links.join("l"), b"new l").expect("staging is writable");
    set.commit()
}

fn write_staged(file: &Path) -> Result<(), kmodkit_commit::CommitError> {
    let mut staged = kmodkit_commit::Staged::new(file)?;
    staged.write_all(b"new").expect("temporary is writable");
    staged.commit(kmodkit_commit::Backup::Keep).map(|_| ())
}
