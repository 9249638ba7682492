//! `ModuleTree::load_order` (the order later steps insert modules in)
//! equals the order kmod's `modprobe --show-depends` prints, for every
//! module of each fetched tree whose closure has no soft dependencies.

use std::collections::HashSet;
use std::process::Command;

use kmodkit_depmod::{ModuleTree, TreeOptions};

#[test]
fn load_order_matches_modprobe_show_depends() {
    let root = kmodkit_fixtures::fixture_root();
    let list = std::fs::read_to_string(root.join("kernels.list")).unwrap_or_else(|e| {
        panic!(
            "{}/kernels.list: {e}; run scripts/fixtures first",
            root.display()
        )
    });
    let root_s = root.display().to_string();
    // The host's modprobe.d (kmod's own aliases.conf has softdeps) must not
    // add modules: an empty configuration directory.
    let empty =
        std::env::temp_dir().join(format!("kmodkit-empty-modprobe.d-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let empty_s = empty.display().to_string();
    for kver in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let tree = ModuleTree::load(TreeOptions::new(Some(root_s.clone()), kver)).unwrap();
        let with_softdeps: HashSet<usize> = (0..tree.modules.len())
            .filter(|&i| {
                tree.modules[i]
                    .record
                    .info
                    .iter()
                    .any(|(k, _)| k == "softdep")
            })
            .collect();
        let mut compared = 0;
        for (i, m) in tree.modules.iter().enumerate() {
            let order = tree.load_order(&[i]);
            if order.iter().any(|d| with_softdeps.contains(d)) {
                continue;
            }
            let out = Command::new("modprobe")
                .args([
                    "-C",
                    &empty_s,
                    "-d",
                    &root_s,
                    "-S",
                    kver,
                    "--show-depends",
                    &m.display_name(),
                ])
                .output()
                .expect("run modprobe (kmod)");
            let expected: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("insmod "))
                .map(|l| l.trim_end().split(' ').next().unwrap_or("").to_string())
                .collect();
            let actual: Vec<String> = order
                .iter()
                .map(|&d| tree.modules[d].path.display().to_string())
                .collect();
            assert_eq!(
                actual,
                expected,
                "{kver}: load order of {}",
                m.display_name()
            );
            compared += 1;
            if compared >= 1500 {
                break;
            }
        }
        assert!(compared > 500, "{kver}: only {compared} modules compared");
        eprintln!("{kver}: {compared} load orders equal modprobe's");
    }
}
