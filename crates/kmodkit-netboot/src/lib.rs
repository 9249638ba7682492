//! kmodkit-netboot: the builder side of kmodkit's diskless boot (booster's
//! generator/init split): [`build`] resolves the drivers as
//! `initrd add-drivers` does ([`kmodkit_inject::plan::resolve_source`]) and
//! writes a boot set — `vmlinuz`, `initrd.img` with kmodkit-init as `/init`
//! and its [`kmodkit_init::config::Config`] (the one type both sides use),
//! `boot.ipxe` and `manifest.json`; [`dhcp_config`] writes dnsmasq and ISC
//! dhcpd configuration that gives a node one address in every boot stage;
//! [`verify`] boots a set through qemu's iPXE ROM against real dnsmasq and
//! HTTP servers in a private network namespace and reports every stage.
//!
//! The library never prints and reads no global state: root, kernel, init
//! binary and every setting are passed in.

pub mod build;
pub mod dhcp_config;
pub mod verify;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetbootError {
    #[error(transparent)]
    Resolve(#[from] kmodkit_inject::InjectError),
    #[error(transparent)]
    Image(#[from] kmodkit_initramfs::Error),
    #[error(transparent)]
    Commit(#[from] kmodkit_commit::CommitError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn read(path: &std::path::Path) -> Result<Vec<u8>, NetbootError> {
    std::fs::read(path).map_err(|source| NetbootError::Io {
        path: path.to_path_buf(),
        source,
    })
}
