//! Exported symbols read from every in-tree module equal the
//! `Module.symvers` rows the kernel build wrote for that module (the
//! linux-headers package is the oracle): same set of symbols, CRC, export
//! type (GPL or not) and namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmodkit_module::read_module;

fn kernels(_root: &Path) -> Vec<String> {
    kmodkit_fixtures::kernels()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Row {
    crc: u32,
    gpl: bool,
    namespace: String,
}

/// `0xCRC\tsymbol\tmodule\tEXPORT_SYMBOL[_GPL]\tnamespace`, keyed by
/// (module path without extension, symbol); vmlinux rows are skipped.
fn read_symvers(path: &Path) -> BTreeMap<(String, String), Row> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut rows = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split('\t').collect();
        assert!(f.len() >= 4, "{}:{}: malformed row", path.display(), n + 1);
        if f[2] == "vmlinux" {
            continue;
        }
        let crc = u32::from_str_radix(f[0].trim_start_matches("0x"), 16)
            .unwrap_or_else(|e| panic!("{}:{}: bad CRC: {e}", path.display(), n + 1));
        rows.insert(
            (f[2].to_string(), f[1].to_string()),
            Row {
                crc,
                gpl: f[3] == "EXPORT_SYMBOL_GPL",
                namespace: f.get(4).copied().unwrap_or("").to_string(),
            },
        );
    }
    rows
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.to_string_lossy().contains(".ko") {
            out.push(p);
        }
    }
}

#[test]
fn exported_crcs_equal_module_symvers_for_every_kernel() {
    let root = kmodkit_fixtures::fixture_root();
    let mut checked = 0usize;
    for kver in kernels(&root) {
        let symvers = root.join(format!("usr/src/linux-headers-{kver}/Module.symvers"));
        let expected = read_symvers(&symvers);
        let tree = root.join("lib/modules").join(&kver);
        let mut files = Vec::new();
        walk(&tree.join("kernel"), &mut files);
        let mut actual = BTreeMap::new();
        for file in &files {
            let (_, module) = read_module(file).unwrap_or_else(|e| panic!("{e}"));
            // Module.symvers names modules by build path without extension.
            let rel = file
                .strip_prefix(tree.join("kernel"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let rel = rel.split(".ko").next().unwrap().to_string();
            for e in module.exports {
                let crc = e
                    .crc
                    .unwrap_or_else(|| panic!("{}: {} has no CRC", file.display(), e.name));
                actual.insert(
                    (rel.clone(), e.name),
                    Row {
                        crc,
                        gpl: e.gpl_only,
                        namespace: e.namespace.unwrap_or_default(),
                    },
                );
            }
        }
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !actual.contains_key(*k))
            .take(10)
            .collect();
        let extra: Vec<_> = actual
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(10)
            .collect();
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(k, v)| actual.get(*k).is_some_and(|a| a != *v))
            .take(10)
            .map(|(k, v)| (k, v, &actual[k]))
            .collect();
        assert!(
            missing.is_empty() && extra.is_empty() && wrong.is_empty(),
            "{kver}: exports differ from {}\nmissing: {missing:?}\nextra: {extra:?}\nwrong (expected, read): {wrong:?}",
            symvers.display()
        );
        assert!(
            expected.len() > 10_000,
            "{kver}: suspiciously few module exports ({})",
            expected.len()
        );
        eprintln!(
            "{kver}: {} module-exported symbols match Module.symvers",
            expected.len()
        );
        checked += expected.len();
    }
    assert!(checked > 0);
}

/// The sparse reader (only the sections the parser uses, read with pread)
/// gives exactly what a full read gives, for every module of every tree.
#[test]
fn sparse_and_mapped_reads_equal_full_reads() {
    let root = kmodkit_fixtures::fixture_root();
    let mut compared = 0usize;
    for kver in kernels(&root) {
        let mut files = Vec::new();
        walk(
            &root.join("lib/modules").join(&kver).join("kernel"),
            &mut files,
        );
        for file in files.iter().step_by(3) {
            let (_, full) = read_module(file).unwrap_or_else(|e| panic!("{e}"));
            let fast = kmodkit_module::read_module_mapped(
                file,
                kmodkit_module::compression::DEFAULT_LIMIT,
            )
            .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                format!("{full:?}"),
                format!("{fast:?}"),
                "{}",
                file.display()
            );
            compared += 1;
        }
    }
    assert!(compared > 5000, "only {compared} modules compared");
}
