//! Rebuilding out-of-tree module sources for new kernels.
//!
//! The life cycle of one run, each step its own module:
//! - [`conf`]: a package's recipe — DKMS's `dkms.conf`, evaluated the way
//!   DKMS evaluates it (sourced by bash with `kernelver`,
//!   `kernel_source_dir`, `arch` and `dkms_tree` set), or a plain Kbuild
//!   directory;
//! - [`kernel`]: a target kernel under a root — its headers, compiler,
//!   build identity, how it signs and compresses its own modules;
//! - [`run`]: the decisions per (package, kernel) — excluded, up to date,
//!   compatible through weak-updates, cached, built — and their execution;
//! - [`build`] one Kbuild build in a private tree, under the run's
//!   [`jobserver`]; [`digest`] the cache keys;
//! - [`install`]: a kernel's new modules with its index as one step;
//!   [`record`]: what was installed, for later runs, `status` and `reload`;
//! - [`status`]: for a package and a kernel, which file modprobe would load
//!   for each of its modules and whether the kernel would accept it;
//! - [`reload`]: unloading and loading a package's modules on the running
//!   kernel, with the kernel's own reasons.

// Errors carry the package, kernel, log and first error line a user needs;
// they happen once per failed build, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod build;
pub mod conf;
pub mod digest;
pub mod install;
pub mod jobserver;
pub mod kernel;
pub mod record;
pub mod reload;
pub mod run;
pub mod status;
