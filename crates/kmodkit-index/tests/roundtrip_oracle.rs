//! Every `.bin` index kmod's depmod wrote for the fetched kernels is read
//! back and rebuilt with `IndexBuilder`: the bytes must be identical, which
//! proves reader and writer follow kmod's format and node order exactly.

use kmodkit_index::writer::IndexBuilder;
use kmodkit_index::Index;

#[test]
fn rebuilding_kmod_indexes_gives_identical_bytes() {
    let root = kmodkit_fixtures::fixture_root();
    let list = std::fs::read_to_string(root.join("kernels.list")).unwrap_or_else(|e| {
        panic!(
            "{}/kernels.list: {e}; run scripts/fixtures first",
            root.display()
        )
    });
    let mut checked = 0;
    for kver in list.lines().filter_map(|l| l.split_whitespace().next()) {
        for name in [
            "modules.dep.bin",
            "modules.alias.bin",
            "modules.symbols.bin",
            "modules.builtin.bin",
            "modules.builtin.alias.bin",
        ] {
            let path = root.join("lib/modules").join(kver).join(name);
            let original =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let index = Index::from_bytes(&path, original.clone()).unwrap();
            let mut builder = IndexBuilder::new();
            let mut values = 0;
            for (key, vals) in index.entries().unwrap() {
                // Equal priorities come out last-inserted first: insert in reverse.
                for v in vals.iter().rev() {
                    builder.insert(&key, &v.value, v.priority).unwrap();
                    values += 1;
                }
            }
            assert!(values > 0, "{}: empty index", path.display());
            let rebuilt = builder.to_bytes();
            assert!(
                rebuilt == original,
                "{}: rebuilt index differs ({} vs {} bytes)",
                path.display(),
                rebuilt.len(),
                original.len()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10);
}
