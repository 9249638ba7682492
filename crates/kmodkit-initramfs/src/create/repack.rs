//! Repacking an image: every segment's cpio stream re-encoded as it
//! passes the reader, checked on the way.

use std::io::{self, BufWriter, Write};

use super::cpio_writer::ZEROS;
use super::output::Counting;
use crate::compression::{self, Compression, EncodeOptions, Encoder};
use crate::cpio;
use crate::error::Error;
use crate::read::{self, Image, Progress, ReadOptions, SegmentInfo, SegmentSummary, StreamSink};

/// How [`repack`] encodes the compressed segments.
#[derive(Debug, Clone, Copy)]
pub struct RecompressOptions {
    /// `None`: each segment keeps the compression it has.
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    pub threads: u32,
}

/// Re-encodes every compressed segment of `image` into `out` as
/// `recompress` says; uncompressed (early) segments are copied as they
/// are. The cpio streams are checked while they pass.
pub fn repack<W: Write + Send>(
    image: &Image<'_>,
    read_opts: &ReadOptions,
    recompress: &RecompressOptions,
    progress: &dyn Progress,
    out: &mut W,
) -> Result<Vec<SegmentSummary>, Error> {
    struct Repacker<'o, W: Write + Send> {
        state: Option<RepackState<'o, W>>,
        recompress: RecompressOptions,
        last_lz4: bool,
    }
    enum RepackState<'o, W: Write + Send> {
        Idle(Counting<BufWriter<&'o mut W>>),
        Encoding(Box<dyn Encoder<Counting<BufWriter<&'o mut W>>> + 'o>),
    }
    struct Ignore;
    impl read::Visitor for Ignore {
        fn entry(&mut self, _: &read::Entry<'_>) -> Result<bool, Error> {
            Ok(false)
        }
    }
    let wr = |e: io::Error| Error::write_output(e);
    impl<W: Write + Send> StreamSink for Repacker<'_, W> {
        fn segment_start(&mut self, info: &SegmentInfo) -> Result<(), Error> {
            let wr = |e: io::Error| Error::write_output(e);
            let Some(RepackState::Idle(mut w)) = self.state.take() else {
                unreachable!("segments do not nest")
            };
            if self.last_lz4 {
                w.write_all(&ZEROS).map_err(wr)?;
            }
            let compression = if info.compression == Compression::None {
                let pad = (cpio::pad4(w.count) - w.count) as usize;
                w.write_all(&ZEROS[..pad]).map_err(wr)?;
                Compression::None
            } else {
                self.recompress.compression.unwrap_or(info.compression)
            };
            let encode = EncodeOptions {
                compression,
                level: self.recompress.level,
                threads: self.recompress.threads,
            };
            self.last_lz4 = encode.compression == Compression::Lz4;
            self.state = Some(RepackState::Encoding(
                compression::encoder(&encode, w).map_err(wr)?,
            ));
            Ok(())
        }
        fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
            match self.state.as_mut() {
                Some(RepackState::Encoding(e)) => e.write_all(chunk).map_err(Error::write_output),
                _ => unreachable!("data inside a segment"),
            }
        }
        fn segment_end(&mut self, _: &SegmentSummary) -> Result<(), Error> {
            let Some(RepackState::Encoding(e)) = self.state.take() else {
                unreachable!("segment started")
            };
            let w = e.finish_encoder().map_err(Error::write_output)?;
            self.state = Some(RepackState::Idle(w));
            Ok(())
        }
    }
    let mut r = Repacker {
        state: Some(RepackState::Idle(Counting {
            inner: BufWriter::with_capacity(1 << 20, out),
            count: 0,
        })),
        recompress: *recompress,
        last_lz4: false,
    };
    let summaries =
        read::read_image_streams(image, read_opts, progress, &mut Ignore, Some(&mut r))?;
    if let Some(RepackState::Idle(mut w)) = r.state.take() {
        w.flush().map_err(wr)?;
    }
    Ok(summaries)
}
