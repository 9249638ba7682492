//! kmodkit-inject: put kernel modules (NIC and InfiniBand drivers) into an
//! existing initramfs so that the image's own machinery loads them, in
//! dependency order, before it brings up the network.
//!
//! - [`resolve`]: which modules, firmware and why (source tree index);
//! - [`image`]: what the image holds and which generator made it;
//! - [`plan`]: the files to add — modules, the regenerated index, load
//!   lists, module options and network settings in the generator's own
//!   places;
//! - [`write`]: one appended segment, or a rebuilt image, replaced
//!   atomically with a backup;
//! - [`names`] and [`net`]: the facts behind them.
//!
//! The library never prints: the plan carries every explanation.

pub mod generator;
pub mod image;
pub mod names;
pub mod net;
pub mod netstack;
pub mod options;
pub mod plan;
pub mod resolve;
mod unchanged;
pub mod write;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Image(#[from] kmodkit_initramfs::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The module directory's index lacks what the resolution needs.
    #[error("{}: {message}", dir.display())]
    Index { dir: PathBuf, message: String },
    /// An index lookup failed; the index error names the file.
    #[error(transparent)]
    Lookup(#[from] kmodkit_index::lookup::LookupError),
    /// A module file could not be read; the module error (the source)
    /// names the file and what is wrong with it.
    #[error("module {name}")]
    Module {
        name: String,
        #[source]
        source: kmodkit_module::Error,
    },
    #[error("{}", unknown_message(release, unknown))]
    UnknownModules {
        release: String,
        /// Each unknown name with close matches.
        unknown: Vec<(String, Vec<String>)>,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Depmod(#[from] kmodkit_depmod::DepmodError),
}

fn unknown_message(release: &str, unknown: &[(String, Vec<String>)]) -> String {
    unknown
        .iter()
        .map(|(name, close)| {
            if close.is_empty() {
                format!("no module named {name} in {release}")
            } else {
                format!(
                    "no module named {name} in {release}; did you mean {}?",
                    close.join(", ")
                )
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
