//! Module file names: which files are modules, and which module name a
//! file name implies. One definition for every crate, following kmod 30:
//! `kmod_exts` and `path_ends_with_kmod_ext` (`libkmod-util.c`) for the
//! suffixes, `modname_normalize` and `path_to_modname` for the name.
//!
//! kmod works on the bytes of a file name; so does this module. A name
//! that is not UTF-8 is still a module file, and its module name is the
//! bytes before the first `.`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The suffixes of module files, uncompressed first (kmod's `kmod_exts`
/// order with every compression built in).
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.gz", ".ko.xz", ".ko.zst"];

/// The suffix of a module file name, or `None` when it is not one. As in
/// kmod, the name must be longer than its suffix: `.ko` alone is not a
/// module file.
pub fn module_suffix(file_name: &[u8]) -> Option<&'static str> {
    MODULE_SUFFIXES
        .iter()
        .find(|s| file_name.len() > s.len() && file_name.ends_with(s.as_bytes()))
        .copied()
}

/// Whether a path's last component names a module file.
pub fn is_module_file(path: impl AsRef<OsStr>) -> bool {
    module_suffix(base_name(path.as_ref().as_bytes())).is_some()
}

fn base_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// `modname_normalize`: `-` becomes `_`, and the name ends at the first
/// `.` (or NUL).
pub fn normalize_name_bytes(name: &[u8]) -> Vec<u8> {
    name.iter()
        .take_while(|&&c| c != b'.' && c != 0)
        .map(|&c| if c == b'-' { b'_' } else { c })
        .collect()
}

/// [`normalize_name_bytes`] for a name given as text.
pub fn normalize_module_name(name: &str) -> String {
    // Cutting at an ASCII byte keeps the text valid UTF-8.
    String::from_utf8(normalize_name_bytes(name.as_bytes())).unwrap_or_default()
}

/// `path_to_modname`: the module name of a file name's last component,
/// as bytes; `None` for an empty one.
pub fn module_name_bytes(path: impl AsRef<OsStr>) -> Option<Vec<u8>> {
    let base = base_name(path.as_ref().as_bytes());
    if base.is_empty() {
        return None;
    }
    Some(normalize_name_bytes(base))
}

/// [`module_name_bytes`] as text. A module name that is not UTF-8 (no
/// kernel builds one: Kbuild names are C identifiers) gives `None`.
pub fn module_name_from_path(path: &Path) -> Option<String> {
    String::from_utf8(module_name_bytes(path.as_os_str())?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_names_follow_kmod() {
        assert_eq!(module_suffix(b"mlx5_core.ko.zst"), Some(".ko.zst"));
        assert_eq!(module_suffix(b"mlx5_core.ko"), Some(".ko"));
        assert_eq!(module_suffix(b"mlx5_core.ko.bz2"), None);
        assert_eq!(module_suffix(b"modules.dep"), None);
        assert_eq!(module_suffix(b".ko"), None);
        assert!(!is_module_file("kernel/.ko.xz"));
        assert!(is_module_file("a/b/c.ko.xz"));
        assert_eq!(
            module_name_from_path(Path::new("/lib/x/mlx5-core.ko.xz")).as_deref(),
            Some("mlx5_core")
        );
        // A name with a non-ASCII part after the first dot: kmod takes the
        // bytes before it.
        assert_eq!(
            module_name_bytes(OsStr::from_bytes(b"d/dum.\xe6\x97\xa5.ko")),
            Some(b"dum".to_vec())
        );
        assert_eq!(
            module_name_bytes(OsStr::from_bytes(b"\xff-x.ko")),
            Some(b"\xff_x".to_vec())
        );
        assert_eq!(
            module_name_from_path(Path::new("\u{ff}")),
            Some("\u{ff}".into())
        );
        assert_eq!(module_name_bytes(OsStr::new("dir/")), None);
        assert_eq!(normalize_module_name("a-b.c-d"), "a_b");
    }
}
