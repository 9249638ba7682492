//! The kernel agrees: kmodkit's verdict for each module equals what the
//! target kernel does when it boots in qemu and `insmod`s the module after
//! its dependencies (scripts/qemu-insmod). Real out-of-tree modules built
//! with Kbuild from Debian *-dkms packages (scripts/oot-fixtures) against
//! two 6.1 ABIs, into every fetched kernel; and a sample of in-tree modules
//! of one ABI into another with partly changed CRCs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, Fixtures};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifest(fx: &Fixtures) -> Vec<(String, String, PathBuf)> {
    let path = fx.root.parent().unwrap().join("oot/manifest");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/oot-fixtures (scripts/test does)",
            path.display()
        )
    });
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[1].to_string(), PathBuf::from(f[2])))
        })
        .collect()
}

/// Boots `kernel` and inserts each group (one line each); returns
/// module path → loader accepted it (loaded, or its own init failed).
fn kernel_verdicts(kernel: &str, groups: &[Vec<PathBuf>]) -> BTreeMap<PathBuf, (bool, String)> {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let text: String = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect();
    std::fs::write(tmp.path(), text).unwrap();
    let out = Command::new(repo().join("scripts/qemu-insmod"))
        .args([
            "--kernel",
            kernel,
            "--deps-from-target",
            "--timeout",
            "240",
            "--groups",
        ])
        .arg(tmp.path())
        .output()
        .expect("run scripts/qemu-insmod");
    assert!(
        out.status.success(),
        "qemu boot of {kernel} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for r in doc["results"].as_array().unwrap() {
        if r["dependency"].as_bool() == Some(true) {
            continue;
        }
        let stage = r["stage"].as_str().unwrap_or("").to_string();
        let accepted = stage == "loaded" || stage == "init";
        let reason = r["reason"].as_str().unwrap_or("").to_string();
        map.insert(
            PathBuf::from(r["path"].as_str().unwrap()),
            (accepted, format!("{stage} {reason}")),
        );
    }
    map
}

/// kmodkit's verdicts, path → compatible.
fn our_verdicts(
    fx: &Fixtures,
    kernel: &str,
    modules: &[PathBuf],
    independent: bool,
) -> BTreeMap<PathBuf, (bool, String)> {
    let mut cmd = kmodkit();
    cmd.args(["abi", "check", "--json", "--root"])
        .arg(&fx.root)
        .args(["-k", kernel]);
    if independent {
        cmd.arg("--independent");
    }
    let out = cmd.args(modules).output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let first = m["reasons"]
                .as_array()
                .and_then(|r| r.first())
                .map(|r| r.to_string())
                .unwrap_or_default();
            (
                PathBuf::from(m["path"].as_str().unwrap()),
                (m["compatible"].as_bool().unwrap(), first),
            )
        })
        .collect()
}

fn assert_agree(
    kernel: &str,
    ours: &BTreeMap<PathBuf, (bool, String)>,
    theirs: &BTreeMap<PathBuf, (bool, String)>,
) -> (usize, usize) {
    let mut disagreements = Vec::new();
    let mut loaded = 0;
    for (path, (k_ok, k_why)) in theirs {
        let (o_ok, o_why) = ours
            .get(path)
            .unwrap_or_else(|| panic!("kmodkit has no verdict for {}", path.display()));
        if k_ok != o_ok {
            disagreements.push(format!(
                "{} on {kernel}: kernel {} ({k_why}), kmodkit {} ({o_why})",
                path.display(),
                if *k_ok { "loads it" } else { "refuses it" },
                if *o_ok { "compatible" } else { "incompatible" }
            ));
        }
        loaded += usize::from(*k_ok);
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    (theirs.len(), loaded)
}

#[test]
fn out_of_tree_modules_verdicts_equal_the_kernels() {
    let fx = Fixtures::load();
    let rows = manifest(&fx);
    // One group per (base, package) in manifest (load) order.
    let mut groups: Vec<((String, String), Vec<PathBuf>)> = Vec::new();
    for (base, _, path) in &rows {
        let key = (base.clone(), path.parent().unwrap().display().to_string());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, g)) => g.push(path.clone()),
            None => groups.push((key, vec![path.clone()])),
        }
    }
    let group_paths: Vec<Vec<PathBuf>> = groups.iter().map(|(_, g)| g.clone()).collect();
    let mut total = 0;
    for k in &fx.kernels {
        let theirs = kernel_verdicts(&k.release, &group_paths);
        // kmodkit checks each package as one set, as it is installed together.
        let mut ours = BTreeMap::new();
        for g in &group_paths {
            ours.extend(our_verdicts(&fx, &k.release, g, false));
        }
        let (n, loaded) = assert_agree(&k.release, &ours, &theirs);
        eprintln!(
            "{}: {n} out-of-tree modules, {loaded} loaded, kmodkit agrees on all",
            k.release
        );
        total += n;
    }
    assert!(
        total >= 2 * rows.len(),
        "too few verdicts compared: {total}"
    );
}

#[test]
fn in_tree_sample_of_one_abi_into_another_equals_the_kernel() {
    let fx = Fixtures::load();
    let sixone: Vec<_> = fx.kernels.iter().filter(|k| k.series == "6.1").collect();
    // The pair with mixed verdicts: same module_layout, partly changed CRCs.
    let layout = |k: &common::Kernel| {
        std::fs::read_to_string(fx.module_symvers(k))
            .unwrap()
            .lines()
            .find(|l| l.contains("\tmodule_layout\t"))
            .map(str::to_string)
    };
    let (set, target) = sixone
        .iter()
        .enumerate()
        .flat_map(|(i, a)| sixone[i + 1..].iter().map(move |b| (*a, *b)))
        .find(|(a, b)| {
            layout(a) == layout(b)
                && std::fs::read(fx.module_symvers(a)).unwrap()
                    != std::fs::read(fx.module_symvers(b)).unwrap()
        })
        .expect("two 6.1 ABIs with the same module_layout and different CRCs");
    let dirs = [
        "drivers/net",
        "drivers/infiniband",
        "net",
        "fs",
        "crypto",
        "lib",
        "drivers/md",
        "drivers/block",
    ];
    let all = fx.module_files(set);
    let base = fx.module_dir(set).join("kernel");
    let candidates: Vec<PathBuf> = all
        .into_iter()
        .filter(|p| {
            let rel = p
                .strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            dirs.iter().any(|d| rel.starts_with(d)) && !rel.contains("test")
        })
        .collect();
    let sample: Vec<PathBuf> = candidates
        .iter()
        .step_by((candidates.len() / 80).max(1))
        .cloned()
        .collect();
    assert!(sample.len() >= 50, "sample of {} modules", sample.len());
    let groups: Vec<Vec<PathBuf>> = sample.iter().map(|p| vec![p.clone()]).collect();
    let theirs = kernel_verdicts(&target.release, &groups);
    let ours = our_verdicts(&fx, &target.release, &sample, true);
    let (n, loaded) = assert_agree(&target.release, &ours, &theirs);
    assert!(
        loaded > 0 && loaded < n,
        "the sample should have mixed verdicts ({loaded} of {n} loaded)"
    );
    eprintln!(
        "{} -> {}: {n} in-tree modules, {loaded} loaded, kmodkit agrees on all",
        set.release, target.release
    );
}
