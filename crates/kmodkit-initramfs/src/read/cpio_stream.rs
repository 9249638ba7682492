//! The consumer: the cpio push state machine (header, name, symlink
//! target, data, padding, zeros after the trailer), fed chunks that may
//! end anywhere.

use std::io;

use super::handoff::{Back, Event};
use super::{Entry, SegmentInfo, SegmentSummary, StreamSink, Visitor};
use crate::compression::Compression;
use crate::cpio::{self, FileType, Format, Header, HeaderError, HEADER_LEN, PATH_MAX, TRAILER};
use crate::error::Error;

/// The parsing thread hashes a ring span (for the zstd frame's checksum)
/// in pieces of this many bytes, each right before it parses it: small
/// enough that the piece should still be in the L2 cache (1 MiB) when it
/// is written out, large enough that a big file still takes few write
/// calls. On this VM the difference to whole spans is below the noise of
/// 60 paired runs.
const HASH_PIECE: usize = 256 << 10;

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

pub(super) struct Consumer<'k> {
    pub(super) sink: Option<&'k mut dyn StreamSink>,
    image: String,
    pub(super) summaries: Vec<SegmentSummary>,
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
    pub(super) fn new(image: String) -> Consumer<'k> {
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

    pub(super) fn handle<'b>(
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
