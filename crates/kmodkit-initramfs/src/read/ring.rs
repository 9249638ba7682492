//! zstd frames of a mapped image decoded in place into a ring
//! (zstd_ring.rs), whose spans the parser reads where the decoder wrote
//! them.

use std::collections::VecDeque;
use std::io;

use super::handoff::{Event, Handoff};
use super::{Progress, CHUNK_THREADED};
use crate::error::Error;
use crate::zstd_ring;

/// Bytes of a zstd frame where the decoder wrote them in the ring.
pub(super) struct RingSpan {
    pub(super) ptr: *const u8,
    pub(super) len: usize,
    /// Spans are numbered from 1 in the order they are handed out, and
    /// given back in that order.
    pub(super) id: u64,
}

// SAFETY: the bytes stay valid and unchanged until the span is given back:
// the ring memory outlives both threads, and the decoder writes no ring
// byte of a span it has not got back (`Ring::reserve`).
unsafe impl Send for RingSpan {}

/// The memory zstd frames are decoded into (zstd_ring.rs), and the spans
/// of it the parser still reads.
pub(super) struct Ring {
    base: *mut u8,
    pub(super) cap: usize,
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
    pub(super) fn new(map: &mut memmap2::MmapMut, slack: usize) -> Ring {
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
pub(super) fn decode_in_ring(
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
