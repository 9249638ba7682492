//! kmodkit-initramfs: read, extract, create and repack Linux initramfs
//! images exactly as the kernel unpacks them (init/initramfs.c,
//! lib/decompress.c, Documentation/driver-api/early-userspace/buffer-format.rst).
//!
//! - [`read`]: the streaming reader (segments, decompression, cpio parser)
//!   and the [`read::Visitor`] that receives entries;
//! - [`extract`]: safe extraction into a directory;
//! - [`create`]: reproducible archives from a directory or a manifest, and
//!   repacking an image with another compression;
//! - [`diff`]: what differs between two images;
//! - [`cpio`] and [`compression`]: the on-disk formats.
//!
//! The library never prints; long operations report through
//! [`read::Progress`].

pub mod compression;
pub mod cpio;
pub mod create;
pub mod diff;
pub mod error;
pub mod extract;
pub mod read;
mod zstd_ring;

pub use compression::Compression;
pub use error::Error;
pub use read::{read_image, Entry, Image, ReadOptions, SegmentInfo, SegmentSummary, Visitor};
