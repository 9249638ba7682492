//! `kmodkit depmod` against kmod 30's `depmod` on real Debian trees: every
//! output file byte for byte, `modprobe --show-depends` for every module,
//! `-e -E` warnings, depmod.d directives, and failure modes. The expected
//! files are whatever kmod writes, at test time.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kmodkit, output, require_tool, Fixtures, Kernel};

const INDEX_FILES: [&str; 10] = kmodkit_depmod::cache::OUTPUT_NAMES;

fn scratch_tree(fx: &Fixtures, k: &Kernel, root: &Path) -> PathBuf {
    common::link_tree(fx, k, root)
}

fn run_kmod(root: &Path, k: &str, extra: &[&str]) -> std::process::Output {
    Command::new("depmod")
        .arg("-b")
        .arg(root)
        .args(extra)
        .arg(k)
        .output()
        .expect("run kmod depmod")
}

fn run_ours(root: &Path, k: &str, extra: &[&str]) -> std::process::Output {
    kmodkit()
        .arg("depmod")
        .arg("-b")
        .arg(root)
        .args(extra)
        .arg(k)
        .output()
        .expect("run kmodkit depmod")
}

/// Runs both tools on twin trees and compares every file; returns the
/// differences.
fn compare_trees(kmod_root: &Path, our_root: &Path, k: &str, extra: &[&str]) -> Vec<String> {
    let a = run_kmod(kmod_root, k, extra);
    let b = run_ours(our_root, k, extra);
    let mut diffs = Vec::new();
    if a.status.success() != b.status.success() {
        diffs.push(format!(
            "exit status: kmod {} kmodkit {}\nkmod stderr: {}\nkmodkit stderr: {}",
            a.status,
            b.status,
            String::from_utf8_lossy(&a.stderr),
            String::from_utf8_lossy(&b.stderr)
        ));
    }
    for f in INDEX_FILES {
        let x = std::fs::read(kmod_root.join("lib/modules").join(k).join(f));
        let y = std::fs::read(our_root.join("lib/modules").join(k).join(f));
        match (x, y) {
            (Ok(x), Ok(y)) if x == y => {}
            (Ok(x), Ok(y)) => diffs.push(format!(
                "{f}: {} bytes from kmod, {} from kmodkit",
                x.len(),
                y.len()
            )),
            (x, y) => diffs.push(format!(
                "{f}: kmod {:?}, kmodkit {:?}",
                x.map(|v| v.len()),
                y.map(|v| v.len())
            )),
        }
    }
    diffs
}

fn modules_in(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("modules.dep")).unwrap();
    text.lines()
        .filter_map(|l| l.split(':').next())
        .map(|p| {
            let base = p.rsplit('/').next().unwrap();
            base.split('.').next().unwrap().replace('-', "_")
        })
        .collect()
}

/// `modprobe --show-depends` for every module, on kmod's index and ours.
fn compare_show_depends(kmod_root: &Path, our_root: &Path, k: &str) -> Vec<String> {
    let names = modules_in(&kmod_root.join("lib/modules").join(k));
    // Paths differ only by the root: compare with the root replaced.
    let run = |root: &Path, names: &[String]| -> Vec<(String, bool)> {
        let prefix = root.display().to_string();
        names
            .iter()
            .map(|n| {
                let (out, ok) = output(
                    Command::new("modprobe")
                        .arg("-d")
                        .arg(root)
                        .arg("-S")
                        .arg(k)
                        .arg("--show-depends")
                        .arg(n),
                );
                (String::from_utf8_lossy(&out).replace(&prefix, "ROOT"), ok)
            })
            .collect()
    };
    let (expected, actual) = std::thread::scope(|s| {
        let t = s.spawn(|| run(kmod_root, &names));
        let ours = run(our_root, &names);
        (t.join().unwrap(), ours)
    });
    assert!(
        names.len() > 100,
        "too few modules to compare: {}",
        names.len()
    );
    names
        .iter()
        .zip(expected.iter().zip(&actual))
        .filter(|(_, (e, a))| e != a)
        .map(|(n, (e, a))| {
            format!(
                "modprobe --show-depends {n}: kmod index gives {:?}, kmodkit index gives {:?}",
                e.0, a.0
            )
        })
        .collect()
}

#[test]
fn full_trees_are_byte_identical_and_modprobe_agrees() {
    require_tool("depmod", "kmod");
    require_tool("modprobe", "kmod");
    let fx = Fixtures::load();
    let mut failures = Vec::new();
    for k in &fx.kernels {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
        scratch_tree(&fx, k, &a);
        scratch_tree(&fx, k, &b);
        let diffs = compare_trees(&a, &b, &k.release, &[]);
        eprintln!("{}: full tree, {} file differences", k.release, diffs.len());
        failures.extend(diffs.into_iter().map(|d| format!("{}: {d}", k.release)));
        let sd = compare_show_depends(&a, &b, &k.release);
        eprintln!(
            "{}: modprobe --show-depends, {} differences",
            k.release,
            sd.len()
        );
        failures.extend(sd.into_iter().take(5));
        // -n prints the text files to stdout.
        let x = run_kmod(&a, &k.release, &["-n"]);
        let y = run_ours(&b, &k.release, &["-n"]);
        if x.stdout != y.stdout {
            failures.push(format!("{}: depmod -n output differs", k.release));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Copies `module` (a path relative to the tree's kernel/ dir) from kernel
/// `from` into `dest`, optionally under a new file name.
fn copy_module(fx: &Fixtures, from: &Kernel, module: &str, dest: &Path, rename: Option<&str>) {
    let src = fx.module_dir(from).join("kernel").join(module);
    let name = rename
        .map(str::to_string)
        .unwrap_or_else(|| src.file_name().unwrap().to_string_lossy().into_owned());
    std::fs::create_dir_all(dest).unwrap();
    std::fs::copy(&src, dest.join(name)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
}

/// A tree with out-of-tree modules from another ABI under updates/,
/// extra/, weak-updates/ (symlinks), an external directory and an excluded
/// one. Returns the module directory.
fn out_of_tree_setup(
    fx: &Fixtures,
    k: &Kernel,
    other: &Kernel,
    root: &Path,
    external: &Path,
) -> PathBuf {
    let dir = scratch_tree(fx, k, root);
    let mlx4 = "drivers/net/ethernet/mellanox/mlx4";
    let ipoib = "drivers/infiniband/ulp/ipoib";
    let ibcore = "drivers/infiniband/core";
    // Same names as in-tree modules: priority decides which one is used.
    copy_module(
        fx,
        other,
        &format!("{mlx4}/mlx4_core.ko"),
        &dir.join("updates"),
        None,
    );
    copy_module(
        fx,
        other,
        &format!("{mlx4}/mlx4_en.ko"),
        &dir.join("extra/mlnx"),
        None,
    );
    copy_module(
        fx,
        other,
        &format!("{mlx4}/mlx4_core.ko"),
        &dir.join("extra/mlnx"),
        None,
    );
    copy_module(
        fx,
        other,
        &format!("{ipoib}/ib_ipoib.ko"),
        &dir.join("extra"),
        None,
    );
    copy_module(
        fx,
        other,
        &format!("{ibcore}/ib_core.ko"),
        &dir.join("updates/ofed"),
        None,
    );
    // New names, absent from modules.order: their order comes from kmod's hash.
    for (i, m) in [
        "drivers/net/dummy.ko",
        "drivers/net/veth.ko",
        "net/802/stp.ko",
        "drivers/net/mii.ko",
    ]
    .iter()
    .enumerate()
    {
        let base = Path::new(m)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        copy_module(
            fx,
            other,
            m,
            &dir.join("extra/vendor"),
            Some(&format!("kmk-{base}-{i}.ko")),
        );
        copy_module(
            fx,
            other,
            m,
            &dir.join("updates"),
            Some(&format!("kmk_up_{base}.ko")),
        );
    }
    // weak-updates: links to another kernel's extra/ as RHEL's weak-modules makes them.
    let other_extra = root.join("lib/modules/other-kernel/extra");
    copy_module(
        fx,
        other,
        "drivers/net/macvlan.ko",
        &other_extra,
        Some("kmk_weak_macvlan.ko"),
    );
    copy_module(
        fx,
        other,
        "drivers/infiniband/hw/mlx4/mlx4_ib.ko",
        &other_extra,
        Some("mlx4_ib.ko"),
    );
    std::fs::create_dir_all(dir.join("weak-updates/vendor")).unwrap();
    for n in ["kmk_weak_macvlan.ko", "mlx4_ib.ko"] {
        symlink(other_extra.join(n), dir.join("weak-updates/vendor").join(n)).unwrap();
    }
    // Excluded directory and an external directory.
    copy_module(
        fx,
        other,
        "drivers/net/dummy.ko",
        &dir.join("skipme"),
        Some("kmk_excluded.ko"),
    );
    copy_module(
        fx,
        other,
        "drivers/net/tun.ko",
        external,
        Some("kmk_external_tun.ko"),
    );
    copy_module(fx, other, "drivers/net/veth.ko", external, None);
    dir
}

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
    dir.to_path_buf()
}

#[test]
fn out_of_tree_modules_and_every_depmod_d_directive() {
    require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let sixone: Vec<&Kernel> = fx.kernels.iter().filter(|k| k.series == "6.1").collect();
    assert!(sixone.len() >= 2, "need two 6.1 ABIs");
    let (k, other) = (sixone[sixone.len() - 1], sixone[0]);
    type ConfigFor = Box<dyn Fn(&Path) -> String>;
    let configs: Vec<(&str, ConfigFor)> = vec![
        (
            "no configuration (updates first)",
            Box::new(|_| String::new()),
        ),
        (
            "RHEL search order, override, external, exclude",
            Box::new(move |ext: &Path| {
                format!(
                    "# RHEL\nsearch updates extra built-in weak-updates external\noverride mlx4_core * extra/mlnx\noverride ib_core 6\\.1.* kernel/drivers/infiniband/core\nexternal * {}\nexclude skipme\n",
                    ext.display()
                )
            }),
        ),
        (
            "SUSE search order",
            Box::new(|ext: &Path| {
                format!(
                    "search updates extra weak-updates kgraft built-in\nexternal * {}\nexclude skipme\n",
                    ext.display()
                )
            }),
        ),
        (
            "built-in first, external before updates",
            Box::new(|ext: &Path| {
                format!(
                    "search built-in external updates\nexternal 6\\.1\\..* {}\n",
                    ext.display()
                )
            }),
        ),
    ];
    let mut failures = Vec::new();
    for (label, config) in &configs {
        let tmp = tempfile::tempdir().unwrap();
        // One external directory and one configuration serve both trees, so
        // the absolute paths written for external modules are the same.
        let ext = tmp.path().join("external");
        let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
        out_of_tree_setup(&fx, k, other, &a, &ext);
        out_of_tree_setup(&fx, k, other, &b, &tmp.path().join("unused-external"));
        let cfg = write_config(&tmp.path().join("depmod.d"), "test.conf", &config(&ext));
        let c = cfg.display().to_string();
        let args = ["-C", c.as_str()];
        let x = run_kmod(&a, &k.release, &args);
        let y = run_ours(&b, &k.release, &args);
        assert!(
            x.status.success(),
            "kmod failed: {}",
            String::from_utf8_lossy(&x.stderr)
        );
        assert!(
            y.status.success(),
            "kmodkit failed: {}",
            String::from_utf8_lossy(&y.stderr)
        );
        let mut n = 0;
        for f in INDEX_FILES {
            let p = |r: &Path| r.join("lib/modules").join(&k.release).join(f);
            let (fa, fb) = (std::fs::read(p(&a)).unwrap(), std::fs::read(p(&b)).unwrap());
            if fa != fb {
                failures.push(format!("{label}: {f} differs"));
            }
            n += 1;
        }
        // The out-of-tree modules must really be in the index.
        let dep =
            std::fs::read_to_string(a.join("lib/modules").join(&k.release).join("modules.dep"))
                .unwrap();
        assert!(
            dep.contains("kmk_up_dummy") && dep.contains("kmk-veth-1"),
            "{label}: setup not indexed"
        );
        eprintln!("{label}: {n} files compared");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn errsyms_warnings_match_kmod_for_modules_of_another_abi() {
    require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let sixone: Vec<&Kernel> = fx.kernels.iter().filter(|k| k.series == "6.1").collect();
    let (k, other) = (sixone[sixone.len() - 1], sixone[0]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = scratch_tree(&fx, k, &root);
    // A whole subsystem of the other ABI in extra/.
    let src = fx
        .module_dir(other)
        .join("kernel/drivers/net/ethernet/mellanox");
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                std::fs::create_dir_all(dir.join("extra")).unwrap();
                std::fs::copy(e.path(), dir.join("extra").join(e.file_name())).unwrap();
            }
        }
    }
    let symvers = fx.module_symvers(k).display().to_string();
    let args = ["-n", "-e", "-E", symvers.as_str()];
    let x = run_kmod(&root, &k.release, &args);
    let y = run_ours(&root, &k.release, &args);
    let lines = |o: &std::process::Output| -> BTreeSet<String> {
        String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let (wa, wb) = (lines(&x), lines(&y));
    assert!(
        wa.iter()
            .any(|l| l.contains("disagrees about version of symbol")),
        "the setup must produce CRC warnings: {wa:?}"
    );
    assert_eq!(wa, wb, "warning sets differ");
    assert_eq!(x.stdout, y.stdout, "depmod -n output differs");
    assert_eq!(
        String::from_utf8_lossy(&x.stderr),
        String::from_utf8_lossy(&y.stderr),
        "warning order differs"
    );
    eprintln!("{} warnings identical", wa.len());
}

/// A minimal relocatable module: exports `export`, needs `needs`.
fn synthetic_module(path: &Path, export: &str, needs: &str) {
    use object::write::{Object, Symbol, SymbolSection};
    use object::{Architecture, BinaryFormat, Endianness, SymbolFlags, SymbolKind, SymbolScope};
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::X86_64, Endianness::Little);
    let modinfo = obj.add_section(Vec::new(), b".modinfo".to_vec(), object::SectionKind::Data);
    obj.append_section_data(modinfo, b"license=GPL\0vermagic=test\0", 1);
    let crctab = obj.add_section(Vec::new(), b"__kcrctab".to_vec(), object::SectionKind::Data);
    let off = obj.append_section_data(crctab, &0x1234_5678u32.to_le_bytes(), 4);
    obj.add_symbol(Symbol {
        name: format!("__crc_{export}").into_bytes(),
        value: off,
        size: 0,
        kind: SymbolKind::Data,
        scope: SymbolScope::Compilation,
        weak: false,
        section: SymbolSection::Section(crctab),
        flags: SymbolFlags::None,
    });
    obj.add_symbol(Symbol {
        name: needs.as_bytes().to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Text,
        scope: SymbolScope::Linkage,
        weak: false,
        section: SymbolSection::Undefined,
        flags: SymbolFlags::None,
    });
    std::fs::write(path, obj.write().unwrap()).unwrap();
}

fn index_snapshot(dir: &Path) -> Vec<Option<Vec<u8>>> {
    INDEX_FILES
        .iter()
        .map(|f| std::fs::read(dir.join(f)).ok())
        .collect()
}

#[test]
fn failures_are_clear_and_leave_the_index_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let k = "6.1.0-99-test";
    let dir = root.join("lib/modules").join(k);
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    synthetic_module(&dir.join("extra/alpha.ko"), "alpha_fn", "printk");
    let ok = run_ours(root, k, &[]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let before = index_snapshot(&dir);
    // No modules.builtin* in this tree: kmod still writes every index (the
    // builtin ones empty).
    assert_eq!(
        before.iter().filter(|f| f.is_some()).count(),
        INDEX_FILES.len()
    );

    // A corrupt module: error names the file, index unchanged.
    std::fs::write(dir.join("extra/broken.ko"), b"\x7fELF\x02\x01\x01garbage").unwrap();
    let r = run_ours(root, k, &[]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && msg.contains("broken.ko"), "{msg}");
    assert_eq!(index_snapshot(&dir), before);
    std::fs::remove_file(dir.join("extra/broken.ko")).unwrap();

    // An unreadable file (a symlink loop: even root cannot open it).
    symlink("loop.ko", dir.join("extra/loop.ko")).unwrap();
    let r = run_ours(root, k, &[]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(msg.contains("loop.ko"), "{msg}");
    assert_eq!(index_snapshot(&dir), before);
    std::fs::remove_file(dir.join("extra/loop.ko")).unwrap();

    // A dependency cycle: kmod refuses too.
    synthetic_module(&dir.join("extra/cyc_a.ko"), "cyc_a_fn", "cyc_b_fn");
    synthetic_module(&dir.join("extra/cyc_b.ko"), "cyc_b_fn", "cyc_a_fn");
    let r = run_ours(root, k, &[]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && msg.contains("cycle") && msg.contains("cyc_a"),
        "{msg}"
    );
    assert_eq!(index_snapshot(&dir), before);
    if std::process::Command::new("depmod")
        .arg("--version")
        .output()
        .is_ok()
    {
        let kr = run_kmod(root, k, &["-n"]);
        assert!(!kr.status.success(), "kmod accepts the cycle?");
    }

    // A missing tree.
    let r = run_ours(root, "6.1.0-0-missing", &[]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(
        !r.status.success() && msg.contains("6.1.0-0-missing") && msg.contains("missing"),
        "{msg}"
    );
}

/// A module directory indexed by kmodkit with one module, `alpha`; the
/// crash tests then add `beta` (which needs alpha) and stop the next run.
fn indexed_one_module_tree(k: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib/modules").join(k);
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    synthetic_module(&dir.join("extra/alpha.ko"), "alpha_fn", "printk");
    assert!(run_ours(tmp.path(), k, &[]).status.success());
    (tmp, dir)
}

#[test]
fn a_crash_at_any_point_leaves_the_old_set_or_the_new_one() {
    let k = "6.1.0-98-test";
    let (tmp, dir) = indexed_one_module_tree(k);
    let root = tmp.path();
    let old = index_snapshot(&dir);
    synthetic_module(&dir.join("extra/beta.ko"), "beta_fn", "alpha_fn");
    // Reference new set, computed in a copy.
    let copy = tempfile::tempdir().unwrap();
    let cdir = copy.path().join("lib/modules").join(k);
    std::fs::create_dir_all(cdir.join("extra")).unwrap();
    for m in ["alpha.ko", "beta.ko"] {
        std::fs::copy(dir.join("extra").join(m), cdir.join("extra").join(m)).unwrap();
    }
    assert!(run_ours(copy.path(), k, &[]).status.success());
    let new = index_snapshot(&cdir);
    assert_ne!(old, new);

    let mut crashed = 0;
    for n in 1..40 {
        // Crash at the n-th fault point, then let the next run recover.
        let r = kmodkit()
            .env("KMODKIT_FAULT", format!("any:{n}"))
            .args(["depmod", "-b"])
            .arg(root)
            .arg(k)
            .output()
            .unwrap();
        if r.status.success() {
            assert_eq!(
                index_snapshot(&dir),
                new,
                "run {n} completed but the set is wrong"
            );
            break;
        }
        crashed += 1;
        // Recovery happens before any other work: -A on an up-to-date
        // check still recovers first.
        let state = index_snapshot(&dir);
        let staging = dir.join(kmodkit_depmod_staging());
        assert!(
            state == old || state == new || staging.join("COMMITTED").exists(),
            "crash at point {n} left a mixed set without a committed staging area"
        );
        let rec = kmodkit()
            .args(["depmod", "-b"])
            .arg(root)
            .arg(k)
            .output()
            .unwrap();
        assert!(
            rec.status.success(),
            "{}",
            String::from_utf8_lossy(&rec.stderr)
        );
        assert_eq!(
            index_snapshot(&dir),
            new,
            "after recovery from crash at {n}"
        );
        assert!(!staging.exists());
        // Back to the old state for the next round.
        std::fs::remove_file(dir.join("extra/beta.ko")).unwrap();
        assert!(run_ours(root, k, &[]).status.success());
        assert_eq!(index_snapshot(&dir), old);
        synthetic_module(&dir.join("extra/beta.ko"), "beta_fn", "alpha_fn");
    }
    assert!(crashed >= 10, "only {crashed} crash points exercised");
}

/// Ctrl-C (or SIGTERM) while the new index set is staged: the run ends
/// killed by that signal and the module directory is as it was — no
/// staging directory waits for the next run. Before kmodkit-commit's
/// StagedSet, depmod's staging directory was not removed on signals.
#[test]
fn a_signal_while_the_index_is_staged_leaves_the_directory_as_it_was() {
    use std::os::unix::process::ExitStatusExt;
    let k = "6.1.0-98-test";
    let (tmp, dir) = indexed_one_module_tree(k);
    let root = tmp.path();
    synthetic_module(&dir.join("extra/beta.ko"), "beta_fn", "alpha_fn");
    let names = |d: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    let (old, old_names) = (index_snapshot(&dir), names(&dir));
    for (fault, sig) in [("write:2:INT", 2), ("commit:1:TERM", 15)] {
        let r = kmodkit()
            .env("KMODKIT_FAULT", fault)
            .args(["depmod", "-b"])
            .arg(root)
            .arg(k)
            .output()
            .unwrap();
        assert_eq!(r.status.signal(), Some(sig), "{fault}: {}", r.status);
        assert_eq!(index_snapshot(&dir), old, "{fault}");
        assert_eq!(names(&dir), old_names, "{fault}: something left behind");
    }
}

fn kmodkit_depmod_staging() -> &'static str {
    ".kmodkit-depmod.staging"
}

#[test]
fn cache_gives_identical_output_and_notices_changes() {
    let fx = Fixtures::load();
    let k = fx.kernels.iter().find(|k| k.series == "6.1").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let dir = scratch_tree(&fx, k, &root);
    let cache = tmp.path().join("cache");
    let c = format!("--cache={}", cache.display());
    assert!(run_ours(&root, &k.release, &[]).status.success());
    let plain = index_snapshot(&dir);
    for _ in 0..2 {
        let r = run_ours(&root, &k.release, &[&c]);
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        assert_eq!(index_snapshot(&dir), plain);
    }
    // A changed module (new file in extra/) is picked up with the cache.
    std::fs::create_dir_all(dir.join("extra")).unwrap();
    std::fs::copy(
        fx.module_dir(k).join("kernel/drivers/net/dummy.ko"),
        dir.join("extra/kmk_new.ko"),
    )
    .unwrap();
    assert!(run_ours(&root, &k.release, &[&c]).status.success());
    let with_cache = index_snapshot(&dir);
    assert!(run_ours(&root, &k.release, &[]).status.success());
    assert_eq!(index_snapshot(&dir), with_cache);
    assert_ne!(with_cache, plain);
}

/// stderr lines mentioning `needle`, with the tree's root replaced by
/// `ROOT` so twin trees compare.
fn stderr_lines(out: &std::process::Output, root: &Path, needle: &str) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.replace(&root.display().to_string(), "ROOT"))
        .collect()
}

/// A tree that lost `modules.builtin*` after an earlier index listed
/// modules as built in: kmod warns and writes empty builtin indexes, so no
/// stale entry survives and modinfo answers from the tree as it is.
#[test]
fn tree_without_builtin_files_matches_kmod_files_and_warnings() {
    require_tool("depmod", "kmod");
    require_tool("modinfo", "kmod");
    let fx = Fixtures::load();
    let k = fx.kernels.iter().find(|k| k.series == "6.1").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
    // An earlier build had dummy (loadable now) and kmk_gone built in.
    const NAMES: [&str; 2] = ["dummy", "kmk_gone"];
    for root in [&a, &b] {
        let dir = scratch_tree(&fx, k, root);
        let mut builtin = std::fs::read(dir.join("modules.builtin")).unwrap();
        builtin.extend_from_slice(b"kernel/drivers/net/dummy.ko\nkernel/drivers/net/kmk_gone.ko\n");
        std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
    }
    assert!(run_kmod(&a, &k.release, &[]).status.success());
    assert!(run_ours(&b, &k.release, &[]).status.success());
    let modinfo = |root: &Path, cmd: &mut Command| -> Vec<(bool, String)> {
        NAMES
            .iter()
            .map(|name| {
                let out = Command::new(cmd.get_program())
                    .args(cmd.get_args())
                    .arg("-b")
                    .arg(root)
                    .args(["-k", &k.release, "-F", "filename", name])
                    .output()
                    .unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stdout)
                        .replace(&root.display().to_string(), "ROOT"),
                )
            })
            .collect()
    };
    assert!(
        modinfo(&a, &mut Command::new("modinfo"))[1]
            .1
            .contains("(builtin)"),
        "the setup must make kmod call kmk_gone built in"
    );
    for root in [&a, &b] {
        let dir = root.join("lib/modules").join(&k.release);
        std::fs::remove_file(dir.join("modules.builtin")).unwrap();
        std::fs::remove_file(dir.join("modules.builtin.modinfo")).unwrap();
    }
    // -n: kmod does not read the builtin files, so it says nothing of them.
    for extra in [&["-n"][..], &[][..]] {
        let x = run_kmod(&a, &k.release, extra);
        let y = run_ours(&b, &k.release, extra);
        assert_eq!(
            stderr_lines(&y, &b, "modules.builtin"),
            stderr_lines(&x, &a, "modules.builtin"),
            "depmod {extra:?}: warnings differ\n--- kmod\n{}\n--- kmodkit\n{}",
            String::from_utf8_lossy(&x.stderr),
            String::from_utf8_lossy(&y.stderr)
        );
    }
    let diffs = compare_trees(&a, &b, &k.release, &[]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let kmod_says = modinfo(&a, &mut Command::new("modinfo"));
    assert!(
        kmod_says.iter().all(|(_, out)| !out.contains("(builtin)")),
        "{kmod_says:?}"
    );
    assert_eq!(
        modinfo(&b, &mut Command::new("modinfo")),
        kmod_says,
        "kmod's modinfo on kmodkit's index"
    );
    assert_eq!(
        modinfo(&b, kmodkit().arg("modinfo")),
        kmod_says,
        "kmodkit's modinfo on its own index"
    );
}

/// `-w`: kmod reports an alias repeated by one module after normalising
/// it (`-` to `_`), prints the normalised form, and says nothing under
/// `-n`. Real modules repeat aliases that way (e.g. `spi:tpm-tis-spi`).
#[test]
fn duplicate_alias_warnings_match_kmod() {
    require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let mut failures = Vec::new();
    for k in &fx.kernels {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
        scratch_tree(&fx, k, &a);
        scratch_tree(&fx, k, &b);
        for extra in [&["-w"][..], &["-w", "-n"][..]] {
            let dups = |out: &std::process::Output| -> Vec<String> {
                let text = String::from_utf8_lossy(&out.stderr).into_owned();
                let lines: Vec<&str> = text.lines().collect();
                lines
                    .windows(2)
                    .filter(|w| w[0].ends_with("duplicate module alias:"))
                    .map(|w| w[1].to_string())
                    .collect()
            };
            let x = dups(&run_kmod(&a, &k.release, extra));
            let y = dups(&run_ours(&b, &k.release, extra));
            eprintln!(
                "{} {extra:?}: kmod {} duplicate aliases, kmodkit {}",
                k.release,
                x.len(),
                y.len()
            );
            if x != y {
                failures.push(format!(
                    "{} {extra:?}:\n--- kmod\n{}\n--- kmodkit\n{}",
                    k.release,
                    x.join("\n"),
                    y.join("\n")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A missing module directory: one message naming it and the installed
/// kernels (kmodkit's "not installed" message, as in every command), the
/// OS error at most once.
#[test]
fn missing_module_directory_says_the_os_error_once() {
    let tmp = tempfile::tempdir().unwrap();
    let k = "6.1.0-0-missing";
    let kmod = Command::new("depmod")
        .arg("-b")
        .arg(tmp.path())
        .arg(k)
        .output();
    // The OS's own text for the error, so the count is of the same words.
    let reason = std::fs::metadata(tmp.path().join("lib/modules").join(k))
        .unwrap_err()
        .to_string()
        .split(" (os error")
        .next()
        .unwrap()
        .to_string();
    if let Ok(kmod) = kmod {
        assert!(String::from_utf8_lossy(&kmod.stderr).contains(&reason));
    }
    let r = run_ours(tmp.path(), k, &[]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(msg.contains(&format!("lib/modules/{k}")), "{msg}");
    assert!(
        msg.contains(&format!("kernel {k} is not installed under"))
            && msg.contains("installed: none"),
        "{msg}"
    );
    assert!(msg.matches(&reason).count() <= 1, "{msg}");
}

/// Issue 13, failure 2: file names are bytes. `dum.日.ko` made the
/// modules.order key cut inside a character (a panic), and a name that is
/// not UTF-8 was mangled by a lossy conversion. kmod writes the raw bytes
/// into modules.dep and modules.dep.bin; so must we. (Module names stay
/// ASCII: a key byte >= 0x80 indexes outside kmod's 128-entry child table,
/// undefined behaviour there and an error here.)
#[test]
fn file_names_are_bytes_as_in_kmod() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    require_tool("depmod", "kmod");
    let tmp = tempfile::tempdir().unwrap();
    let k = "6.1.0-99-test";
    let not_utf8_dir = OsStr::from_bytes(b"d\xfe");
    let not_utf8_file = OsStr::from_bytes(b"x.\xff.ko");
    for side in ["kmod", "ours"] {
        let dir = tmp.path().join(side).join("lib/modules").join(k);
        let odd = dir.join("extra").join(not_utf8_dir);
        std::fs::create_dir_all(&odd).unwrap();
        synthetic_module(&dir.join("extra/dum.日.ko"), "dum_fn", "printk");
        synthetic_module(&odd.join(not_utf8_file), "x_fn", "dum_fn");
        synthetic_module(&odd.join("user.ko"), "user_fn", "x_fn");
        // modules.order lines are matched as bytes too.
        let mut order = b"extra/d\xfe/user.ko\nextra/d\xfe/x.ko\n".to_vec();
        order.extend_from_slice("extra/dum.日.ko\n".as_bytes());
        std::fs::write(dir.join("modules.order"), order).unwrap();
    }
    let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
    let diffs = compare_trees(&a, &b, k, &[]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    // The comparison saw the names: every module is in modules.dep, raw.
    let dep = std::fs::read(b.join("lib/modules").join(k).join("modules.dep")).unwrap();
    for path in [
        "extra/dum.日.ko:".as_bytes(),
        b"extra/d\xfe/x.\xff.ko: extra/dum.\xe6\x97\xa5.ko",
        b"extra/d\xfe/user.ko: extra/d\xfe/x.\xff.ko extra/dum.",
    ] {
        assert!(
            dep.windows(path.len()).any(|w| w == path),
            "{:?} not in modules.dep:\n{}",
            String::from_utf8_lossy(path),
            String::from_utf8_lossy(&dep)
        );
    }
}

/// A module file directly in the module directory (no subdirectory): kmod
/// indexes it as `NAME.ko:`; kmodkit's scan once subtracted past zero
/// there and panicked.
#[test]
fn a_module_at_the_top_of_the_module_directory_matches_kmod() {
    require_tool("depmod", "kmod");
    let tmp = tempfile::tempdir().unwrap();
    let k = "6.1.0-99-test";
    for side in ["kmod", "ours"] {
        let dir = tmp.path().join(side).join("lib/modules").join(k);
        std::fs::create_dir_all(dir.join("extra")).unwrap();
        synthetic_module(&dir.join("top.ko"), "top_fn", "printk");
        synthetic_module(&dir.join("extra/user.ko"), "user_fn", "top_fn");
    }
    let (a, b) = (tmp.path().join("kmod"), tmp.path().join("ours"));
    let diffs = compare_trees(&a, &b, k, &[]);
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    let dep = std::fs::read_to_string(b.join("lib/modules").join(k).join("modules.dep")).unwrap();
    assert!(
        dep.contains("extra/user.ko: top.ko\n"),
        "modules.dep:\n{dep}"
    );
}
