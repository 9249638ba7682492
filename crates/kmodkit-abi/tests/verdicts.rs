//! The compatibility decisions of [`kmodkit_abi::check`] below the CLI, on
//! real Debian modules against their real target kernels: a module on its
//! own kernel loads; a module from another kernel series is refused for
//! the loader's reasons; a symbol a module of the set provides makes a
//! set-internal dependency; a set module that replaces an in-tree one but
//! lacks its exports leaves its users with unknown symbols; and the
//! target's depmod.d priorities decide whether a placement replaces or is
//! shadowed by the in-tree module.

use std::path::{Path, PathBuf};

use kmodkit_abi::{check, Reason, Target};

/// (release, module dir) of every fixture kernel.
fn kernels() -> Vec<(String, PathBuf)> {
    let root = kmodkit_fixtures::fixture_root();
    let ks: Vec<(String, PathBuf)> = kmodkit_fixtures::kernels()
        .into_iter()
        .map(|(k, _)| {
            let dir = root.join("lib/modules").join(&k);
            (k, dir)
        })
        .collect();
    assert!(!ks.is_empty(), "no fixture kernels");
    ks
}

fn target(release: &str) -> Target {
    Target::load(&kmodkit_fixtures::fixture_root(), release, None)
        .unwrap_or_else(|e| panic!("{release}: {e}"))
}

/// A module with exactly one dependency, both in-tree, from the kernel's
/// own modules.dep: (user, dependency) full paths.
fn user_and_dependency(dir: &Path) -> (PathBuf, PathBuf) {
    let dep = std::fs::read_to_string(dir.join("modules.dep")).expect("modules.dep");
    for line in dep.lines() {
        let Some((m, deps)) = line.split_once(':') else {
            continue;
        };
        let deps: Vec<&str> = deps.split_whitespace().collect();
        if let [d] = deps[..] {
            if m.starts_with("kernel/") && d.starts_with("kernel/") {
                return (dir.join(m), dir.join(d));
            }
        }
    }
    panic!("{}: no module with exactly one dependency", dir.display());
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn an_in_tree_module_loads_on_its_own_kernel() {
    for (k, dir) in kernels() {
        let t = target(&k);
        let (user, _) = user_and_dependency(&dir);
        let v = check(&t, std::slice::from_ref(&user), "updates");
        assert_eq!(v.len(), 1);
        assert!(v[0].compatible, "{k}: {:?}", v[0].reasons);
        assert!(v[0].needs.is_empty(), "{k}: its dependency is in-tree");
    }
}

#[test]
fn a_module_of_another_kernel_series_is_refused() {
    let ks = kernels();
    let series = |k: &str| k.split('.').take(2).collect::<Vec<_>>().join(".");
    let Some(((k1, _), (k2, dir2))) = ks.iter().find_map(|a| {
        ks.iter()
            .find(|b| series(&b.0) != series(&a.0))
            .map(|b| (a, b))
    }) else {
        panic!("the fixtures need two kernel series: {ks:?}");
    };
    let t = target(k1);
    let (user, _) = user_and_dependency(dir2);
    let v = check(&t, std::slice::from_ref(&user), "updates");
    assert!(!v[0].compatible, "{k2} module on {k1}");
    assert!(
        v[0].reasons.iter().any(|r| matches!(
            r,
            Reason::StructModuleSize { .. } | Reason::Crc { .. } | Reason::Vermagic { .. }
        )),
        "{k2} module on {k1}: {:?}",
        v[0].reasons
    );
}

#[test]
fn a_symbol_from_the_set_makes_a_set_dependency() {
    for (k, dir) in kernels() {
        let t = target(&k);
        let (user, dependency) = user_and_dependency(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let (u, d) = (
            tmp.path().join(file_name(&user)),
            tmp.path().join(file_name(&dependency)),
        );
        std::fs::copy(&user, &u).unwrap();
        std::fs::copy(&dependency, &d).unwrap();
        let v = check(&t, &[u, d], "updates");
        assert!(v.iter().all(|v| v.compatible), "{k}: {v:?}");
        assert_eq!(v[0].needs, vec![v[1].name.clone()], "{k}");
        assert_eq!(v[1].shadowed_by, None, "{k}: updates/ beats the tree");
    }
}

#[test]
fn a_replacement_without_the_exports_leaves_unknown_symbols() {
    for (k, dir) in kernels() {
        let t = target(&k);
        let (user, dependency) = user_and_dependency(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let u = tmp.path().join(file_name(&user));
        std::fs::copy(&user, &u).unwrap();
        // The user module's file under the dependency's name: a module of
        // that name that exports none of what the user needs (updates/
        // replaces the in-tree one, so the in-tree exports are gone).
        let fake = tmp.path().join(file_name(&dependency));
        std::fs::copy(&user, &fake).unwrap();
        let v = check(&t, &[u, fake], "updates");
        assert!(!v[0].compatible, "{k}: {:?}", v[0]);
        assert!(
            v[0].reasons
                .iter()
                .any(|r| matches!(r, Reason::UnknownSymbol { .. })),
            "{k}: {:?}",
            v[0].reasons
        );
    }
}

#[test]
fn depmod_priorities_decide_replace_or_shadow() {
    for (k, dir) in kernels() {
        let t = target(&k);
        let (_, dependency) = user_and_dependency(&dir);
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join(file_name(&dependency));
        std::fs::copy(&dependency, &d).unwrap();
        // Debian's depmod.d (or kmod's default) searches updates/ before
        // the built-in tree: a copy there replaces the in-tree module.
        let v = check(&t, std::slice::from_ref(&d), "updates");
        assert_eq!(v[0].shadowed_by, None, "{k}");
        // extra/ has built-in priority; on a tie the module found first
        // (the in-tree one) stays, so the copy would never be loaded.
        let v = check(&t, std::slice::from_ref(&d), "extra");
        assert_eq!(
            v[0].shadowed_by.as_deref().map(Path::new),
            Some(dependency.as_path()),
            "{k}"
        );
    }
}
