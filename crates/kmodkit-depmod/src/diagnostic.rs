//! What depmod reports and continues past, in kmod 30's words
//! (`tools/depmod.c`: `ERR`, `WRN`, the `-e` lines of
//! `depmod_load_dependencies`).

/// A problem depmod reports and continues past (`-e` warnings, config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Diagnostic {
    /// `<path> needs unknown symbol <sym>`
    UnknownSymbol { module: String, symbol: String },
    /// `<path> disagrees about version of symbol <sym>`
    VersionMismatch {
        module: String,
        symbol: String,
        expected: u64,
        found: u64,
    },
    /// A line kmod prints with `ERROR:` and skips.
    Error(String),
    /// A line kmod prints with `WARNING:`.
    Warning(String),
    /// kmod's `dfdopen` warning for a metadata file it reads if present
    /// (`modules.order`, `modules.builtin`, `modules.builtin.modinfo`):
    /// `could not open FILE at DIR: strerror`.
    CannotOpen {
        file: &'static str,
        dir: String,
        reason: String,
    },
}

/// `strerror(errno)` as kmod's `%m` prints it: the OS text without Rust's
/// ` (os error N)` suffix.
pub fn strerror(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Diagnostic::UnknownSymbol { module, symbol } => {
                write!(f, "{module} needs unknown symbol {symbol}")
            }
            Diagnostic::VersionMismatch { module, symbol, .. } => {
                write!(f, "{module} disagrees about version of symbol {symbol}")
            }
            Diagnostic::Error(s) | Diagnostic::Warning(s) => f.write_str(s),
            Diagnostic::CannotOpen { file, dir, reason } => {
                write!(f, "could not open {file} at {dir}: {reason}")
            }
        }
    }
}

impl Diagnostic {
    /// kmod's severity word for this line.
    pub fn severity(&self) -> &'static str {
        match self {
            Diagnostic::Error(_) => "ERROR",
            _ => "WARNING",
        }
    }
}
