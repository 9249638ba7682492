//! Which kernels a root holds: one message for "that kernel is not here",
//! the same in every command.

use std::path::Path;

/// Releases with a module directory under `root/lib/modules` (or
/// `root/usr/lib/modules`), sorted.
pub fn installed_kernels(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
        .flat_map(|rd| rd.flatten())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `None` when `release` is installed under `root`, else the message:
/// "K is not installed under ROOT; installed: ...".
pub fn not_installed(root: &Path, release: &str) -> Option<String> {
    if root.join("lib/modules").join(release).is_dir() {
        return None;
    }
    let have = installed_kernels(root);
    Some(format!(
        "kernel {release} is not installed under {} (no {}); installed: {}",
        root.display(),
        root.join("lib/modules").join(release).display(),
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_installed() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-1-amd64")).unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.12.1-amd64")).unwrap();
        assert_eq!(not_installed(d.path(), "6.1.0-1-amd64"), None);
        let m = not_installed(d.path(), "6.1.0-9-amd64").unwrap();
        assert!(
            m.starts_with("kernel 6.1.0-9-amd64 is not installed under ")
                && m.ends_with("; installed: 6.1.0-1-amd64, 6.12.1-amd64"),
            "{m}"
        );
    }
}
