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

use std::cell::Cell;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::Serialize;

use crate::compression::{self, Compression};
use crate::cpio::{self, FileType, Format, Header, HeaderError, HEADER_LEN, PATH_MAX, TRAILER};
use crate::error::Error;
use crate::zstd_ring;

/// Bytes of decompressed data handed over at once between threads.
const CHUNK_THREADED: usize = 1 << 20;
/// Chunks shared by the decompressing and the parsing thread; they go round
/// and round. Enough of them that the decompressor, which sets the pace,
/// runs on while the parser works through a stretch of small files (a few
/// syscalls each). They come from one anonymous mapping with transparent
/// huge pages (a handful of page faults, not one per 4 KiB), touched only
/// when the decoder needs one more.
const POOL: usize = 16;
/// The threaded reader maps image pages this far ahead of the decoder ...
const MAP_AHEAD: u64 = 16 << 20;
/// ... and lets go of them behind it, in steps of this many bytes (each
/// step costs the decoding thread a TLB flush).
const MAP_STEP: u64 = 4 << 20;
/// The parsing thread hashes a ring span (for the zstd frame's checksum)
/// in pieces of this many bytes, each right before it parses it: small
/// enough that the piece should still be in the L2 cache (1 MiB) when it
/// is written out, large enough that a big file still takes few write
/// calls. On this VM the difference to whole spans is below the noise of
/// 60 paired runs.
const HASH_PIECE: usize = 256 << 10;
/// Chunk size on one thread: small enough to stay in the CPU cache while
/// the parser walks it.
const CHUNK_INLINE: usize = 256 << 10;
/// Room in the zstd ring beyond a frame's window, for bytes the parsing
/// thread has not read yet: enough that the decoder rarely waits while the
/// parser creates a run of small files, and small enough that the ring
/// stays in the L3 cache (a 50 MiB ring decoded 2-3x slower here).
const RING_SLACK: usize = 16 << 20;
/// The parsing thread faults the ring in in steps of this many bytes (a
/// transparent huge page) ...
const PREFAULT_STEP: usize = 2 << 20;
/// ... keeping the ring's first round faulted in this far ahead of the
/// decoder: far enough that the two never clear the same huge page, and
/// near enough that a small frame leaves little of it touched for nothing.
const PREFAULT_AHEAD: usize = 8 << 20;
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

impl ImageSource for memmap2::Mmap {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (&self[..]).read_at(buf, offset)
    }
    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn release(&self, offset: u64) {
        let len = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len())
            & !4095;
        if len > 0 {
            // SAFETY: the map is a read-only mapping of a file: dropping its
            // page table entries changes no byte of it (a later access
            // faults the same page cache page back in); DontNeed is only
            // unsafe for private mappings that were written to.
            let _ =
                unsafe { self.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len) };
        }
    }
    fn populate(&self, from: u64, to: u64) {
        let clamp = |x: u64| usize::try_from(x).unwrap_or(usize::MAX).min(self.len());
        let (start, end) = (clamp(from) & !4095, clamp(to));
        if start < end {
            // Advisory (MADV_POPULATE_READ, Linux 5.14).
            let _ = self.advise_range(memmap2::Advice::PopulateRead, start, end - start);
        }
    }
}

impl ImageSource for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }
}

impl ImageSource for &[u8] {
    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
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

enum Event<'b> {
    Start(SegmentInfo),
    /// A buffer, how many of its bytes are data, and the image offset
    /// before which the decoder needs no more bytes.
    Data(&'b mut [u8], usize, u64),
    /// Bytes decoded in place in the ring, and that image offset.
    Span(RingSpan, u64),
    /// The segment ends at `end`; a zstd frame decoded in the ring names
    /// the checksum its content must have (low 32 bits of its XXH64).
    End {
        end: u64,
        check: Option<u32>,
    },
}

/// What the parser gives back after an event: a buffer to fill again, or
/// the number of the ring span it is done with.
enum Back<'b> {
    Chunk(&'b mut [u8]),
    Span(u64),
}

/// Bytes of a zstd frame where the decoder wrote them in the ring.
struct RingSpan {
    ptr: *const u8,
    len: usize,
    /// Spans are numbered from 1 in the order they are handed out, and
    /// given back in that order.
    id: u64,
}

// SAFETY: the bytes stay valid and unchanged until the span is given back:
// the ring memory outlives both threads, and the decoder writes no ring
// byte of a span it has not got back (`Ring::reserve`).
unsafe impl Send for RingSpan {}

/// Keeps a mapped image's pages mapped a little ahead of the decoder and
/// unmapped behind it, from the parsing thread (which waits for the
/// decoder, not the other way round): the decoder then takes no page
/// faults, and closing the image has no page tables left to tear down.
#[derive(Default)]
struct MapWindow {
    released: u64,
    populated: u64,
}

impl MapWindow {
    fn advance(&mut self, image: &Image<'_>, done: u64) {
        if done >= self.released + MAP_STEP {
            image.release(done);
            self.released = done;
        }
        if done + MAP_AHEAD > self.populated + MAP_STEP {
            let from = self.populated.max(done);
            self.populated = done + MAP_AHEAD;
            image.populate(from, self.populated);
        }
    }
}

/// The zstd ring's first round, faulted in by the parsing thread a little
/// ahead of the decoder. Otherwise the decoder clears each huge page of it
/// itself while the parsing thread writes files (and so has no idle
/// moments to do it in): from 0.3% to 4.6% of an extract's samples in
/// perf profiles, on the decoder's critical path.
#[derive(Default)]
struct Prefault {
    /// Ring bytes the first zstd frame uses (0: none yet).
    size: AtomicUsize,
    /// Where the decoder writes the ring now.
    at: AtomicUsize,
}

impl Prefault {
    /// Faults in the next step of the ring if the decoder is near it;
    /// `faulted` is how far the ring is faulted in. Says whether it did.
    fn step(&self, map: &memmap2::MmapMut, faulted: &mut usize) -> bool {
        let size = self.size.load(Ordering::Relaxed).min(map.len());
        let at = self.at.load(Ordering::Relaxed);
        if *faulted >= size || at + PREFAULT_AHEAD <= *faulted {
            return false;
        }
        // Not the huge page the decoder writes, nor the next one.
        let start = (*faulted).max(at.next_multiple_of(PREFAULT_STEP) + PREFAULT_STEP);
        if start >= size {
            *faulted = size;
            return false;
        }
        let len = PREFAULT_STEP.min(size - start);
        // Advisory (MADV_POPULATE_WRITE, Linux 5.14): the decoder faults
        // in what this leaves out.
        let _ = map.advise_range(memmap2::Advice::PopulateWrite, start, len);
        *faulted = start + len;
        true
    }
}

/// Memory for the chunks of the threaded reader.
enum PoolMemory {
    Mapped(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl PoolMemory {
    fn new(len: usize) -> PoolMemory {
        match memmap2::MmapOptions::new().len(len).map_anon() {
            Ok(map) => {
                // Advisory: without huge pages it is ordinary memory.
                let _ = map.advise(memmap2::Advice::HugePage);
                PoolMemory::Mapped(map)
            }
            Err(_) => PoolMemory::Heap(vec![0; len]),
        }
    }
    fn bytes(&mut self) -> &mut [u8] {
        match self {
            PoolMemory::Mapped(m) => m,
            PoolMemory::Heap(v) => v,
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

// ---------------------------------------------------------------------------
// Producer: segment splitting and decompression.

/// A `BufRead` over a byte range of the image that knows its position.
struct SourceReader<'i, 'a> {
    image: &'i Image<'a>,
    /// The image in memory, when it is: read in place.
    slice: Option<&'i [u8]>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Image offset of `buf[end]`.
    next: u64,
    progress: &'i dyn Progress,
    /// The position, for the one who hands the decoded data on.
    done: &'i Cell<u64>,
}

impl<'i, 'a> SourceReader<'i, 'a> {
    fn new(
        image: &'i Image<'a>,
        offset: u64,
        progress: &'i dyn Progress,
        done: &'i Cell<u64>,
    ) -> Self {
        let slice = image.source.as_slice();
        SourceReader {
            image,
            slice,
            buf: if slice.is_some() {
                Vec::new()
            } else {
                vec![0; 1 << 20]
            },
            start: 0,
            end: 0,
            next: offset,
            progress,
            done,
        }
    }
    fn position(&self) -> u64 {
        self.next - (self.end - self.start) as u64
    }
}

impl Read for SourceReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for SourceReader<'_, '_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(all) = self.slice {
            // In place: `next` is the position, hand out up to 1 MiB at a
            // time so progress advances.
            let at = usize::try_from(self.next)
                .unwrap_or(usize::MAX)
                .min(all.len());
            let end = all.len().min(at + (1 << 20));
            self.progress.set_position(end as u64);
            return Ok(&all[at..end]);
        }
        if self.start == self.end {
            let n = self.image.read_exact_at(&mut self.buf, self.next)?;
            self.start = 0;
            self.end = n;
            self.next += n as u64;
            self.progress.set_position(self.next);
        }
        Ok(&self.buf[self.start..self.end])
    }
    fn consume(&mut self, n: usize) {
        if self.slice.is_some() {
            self.next += n as u64;
        } else {
            self.start = (self.start + n).min(self.end);
        }
        self.done.set(self.position());
    }
}

/// How the decoder hands its output to the parser.
trait Handoff<'b> {
    /// Passes an event on.
    fn send(&mut self, ev: Event<'b>) -> Result<(), Error>;
    /// A buffer to fill.
    fn buffer(&mut self) -> Result<&'b mut [u8], Error>;
    /// Waits until the parser has given back ring span `id` (and so every
    /// span before it).
    fn wait_released(&mut self, id: u64) -> Result<(), Error>;
    /// A zstd frame starts using the first `size` bytes of the ring.
    fn ring_started(&mut self, _size: usize) {}
    /// The decoder writes the ring from byte `at` on now.
    fn ring_at(&mut self, _at: usize) {}
}

/// Parsing on the decoder's thread, event by event.
struct Inline<'c, 'k, 'b> {
    consumer: &'c mut Consumer<'k>,
    visitor: &'c mut dyn Visitor,
    free: Option<&'b mut [u8]>,
    released: u64,
}

impl<'b> Handoff<'b> for Inline<'_, '_, 'b> {
    fn send(&mut self, ev: Event<'b>) -> Result<(), Error> {
        match self.consumer.handle(ev, self.visitor)? {
            Some(Back::Chunk(chunk)) => self.free = Some(chunk),
            Some(Back::Span(id)) => self.released = id,
            None => {}
        }
        Ok(())
    }
    fn buffer(&mut self) -> Result<&'b mut [u8], Error> {
        self.free.take().ok_or(Error::Stopped)
    }
    fn wait_released(&mut self, id: u64) -> Result<(), Error> {
        // Every span was parsed before `send` returned.
        if self.released >= id {
            Ok(())
        } else {
            Err(Error::Stopped)
        }
    }
}

/// Parsing on another thread: events go over a channel, buffers and spans
/// come back over another.
struct Threaded<'d, 'b> {
    tx: mpsc::Sender<Event<'b>>,
    back: mpsc::Receiver<Back<'b>>,
    fresh: Vec<&'b mut [u8]>,
    free: Vec<&'b mut [u8]>,
    released: u64,
    /// Where the decoder is in the image, for the parsing thread's
    /// [`MapWindow`].
    decoded: &'d AtomicU64,
    /// The ring's first round for the parsing thread, which faults it in
    /// ahead of the decoder.
    prefault: &'d Prefault,
}

impl<'b> Threaded<'_, 'b> {
    fn take_back(&mut self, back: Back<'b>) {
        match back {
            Back::Chunk(chunk) => self.free.push(chunk),
            Back::Span(id) => self.released = id,
        }
    }
}

impl<'b> Handoff<'b> for Threaded<'_, 'b> {
    fn send(&mut self, ev: Event<'b>) -> Result<(), Error> {
        if let Event::Data(_, _, done) | Event::Span(_, done) = ev {
            self.decoded.store(done, Ordering::Relaxed);
        }
        self.tx.send(ev).map_err(|_| Error::Stopped)
    }
    fn buffer(&mut self) -> Result<&'b mut [u8], Error> {
        loop {
            if let Some(chunk) = self.free.pop() {
                return Ok(chunk);
            }
            match self.back.try_recv() {
                Ok(back) => self.take_back(back),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Err(Error::Stopped),
            }
        }
        if let Some(chunk) = self.fresh.pop() {
            return Ok(chunk);
        }
        while self.free.is_empty() {
            let back = self.back.recv().map_err(|_| Error::Stopped)?;
            self.take_back(back);
        }
        Ok(self.free.pop().expect("a chunk came back"))
    }
    fn ring_started(&mut self, size: usize) {
        let _ = self
            .prefault
            .size
            .compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed);
    }
    fn ring_at(&mut self, at: usize) {
        self.prefault.at.store(at, Ordering::Relaxed);
    }
    fn wait_released(&mut self, id: u64) -> Result<(), Error> {
        while self.released < id {
            let back = self.back.recv().map_err(|_| Error::Stopped)?;
            self.take_back(back);
        }
        Ok(())
    }
}

/// The memory zstd frames are decoded into (zstd_ring.rs), and the spans
/// of it the parser still reads.
struct Ring {
    base: *mut u8,
    cap: usize,
    /// Room beyond a frame's window for bytes the parser has not read yet.
    slack: usize,
    /// Spans handed out and not known to be back: number, start, end.
    out: VecDeque<(u64, usize, usize)>,
    last_id: u64,
}

// SAFETY: the ring is used by the decoding thread alone; the parser only
// reads spans it was handed (see RingSpan).
unsafe impl Send for Ring {}

impl Ring {
    fn new(map: &mut memmap2::MmapMut, slack: usize) -> Ring {
        Ring {
            base: map.as_mut_ptr(),
            cap: map.len(),
            slack,
            out: VecDeque::new(),
            last_id: 0,
        }
    }

    /// Waits until no span the parser may still read overlaps
    /// `start..end`.
    fn reserve(&mut self, start: usize, end: usize, h: &mut dyn Handoff<'_>) -> Result<(), Error> {
        let newest = self
            .out
            .iter()
            .rev()
            .find(|&&(_, s, e)| s < end && start < e)
            .map(|&(id, ..)| id);
        if let Some(id) = newest {
            h.wait_released(id)?;
            while self.out.front().is_some_and(|&(i, ..)| i <= id) {
                self.out.pop_front();
            }
        }
        Ok(())
    }

    /// Hands `start..end` to the parser.
    fn hand_out<'b>(
        &mut self,
        start: usize,
        end: usize,
        done: u64,
        h: &mut dyn Handoff<'b>,
    ) -> Result<(), Error> {
        if start == end {
            return Ok(());
        }
        self.last_id += 1;
        self.out.push_back((self.last_id, start, end));
        let span = RingSpan {
            // SAFETY: start < end <= cap, inside the mapping.
            ptr: unsafe { self.base.add(start) },
            len: end - start,
            id: self.last_id,
        };
        h.send(Event::Span(span, done))
    }
}

/// Decodes the zstd frame at the start of `src` into the ring, handing
/// the decoded bytes out in spans of up to `CHUNK_THREADED` bytes; returns
/// the frame's compressed size, and sets `check` to the frame's checksum
/// (which the parser verifies).
#[allow(clippy::too_many_arguments)]
fn decode_in_ring(
    mut dec: zstd_ring::FrameDecoder,
    src: &[u8],
    offset: u64,
    ring: &mut Ring,
    produced: &mut u64,
    limit: &dyn Fn(u64) -> Result<(), Error>,
    progress: &dyn Progress,
    decode_error: &dyn Fn(io::Error) -> Error,
    check: &mut Option<u32>,
    h: &mut dyn Handoff<'_>,
) -> Result<usize, Error> {
    // zstd may write this far past the bytes it returns (wildcopy).
    const OVERSHOOT: usize = 64;
    let size = (dec.ring_min + ring.slack).min(ring.cap);
    h.ring_started(size);
    let block = dec.block_max;
    let (mut at, mut span_start, mut used) = (0usize, 0usize, 0usize);
    loop {
        let need = dec.next_input();
        if need == 0 {
            break;
        }
        let Some(input) = src.get(used..used + need) else {
            return Err(decode_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the image ends inside the zstd frame",
            )));
        };
        if dec.at_checksum() {
            if let Ok(b) = <[u8; 4]>::try_from(input) {
                *check = Some(u32::from_le_bytes(b));
            }
        }
        let cap = (size - at).min(block + OVERSHOOT);
        ring.reserve(at, at + cap, h)?;
        // SAFETY: at + cap <= size <= the mapping's length; no span the
        // parser holds overlaps at..at + cap (reserve); the ring is at
        // least ring_min long and wraps as zstd's own streaming decoder
        // wraps its buffer, so the window behind `at` is intact.
        let n = unsafe { dec.step(input, ring.base.add(at), cap) }.map_err(decode_error)?;
        used += need;
        let done = offset + used as u64;
        if n == 0 {
            continue;
        }
        at += n;
        h.ring_at(at);
        *produced += n as u64;
        limit(*produced)?;
        if at - span_start >= CHUNK_THREADED {
            ring.hand_out(span_start, at, done, h)?;
            progress.set_position(done);
            span_start = at;
        }
        if at + block > size {
            ring.hand_out(span_start, at, done, h)?;
            at = 0;
            span_start = 0;
        }
    }
    ring.hand_out(span_start, at, offset + used as u64, h)?;
    Ok(used)
}

fn produce<'b>(
    image: &Image<'_>,
    opts: &ReadOptions,
    progress: &dyn Progress,
    mut ring: Option<Ring>,
    h: &mut dyn Handoff<'b>,
) -> Result<(), Error> {
    let mut pos = 0u64;
    let mut index = 0usize;
    let mut produced = 0u64;
    let mut spare: Option<&'b mut [u8]> = None;
    // Image bytes before this offset are decoded and not needed again.
    let input_done = Cell::new(0u64);
    let mut scan = vec![0u8; 64 << 10];
    loop {
        // Zero padding between segments.
        let Some(start) = skip_zeros(image, pos, &mut scan)? else {
            return Ok(());
        };
        pos = start;
        let mut head = [0u8; 16];
        let n = image
            .read_exact_at(&mut head, pos)
            .map_err(|e| image.read_error(e))?;
        let head = &head[..n];
        index += 1;
        let compression = if head[0] == b'0' {
            if !pos.is_multiple_of(4) {
                return Err(Error::Junk {
                    image: image.name.clone(),
                    offset: pos,
                    problem: "a cpio archive at an offset that is not a multiple of 4 (the kernel only accepts aligned uncompressed archives)".into(),
                });
            }
            Compression::None
        } else {
            Compression::detect(head).ok_or_else(|| Error::Junk {
                image: image.name.clone(),
                offset: pos,
                problem: format!(
                    "neither a cpio archive, zero padding nor a known compression magic (bytes {}); \
                     the kernel stops with \"junk in compressed archive\" here",
                    hex(&head[..head.len().min(8)])
                ),
            })?
        };
        let info = SegmentInfo {
            index,
            offset: pos,
            compression,
            kernel_note: compression::kernel_note(compression, head),
        };
        h.send(Event::Start(info))?;
        let limit = |produced: u64| {
            if produced > opts.max_output {
                Err(Error::TooLarge {
                    image: image.name.clone(),
                    segment: index,
                    limit: opts.max_output,
                })
            } else {
                Ok(())
            }
        };
        let decode_error = |cause: io::Error| Error::Decompress {
            image: image.name.clone(),
            segment: index,
            segment_offset: pos,
            compression,
            cause,
        };
        let mut take = |h: &mut dyn Handoff<'b>,
                        fill: &mut dyn FnMut(&mut [u8]) -> Result<usize, Error>|
         -> Result<bool, Error> {
            let buf = match spare.take() {
                Some(buf) => buf,
                None => h.buffer()?,
            };
            let mut len = 0;
            while len < buf.len() {
                let n = fill(&mut buf[len..])?;
                if n == 0 {
                    break;
                }
                len += n;
            }
            if len == 0 {
                spare = Some(buf);
                return Ok(false);
            }
            produced += len as u64;
            limit(produced)?;
            h.send(Event::Data(buf, len, input_done.get()))?;
            Ok(true)
        };
        // A zstd frame in a mapped image decodes in place.
        let in_ring = match (&mut ring, image.source.as_slice()) {
            (Some(ring), Some(all)) if compression == Compression::Zstd => {
                let src = &all[pos as usize..];
                zstd_ring::FrameDecoder::new(src, ZSTD_WINDOW_MAX)
                    .filter(|dec| dec.ring_min <= ring.cap)
                    .map(|dec| (dec, src, ring))
            }
            _ => None,
        };
        let mut check = None;
        let end = if let Some((dec, src, ring)) = in_ring {
            let used = decode_in_ring(
                dec,
                src,
                pos,
                ring,
                &mut produced,
                &limit,
                progress,
                &decode_error,
                &mut check,
                h,
            )?;
            pos + used as u64
        } else if compression == Compression::None {
            let end = uncompressed_end(image, index, pos)?;
            let mut at = pos;
            while take(h, &mut |b: &mut [u8]| {
                let want = (b.len() as u64).min(end - at) as usize;
                let n = image
                    .read_exact_at(&mut b[..want], at)
                    .map_err(|e| image.read_error(e))?;
                at += n as u64;
                input_done.set(at);
                progress.set_position(at);
                Ok(n)
            })? {}
            end
        } else {
            let mut reader = SourceReader::new(image, pos, progress, &input_done);
            {
                let mut dec =
                    compression::decoder(compression, &mut reader).map_err(decode_error)?;
                while take(h, &mut |b: &mut [u8]| loop {
                    match dec.read(b) {
                        Ok(n) => return Ok(n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(decode_error(e)),
                    }
                })? {}
            }
            reader.position()
        };
        h.send(Event::End { end, check })?;
        pos = end;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// First non-zero byte at or after `pos`, or `None` at the end of the image.
fn skip_zeros(image: &Image<'_>, mut pos: u64, scan: &mut [u8]) -> Result<Option<u64>, Error> {
    loop {
        let n = image
            .read_exact_at(scan, pos)
            .map_err(|e| image.read_error(e))?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = scan[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
}

/// Walks the headers of an uncompressed archive at `pos` to find where it
/// ends: after the `TRAILER!!!` entry and its padding (like the kernel,
/// which parses uncompressed data in place). Data is not read.
fn uncompressed_end(image: &Image<'_>, segment: usize, start: u64) -> Result<u64, Error> {
    let mut pos = start;
    let mut hdr = [0u8; HEADER_LEN];
    let err = |offset: u64, problem: String| Error::Cpio {
        image: image.name.clone(),
        segment,
        offset,
        location: format!("segment {segment} (uncompressed at byte {start}), image byte {offset}"),
        problem,
    };
    loop {
        let n = image
            .read_exact_at(&mut hdr, pos)
            .map_err(|e| image.read_error(e))?;
        if n < HEADER_LEN {
            return Err(err(
                pos,
                "truncated: the image ends inside a cpio header (no TRAILER!!! entry)".into(),
            ));
        }
        let h = cpio::parse_header(&hdr).map_err(|e| err(pos, e.to_string()))?;
        let mut name = [0u8; 11];
        let is_trailer = h.namesize == 11
            && image
                .read_exact_at(&mut name, pos + HEADER_LEN as u64)
                .map_err(|e| image.read_error(e))?
                == 11
            && &name[..10] == TRAILER
            && name[10] == 0;
        let next = pos + h.data_offset() + cpio::pad4(u64::from(h.filesize));
        if is_trailer {
            return Ok(next.min(image.len));
        }
        if next > image.len {
            return Err(err(
                pos,
                format!(
                    "truncated: entry needs {} bytes but the image ends {} bytes after its header",
                    next - pos,
                    image.len - pos
                ),
            ));
        }
        pos = next;
    }
}

// ---------------------------------------------------------------------------
// Consumer: the cpio state machine.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting a header (`have` bytes so far).
    Header,
    Name,
    Skip,
    Link,
    Data,
    /// After a trailer: zeros, or the next archive.
    AfterTrailer,
}

struct Consumer<'k> {
    sink: Option<&'k mut dyn StreamSink>,
    image: String,
    summaries: Vec<SegmentSummary>,
    seg: Option<SegmentInfo>,
    state: State,
    /// Offset in the current segment's stream.
    off: u64,
    hdr: [u8; HEADER_LEN],
    have: usize,
    header: Option<Header>,
    entry_off: u64,
    name: Vec<u8>,
    link: Vec<u8>,
    link_len: u64,
    /// Bytes left in the current Name/Skip/Link/Data state.
    left: u64,
    /// Padding to skip after the data.
    data_pad: u64,
    after_skip: State,
    want_data: bool,
    sum: u32,
    is_trailer: bool,
    entries: u64,
    archives: u64,
    format: Option<Format>,
    /// XXH64 of a ring segment's content so far: its checksum is verified
    /// here, off the decoding thread.
    content_hash: xxhash_rust::xxh64::Xxh64,
}

impl<'k> Consumer<'k> {
    fn new(image: String) -> Consumer<'k> {
        Consumer {
            sink: None,
            image,
            summaries: Vec::new(),
            seg: None,
            state: State::Header,
            off: 0,
            hdr: [0; HEADER_LEN],
            have: 0,
            header: None,
            entry_off: 0,
            name: Vec::with_capacity(PATH_MAX as usize + 1),
            link: Vec::with_capacity(PATH_MAX as usize),
            link_len: 0,
            left: 0,
            data_pad: 0,
            after_skip: State::Header,
            want_data: false,
            sum: 0,
            is_trailer: false,
            entries: 0,
            archives: 0,
            format: None,
            content_hash: xxhash_rust::xxh64::Xxh64::new(0),
        }
    }

    fn error(&self, offset: u64, problem: String) -> Error {
        let seg = self.seg.as_ref();
        let index = seg.map_or(0, |s| s.index);
        let location = match seg {
            Some(s) if s.compression == Compression::None => format!(
                "segment {} (uncompressed at byte {}), image byte {}",
                s.index,
                s.offset,
                s.offset + offset
            ),
            Some(s) => format!(
                "segment {} ({} at byte {}), byte {} of the decompressed cpio stream",
                s.index, s.compression, s.offset, offset
            ),
            None => format!("byte {offset}"),
        };
        Error::Cpio {
            image: self.image.clone(),
            segment: index,
            offset,
            location,
            problem,
        }
    }

    fn entry_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    fn handle<'b>(
        &mut self,
        ev: Event<'b>,
        v: &mut dyn Visitor,
    ) -> Result<Option<Back<'b>>, Error> {
        match ev {
            Event::Start(info) => {
                self.content_hash = xxhash_rust::xxh64::Xxh64::new(0);
                self.state = State::Header;
                self.off = 0;
                self.have = 0;
                self.entries = 0;
                self.archives = 0;
                self.format = None;
                v.segment_start(&info)?;
                if let Some(sink) = self.sink.as_mut() {
                    sink.segment_start(&info)?;
                }
                self.seg = Some(info);
                Ok(None)
            }
            Event::Data(buf, len, _) => {
                self.take(&buf[..len], v)?;
                Ok(Some(Back::Chunk(buf)))
            }
            Event::Span(span, _) => {
                // SAFETY: see RingSpan.
                let data = unsafe { std::slice::from_raw_parts(span.ptr, span.len) };
                // Hashed piece by piece right before the piece is parsed
                // (and written out), so that both read it from the cache.
                for piece in data.chunks(HASH_PIECE) {
                    self.content_hash.update(piece);
                    self.take(piece, v)?;
                }
                Ok(Some(Back::Span(span.id)))
            }
            Event::End { end, check } => {
                if let Some(want) = check {
                    if self.content_hash.digest() as u32 != want {
                        let seg = self.seg.as_ref().expect("segment started");
                        return Err(Error::Decompress {
                            image: self.image.clone(),
                            segment: seg.index,
                            segment_offset: seg.offset,
                            compression: seg.compression,
                            cause: io::Error::new(
                                io::ErrorKind::InvalidData,
                                "the content does not match the frame's checksum",
                            ),
                        });
                    }
                }
                let ok = self.state == State::AfterTrailer;
                if !ok {
                    let problem = if self.archives == 0 && self.off == 0 {
                        "the segment holds no cpio data".to_string()
                    } else if self.state == State::Header && self.have == 0 {
                        "truncated: the cpio stream ends without a TRAILER!!! entry".to_string()
                    } else {
                        format!(
                            "truncated: the cpio stream ends inside entry '{}' (header at byte {})",
                            self.entry_name(),
                            self.entry_off
                        )
                    };
                    return Err(self.error(self.off, problem));
                }
                let seg = self.seg.take().expect("segment started");
                let summary = SegmentSummary {
                    index: seg.index,
                    offset: seg.offset,
                    size: end - seg.offset,
                    compression: seg.compression,
                    entries: self.entries,
                    archives: self.archives,
                    uncompressed_size: self.off,
                    format: self.format,
                    kernel_note: seg.kernel_note,
                };
                v.segment_end(&summary)?;
                if let Some(sink) = self.sink.as_mut() {
                    sink.segment_end(&summary)?;
                }
                self.summaries.push(summary);
                Ok(None)
            }
        }
    }

    /// Decompressed bytes: parsed, then passed to the stream sink.
    fn take(&mut self, data: &[u8], v: &mut dyn Visitor) -> Result<(), Error> {
        self.push(data, v)?;
        if let Some(sink) = self.sink.as_mut() {
            sink.data(data)?;
        }
        Ok(())
    }

    fn push(&mut self, mut buf: &[u8], v: &mut dyn Visitor) -> Result<(), Error> {
        while !buf.is_empty() {
            match self.state {
                State::Header => {
                    let n = (HEADER_LEN - self.have).min(buf.len());
                    self.hdr[self.have..self.have + n].copy_from_slice(&buf[..n]);
                    if self.have == 0 {
                        self.entry_off = self.off;
                    }
                    self.have += n;
                    self.off += n as u64;
                    buf = &buf[n..];
                    if self.have == HEADER_LEN {
                        self.have = 0;
                        self.got_header()?;
                    }
                }
                State::Name | State::Link => {
                    let n = (self.left.min(buf.len() as u64)) as usize;
                    if self.state == State::Name {
                        self.name.extend_from_slice(&buf[..n]);
                    } else {
                        self.link.extend_from_slice(&buf[..n]);
                    }
                    self.left -= n as u64;
                    self.off += n as u64;
                    buf = &buf[n..];
                    if self.left == 0 {
                        if self.state == State::Name {
                            self.got_name(v)?;
                        } else {
                            self.got_link(v)?;
                        }
                    }
                }
                State::Skip => {
                    let n = (self.left.min(buf.len() as u64)) as usize;
                    self.left -= n as u64;
                    self.off += n as u64;
                    buf = &buf[n..];
                    if self.left == 0 {
                        match self.after_skip {
                            State::Data => {
                                self.state = State::Data;
                                self.start_data(v)?;
                            }
                            State::Link => self.enter_link(v)?,
                            next => self.state = next,
                        }
                    }
                }
                State::Data => {
                    let n = (self.left.min(buf.len() as u64)) as usize;
                    let chunk = &buf[..n];
                    if self.want_data {
                        v.data(chunk)?;
                    }
                    if self.format == Some(Format::Crc) {
                        self.sum = cpio::checksum_update(self.sum, chunk);
                    }
                    self.left -= n as u64;
                    self.off += n as u64;
                    buf = &buf[n..];
                    if self.left == 0 {
                        self.end_data(v)?;
                    }
                }
                State::AfterTrailer => {
                    let zeros = buf.iter().position(|&b| b != 0).unwrap_or(buf.len());
                    self.off += zeros as u64;
                    buf = &buf[zeros..];
                    if let Some(&b) = buf.first() {
                        if b == b'0' && self.off.is_multiple_of(4) {
                            self.state = State::Header;
                        } else {
                            return Err(self.error(
                                self.off,
                                format!(
                                    "junk after the TRAILER!!! entry (byte {b:#04x}{}); the kernel stops with \"junk in compressed archive\"",
                                    if b == b'0' { ", not at a multiple of 4" } else { "" }
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn got_header(&mut self) -> Result<(), Error> {
        let h = cpio::parse_header(&self.hdr).map_err(|e| {
            let hint = match e {
                HeaderError::NoMagic if self.hdr.iter().all(|&b| b == 0) => {
                    " (zeros where a header belongs)"
                }
                _ => "",
            };
            self.error(self.entry_off, format!("{e}{hint}"))
        })?;
        if self.format.is_none() {
            self.format = Some(h.format);
        }
        if h.namesize == 0 || h.namesize > PATH_MAX {
            return Err(self.error(
                self.entry_off,
                format!(
                    "name size {} is outside 1..={PATH_MAX} (the kernel skips such entries; kmodkit refuses them)",
                    h.namesize
                ),
            ));
        }
        self.header = Some(h);
        self.name.clear();
        self.link.clear();
        self.left = u64::from(h.namesize);
        self.state = State::Name;
        Ok(())
    }

    fn got_name(&mut self, v: &mut dyn Visitor) -> Result<(), Error> {
        let h = self.header.expect("header parsed");
        if self.name.last() != Some(&0) {
            self.name.pop();
            return Err(self.error(
                self.entry_off,
                format!(
                    "name '{}' is not NUL-terminated (malformed archive)",
                    self.entry_name()
                ),
            ));
        }
        // The kernel uses the name up to its first NUL.
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(0);
        self.name.truncate(end);
        self.is_trailer = self.name == TRAILER;
        let pad = h.data_offset() - HEADER_LEN as u64 - u64::from(h.namesize);
        let size = u64::from(h.filesize);
        self.data_pad = cpio::pad4(size) - size;
        if self.is_trailer {
            self.archives += 1;
            v.trailer()?;
            self.want_data = false;
        } else if h.file_type() == FileType::Symlink {
            if h.filesize > PATH_MAX {
                return Err(self.error(
                    self.entry_off,
                    format!(
                        "symlink '{}' has a {}-byte target, longer than PATH_MAX",
                        self.entry_name(),
                        h.filesize
                    ),
                ));
            }
            self.link_len = size;
            self.after_skip = State::Link;
            self.left = pad;
            self.state = State::Skip;
            if pad == 0 {
                self.enter_link(v)?;
            }
            return Ok(());
        } else {
            self.entries += 1;
            let entry = Entry {
                segment: self.seg.as_ref().map_or(0, |s| s.index),
                offset: self.entry_off,
                name: &self.name,
                header: &h,
                link_target: None,
            };
            self.want_data = v.entry(&entry)?;
        }
        self.sum = 0;
        self.left = pad;
        self.after_skip = State::Data;
        if pad == 0 {
            self.state = State::Data;
            self.start_data(v)
        } else {
            self.state = State::Skip;
            Ok(())
        }
    }

    fn enter_link(&mut self, v: &mut dyn Visitor) -> Result<(), Error> {
        self.state = State::Link;
        self.left = self.link_len;
        if self.left == 0 {
            self.got_link(v)?;
        }
        Ok(())
    }

    fn got_link(&mut self, v: &mut dyn Visitor) -> Result<(), Error> {
        let h = self.header.expect("header parsed");
        self.entries += 1;
        let entry = Entry {
            segment: self.seg.as_ref().map_or(0, |s| s.index),
            offset: self.entry_off,
            name: &self.name,
            header: &h,
            link_target: Some(&self.link),
        };
        let _ = v.entry(&entry)?;
        self.want_data = false;
        self.left = self.data_pad;
        self.after_skip = State::Header;
        self.state = if self.left == 0 {
            State::Header
        } else {
            State::Skip
        };
        Ok(())
    }

    fn start_data(&mut self, v: &mut dyn Visitor) -> Result<(), Error> {
        let h = self.header.expect("header parsed");
        self.left = u64::from(h.filesize);
        if self.left == 0 {
            return self.end_data(v);
        }
        Ok(())
    }

    fn end_data(&mut self, v: &mut dyn Visitor) -> Result<(), Error> {
        let h = self.header.expect("header parsed");
        if h.format == Format::Crc
            && h.file_type() == FileType::Regular
            && !self.is_trailer
            && self.sum != h.check
        {
            return Err(self.error(
                self.entry_off,
                format!(
                    "bad data checksum for '{}': header says {:#010x}, data sums to {:#010x}",
                    self.entry_name(),
                    h.check,
                    self.sum
                ),
            ));
        }
        if self.want_data {
            v.entry_end()?;
            self.want_data = false;
        }
        self.left = self.data_pad;
        self.after_skip = if self.is_trailer {
            State::AfterTrailer
        } else {
            State::Header
        };
        self.state = if self.left == 0 {
            self.after_skip
        } else {
            State::Skip
        };
        Ok(())
    }
}
