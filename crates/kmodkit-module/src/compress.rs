//! Compressing a module file the way `make modules_install` does.
//!
//! The kernel's `scripts/Makefile.modinst` (6.1 and 6.12) compresses after
//! strip and sign, with:
//!
//! | format | command                                   |
//! |--------|-------------------------------------------|
//! | gzip   | `gzip -n -f` (no name, no mtime; level 6)  |
//! | xz     | `xz --check=crc32 --lzma2=dict=1MiB -f`    |
//! | zstd   | `zstd -T0 --rm -f -q` (level 3)            |
//!
//! The xz options are not a matter of taste: the in-kernel XZ decoder
//! (`lib/xz`, used by `CONFIG_MODULE_DECOMPRESS`) supports only the CRC32
//! and no-check integrity types and a bounded dictionary; DKMS's default
//! CRC64 output is refused (dkms issue #386). Debian's 6.12 `.ko.xz`
//! files come back byte for byte from [`compress_module`] (tested).
//! zstd's CLI writes the content size and a checksum into the frame; so
//! does [`compress_module`]. (Later kernels drop `-T0`; a module is one
//! frame either way.)

use std::io::Write;

use crate::Compression;

/// Why a module could not be compressed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {format}-compress the module: {source}")]
pub struct CompressError {
    pub format: Compression,
    #[source]
    pub source: std::io::Error,
}

/// `xz`'s default preset (`-6`), whose dictionary Makefile.modinst
/// shrinks to 1 MiB.
const XZ_PRESET: u32 = 6;
const XZ_DICT_SIZE: u32 = 1 << 20;
/// `zstd`'s default level (`ZSTDCLI_CLEVEL_DEFAULT`).
const ZSTD_LEVEL: i32 = 3;
/// `gzip`'s default level.
const GZIP_LEVEL: u32 = 6;
/// The gzip header's OS byte for Unix (RFC 1952 §2.3.1), as GNU gzip writes.
const GZIP_OS_UNIX: u8 = 3;

/// Compresses `data` (a stripped, signed module) as the kernel's
/// `modules_install` would; `Compression::None` returns it unchanged.
pub fn compress_module(data: &[u8], how: Compression) -> Result<Vec<u8>, CompressError> {
    let fail = |source| CompressError {
        format: how,
        source,
    };
    match how {
        Compression::None => Ok(data.to_vec()),
        Compression::Xz => xz(data).map_err(fail),
        Compression::Zstd => zstd(data).map_err(fail),
        Compression::Gzip => gzip(data).map_err(fail),
    }
}

fn xz(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
    let mut options = LzmaOptions::new_preset(XZ_PRESET)?;
    options.dict_size(XZ_DICT_SIZE);
    let mut filters = Filters::new();
    filters.lzma2(&options);
    // A single-threaded stream encoder: what `xz` 5.4 runs by default
    // (one block, no sizes in the block header).
    let stream = Stream::new_stream_encoder(&filters, Check::Crc32)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data)?;
    enc.finish()
}

fn zstd(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)?;
    // The CLI's defaults: a checksum, and the content size (known here,
    // as it is to the CLI for a regular file).
    c.set_parameter(CParameter::ChecksumFlag(true))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    c.compress(data)
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    // `-n`: no file name and mtime 0 in the header, so the same module
    // compresses to the same bytes.
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(GZIP_OS_UNIX)
        .write(Vec::new(), flate2::Compression::new(GZIP_LEVEL));
    enc.write_all(data)?;
    enc.finish()
}
