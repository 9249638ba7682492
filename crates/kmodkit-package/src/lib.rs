//! Kernel-only driver packages and the repositories a cluster installs
//! them from.
//!
//! The input is a [`ModuleSet`]: the `.ko` files one driver package built
//! for one kernel (what `kmodkit rebuild` installed, or any directory of
//! modules) and the kernel's `Module.symvers`. From the modules themselves
//! come the ABI dependencies a package manager checks before it installs:
//! RPM `Requires: kernel(SYM) = 0xCRC` for what the kernel exports with
//! that CRC, `ksym(SYM) = 0xCRC` for the rest, `Provides: ksym(SYM)` for
//! the modules' exports (the formats of kernel-rpm-macros'
//! `find-requires.ksyms`/`find-provides.ksyms`), and for Debian a
//! dependency on the kernel package.
//!
//! - [`abi`]: the set and its dependencies (format-neutral).
//! - [`pgp`]: the OpenPGP key that signs packages and repositories.
//! - [`rpm`]: `kmod-NAME` (RHEL kABI-tracking kmod, kmodtool's scriptlets),
//!   the SUSE KMP variant, the `NAME-kernel-only` metapackage.
//! - [`deb`]: `NAME-modules-KVER_VERSION_ARCH.deb` and the Debian
//!   `NAME-kernel-only`.
//! - [`yum`]: `repodata/` for dnf/yum, signed `repomd.xml.asc`.
//! - [`apt`]: `dists/…` with `Release`, `InRelease`, `Release.gpg`.
//!
//! Every output is reproducible: the same inputs and `SOURCE_DATE_EPOCH`
//! give the same bytes (file times, signature times and archive order all
//! come from the inputs).

pub mod abi;
pub mod apt;
pub mod deb;
pub mod pgp;
pub mod rpm;
pub mod yum;

pub use abi::{KernelAbi, ModuleSet, PackageFile, SetError};

/// The time every timestamp in an output uses: `SOURCE_DATE_EPOCH` when
/// set (the reproducible-builds convention), else the newest input file's
/// modification time the caller passes.
pub fn source_date(fallback: u64) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(fallback)
}
