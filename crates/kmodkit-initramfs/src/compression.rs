//! The compressions the kernel accepts for initramfs segments, detected by
//! magic as lib/decompress.c does, decoded and encoded in-process.
//!
//! | name  | magic          | kernel decoder            | notes                                   |
//! |-------|----------------|---------------------------|-----------------------------------------|
//! | gzip  | `1f 8b`/`1f 9e`| lib/decompress_inflate.c  | one member per segment                  |
//! | bzip2 | `42 5a`        | lib/decompress_bunzip2.c  | one stream                              |
//! | lzma  | `5d 00`        | lib/decompress_unlzma.c   | .lzma "alone" format                    |
//! | xz    | `fd 37`        | lib/decompress_unxz.c     | one stream; CRC32 or no check only      |
//! | lzo   | `89 4c`        | lib/decompress_unlzo.c    | lzop container (read only here)         |
//! | lz4   | `02 21`        | lib/decompress_unlz4.c    | legacy frame (`lz4 -l`), 8 MiB blocks   |
//! | zstd  | `28 b5`        | lib/decompress_unzstd.c   | one frame, window at most 2^27 bytes    |
//!
//! A compressed segment ends where its stream ends; the bytes after it start
//! the next segment (or zero padding). The lz4 legacy frame has no end
//! marker: the kernel stops at the end of the image, at a zero block size
//! (zero padding) or when fewer than 4 bytes remain.

use std::io::{self, BufRead, Read, Write};

use serde::Serialize;

/// A segment's compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lzo,
    Lz4,
    Zstd,
}

impl Compression {
    pub const ALL: [Compression; 8] = [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Lzma,
        Compression::Xz,
        Compression::Lzo,
        Compression::Lz4,
        Compression::Zstd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    pub fn from_name(s: &str) -> Option<Compression> {
        Some(match s {
            "none" | "cat" | "uncompressed" => Compression::None,
            "gzip" | "gz" => Compression::Gzip,
            "bzip2" | "bz2" => Compression::Bzip2,
            "lzma" => Compression::Lzma,
            "xz" => Compression::Xz,
            "lzo" | "lzop" => Compression::Lzo,
            "lz4" => Compression::Lz4,
            "zstd" | "zst" => Compression::Zstd,
            _ => return None,
        })
    }

    /// Detects a compressed stream by its first bytes, as the kernel's
    /// decompress_method() does. `None` means no known magic.
    pub fn detect(head: &[u8]) -> Option<Compression> {
        let m = head.get(..2)?;
        Some(match m {
            [0x1f, 0x8b] | [0x1f, 0x9e] => Compression::Gzip,
            [0x42, 0x5a] => Compression::Bzip2,
            [0x5d, 0x00] => Compression::Lzma,
            [0xfd, 0x37] => Compression::Xz,
            [0x89, 0x4c] => Compression::Lzo,
            [0x02, 0x21] => Compression::Lz4,
            [0x28, 0xb5] => Compression::Zstd,
            _ => return None,
        })
    }

    /// The level used when none is given (the compressor CLI's default).
    pub fn default_level(self) -> i32 {
        match self {
            Compression::None | Compression::Lzo => 0,
            Compression::Gzip => 6,
            Compression::Bzip2 => 9,
            Compression::Lzma | Compression::Xz => 6,
            Compression::Lz4 => 1,
            Compression::Zstd => 3,
        }
    }

    /// Levels the encoder accepts.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Compression::None | Compression::Lzo | Compression::Lz4 => (0, 12),
            Compression::Gzip => (0, 9),
            Compression::Bzip2 => (1, 9),
            Compression::Lzma | Compression::Xz => (0, 9),
            Compression::Zstd => (1, 22),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// zstd levels whose strategies are fast or dfast (zstd's clevels.h).
const ZSTD_FAST_LEVEL_MAX: i32 = 4;
/// Bytes of input per multi-threaded zstd job at those levels.
const ZSTD_FAST_JOB: u32 = 4 << 20;

/// The kernel's zstd window limit (ZSTD_WINDOWLOG_MAX in lib/zstd).
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 27;
/// Memory liblzma may use to decode one xz/lzma stream.
const LZMA_MEMLIMIT: u64 = 256 << 20;

/// A decoder for one compressed stream read from `input`; it consumes no
/// byte past the stream's end, so the caller's position afterwards is the
/// segment's end.
pub(crate) fn decoder<'a, R: BufRead + 'a>(
    c: Compression,
    input: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::bufread::GzDecoder::new(input)),
        Compression::Bzip2 => Box::new(bzip2::bufread::BzDecoder::new(input)),
        Compression::Lzma => {
            let stream = liblzma::stream::Stream::new_lzma_decoder(LZMA_MEMLIMIT)
                .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Xz => {
            // Single stream, not concatenated: the segment ends with it.
            let stream = liblzma::stream::Stream::new_stream_decoder(LZMA_MEMLIMIT, 0)
                .map_err(io::Error::other)?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(input, stream))
        }
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?.single_frame();
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
        Compression::Lz4 => Box::new(BlockReader::new(Lz4LegacyDecoder::new(input))),
        Compression::Lzo => Box::new(BlockReader::new(LzopDecoder::new(input))),
    })
}

/// What a decoder learned about its stream that matters to the kernel.
pub(crate) fn kernel_note(c: Compression, head: &[u8]) -> Option<String> {
    if c == Compression::Xz && head.len() >= 8 {
        // Stream flags, second byte: the check type (xz file format 2.1.1.2).
        let check = head[7] & 0x0f;
        if check != 0 && check != 1 {
            let name = match check {
                4 => "CRC64",
                10 => "SHA-256",
                _ => "an unknown check",
            };
            return Some(format!(
                "xz stream uses {name}; the kernel's xz decoder accepts only CRC32 or no check (xz --check=crc32)"
            ));
        }
    }
    None
}

// ---------------------------------------------------------------------------
// lz4 legacy frame (lib/decompress_unlz4.c)

const LZ4_LEGACY_MAGIC: u32 = 0x184C_2102;
/// Uncompressed size of every block but the last (the kernel's
/// LZ4_DEFAULT_UNCOMPRESSED_CHUNK_SIZE).
const LZ4_BLOCK: usize = 8 << 20;

fn lz4_compress_bound(n: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(n)
}

/// A format made of blocks that each decode on their own (lz4 legacy,
/// lzop), read through [`BlockReader`].
trait Blocks {
    /// Decodes the next block into `out` (replacing its content); `false`
    /// at the end of the stream.
    fn next_block(&mut self, out: &mut Vec<u8>) -> io::Result<bool>;
}

/// [`Read`] over a [`Blocks`] format: hands out each decoded block, then
/// decodes the next.
struct BlockReader<B> {
    blocks: B,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<B: Blocks> BlockReader<B> {
    fn new(blocks: B) -> Self {
        BlockReader {
            blocks,
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl<B: Blocks> Read for BlockReader<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done || !self.blocks.next_block(&mut self.out)? {
                self.done = true;
                return Ok(0);
            }
            self.pos = 0;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

struct Lz4LegacyDecoder<R> {
    input: R,
    started: bool,
    block: Vec<u8>,
}

impl<R: BufRead> Lz4LegacyDecoder<R> {
    fn new(input: R) -> Self {
        Lz4LegacyDecoder {
            input,
            started: false,
            block: Vec::new(),
        }
    }

    /// Reads the next block size; `None` at the end of the input or at
    /// zero padding (the kernel's end conditions). Consuming 4 bytes of
    /// padding is harmless: the image reader skips zeros between segments.
    fn next_size(&mut self) -> io::Result<Option<u32>> {
        let mut w = [0u8; 4];
        let mut have = 0;
        while have < 4 {
            let n = self.input.read(&mut w[have..])?;
            if n == 0 {
                break;
            }
            have += n;
        }
        if have < 4 {
            return if w[..have].iter().all(|&b| b == 0) {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "lz4: truncated block size",
                ))
            };
        }
        match u32::from_le_bytes(w) {
            0 => Ok(None),
            n => Ok(Some(n)),
        }
    }
}

impl<R: BufRead> Blocks for Lz4LegacyDecoder<R> {
    fn next_block(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        if !self.started {
            let mut magic = [0u8; 4];
            self.input.read_exact(&mut magic)?;
            if u32::from_le_bytes(magic) != LZ4_LEGACY_MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "lz4: not the legacy frame (the kernel needs `lz4 -l`)",
                ));
            }
            self.started = true;
        }
        loop {
            let Some(size) = self.next_size()? else {
                return Ok(false);
            };
            if size == LZ4_LEGACY_MAGIC {
                continue;
            }
            let size = size as usize;
            if size > lz4_compress_bound(LZ4_BLOCK) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("lz4: block of {size} bytes is larger than an 8 MiB block can compress to (not an lz4 legacy block size)"),
                ));
            }
            self.block.resize(size, 0);
            self.input.read_exact(&mut self.block).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "lz4: truncated block")
                } else {
                    e
                }
            })?;
            out.resize(LZ4_BLOCK, 0);
            let n = lz4_flex::block::decompress_into(&self.block, out).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("lz4: corrupt block: {e}"),
                )
            })?;
            out.truncate(n);
            return Ok(true);
        }
    }
}

/// Writes the lz4 legacy frame: magic, then per 8 MiB of input a
/// little-endian compressed size and an lz4 block.
pub(crate) struct Lz4LegacyEncoder<W: Write> {
    out: W,
    pending: Vec<u8>,
    scratch: Vec<u8>,
}

impl<W: Write> Lz4LegacyEncoder<W> {
    pub(crate) fn new(mut out: W) -> io::Result<Self> {
        out.write_all(&LZ4_LEGACY_MAGIC.to_le_bytes())?;
        Ok(Lz4LegacyEncoder {
            out,
            pending: Vec::with_capacity(LZ4_BLOCK),
            scratch: Vec::new(),
        })
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.scratch
            .resize(lz4_compress_bound(self.pending.len()), 0);
        let n = lz4_flex::block::compress_into(&self.pending, &mut self.scratch)
            .map_err(io::Error::other)?;
        self.out.write_all(&(n as u32).to_le_bytes())?;
        self.out.write_all(&self.scratch[..n])?;
        self.pending.clear();
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for Lz4LegacyEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(LZ4_BLOCK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == LZ4_BLOCK {
            self.flush_block()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// lzop container (lib/decompress_unlzo.c)

const LZOP_MAGIC: [u8; 9] = [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
const LZOP_MAX_BLOCK: u32 = 256 * 1024;
const F_ADLER32_D: u32 = 0x0000_0001;
const F_ADLER32_C: u32 = 0x0000_0002;
const F_H_EXTRA_FIELD: u32 = 0x0000_0040;
const F_CRC32_D: u32 = 0x0000_0100;
const F_CRC32_C: u32 = 0x0000_0200;
const F_H_FILTER: u32 = 0x0000_0800;

struct LzopDecoder<R> {
    input: R,
    flags: Option<u32>,
    block: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_be32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_be16<R: Read>(r: &mut R) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u8<R: Read>(r: &mut R) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

impl<R: BufRead> LzopDecoder<R> {
    fn new(input: R) -> Self {
        LzopDecoder {
            input,
            flags: None,
            block: Vec::new(),
        }
    }

    fn header(&mut self) -> io::Result<u32> {
        let r = &mut self.input;
        let mut magic = [0u8; 9];
        r.read_exact(&mut magic)?;
        if magic != LZOP_MAGIC {
            return Err(invalid("lzo: bad lzop magic"));
        }
        let version = read_be16(r)?;
        let _lib_version = read_be16(r)?;
        if version >= 0x0940 {
            let _needed = read_be16(r)?;
        }
        let method = read_u8(r)?;
        if !(1..=3).contains(&method) {
            return Err(invalid(format!("lzo: unknown method {method}")));
        }
        if version >= 0x0940 {
            let _level = read_u8(r)?;
        }
        let flags = read_be32(r)?;
        if flags & F_H_FILTER != 0 {
            return Err(invalid(
                "lzo: filters are not supported (nor by the kernel)",
            ));
        }
        let _mode = read_be32(r)?;
        let _mtime_low = read_be32(r)?;
        if version >= 0x0940 {
            let _mtime_high = read_be32(r)?;
        }
        let name_len = read_u8(r)?;
        let mut name = vec![0u8; usize::from(name_len)];
        r.read_exact(&mut name)?;
        let _header_check = read_be32(r)?;
        if flags & F_H_EXTRA_FIELD != 0 {
            let len = read_be32(r)?;
            if len > 1 << 20 {
                return Err(invalid("lzo: extra field too long"));
            }
            let mut extra = vec![0u8; len as usize];
            r.read_exact(&mut extra)?;
            let _extra_check = read_be32(r)?;
        }
        Ok(flags)
    }
}

impl<R: BufRead> Blocks for LzopDecoder<R> {
    fn next_block(&mut self, out: &mut Vec<u8>) -> io::Result<bool> {
        let flags = match self.flags {
            Some(f) => f,
            None => {
                let f = self.header()?;
                self.flags = Some(f);
                f
            }
        };
        let r = &mut self.input;
        let dst_len = read_be32(r)?;
        if dst_len == 0 {
            return Ok(false);
        }
        if dst_len > LZOP_MAX_BLOCK {
            return Err(invalid(format!(
                "lzo: block of {dst_len} bytes exceeds lzop's 256 KiB"
            )));
        }
        let src_len = read_be32(r)?;
        if src_len == 0 || src_len > dst_len {
            return Err(invalid("lzo: bad compressed block size"));
        }
        if flags & F_ADLER32_D != 0 {
            read_be32(r)?;
        }
        if flags & F_CRC32_D != 0 {
            read_be32(r)?;
        }
        if src_len < dst_len {
            if flags & F_ADLER32_C != 0 {
                read_be32(r)?;
            }
            if flags & F_CRC32_C != 0 {
                read_be32(r)?;
            }
        }
        self.block.resize(src_len as usize, 0);
        r.read_exact(&mut self.block)?;
        if src_len == dst_len {
            std::mem::swap(out, &mut self.block);
        } else {
            lzo1x_decompress(&self.block, dst_len as usize, out)
                .map_err(|e| invalid(format!("lzo: corrupt block: {e}")))?;
            if out.len() != dst_len as usize {
                return Err(invalid("lzo: block decompressed to the wrong size"));
            }
        }
        Ok(true)
    }
}

/// LZO1X decompression with every read and copy bounds-checked, after
/// the instruction encoding in the kernel's Documentation/staging/lzo.rst
/// (lib/lzo/lzo1x_decompress_safe.c is the kernel's decoder).
fn lzo1x_decompress(src: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    let mut ip = 0usize;
    let next = |ip: &mut usize| -> Result<usize, &'static str> {
        let b = *src.get(*ip).ok_or("input overrun")?;
        *ip += 1;
        Ok(usize::from(b))
    };
    // A run of zero bytes then a non-zero byte: 255 per zero plus it.
    let run = |ip: &mut usize| -> Result<usize, &'static str> {
        let mut n = 0usize;
        loop {
            let b = *src.get(*ip).ok_or("input overrun")?;
            *ip += 1;
            if b != 0 {
                return Ok(n + usize::from(b));
            }
            n += 255;
        }
    };
    let literals = |ip: &mut usize, n: usize, out: &mut Vec<u8>| -> Result<(), &'static str> {
        let lit = src.get(*ip..*ip + n).ok_or("input overrun")?;
        if out.len() + n > max {
            return Err("output overrun");
        }
        out.extend_from_slice(lit);
        *ip += n;
        Ok(())
    };
    let mut state;
    // First byte > 17: a literal run of (byte - 17).
    match src.first() {
        None => return Err("empty block"),
        Some(&b) if b > 17 => {
            ip = 1;
            let t = usize::from(b) - 17;
            literals(&mut ip, t, out)?;
            state = if t < 4 { t } else { 4 };
        }
        Some(_) => state = 0,
    }
    loop {
        let t = next(&mut ip)?;
        let (len, dist, after);
        if t < 16 {
            if state == 0 {
                // Long literal run: 3 + (L ?: 15 + run).
                let n = if t == 0 { 15 + run(&mut ip)? } else { t } + 3;
                literals(&mut ip, n, out)?;
                state = 4;
                continue;
            }
            let h = next(&mut ip)?;
            after = t & 3;
            if state == 4 {
                len = 3;
                dist = (h << 2) + (t >> 2) + 2049;
            } else {
                len = 2;
                dist = (h << 2) + (t >> 2) + 1;
            }
        } else if t >= 64 {
            let h = next(&mut ip)?;
            after = t & 3;
            dist = (h << 3) + ((t >> 2) & 7) + 1;
            len = (t >> 5) + 1;
        } else if t >= 32 {
            let l = t & 31;
            len = 2 + if l == 0 { 31 + run(&mut ip)? } else { l };
            let d = next(&mut ip)? | (next(&mut ip)? << 8);
            after = d & 3;
            dist = (d >> 2) + 1;
        } else {
            let l = t & 7;
            len = 2 + if l == 0 { 7 + run(&mut ip)? } else { l };
            let d = next(&mut ip)? | (next(&mut ip)? << 8);
            after = d & 3;
            let far = ((t & 8) << 11) + (d >> 2);
            if far == 0 {
                // Distance 16384: the end-of-stream marker.
                return Ok(());
            }
            dist = far + 16384;
        }
        if dist > out.len() {
            return Err("match reaches before the start of the block");
        }
        if out.len() + len > max {
            return Err("output overrun");
        }
        let start = out.len() - dist;
        for i in 0..len {
            // Byte by byte: the copy may overlap its own output.
            let b = out[start + i];
            out.push(b);
        }
        literals(&mut ip, after, out)?;
        state = after;
    }
}

// ---------------------------------------------------------------------------
// Encoders

/// A compressing writer that must be finished to flush its trailer; it
/// gives the underlying writer back.
pub trait Encoder<W>: Write + Send {
    fn finish_encoder(self: Box<Self>) -> io::Result<W>;
}

struct Plain<W>(W);

impl<W: Write + Send> Write for Plain<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<W: Write + Send> Encoder<W> for Plain<W> {
    fn finish_encoder(self: Box<Self>) -> io::Result<W> {
        Ok(self.0)
    }
}

macro_rules! finishing_encoder {
    ($ty:ty, $finish:expr) => {
        impl<W: Write + Send> Encoder<W> for $ty {
            fn finish_encoder(self: Box<Self>) -> io::Result<W> {
                let f: fn($ty) -> io::Result<W> = $finish;
                f(*self)
            }
        }
    };
}

finishing_encoder!(flate2::write::GzEncoder<W>, |e| e.finish());
finishing_encoder!(bzip2::write::BzEncoder<W>, |e| e.finish());
finishing_encoder!(liblzma::write::XzEncoder<W>, |e| e.finish());
finishing_encoder!(zstd::stream::write::Encoder<'static, W>, |e| e.finish());
finishing_encoder!(Lz4LegacyEncoder<W>, |e| e.finish());

/// Settings for compressing a segment.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions {
    pub compression: Compression,
    /// `None`: the compressor's default level.
    pub level: Option<i32>,
    /// Worker threads for zstd and xz (0: all cores). The output does not
    /// depend on this number, so images stay reproducible across machines.
    pub threads: u32,
}

fn thread_count(t: u32) -> u32 {
    if t != 0 {
        return t;
    }
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// A writer that compresses into `out`. Errors: lzo (read only here) and
/// levels out of range.
pub fn encoder<'a, W: Write + Send + 'a>(
    opts: &EncodeOptions,
    out: W,
) -> io::Result<Box<dyn Encoder<W> + 'a>> {
    let c = opts.compression;
    let level = opts.level.unwrap_or_else(|| c.default_level());
    let (lo, hi) = c.level_range();
    if level < lo || level > hi {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{c} level {level} is out of range {lo}..={hi}"),
        ));
    }
    let threads = thread_count(opts.threads);
    Ok(match c {
        Compression::None => Box::new(Plain(out)),
        Compression::Gzip => Box::new(
            // No name and mtime 0 in the gzip header (gzip -n): reproducible.
            flate2::GzBuilder::new().write(out, flate2::Compression::new(level as u32)),
        ),
        Compression::Bzip2 => Box::new(bzip2::write::BzEncoder::new(
            out,
            bzip2::Compression::new(level as u32),
        )),
        Compression::Lzma => {
            let o = liblzma::stream::LzmaOptions::new_preset(level as u32)
                .map_err(io::Error::other)?;
            let s = liblzma::stream::Stream::new_lzma_encoder(&o).map_err(io::Error::other)?;
            Box::new(liblzma::write::XzEncoder::new_stream(out, s))
        }
        Compression::Xz => {
            // Always the multi-threaded encoder, even for one thread: its
            // block layout does not depend on the thread count, so the same
            // input gives the same bytes on every machine. CRC32: the only
            // check the kernel's xz decoder verifies.
            let s = liblzma::stream::MtStreamBuilder::new()
                .preset(level as u32)
                .check(liblzma::stream::Check::Crc32)
                .threads(threads)
                .encoder()
                .map_err(io::Error::other)?;
            Box::new(liblzma::write::XzEncoder::new_stream(out, s))
        }
        Compression::Lz4 => Box::new(Lz4LegacyEncoder::new(out)?),
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(out, level)?;
            // Worker threads >= 1 always: zstd's multi-threaded output does
            // not depend on their number (but differs from 0 workers).
            e.multithread(threads)?;
            e.include_checksum(true)?;
            if level <= ZSTD_FAST_LEVEL_MAX {
                // The fast levels (strategies fast and dfast, windows of
                // 2 MiB at most): 4 MiB jobs that start afresh instead of
                // zstd's default 8 MiB jobs that each re-index 256 KiB of
                // the one before. On a 55 MB dracut tree at level 3 with
                // two workers: 20% faster, output 0.3% larger (still 0.3%
                // smaller than the zstd 1.5.4 CLI's at the same level).
                // Both are fixed sizes, so the output still does not
                // depend on the thread count.
                e.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_FAST_JOB))?;
                e.set_parameter(zstd::zstd_safe::CParameter::OverlapSizeLog(1))?;
            }
            Box::new(e)
        }
        Compression::Lzo => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "lzo is read-only in kmodkit (the kernel accepts it, but lz4 or zstd are faster and smaller)",
            ))
        }
    })
}
