//! Issue 12 §4 on real kernels and images: one message for a kernel that is
//! not installed, errors that name the file and say the OS error once, the
//! same `--root`/`--kernel` vocabulary in every command, CRCs in `--json`
//! as `Module.symvers` writes them, and `initrd diff` exiting as diff(1).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{kmodkit, require_tool, Fixtures, Kernel};

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sixone(fx: &Fixtures) -> Kernel {
    fx.kernels
        .iter()
        .find(|k| k.series == "6.1")
        .unwrap()
        .clone()
}

/// The OS's own words for a missing file (without "(os error N)").
fn enoent_text() -> String {
    std::fs::metadata("/nonexistent-kmodkit-probe")
        .unwrap_err()
        .to_string()
        .split(" (os error")
        .next()
        .unwrap()
        .to_string()
}

/// A real module cut in half: its section headers are gone.
fn truncated_module(fx: &Fixtures, k: &Kernel, dest: &Path) -> PathBuf {
    let data = std::fs::read(fx.module_dir(k).join("kernel/drivers/net/dummy.ko")).unwrap();
    let path = dest.join("dummy-truncated.ko");
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    path
}

/// `abi check --kernel`, `modinfo -k`, `depmod KVER`, `weak-modules
/// --add-kernel/--remove-kernel` on a kernel the root does not hold: an
/// error (not "install the headers", not a skip with exit 0) naming the
/// kernels that are there, read from the root's lib/modules.
#[test]
fn a_kernel_not_installed_is_an_error_naming_the_installed_ones() {
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::link_tree_with_headers(&fx, &k, &root);
    let missing = format!("{}-not-here", k.release);
    let mut installed: Vec<String> = std::fs::read_dir(root.join("lib/modules"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    installed.sort();
    let expected = format!(
        "kernel {missing} is not installed under {} (no {}); installed: {}",
        root.display(),
        root.join("lib/modules").join(&missing).display(),
        installed.join(", ")
    );
    let module = fx.module_dir(&k).join("kernel/drivers/net/dummy.ko");
    let cases: Vec<(&str, Command)> = vec![
        ("abi check", {
            let mut c = kmodkit();
            c.args(["abi", "check", "--kernel", &missing, "--root"])
                .arg(&root)
                .arg(&module);
            c
        }),
        ("modinfo", {
            let mut c = kmodkit();
            c.args(["modinfo", "-k", &missing, "-b"])
                .arg(&root)
                .arg("dummy");
            c
        }),
        ("depmod", {
            let mut c = kmodkit();
            c.args(["depmod", "-b"]).arg(&root).arg(&missing);
            c
        }),
        ("weak-modules --add-kernel", {
            let mut c = kmodkit();
            c.args(["weak-modules", "--basedir"])
                .arg(&root)
                .args(["--add-kernel", &missing]);
            c
        }),
        ("weak-modules --remove-kernel", {
            let mut c = kmodkit();
            c.args(["weak-modules", "--basedir"])
                .arg(&root)
                .args(["--remove-kernel", &missing]);
            c
        }),
    ];
    let mut failures = Vec::new();
    for (what, mut cmd) in cases {
        let o = run(&mut cmd);
        let msg = stderr(&o);
        if o.status.success() || !msg.contains(&expected) {
            failures.push(format!("{what}: exit {:?}, stderr: {msg}", o.status.code()));
        }
        if what == "abi check" && o.status.code() != Some(2) {
            failures.push(format!("abi check must exit 2, got {:?}", o.status.code()));
        }
    }
    assert!(
        failures.is_empty(),
        "want \"{expected}\":\n{}",
        failures.join("\n")
    );
}

/// `abi check` on a missing file and on a corrupt module: exit 2 naming
/// the file, the OS error said once; a corrupt module is no verdict.
#[test]
fn abi_check_a_missing_or_corrupt_module_exits_2_naming_it() {
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("absent.ko");
    let corrupt = truncated_module(&fx, &k, tmp.path());
    let good = fx.module_dir(&k).join("kernel/drivers/net/dummy.ko");
    let check = |files: &[&Path]| {
        let mut c = kmodkit();
        c.args(["abi", "check", "--kernel", &k.release, "--root"])
            .arg(&fx.root)
            .args(files);
        run(&mut c)
    };
    let o = check(&[&good, &absent]);
    let msg = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{msg}");
    assert!(msg.contains(&absent.display().to_string()), "{msg}");
    assert_eq!(msg.matches(&enoent_text()).count(), 1, "{msg}");

    let o = check(&[&good, &corrupt]);
    let msg = stderr(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{msg}\n{out}");
    assert!(msg.contains(&corrupt.display().to_string()), "{msg}");
    assert!(!out.contains("INCOMPATIBLE"), "{out}");
}

/// Whether kmod's depmod, on `root` with a copy of `module` in
/// weak-updates/, indexes that copy (instead of the in-tree one). kmod's
/// `-b` does not move the configuration; `-C` names the root's.
fn kmod_prefers_weak_updates(root: &Path, k: &Kernel, module: &Path) -> bool {
    let dir = root
        .join("lib/modules")
        .join(&k.release)
        .join("weak-updates");
    std::fs::create_dir_all(&dir).unwrap();
    let base = module.file_name().unwrap();
    std::fs::copy(module, dir.join(base)).unwrap();
    let conf = root.join("etc/depmod.d");
    std::fs::create_dir_all(&conf).unwrap();
    let o = run(Command::new("depmod")
        .arg("-n")
        .arg("-C")
        .arg(&conf)
        .arg("-b")
        .arg(root)
        .arg(&k.release));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.lines()
        .any(|l| l.starts_with(&format!("weak-updates/{}:", base.to_string_lossy())))
}

/// `abi check --root` decides priorities with the root's own depmod.d, as
/// kmod's depmod -b ROOT does, and says which files it used; `--basedir`
/// and `-b` are the same flag.
#[test]
fn abi_check_under_root_uses_the_roots_depmod_d_and_says_so() {
    require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    common::link_tree_with_headers(&fx, &k, &root);
    let set = tmp.path().join("set");
    std::fs::create_dir_all(&set).unwrap();
    let module = set.join("dummy.ko");
    std::fs::copy(
        fx.module_dir(&k).join("kernel/drivers/net/dummy.ko"),
        &module,
    )
    .unwrap();
    let conf = root.join("etc/depmod.d/weak.conf");
    for with_conf in [false, true] {
        if with_conf {
            std::fs::create_dir_all(conf.parent().unwrap()).unwrap();
            std::fs::write(&conf, "search weak-updates built-in\n").unwrap();
        }
        let kmod_weak = kmod_prefers_weak_updates(&root, &k, &module);
        let check = |root_flag: &str, json: bool| {
            let mut c = kmodkit();
            c.args(["abi", "check", "--kernel", &k.release, root_flag])
                .arg(&root);
            if json {
                c.arg("--json");
            }
            let o = run(c.arg(&module));
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            o.stdout
        };
        let doc: serde_json::Value = serde_json::from_slice(&check("--root", true)).unwrap();
        let ours_weak = doc["modules"][0]["shadowed_by"].is_null();
        assert_eq!(
            ours_weak, kmod_weak,
            "with_conf={with_conf}: kmod indexes weak-updates/dummy.ko: {kmod_weak}; abi check: {doc}"
        );
        let said = doc["depmod_config"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            said.contains(&conf.display().to_string()),
            with_conf,
            "depmod_config: {said}"
        );
        let text = check("--root", false);
        assert!(
            String::from_utf8_lossy(&text).contains(&format!("depmod configuration: {said}")),
            "{}",
            String::from_utf8_lossy(&text)
        );
        assert_eq!(check("--basedir", false), text);
        assert_eq!(check("-b", false), text);
    }
}

/// `--root DIR` and `--kernel K` wherever a root or a kernel is taken,
/// next to kmod's `-b`/`--basedir`, `-k`/`--set-version` and RHEL's
/// `--basedir`: the same output (modinfo's checked against kmod's).
#[test]
fn every_command_takes_root_and_kernel() {
    require_tool("modinfo", "kmod");
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let root = fx.root.display().to_string();
    let kmod =
        run(Command::new("modinfo")
            .args(["-b", &root, "-k", &k.release, "-F", "vermagic", "dummy"]));
    assert!(kmod.status.success());
    for args in [
        ["--root", root.as_str(), "--kernel", k.release.as_str()],
        [
            "--basedir",
            root.as_str(),
            "--set-version",
            k.release.as_str(),
        ],
    ] {
        let o = run(kmodkit()
            .arg("modinfo")
            .args(args)
            .args(["-F", "vermagic", "dummy"]));
        assert_eq!(
            (o.status.success(), &o.stdout),
            (true, &kmod.stdout),
            "{args:?}: {}",
            stderr(&o)
        );
    }

    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("root");
    common::link_tree_with_headers(&fx, &k, &fake);
    let depmod = |flag: &str| {
        let o = run(kmodkit()
            .args(["depmod", "-n", flag])
            .arg(&fake)
            .arg(&k.release));
        assert!(o.status.success(), "depmod {flag}: {}", stderr(&o));
        o.stdout
    };
    let by_b = depmod("-b");
    assert!(!by_b.is_empty());
    assert_eq!(depmod("--root"), by_b);
    assert_eq!(depmod("--basedir"), by_b);

    let weak = |flag: &str| {
        let o = run(kmodkit()
            .args(["weak-modules", "--dry-run", flag])
            .arg(&fake)
            .args(["--add-kernel", &k.release]));
        assert!(o.status.success(), "weak-modules {flag}: {}", stderr(&o));
        o.stdout
    };
    assert_eq!(weak("--root"), weak("--basedir"));
}

/// Errors whose message holds the OS error are not followed by it again in
/// the `{:#}` chain; a corrupt module in depmod is named once.
#[test]
fn errors_say_the_os_error_and_the_file_once() {
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("absent.symvers");
    let absent_s = absent.display().to_string();
    let reason = enoent_text();
    let module = fx.module_dir(&k).join("kernel/drivers/net/dummy.ko");
    let mut cases: Vec<(String, Command)> = Vec::new();
    for flag in ["-E", "-F"] {
        let mut c = kmodkit();
        c.args(["depmod", "-n", "-e", flag, &absent_s, "-b"])
            .arg(&fx.root)
            .arg(&k.release);
        cases.push((format!("depmod {flag}"), c));
    }
    let mut c = kmodkit();
    c.args([
        "abi",
        "check",
        "--kernel",
        &k.release,
        "--symvers",
        &absent_s,
        "--root",
    ])
    .arg(&fx.root)
    .arg(&module);
    cases.push(("abi check --symvers".into(), c));
    for (what, mut cmd) in cases {
        let o = run(&mut cmd);
        let msg = stderr(&o);
        assert!(!o.status.success(), "{what}");
        assert!(msg.contains(&absent_s), "{what}: {msg}");
        assert_eq!(msg.matches(&reason).count(), 1, "{what}: {msg}");
    }

    // A corrupt module in the tree: depmod names it once.
    let root = tmp.path().join("root");
    common::link_tree_with_headers(&fx, &k, &root);
    let extra = root.join("lib/modules").join(&k.release).join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    let corrupt = truncated_module(&fx, &k, &extra);
    let o = run(kmodkit().args(["depmod", "-b"]).arg(&root).arg(&k.release));
    let msg = stderr(&o);
    assert!(!o.status.success(), "{msg}");
    assert_eq!(
        msg.matches(&corrupt.display().to_string()).count(),
        1,
        "{msg}"
    );
}

/// `0x%08x` as Module.symvers and kmod's `modprobe --dump-modversions`
/// print CRCs.
fn hex(s: &str) -> String {
    format!(
        "{:#010x}",
        u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
    )
}

/// CRCs in `modinfo --json` and `abi check --json` are the strings of
/// kmod's `modprobe --dump-modversions` (imports) and Module.symvers
/// (exports, the target's providers), not integers.
#[test]
fn json_crcs_are_the_hex_strings_of_module_symvers() {
    require_tool("modprobe", "kmod");
    let fx = Fixtures::load();
    let k = sixone(&fx);
    let rel = "kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_core.ko";
    let module = fx.module_dir(&k).join(rel);
    let dump = run(Command::new("modprobe")
        .arg("--dump-modversions")
        .arg(&module));
    assert!(dump.status.success(), "{}", stderr(&dump));
    let imports: BTreeMap<String, String> = String::from_utf8_lossy(&dump.stdout)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(crc, name)| (name.to_string(), hex(crc)))
        .collect();
    assert!(!imports.is_empty());
    let symvers_of = |k: &Kernel| -> BTreeMap<(String, String), String> {
        std::fs::read_to_string(fx.module_symvers(k))
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f.len() > 2).then(|| ((f[2].to_string(), f[1].to_string()), f[0].to_string()))
            })
            .collect()
    };
    let own = symvers_of(&k);
    let module_key = rel
        .trim_start_matches("kernel/")
        .trim_end_matches(".ko")
        .to_string();

    let o = run(kmodkit().args(["modinfo", "--json"]).arg(&module));
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &doc[0];
    let versions: BTreeMap<String, String> = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let crc = v["crc"]
                .as_str()
                .unwrap_or_else(|| panic!("crc not a string: {v}"));
            (v["name"].as_str().unwrap().to_string(), crc.to_string())
        })
        .collect();
    assert_eq!(versions, imports);
    let exports = m["exports"].as_array().unwrap();
    assert!(!exports.is_empty());
    for e in exports {
        let name = e["name"].as_str().unwrap().to_string();
        let want = &own[&(module_key.clone(), name)];
        assert_eq!(e["crc"].as_str(), Some(want.as_str()), "{e}");
    }

    // Against the 6.12 kernel mlx4_core's CRCs disagree: both sides shown
    // as the files show them.
    let target = fx.kernels.iter().find(|k| k.series == "6.12").unwrap();
    let theirs = symvers_of(target);
    let o = run(kmodkit()
        .args([
            "abi",
            "check",
            "--json",
            "--kernel",
            &target.release,
            "--root",
        ])
        .arg(&fx.root)
        .arg(&module));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let crcs: Vec<&serde_json::Value> = doc["modules"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["reason"] == "crc")
        .collect();
    assert!(!crcs.is_empty(), "{doc}");
    for r in crcs {
        let sym = r["symbol"].as_str().unwrap();
        assert_eq!(r["expected"].as_str(), Some(imports[sym].as_str()), "{r}");
        let found = theirs
            .iter()
            .find(|((_, s), _)| s == sym)
            .map(|(_, c)| c.as_str());
        assert_eq!(r["found"].as_str(), found, "{r}");
    }
}

/// `initrd diff` exits as diff(1) does on the same two files: 0 same, 1
/// different, 2 trouble (a missing image, named).
#[test]
fn initrd_diff_exits_as_diff() {
    require_tool("diff", "diffutils");
    let dir = kmodkit_fixtures::cache_dir().join("initrd");
    let list = std::fs::read_to_string(dir.join("images.list")).unwrap();
    let images: Vec<PathBuf> = list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| dir.join(n))
        .collect();
    assert!(images.len() >= 2, "run scripts/initrd-fixtures");
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("absent.img");
    for (a, b) in [
        (&images[0], &images[0]),
        (&images[0], &images[1]),
        (&images[0], &absent),
    ] {
        let want = run(Command::new("diff").arg(a).arg(b)).status.code();
        let o = run(kmodkit().args(["initrd", "diff"]).arg(a).arg(b));
        assert_eq!(o.status.code(), want, "{a:?} {b:?}: {}", stderr(&o));
        if want == Some(2) {
            assert!(stderr(&o).contains(&absent.display().to_string()));
        }
    }
}
