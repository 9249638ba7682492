//! The one error type of the crate: every variant names the image (or
//! file), the segment and the byte offset where that applies. An
//! underlying error is the variant's `source()`, not part of its message,
//! so a chain printer (anyhow's `{:#}`) says each thing once.

use std::io;
use std::path::PathBuf;

use crate::compression::Compression;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The image could not be read (I/O).
    #[error("{image}: cannot read")]
    Read {
        image: String,
        #[source]
        cause: io::Error,
    },
    /// Bytes that start neither a cpio archive, nor a known compressed
    /// stream, nor zero padding.
    #[error("{image}: byte {offset}: {problem}")]
    Junk {
        image: String,
        offset: u64,
        problem: String,
    },
    /// A compressed stream is corrupt or truncated.
    #[error("{image}: segment {segment} ({compression} stream at byte {segment_offset}): the compressed data is corrupt or truncated")]
    Decompress {
        image: String,
        segment: usize,
        segment_offset: u64,
        compression: Compression,
        #[source]
        cause: io::Error,
    },
    /// The cpio data of a segment is malformed or truncated.
    #[error("{image}: {location}: {problem}")]
    Cpio {
        image: String,
        segment: usize,
        /// Offset of the problem: in the image for an uncompressed segment,
        /// in the decompressed stream otherwise (`location` says which).
        offset: u64,
        location: String,
        problem: String,
    },
    /// More decompressed data than the configured limit.
    #[error("{image}: segment {segment}: decompressed data exceeds the limit of {limit} bytes (a decompression bomb?); raise the limit (--max-size) if the image is trusted")]
    TooLarge {
        image: String,
        segment: usize,
        limit: u64,
    },
    /// An entry that extraction refuses because it would reach outside the
    /// target directory.
    #[error("{image}: segment {segment}, entry '{name}' (byte {offset}): {problem}; extraction stopped, nothing was written outside the target directory")]
    Unsafe {
        image: String,
        segment: usize,
        offset: u64,
        name: String,
        problem: String,
    },
    /// Writing output failed (an empty path: the output stream, which
    /// the caller names with [`Error::naming_output`]).
    #[error("{}: cannot write", if path.as_os_str().is_empty() { "the output".into() } else { path.display().to_string() })]
    Write {
        path: PathBuf,
        #[source]
        cause: io::Error,
    },
    /// Reading an input file (create) failed.
    #[error("{}: cannot read", path.display())]
    Input {
        path: PathBuf,
        #[source]
        cause: io::Error,
    },
    /// Extraction stopped part way: what was written stays in `dir`.
    #[error("extraction stopped: {entries} entries ({bytes} bytes of file data) were written to {dir} before the error, so the tree there is incomplete", dir = .dir.display())]
    Incomplete {
        dir: PathBuf,
        entries: u64,
        bytes: u64,
        #[source]
        cause: Box<Error>,
    },
    /// Staging or committing the output file failed.
    #[error(transparent)]
    Commit(#[from] kmodkit_commit::CommitError),
    /// A manifest line or an option is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Internal: the consumer stopped the producer. Never returned.
    #[doc(hidden)]
    #[error("reading stopped")]
    Stopped,
}

impl Error {
    /// A write error on `path`.
    pub fn write(path: impl Into<PathBuf>, cause: io::Error) -> Error {
        Error::Write {
            path: path.into(),
            cause,
        }
    }

    /// A failed write to the output stream, whose file the writer does not
    /// know: [`crate::create::write_atomically`] names it.
    pub fn write_output(cause: io::Error) -> Error {
        Error::Write {
            path: PathBuf::new(),
            cause,
        }
    }

    /// This error with an unnamed output write named `path`.
    pub fn naming_output(self, path: &std::path::Path) -> Error {
        match self {
            Error::Write { path: p, cause } if p.as_os_str().is_empty() => Error::Write {
                path: path.to_path_buf(),
                cause,
            },
            e => e,
        }
    }
}
