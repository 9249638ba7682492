//! kmodkit-init: the `/init` of kmodkit's diskless boot images.
//!
//! A static binary with no shell, no kmod and no busybox. This library holds
//! its parts so that each is tested on its own; the binary (`src/main.rs`)
//! only wires them: the configuration the builder writes ([`config`]),
//! module loading ([`modules`]), links, addresses and routes over rtnetlink
//! ([`netlink`]), the DHCP client ([`dhcp`]: RFC 4390 on IPoIB with the same
//! client identifier as the firmware stage, so one reservation serves every
//! boot stage), the root image's download ([`http`]) and unpacking
//! ([`rootfs`]), and the PID 1 system calls ([`system`]: mounts,
//! `switch_root`).

pub mod config;
pub mod dhcp;
pub mod http;
pub mod modules;
pub mod netlink;
pub mod rootfs;
pub mod system;
