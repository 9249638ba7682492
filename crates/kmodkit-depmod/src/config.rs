//! depmod.d configuration, as kmod 30's `tools/depmod.c` (`cfg_load`,
//! `cfg_file_parse`) reads it.
//!
//! Files: every `*.conf` in the configuration directories (default
//! `/etc/depmod.d`, `/run/depmod.d`, `/usr/local/lib/depmod.d`,
//! `/lib/depmod.d`; `-C` replaces them, and may name plain files), merged by
//! file name — the first directory to provide a name wins — and parsed in
//! name order. Directives:
//!
//! ```text
//! search DIR|built-in|external ...   priority of subdirectories, first wins
//! override MODULE KVER-REGEX SUBDIR  this module comes from SUBDIR
//! external KVER-REGEX DIR            also scan DIR (outside the tree)
//! exclude DIR ...                    skip directories with this name
//! ```
//!
//! With no `search` line at all, only `updates` is searched before
//! everything else. kmod keeps each directive list in reverse order of
//! appearance (it prepends); [`DepmodConfig`] stores them in that same
//! order because the priority arithmetic depends on it.

use std::path::{Path, PathBuf};

/// The default configuration directories of Debian's kmod 30.
pub const DEFAULT_CONFIG_DIRS: [&str; 4] = [
    "/etc/depmod.d",
    "/run/depmod.d",
    "/usr/local/lib/depmod.d",
    "/lib/depmod.d",
];

/// The configuration directories a system under `root` reads itself:
/// [`DEFAULT_CONFIG_DIRS`] below `root`; empty (kmod's defaults) for `/`.
/// kmod's `depmod -b` reads the host's directories, which is right for
/// indexing an image with the host's policy but not for deciding what the
/// image's own depmod will do.
pub fn root_config_dirs(root: &Path) -> Vec<PathBuf> {
    if root == Path::new("/") {
        return Vec::new();
    }
    DEFAULT_CONFIG_DIRS
        .iter()
        .map(|d| root.join(d.trim_start_matches('/')))
        .collect()
}

/// One `search` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    /// A subdirectory of the module directory (`updates`, `extra`, ...).
    Path(String),
    /// `built-in`: everything not matched by another entry (`kernel/` too).
    BuiltIn,
    /// `external`: the directories named by `external` lines.
    External,
}

/// A parsed depmod.d configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepmodConfig {
    /// In kmod's list order: last directive first.
    pub searches: Vec<Search>,
    /// `SUBDIR/MODNAME` (no extension), last directive first.
    pub overrides: Vec<String>,
    /// External directories, last directive first.
    pub externals: Vec<String>,
    /// Excluded directory names.
    pub excludes: Vec<String>,
    /// Problems kmod reports and skips (bad lines, unreadable files).
    pub diagnostics: Vec<String>,
    /// The files read, in parse order (what a tool reports as "the
    /// configuration used").
    pub files: Vec<PathBuf>,
    /// The files holding a `search` line.
    pub search_files: Vec<PathBuf>,
}

/// A configuration problem that stops the run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The OS error is in the message, not a source() (no doubled chain).
    #[error("{}: cannot read configuration: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// `cfg_kernel_matches`: `*` matches everything, otherwise an extended
/// regular expression searched (unanchored) in the kernel release.
fn kernel_matches(pattern: &str, kver: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    regex::Regex::new(pattern).is_ok_and(|re| re.is_match(kver))
}

impl DepmodConfig {
    /// Loads the configuration the way `depmod -a` does for kernel `kver`.
    /// `dirs` replaces the defaults when not empty (`-C`).
    pub fn load(dirs: &[PathBuf], kver: &str) -> Result<DepmodConfig, ConfigError> {
        let defaults: Vec<PathBuf> = DEFAULT_CONFIG_DIRS.iter().map(PathBuf::from).collect();
        let dirs = if dirs.is_empty() { &defaults[..] } else { dirs };
        let mut cfg = DepmodConfig::default();
        // (file name, full path), sorted by name, first directory wins.
        let mut files: Vec<(String, PathBuf)> = Vec::new();
        for dir in dirs {
            let Ok(meta) = std::fs::metadata(dir) else {
                continue;
            };
            if !meta.is_dir() {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                insert_sorted(&mut files, name, dir.clone());
                continue;
            }
            let rd = std::fs::read_dir(dir).map_err(|cause| ConfigError::Io {
                path: dir.clone(),
                cause,
            })?;
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if name.len() < 6 || !name.ends_with(".conf") {
                    continue;
                }
                let path = entry.path();
                if path.is_dir() {
                    cfg.diagnostics.push(format!(
                        "Directories inside directories are not supported: {}",
                        path.display()
                    ));
                    continue;
                }
                insert_sorted(&mut files, name, path);
            }
        }
        for (_, path) in files {
            let text = match std::fs::read(&path) {
                Ok(t) => String::from_utf8_lossy(&t).into_owned(),
                Err(e) => {
                    cfg.diagnostics
                        .push(format!("file parse {}: {e}", path.display()));
                    continue;
                }
            };
            cfg.parse_text(&path, &text, kver);
            cfg.files.push(path);
        }
        if cfg.searches.is_empty() {
            cfg.searches.insert(0, Search::Path("updates".into()));
        }
        Ok(cfg)
    }

    /// Parses one file's text, reading lines as kmod's
    /// `freadline_wrapped` does: a backslash-newline joins lines, and any
    /// other backslash is dropped (the next character is kept).
    pub fn parse_text(&mut self, path: &Path, text: &str, kver: &str) {
        let mut linenum = 0usize;
        let mut line = String::new();
        let mut chars = text.chars().peekable();
        let mut consumed = 0usize;
        while let Some(c) = chars.next() {
            match c {
                '\n' => {
                    consumed += 1;
                    linenum += consumed;
                    consumed = 0;
                    let full = std::mem::take(&mut line);
                    self.parse_line(path, linenum, &full, kver);
                }
                '\\' => match chars.next() {
                    Some('\n') => consumed += 1,
                    Some(other) => line.push(other),
                    None => {}
                },
                _ => line.push(c),
            }
        }
        if !line.is_empty() {
            linenum += consumed + 1;
            self.parse_line(path, linenum, &line.clone(), kver);
        }
    }

    fn parse_line(&mut self, path: &Path, linenum: usize, line: &str, kver: &str) {
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
        let Some(cmd) = words.next() else { return };
        let bad = |cfg: &mut DepmodConfig| {
            cfg.diagnostics.push(format!(
                "{}:{linenum}: ignoring bad line starting with '{cmd}'",
                path.display()
            ))
        };
        match cmd {
            "search" => {
                for w in words {
                    let s = match w {
                        "built-in" => Search::BuiltIn,
                        "external" => Search::External,
                        p => Search::Path(p.to_string()),
                    };
                    self.searches.insert(0, s);
                }
                if !self.search_files.iter().any(|f| f == path) {
                    self.search_files.push(path.to_path_buf());
                }
            }
            "override" => {
                let (Some(module), Some(version), Some(subdir)) =
                    (words.next(), words.next(), words.next())
                else {
                    return bad(self);
                };
                if kernel_matches(version, kver) {
                    self.overrides.insert(0, format!("{subdir}/{module}"));
                }
            }
            "external" => {
                let (Some(version), Some(dir)) = (words.next(), words.next()) else {
                    return bad(self);
                };
                if kernel_matches(version, kver) {
                    self.externals.insert(0, dir.to_string());
                }
            }
            "exclude" => {
                for w in words {
                    self.excludes.insert(0, w.to_string());
                }
            }
            "include" | "make_map_files" => {}
            _ => bad(self),
        }
    }
}

fn insert_sorted(files: &mut Vec<(String, PathBuf)>, name: String, path: PathBuf) {
    match files.binary_search_by(|(n, _)| n.as_bytes().cmp(name.as_bytes())) {
        Ok(_) => {} // duplicate name: the earlier directory wins
        Err(pos) => files.insert(pos, (name, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_kept_in_kmod_list_order() {
        let mut cfg = DepmodConfig::default();
        cfg.parse_text(
            Path::new("t.conf"),
            "# comment\nsearch updates extra built-in weak-updates\noverride mlx4_core 6.1.* updates/mlnx\noverride x ^5\\..* extra\nexternal * /opt/drivers\nexclude test \\\n  staging\nbogus line\n",
            "6.1.0-56-amd64",
        );
        assert_eq!(
            cfg.searches,
            vec![
                Search::Path("weak-updates".into()),
                Search::BuiltIn,
                Search::Path("extra".into()),
                Search::Path("updates".into())
            ]
        );
        assert_eq!(cfg.overrides, vec!["updates/mlnx/mlx4_core".to_string()]);
        assert_eq!(cfg.externals, vec!["/opt/drivers".to_string()]);
        assert_eq!(
            cfg.excludes,
            vec!["staging".to_string(), "test".to_string()]
        );
        assert_eq!(cfg.diagnostics.len(), 1, "{:?}", cfg.diagnostics);
    }
}
