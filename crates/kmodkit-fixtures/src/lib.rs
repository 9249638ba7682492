//! Where `scripts/fixtures` keeps the real kernels the tests use:
//! `${KMODKIT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/kmodkit}/root`, with
//! `kernels.list` naming each kernel and its series ("6.1", "6.12").
//! Missing fixtures are a test failure with the command to run, never a
//! silent skip.

pub mod hostile;

use std::path::PathBuf;

/// The cache directory (`$KMODKIT_CACHE`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KMODKIT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
                });
            base.join("kmodkit")
        })
}

/// The fixture root (`<cache>/root`).
pub fn fixture_root() -> PathBuf {
    cache_dir().join("root")
}

/// (kernel release, series) for every fetched kernel; panics with the
/// command to run when the fixtures are missing.
pub fn kernels() -> Vec<(String, String)> {
    let list = fixture_root().join("kernels.list");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "real-kernel fixtures missing ({}: {e}); run scripts/fixtures first (the README's test command does)",
            list.display()
        )
    });
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// Asserts that an oracle tool is on PATH, naming the package to install.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "oracle '{tool}' not installed: apt-get install {package} (scripts/fixtures does)"
    );
}
