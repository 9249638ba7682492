//! How the decoder hands its output to the parser: events, and the
//! buffers (a fixed pool, recycled) or ring spans they carry, on the
//! decoder's thread ([`Inline`]) or over channels ([`Threaded`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use super::cpio_stream::Consumer;
use super::mapping::Prefault;
use super::ring::RingSpan;
use super::{SegmentInfo, Visitor};
use crate::error::Error;

pub(super) enum Event<'b> {
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
pub(super) enum Back<'b> {
    Chunk(&'b mut [u8]),
    Span(u64),
}

/// Memory for the chunks of the threaded reader.
pub(super) enum PoolMemory {
    Mapped(memmap2::MmapMut),
    Heap(Vec<u8>),
}

impl PoolMemory {
    pub(super) fn new(len: usize) -> PoolMemory {
        match memmap2::MmapOptions::new().len(len).map_anon() {
            Ok(map) => {
                // Advisory: without huge pages it is ordinary memory.
                let _ = map.advise(memmap2::Advice::HugePage);
                PoolMemory::Mapped(map)
            }
            Err(_) => PoolMemory::Heap(vec![0; len]),
        }
    }
    pub(super) fn bytes(&mut self) -> &mut [u8] {
        match self {
            PoolMemory::Mapped(m) => m,
            PoolMemory::Heap(v) => v,
        }
    }
}

/// How the decoder hands its output to the parser.
pub(super) trait Handoff<'b> {
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
pub(super) struct Inline<'c, 'k, 'b> {
    pub(super) consumer: &'c mut Consumer<'k>,
    pub(super) visitor: &'c mut dyn Visitor,
    pub(super) free: Option<&'b mut [u8]>,
    pub(super) released: u64,
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
pub(super) struct Threaded<'d, 'b> {
    pub(super) tx: mpsc::Sender<Event<'b>>,
    pub(super) back: mpsc::Receiver<Back<'b>>,
    pub(super) fresh: Vec<&'b mut [u8]>,
    pub(super) free: Vec<&'b mut [u8]>,
    pub(super) released: u64,
    /// Where the decoder is in the image, for the parsing thread's
    /// [`MapWindow`].
    pub(super) decoded: &'d AtomicU64,
    /// The ring's first round for the parsing thread, which faults it in
    /// ahead of the decoder.
    pub(super) prefault: &'d Prefault,
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
