//! kmodkit-init: the `/init` of kmodkit's diskless boot images.
//!
//! A static binary with no shell, no kmod and no busybox. This library holds
//! its parts so that each is tested on its own; the binary (`src/main.rs`)
//! only wires them. Today it holds the DHCP client ([`dhcp`]), the part no
//! other initrd has: RFC 4390 on IPoIB with the same client identifier as the
//! firmware stage, so one reservation serves every boot stage.

pub mod dhcp;
