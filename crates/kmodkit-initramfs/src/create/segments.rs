//! Images of one or more segments, each compressed segment's cpio
//! generated on a second thread while the compressor runs.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use super::cpio_writer::{generate_cpio, write_cpio, CpioOut, PutError, ZEROS};
use super::output::Counting;
use super::PlannedEntry;
use crate::compression::{self, Compression, EncodeOptions};
use crate::cpio::{self, Format};
use crate::error::Error;
use crate::read::Progress;

/// Bytes of cpio handed from the generating thread to the compressor at
/// once. gzip's output (zlib-rs) depends on how its input is split into
/// writes, so it is fed the 4 MiB pieces it always was: images stay the
/// same bytes. The others' output does not depend on it (multi-threaded
/// zstd and xz cut fixed-size jobs; bzip2, lzma and lz4 fixed blocks), and
/// 1 MiB pieces mean fewer fresh pages to fault in.
fn gen_chunk(c: Compression) -> usize {
    match c {
        Compression::Gzip => 4 << 20,
        _ => 1 << 20,
    }
}

/// Fills fixed-size buffers with the cpio stream (file data read straight
/// into them) and sends each full one over a channel; used buffers come
/// back for reuse, so the few in flight are allocated (and faulted in)
/// once.
struct ChunkWriter {
    /// Always `chunk` bytes long; `len` of them are filled.
    buf: Vec<u8>,
    len: usize,
    chunk: usize,
    tx: std::sync::mpsc::SyncSender<(Vec<u8>, usize)>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| vec![0; self.chunk]);
        let full = std::mem::replace(&mut self.buf, next);
        let len = std::mem::take(&mut self.len);
        self.tx
            .send((full, len))
            .map_err(|_| io::Error::other("the compressor stopped"))
    }
}

impl CpioOut for ChunkWriter {
    fn put(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(self.chunk - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == self.chunk {
                self.send()?;
            }
        }
        Ok(())
    }
    fn put_file(&mut self, file: &File, at: u64, want: usize) -> Result<usize, PutError> {
        let n = want.min(self.chunk - self.len);
        let n =
            std::os::unix::fs::FileExt::read_at(file, &mut self.buf[self.len..self.len + n], at)
                .map_err(PutError::Read)?;
        self.len += n;
        if self.len == self.chunk {
            self.send().map_err(PutError::Write)?;
        }
        Ok(n)
    }
}

/// One segment to write.
pub struct SegmentSpec<'a> {
    pub entries: &'a [PlannedEntry],
    pub format: Format,
    pub encode: EncodeOptions,
}

/// Writes the segments, in order, to `out`. Uncompressed segments start at
/// a multiple of 4; an lz4 segment followed by another gets 4 zero bytes
/// (the legacy frame has no end marker: decompress_unlz4.c stops at a zero
/// block size).
pub fn write_segments<W: Write + Send>(
    segments: &[SegmentSpec<'_>],
    out: &mut W,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let total: u64 = segments
        .iter()
        .flat_map(|s| s.entries.iter())
        .map(|e| {
            if e.source.is_some() {
                u64::from(e.header.filesize)
            } else {
                0
            }
        })
        .sum();
    progress.start(total);
    let mut done = 0u64;
    let mut w = Counting {
        inner: BufWriter::with_capacity(1 << 20, &mut *out),
        count: 0,
    };
    for (i, seg) in segments.iter().enumerate() {
        let wr = |e: io::Error| Error::write_output(e);
        if seg.encode.compression == Compression::None {
            let pad = (cpio::pad4(w.count) - w.count) as usize;
            w.write_all(&ZEROS[..pad]).map_err(wr)?;
            write_cpio(seg.entries, seg.format, &mut w, progress, &mut done)?;
        } else {
            let mut enc = compression::encoder(&seg.encode, &mut w).map_err(wr)?;
            // The cpio stream is generated (files read) on a second thread
            // and handed over in large chunks, so reading the tree overlaps
            // with compressing it instead of delaying the compressor.
            std::thread::scope(|scope| -> Result<(), Error> {
                let chunk = gen_chunk(seg.encode.compression);
                let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(4);
                let (back_tx, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
                let generator = scope.spawn(move || {
                    let mut chunks = ChunkWriter {
                        buf: vec![0; chunk],
                        len: 0,
                        chunk,
                        tx,
                        spare: back_rx,
                    };
                    let mut done_here = 0u64;
                    generate_cpio(
                        seg.entries,
                        seg.format,
                        &mut chunks,
                        progress,
                        &mut done_here,
                    )?;
                    chunks.send().map_err(wr)?;
                    Ok::<u64, Error>(done_here)
                });
                let mut failed = None;
                for (chunk, len) in rx.iter() {
                    if let Err(e) = enc.write_all(&chunk[..len]) {
                        failed = Some(wr(e));
                        break;
                    }
                    let _ = back_tx.send(chunk);
                }
                drop(rx);
                let generated = generator
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                if let Some(e) = failed {
                    return Err(e);
                }
                done += generated?;
                Ok(())
            })?;
            enc.finish_encoder().map_err(wr)?;
            if seg.encode.compression == Compression::Lz4 && i + 1 < segments.len() {
                w.write_all(&ZEROS).map_err(wr)?;
            }
        }
    }
    w.flush().map_err(Error::write_output)?;
    progress.finish();
    Ok(())
}
