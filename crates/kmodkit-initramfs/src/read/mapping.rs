//! Page-table tuning: how the image's mapping and the zstd ring are
//! faulted in ahead of the decoder and dropped behind it, so the decoding
//! thread (which sets the pace) takes no page faults of its own.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Image, ImageSource};

/// The threaded reader maps image pages this far ahead of the decoder ...
const MAP_AHEAD: u64 = 16 << 20;
/// ... and lets go of them behind it, in steps of this many bytes (each
/// step costs the decoding thread a TLB flush).
const MAP_STEP: u64 = 4 << 20;
/// The parsing thread faults the ring in in steps of this many bytes (a
/// transparent huge page) ...
const PREFAULT_STEP: usize = 2 << 20;
/// ... keeping the ring's first round faulted in this far ahead of the
/// decoder: far enough that the two never clear the same huge page, and
/// near enough that a small frame leaves little of it touched for nothing.
const PREFAULT_AHEAD: usize = 8 << 20;

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

/// Keeps a mapped image's pages mapped a little ahead of the decoder and
/// unmapped behind it, from the parsing thread (which waits for the
/// decoder, not the other way round): the decoder then takes no page
/// faults, and closing the image has no page tables left to tear down.
#[derive(Default)]
pub(super) struct MapWindow {
    released: u64,
    populated: u64,
}

impl MapWindow {
    pub(super) fn advance(&mut self, image: &Image<'_>, done: u64) {
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
pub(super) struct Prefault {
    /// Ring bytes the first zstd frame uses (0: none yet).
    pub(super) size: AtomicUsize,
    /// Where the decoder writes the ring now.
    pub(super) at: AtomicUsize,
}

impl Prefault {
    /// Faults in the next step of the ring if the decoder is near it;
    /// `faulted` is how far the ring is faulted in. Says whether it did.
    pub(super) fn step(&self, map: &memmap2::MmapMut, faulted: &mut usize) -> bool {
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
