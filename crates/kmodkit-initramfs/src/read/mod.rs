//! Streaming reader: splits an image into segments as the kernel's
//! unpack_to_rootfs() (init/initramfs.c) does, decompresses each one, and
//! parses the cpio stream with a push state machine that mirrors the
//! kernel's (header, name, symlink target, data, padding, zeros after the
//! trailer), so chunk boundaries can fall anywhere and no entry needs an
//! allocation.
//!
//! Grammar of an image (buffer-format.rst): `("\0" | cpio | compressed(cpio))*`
//! - zero bytes between segments are skipped;
//! - an uncompressed cpio archive starts with `0` at a 4-byte aligned image
//!   offset and ends after its `TRAILER!!!` entry;
//! - anything else must start with a compression magic; the segment ends
//!   where that stream ends, and its decompressed bytes are one or more cpio
//!   archives, each after the first at a 4-byte aligned stream offset,
//!   with only zeros between and after them.
//!
//! Decompression can run on its own thread and hand 1 MiB buffers to the
//! parser (a fixed pool of recycled buffers: memory stays a few MiB whatever
//! the image size). zstd frames of a mapped image are decoded in place into
//! a ring instead (zstd_ring.rs), which the parser reads where the decoder
//! wrote: no copy out of the decoder's window, and memory bounded by the
//! frame's window plus [`RING_SLACK`].
//!
//! The pieces, in the order bytes pass through them:
//! - `segments`: splits the image into segments and drives decompression
//!   (the producer);
//! - `ring`: zstd frames of a mapped image decoded in place into the ring;
//! - `handoff`: how decoded bytes reach the parser, on one thread or over
//!   channels with a pool of recycled buffers;
//! - `mapping`: page-table tuning of the mapped image and of the ring;
//! - `cpio_stream`: the cpio state machine (the consumer), which calls the
//!   [`Visitor`].

mod cpio_stream;
mod handoff;
mod mapping;
mod ring;
mod segments;

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use crate::compression::{self, Compression};
use crate::cpio::{FileType, Format, Header};
use crate::error::Error;
use crate::zstd_ring;

use cpio_stream::Consumer;
use handoff::{Back, Event, Inline, PoolMemory, Threaded};
use mapping::{MapWindow, Prefault};
use ring::Ring;
use segments::produce;

/// Bytes of decompressed data handed over at once between threads.
const CHUNK_THREADED: usize = 1 << 20;
/// Chunks shared by the decompressing and the parsing thread; they go round
/// and round. Enough of them that the decompressor, which sets the pace,
/// runs on while the parser works through a stretch of small files (a few
/// syscalls each). They come from one anonymous mapping with transparent
/// huge pages (a handful of page faults, not one per 4 KiB), touched only
/// when the decoder needs one more.
const POOL: usize = 16;
/// Chunk size on one thread: small enough to stay in the CPU cache while
/// the parser walks it.
const CHUNK_INLINE: usize = 256 << 10;
/// Room in the zstd ring beyond a frame's window, for bytes the parsing
/// thread has not read yet: enough that the decoder rarely waits while the
/// parser creates a run of small files, and small enough that the ring
/// stays in the L3 cache (a 50 MiB ring decoded 2-3x slower here).
const RING_SLACK: usize = 16 << 20;
/// The largest zstd window the kernel decodes (ZSTD_WINDOWLOG_MAX, lib/zstd).
const ZSTD_WINDOW_MAX: u64 = 1 << compression::ZSTD_WINDOW_LOG_MAX;
/// Default limit of decompressed bytes per image.
pub const DEFAULT_MAX_OUTPUT: u64 = 16 << 30;

/// Positional reads from an image (a file, or bytes in memory).
pub trait ImageSource: Sync {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// The whole image in memory, when it is (decoders then read it in
    /// place instead of copying it into a buffer first).
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }
    /// The reader is done with the bytes before `offset`: a mapping may
    /// drop their page table entries now (on a thread with time to spare)
    /// instead of all at once when the image is closed.
    fn release(&self, _offset: u64) {}
    /// A mapping may map the bytes in `from..to` now (on a thread with time
    /// to spare) so that the decoder takes no page faults for them.
    fn populate(&self, _from: u64, _to: u64) {}
}

/// An image to read: a name for messages, its bytes and its length.
pub struct Image<'a> {
    name: String,
    source: Box<dyn ImageSource + 'a>,
    len: u64,
}

impl<'a> Image<'a> {
    /// Opens an image file. Regular files are memory-mapped (read in
    /// place); the image must not shrink while it is read.
    pub fn open(path: &Path) -> Result<Image<'static>, Error> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|cause| Error::Read {
            image: name.clone(),
            cause,
        })?;
        let len = file
            .metadata()
            .map_err(|cause| Error::Read {
                image: name.clone(),
                cause,
            })?
            .len();
        if len > 0 && file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            // SAFETY: the map is read only; kmodkit never writes the image
            // while reading it (outputs go to a temporary file first).
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                let _ = map.advise(memmap2::Advice::Sequential);
                return Ok(Image {
                    name,
                    source: Box::new(map),
                    len,
                });
            }
        }
        Ok(Image {
            name,
            source: Box::new(file),
            len,
        })
    }

    /// An image held in memory.
    pub fn from_bytes(name: impl Into<String>, bytes: &'a [u8]) -> Image<'a> {
        Image {
            name: name.into(),
            len: bytes.len() as u64,
            source: Box::new(bytes),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.source.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// See [`ImageSource::release`].
    fn release(&self, offset: u64) {
        self.source.release(offset)
    }

    /// See [`ImageSource::populate`].
    fn populate(&self, from: u64, to: u64) {
        self.source.populate(from, to)
    }

    fn read_error(&self, cause: io::Error) -> Error {
        Error::Read {
            image: self.name.clone(),
            cause,
        }
    }
}

/// Where a segment starts and how it is compressed.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    /// 1-based, in image order.
    pub index: usize,
    /// Byte offset in the image.
    pub offset: u64,
    pub compression: Compression,
    /// Something about the stream the kernel would refuse or mishandle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_note: Option<String>,
}

/// A segment once read completely.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentSummary {
    pub index: usize,
    pub offset: u64,
    /// Bytes the segment occupies in the image.
    pub size: u64,
    pub compression: Compression,
    /// Entries, trailers not counted.
    pub entries: u64,
    /// cpio archives (trailers) in the segment.
    pub archives: u64,
    pub uncompressed_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_note: Option<String>,
}

/// One cpio entry as the visitor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub segment: usize,
    /// Offset of the header in the segment's cpio stream.
    pub offset: u64,
    /// The name without its NUL (as stored: may start with `/` or `./`).
    pub name: &'a [u8],
    pub header: &'a Header,
    /// Symlink target.
    pub link_target: Option<&'a [u8]>,
}

impl Entry<'_> {
    pub fn file_type(&self) -> FileType {
        self.header.file_type()
    }
    pub fn size(&self) -> u32 {
        self.header.filesize
    }
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(self.name).into_owned()
    }
}

/// Receives what the reader finds, in image order.
pub trait Visitor {
    fn segment_start(&mut self, _info: &SegmentInfo) -> Result<(), Error> {
        Ok(())
    }
    /// Returns true to receive the entry's data through [`Visitor::data`].
    fn entry(&mut self, entry: &Entry<'_>) -> Result<bool, Error>;
    fn data(&mut self, _chunk: &[u8]) -> Result<(), Error> {
        Ok(())
    }
    /// After the data of an entry whose data was requested (checksum
    /// already verified).
    fn entry_end(&mut self) -> Result<(), Error> {
        Ok(())
    }
    /// A `TRAILER!!!`: the end of one cpio archive (hard links reset).
    fn trailer(&mut self) -> Result<(), Error> {
        Ok(())
    }
    fn segment_end(&mut self, _summary: &SegmentSummary) -> Result<(), Error> {
        Ok(())
    }
}

/// Progress of a long operation, in bytes of the image (or of input).
/// Called from a worker thread.
pub trait Progress: Sync {
    fn start(&self, _total: u64) {}
    fn set_position(&self, _pos: u64) {}
    fn finish(&self) {}
}

/// No progress reporting.
pub struct NoProgress;
impl Progress for NoProgress {}

/// Reader settings.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Stop when more decompressed bytes than this come out of the image.
    pub max_output: u64,
    /// Decompress on a second thread (the parser runs on the caller's).
    /// Worth it when the visitor does real work per byte (extraction);
    /// listing is faster on one thread.
    pub threaded: bool,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_output: DEFAULT_MAX_OUTPUT,
            threaded: true,
        }
    }
}

/// Receives each segment's decompressed bytes as they are (repack).
pub trait StreamSink {
    fn segment_start(&mut self, info: &SegmentInfo) -> Result<(), Error>;
    fn data(&mut self, chunk: &[u8]) -> Result<(), Error>;
    fn segment_end(&mut self, summary: &SegmentSummary) -> Result<(), Error>;
}

/// Reads an image, calling the visitor for every segment and entry.
pub fn read_image(
    image: &Image<'_>,
    opts: &ReadOptions,
    progress: &dyn Progress,
    visitor: &mut dyn Visitor,
) -> Result<Vec<SegmentSummary>, Error> {
    read_image_streams(image, opts, progress, visitor, None)
}

/// [`read_image`], also handing every segment's decompressed cpio stream
/// to `sink` (after it was parsed and checked).
pub fn read_image_streams(
    image: &Image<'_>,
    opts: &ReadOptions,
    progress: &dyn Progress,
    visitor: &mut dyn Visitor,
    sink: Option<&mut dyn StreamSink>,
) -> Result<Vec<SegmentSummary>, Error> {
    progress.start(image.len);
    let mut consumer = Consumer::new(image.name.clone());
    consumer.sink = sink;
    // Reserved, not touched: a frame's ring touches as many pages as its
    // window needs.
    let slack = if opts.threaded { RING_SLACK } else { 0 };
    let mut ring_memory = memmap2::MmapOptions::new()
        .len(zstd_ring::ring_size(ZSTD_WINDOW_MAX) + slack)
        .map_anon()
        .ok();
    if let Some(map) = &ring_memory {
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    let ring = ring_memory.as_mut().map(|m| Ring::new(m, slack));
    let result = if opts.threaded {
        let mut pool = PoolMemory::new(POOL * CHUNK_THREADED);
        // Chunks nobody has touched yet; the decoder takes one when no
        // used one has come back.
        let fresh = pool.bytes().chunks_mut(CHUNK_THREADED).collect::<Vec<_>>();
        let decoded = AtomicU64::new(0);
        let prefault = Prefault::default();
        let ring_map = ring_memory.as_ref();
        std::thread::scope(|scope| {
            // Data events are bounded by the pool and the ring, so the
            // queue needs no bound of its own.
            let (tx, rx) = mpsc::channel::<Event<'_>>();
            let (back_tx, back_rx) = mpsc::channel::<Back<'_>>();
            let decoded = &decoded;
            let prefault = &prefault;
            let producer = scope.spawn(move || {
                let mut handoff = Threaded {
                    tx,
                    back: back_rx,
                    fresh,
                    free: Vec::new(),
                    released: 0,
                    decoded,
                    prefault,
                };
                produce(image, opts, progress, ring, &mut handoff)
            });
            let mut consumed = Ok(());
            let mut window = MapWindow::default();
            window.advance(image, 0);
            let mut faulted = 0;
            loop {
                if let Some(map) = ring_map {
                    if prefault.step(map, &mut faulted) {
                        continue;
                    }
                }
                let Ok(ev) = rx.recv() else {
                    break;
                };
                window.advance(image, decoded.load(Ordering::Relaxed));
                match consumer.handle(ev, visitor) {
                    Ok(Some(back)) => {
                        let _ = back_tx.send(back);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        consumed = Err(e);
                        break;
                    }
                }
            }
            // A producer waiting for a chunk or sending stops now.
            drop(rx);
            drop(back_tx);
            let produced = producer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            match (consumed, produced) {
                (Err(e), _) => Err(e),
                (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok(())) => Ok(()),
            }
        })
    } else {
        let mut buf = vec![0; CHUNK_INLINE];
        let mut handoff = Inline {
            consumer: &mut consumer,
            visitor,
            free: Some(&mut buf),
            released: 0,
        };
        produce(image, opts, progress, ring, &mut handoff)
    };
    progress.finish();
    result?;
    Ok(consumer.summaries)
}
