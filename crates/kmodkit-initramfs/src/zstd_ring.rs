//! One zstd frame decoded block by block straight into the reader's ring
//! buffer, with the buffer-less API of zstd.h (`ZSTD_decompressContinue`).
//!
//! The streaming decoder (`ZSTD_decompressStream`) decodes into a window
//! buffer of its own and copies every byte out of it; here the ring is the
//! window, so the parser reads the bytes where the decoder wrote them. The
//! ring rule is zstd's own (zstd.h, "Buffer-less streaming decompression";
//! `zdss_flush` in zstd_decompress.c): blocks are decoded one after the
//! other, and decoding starts again at the ring's start once less than a
//! whole block fits before its end. A ring of
//! `ZSTD_decodingBufferSize_min(window)` bytes keeps the whole window
//! intact; the reader adds room for the bytes the parser still holds.
//!
//! The frame's checksum (XXH64 of the content, when the frame has one) is
//! not verified here: the caller learns it ([`FrameDecoder::at_checksum`])
//! and verifies it where the bytes are read, on the parsing thread, off the
//! decoder's (on a 55 MB image it is 8% of the decoding thread's time).

use std::ffi::CStr;
use std::io;
use std::ptr::NonNull;

use zstd_sys as sys;

/// Ring bytes that keep a window of `window` bytes intact.
pub(crate) fn ring_size(window: u64) -> usize {
    // SAFETY: plain function of two integers.
    let n =
        unsafe { sys::ZSTD_decodingBufferSize_min(window, sys::ZSTD_CONTENTSIZE_UNKNOWN as u64) };
    if is_error(n) {
        0
    } else {
        n
    }
}

/// A decoder for one frame.
pub(crate) struct FrameDecoder {
    dctx: NonNull<sys::ZSTD_DCtx>,
    /// The largest block the frame may hold, decoded.
    pub(crate) block_max: usize,
    /// Ring bytes that keep the frame's window intact.
    pub(crate) ring_min: usize,
}

// SAFETY: the context is owned by this value alone; zstd contexts may move
// between threads (they only must not be used by two at once).
unsafe impl Send for FrameDecoder {}

impl FrameDecoder {
    /// A decoder for the frame at the start of `src`, or `None` when this
    /// decoder does not take it: a skippable frame, a header that is
    /// incomplete or invalid, or a window above `window_max`. The
    /// streaming decoder then decodes (and reports) it.
    pub(crate) fn new(src: &[u8], window_max: u64) -> Option<FrameDecoder> {
        // SAFETY: a zeroed header is a valid value of the plain C struct.
        let mut header: sys::ZSTD_FrameHeader = unsafe { std::mem::zeroed() };
        // SAFETY: `src` is valid for `src.len()` bytes.
        let r = unsafe { sys::ZSTD_getFrameHeader(&mut header, src.as_ptr().cast(), src.len()) };
        if is_error(r) || r != 0 || header.frameType != sys::ZSTD_FrameType_e::ZSTD_frame {
            return None;
        }
        if header.windowSize > window_max || header.windowSize == 0 {
            return None;
        }
        let ring_min = ring_size(header.windowSize);
        if ring_min == 0 {
            return None;
        }
        // SAFETY: allocation; checked for null below.
        let dctx = NonNull::new(unsafe { sys::ZSTD_createDCtx() })?;
        let d = FrameDecoder {
            dctx,
            block_max: header.blockSizeMax as usize,
            ring_min,
        };
        // SAFETY: the context is valid. ZSTD_d_forceIgnoreChecksum is
        // experimental parameter 3 (zstd.h): the caller verifies it.
        let ok = unsafe {
            !is_error(sys::ZSTD_DCtx_setParameter(
                d.dctx.as_ptr(),
                sys::ZSTD_dParameter::ZSTD_d_experimentalParam3,
                1,
            )) && !is_error(sys::ZSTD_decompressBegin(d.dctx.as_ptr()))
        };
        ok.then_some(d)
    }

    /// Input bytes the next step takes, exactly; 0 once the frame (and its
    /// checksum) is complete.
    pub(crate) fn next_input(&mut self) -> usize {
        // SAFETY: the context is valid.
        unsafe { sys::ZSTD_nextSrcSizeToDecompress(self.dctx.as_ptr()) }
    }

    /// Whether the next step's input is the frame's checksum (the low 32
    /// bits of the content's XXH64, little-endian).
    pub(crate) fn at_checksum(&mut self) -> bool {
        // SAFETY: the context is valid.
        let t = unsafe { sys::ZSTD_nextInputType(self.dctx.as_ptr()) };
        t == sys::ZSTD_nextInputType_e::ZSTDnit_checksum
    }

    /// Decodes one step (a header, a block or the checksum) of exactly
    /// [`next_input`](Self::next_input) bytes into `dst`, returning the
    /// bytes written there.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `cap` bytes, and the ring bytes
    /// written before (up to the frame's window back) must be unchanged
    /// since they were written.
    pub(crate) unsafe fn step(
        &mut self,
        src: &[u8],
        dst: *mut u8,
        cap: usize,
    ) -> io::Result<usize> {
        // SAFETY: as the caller promises; `src` is valid for its length.
        let r = unsafe {
            sys::ZSTD_decompressContinue(
                self.dctx.as_ptr(),
                dst.cast(),
                cap,
                src.as_ptr().cast(),
                src.len(),
            )
        };
        if is_error(r) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, error_name(r)));
        }
        Ok(r)
    }
}

impl Drop for FrameDecoder {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createDCtx, freed once.
        unsafe { sys::ZSTD_freeDCtx(self.dctx.as_ptr()) };
    }
}

fn is_error(code: usize) -> bool {
    // SAFETY: plain function of an integer.
    unsafe { sys::ZSTD_isError(code) != 0 }
}

fn error_name(code: usize) -> String {
    // SAFETY: zstd returns a static NUL-terminated string for any code.
    unsafe { CStr::from_ptr(sys::ZSTD_getErrorName(code)) }
        .to_string_lossy()
        .into_owned()
}
