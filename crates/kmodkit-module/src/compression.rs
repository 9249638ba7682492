//! Compressed module files, detected by magic bytes as kmod 30 does
//! (`libkmod/libkmod-file.c`), not by file name.
//!
//! | format | magic                 | kernel option                    |
//! |--------|-----------------------|----------------------------------|
//! | zstd   | `28 B5 2F FD`         | `CONFIG_MODULE_COMPRESS_ZSTD`    |
//! | xz     | `FD 37 7A 58 5A 00`   | `CONFIG_MODULE_COMPRESS_XZ`      |
//! | gzip   | `1F 8B`               | `CONFIG_MODULE_COMPRESS_GZIP`    |

use std::fmt;
use std::io::Read;

/// How a module file is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        })
    }
}

impl Compression {
    /// Identifies the format from the first bytes of a file.
    pub fn detect(bytes: &[u8]) -> Compression {
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if bytes.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else {
            Compression::None
        }
    }
}

/// Why a compressed stream could not be expanded.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("{format} stream is corrupt or truncated: {detail}")]
    Corrupt { format: Compression, detail: String },
    #[error("{format} stream expands past the limit of {limit} bytes (use a larger limit if this module is genuine)")]
    TooLarge { format: Compression, limit: u64 },
}

/// Default ceiling for one decompressed module. The largest Debian 6.12
/// module (amdgpu) is ~25 MiB uncompressed; 1 GiB bounds a decompression
/// bomb while leaving room for any real module.
pub const DEFAULT_LIMIT: u64 = 1 << 30;

/// The most [`decompress_into`] reserves up front from a declared size;
/// beyond it the buffer grows as data really arrives. Eight times the
/// largest Debian 6.12 module (amdgpu, ~25 MiB).
const RESERVE_CEILING: u64 = 256 << 20;

/// Memory the xz decoder may take at least. liblzma allocates the whole
/// dictionary the stream header declares (up to 4 GiB) before decoding a
/// byte, so without a ceiling a 600-byte hostile `.ko.xz` reserves 4 GiB.
/// `xz -9` needs 65 MiB to decode; the kernel's `--lzma2=dict=1MiB`
/// (`scripts/Makefile.modinst`) far less.
const XZ_MIN_MEMLIMIT: u64 = 128 << 20;

/// The uncompressed size a stream declares, if its format records one:
/// the xz index (single stream), the zstd frame header, the gzip trailer
/// (modulo 2^32).
pub fn expected_size(format: Compression, bytes: &[u8]) -> Option<u64> {
    match format {
        Compression::None => Some(bytes.len() as u64),
        Compression::Gzip => {
            let t = bytes.get(bytes.len().checked_sub(4)?..)?;
            Some(u64::from(u32::from_le_bytes([t[0], t[1], t[2], t[3]])))
        }
        Compression::Zstd => zstd::zstd_safe::get_frame_content_size(bytes)
            .ok()
            .flatten(),
        Compression::Xz => xz_uncompressed_size(bytes),
    }
}

/// Sums the uncompressed sizes in the index of a single xz stream
/// (xz file format 1.2: footer = CRC32, backward size, flags, "YZ").
fn xz_uncompressed_size(bytes: &[u8]) -> Option<u64> {
    let footer = bytes.get(bytes.len().checked_sub(12)?..)?;
    if &footer[10..12] != b"YZ" {
        return None;
    }
    let backward = (u64::from(u32::from_le_bytes([
        footer[4], footer[5], footer[6], footer[7],
    ])) + 1)
        * 4;
    let start = (bytes.len() as u64).checked_sub(12 + backward)? as usize;
    let index = bytes.get(start..bytes.len() - 12)?;
    let mut pos = 1usize; // index indicator 0x00
    if index.first() != Some(&0) {
        return None;
    }
    let mut varint = || -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..63).step_by(7) {
            let b = *index.get(pos)?;
            pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let records = varint()?;
    let mut total = 0u64;
    for _ in 0..records.min(1 << 20) {
        let _unpadded = varint()?;
        total = total.checked_add(varint()?)?;
    }
    Some(total)
}

/// Reads a file that may be compressed (gzip, xz or zstd, by magic), such
/// as RHEL's `symvers-K.gz`, and returns its expanded bytes. Decompression
/// problems come back as `InvalidData` errors.
pub fn read_maybe_compressed(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let format = Compression::detect(&bytes);
    if format == Compression::None {
        return Ok(bytes);
    }
    decompress(format, &bytes, DEFAULT_LIMIT)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Expands `bytes` (in `format`) into a new buffer, at most `limit` bytes.
pub fn decompress(
    format: Compression,
    bytes: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    decompress_into(format, bytes, limit, &mut out)?;
    Ok(out)
}

/// Like [`decompress`], into a caller's buffer (cleared first), so a
/// thread decompressing thousands of modules reuses one allocation.
pub fn decompress_into(
    format: Compression,
    bytes: &[u8],
    limit: u64,
    out: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    let corrupt = |e: std::io::Error| DecompressError::Corrupt {
        format,
        detail: e.to_string(),
    };
    // The exact size when the container records it, so the output buffer
    // is allocated once (no regrowth copies); a hint only, never trusted
    // beyond the limit or RESERVE_CEILING (a 40-byte file may declare
    // 2^62 bytes), and a reservation that fails only means regrowth.
    let capacity = expected_size(format, bytes)
        .unwrap_or((bytes.len() as u64).saturating_mul(3))
        .min(limit)
        .min(RESERVE_CEILING)
        .saturating_add(1);
    out.clear();
    let _ = out.try_reserve(usize::try_from(capacity).unwrap_or(0));
    let read = match format {
        Compression::None => {
            out.extend_from_slice(bytes);
            return Ok(());
        }
        Compression::Gzip => {
            // MultiGzDecoder: `gzip` output of concatenated members is one stream.
            let dec = flate2::read::MultiGzDecoder::new(bytes);
            dec.take(limit.saturating_add(1)).read_to_end(out)
        }
        Compression::Xz => {
            // kmod and the kernel accept concatenated xz streams.
            // As much memory as the output may take, and at least what any
            // xz preset needs; a stream declaring more is refused.
            let memlimit = limit.max(XZ_MIN_MEMLIMIT);
            let stream = liblzma::stream::Stream::new_stream_decoder(
                memlimit,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| DecompressError::Corrupt {
                format,
                detail: e.to_string(),
            })?;
            let dec = liblzma::read::XzDecoder::new_stream(bytes, stream);
            dec.take(limit.saturating_add(1)).read_to_end(out)
        }
        Compression::Zstd => {
            let dec = zstd::stream::read::Decoder::with_buffer(bytes).map_err(corrupt)?;
            dec.take(limit.saturating_add(1)).read_to_end(out)
        }
    };
    read.map_err(corrupt)?;
    if out.len() as u64 > limit {
        return Err(DecompressError::TooLarge { format, limit });
    }
    Ok(())
}
