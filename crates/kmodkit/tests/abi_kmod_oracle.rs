//! `kmodkit abi check` of a whole tree against another kernel agrees with
//! kmod: the modules it finds CRC-incompatible are exactly those kmod's
//! `depmod -e -E <target Module.symvers>` warns about ("disagrees about
//! version of symbol"), and its unknown symbols are depmod's "needs unknown
//! symbol". Refusals depmod cannot see (struct module size, vermagic) are
//! listed separately and each must carry its explanation.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::symlink;
use std::process::Command;

use common::{kmodkit, require_tool, Fixtures, Kernel};

fn basename_module(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split('.').next().unwrap_or(base).replace('-', "_")
}

/// (CRC-disagreeing modules → symbols, unknown-symbol modules → symbols) from depmod.
fn depmod_view(
    fx: &Fixtures,
    set: &Kernel,
    target: &Kernel,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("lib/modules").join(&target.release);
    std::fs::create_dir_all(&dir).unwrap();
    symlink(fx.module_dir(set).join("kernel"), dir.join("kernel")).unwrap();
    let symvers = fx.module_symvers(target);
    let out = Command::new("depmod")
        .arg("-n")
        .arg("-e")
        .arg("-E")
        .arg(&symvers)
        .arg("-b")
        .arg(tmp.path())
        .arg(&target.release)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut crc: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let Some(rest) = line.strip_prefix("depmod: WARNING: ") else {
            continue;
        };
        if let Some((path, sym)) = rest.split_once(" disagrees about version of symbol ") {
            crc.entry(basename_module(path))
                .or_default()
                .insert(sym.to_string());
        } else if let Some((path, sym)) = rest.split_once(" needs unknown symbol ") {
            unknown
                .entry(basename_module(path))
                .or_default()
                .insert(sym.to_string());
        }
    }
    (crc, unknown)
}

#[derive(Default)]
struct OurView {
    crc: BTreeMap<String, BTreeSet<String>>,
    unknown: BTreeMap<String, BTreeSet<String>>,
    other: BTreeMap<String, Vec<String>>,
    modules: usize,
}

fn our_view(fx: &Fixtures, set: &Kernel, target: &Kernel) -> OurView {
    // Installed in updates/, the set replaces the target's own modules
    // (searched first by default), as in depmod's view of the tree.
    let out = kmodkit()
        .args(["abi", "check", "--json", "--placement", "updates", "--root"])
        .arg(&fx.root)
        .args(["-k", &target.release])
        .arg(fx.module_dir(set).join("kernel"))
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "abi check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut view = OurView::default();
    for m in doc["modules"].as_array().unwrap() {
        view.modules += 1;
        let name = m["name"].as_str().unwrap().to_string();
        for r in m["reasons"].as_array().unwrap() {
            match r["reason"].as_str().unwrap() {
                "crc" => {
                    view.crc
                        .entry(name.clone())
                        .or_default()
                        .insert(r["symbol"].as_str().unwrap().to_string());
                }
                "unknown_symbol" => {
                    view.unknown
                        .entry(name.clone())
                        .or_default()
                        .insert(r["symbol"].as_str().unwrap().to_string());
                }
                "dependency" => {}
                other => view
                    .other
                    .entry(name.clone())
                    .or_default()
                    .push(other.to_string()),
            }
        }
    }
    view
}

/// depmod sees only the set's own modules (and vmlinux); kmodkit also
/// resolves symbols the set does not provide to the target's in-tree
/// modules, as the target kernel would. So: every depmod warning must be
/// one of ours, and every extra CRC refusal of ours must be a symbol depmod
/// could only call unknown (its provider is a target module depmod never
/// saw). With the same series the two views coincide exactly.
fn compare(fx: &Fixtures, set: &Kernel, target: &Kernel, exact: bool) {
    let (d_crc, d_unknown) = depmod_view(fx, set, target);
    let ours = our_view(fx, set, target);
    assert!(ours.modules > 3000, "only {} modules checked", ours.modules);
    let empty = BTreeSet::new();
    let mut explained = 0usize;
    for (m, syms) in &d_crc {
        let mine = ours.crc.get(m).unwrap_or(&empty);
        assert!(
            syms.is_subset(mine),
            "{m}: depmod warns about {syms:?}, kmodkit found {mine:?}"
        );
    }
    for (m, mine) in &ours.crc {
        let theirs = d_crc.get(m).unwrap_or(&empty);
        let unknown = d_unknown.get(m).unwrap_or(&empty);
        for s in mine.difference(theirs) {
            assert!(
                !exact && unknown.contains(s),
                "{m}: kmodkit refuses {s} on CRC, depmod neither warns nor calls it unknown"
            );
            explained += 1;
        }
    }
    for (m, mine) in &ours.unknown {
        let theirs = d_unknown.get(m).unwrap_or(&empty);
        assert!(
            mine.is_subset(theirs),
            "{m}: unknown symbols {mine:?} vs depmod {theirs:?}"
        );
    }
    if exact {
        assert_eq!(d_crc, ours.crc, "CRC verdicts differ");
        assert_eq!(d_unknown, ours.unknown, "unknown symbols differ");
    }
    let ours_set: BTreeSet<&String> = ours.crc.keys().collect();
    let depmod_set: BTreeSet<&String> = d_crc.keys().collect();
    eprintln!(
        "{} -> {}: depmod warns about {} modules, kmodkit refuses {} on CRCs ({} symbols resolved to target modules depmod cannot see); {} modules refused for reasons depmod cannot see: {:?}",
        set.release,
        target.release,
        depmod_set.len(),
        ours_set.len(),
        explained,
        ours.other.len(),
        ours.other.values().flatten().collect::<BTreeSet<_>>()
    );
}

#[test]
fn whole_tree_crc_verdicts_equal_depmod_warnings() {
    require_tool("depmod", "kmod");
    let fx = Fixtures::load();
    let sixone: Vec<&Kernel> = fx.kernels.iter().filter(|k| k.series == "6.1").collect();
    let sixtwelve = fx.kernels.iter().find(|k| k.series == "6.12").unwrap();
    // Changed CRCs (older ABI into the newest), and 6.1 into 6.12 where the
    // struct module size and vermagic refuse everything as well.
    // Every older 6.1 ABI against every newer one: pairs with a changed
    // module_layout (everything refused), with partly changed CRCs (mixed
    // verdicts) and with identical CRCs (nothing refused).
    for (i, set) in sixone.iter().enumerate() {
        for target in &sixone[i + 1..] {
            compare(&fx, set, target, true);
        }
    }
    // 6.1 into 6.12: struct module size refuses everything as well.
    compare(&fx, sixone[0], sixtwelve, false);
}
