//! The producer: splits the image into segments as the kernel's
//! unpack_to_rootfs() (init/initramfs.c) does and decompresses each one.

use std::cell::Cell;
use std::io::{self, BufRead, Read};

use super::handoff::{Event, Handoff};
use super::ring::{decode_in_ring, Ring};
use super::{Image, Progress, ReadOptions, SegmentInfo, ZSTD_WINDOW_MAX};
use crate::compression::{self, Compression};
use crate::cpio::{self, HEADER_LEN, TRAILER};
use crate::error::Error;
use crate::zstd_ring;

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

pub(super) fn produce<'b>(
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
