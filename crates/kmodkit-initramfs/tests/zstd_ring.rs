//! zstd frames are decoded in place into a ring (src/zstd_ring.rs) that
//! is much smaller than the frame: the decoder goes round it many times,
//! matches reach back across the wrap, and in threaded mode the decoder
//! must wait for the parser before it overwrites bytes the parser has not
//! read. Every byte must come out as written, in both modes, with a parser
//! that is slow on purpose, across two frames in a row, and a corrupted
//! frame must fail its checksum.

use std::time::Duration;

mod common;

use kmodkit_initramfs::cpio::Format;
use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};
use kmodkit_initramfs::Error;

/// A small xorshift generator: the data is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// `len` bytes that exercise every block type: random stretches (raw
/// blocks), runs of one byte (RLE blocks), and copies of earlier bytes
/// from just inside a window of `window` bytes (matches that reach back
/// across the ring's wrap).
fn data(len: usize, window: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (rng.next() % 40_000) as usize + 1;
        match rng.next() % 4 {
            0 => out.extend((0..n).map(|_| rng.next() as u8)),
            1 => out.extend(std::iter::repeat_n(rng.next() as u8, n)),
            _ if out.len() > window => {
                let back = window - 64 - (rng.next() % 4096) as usize;
                let from = out.len() - back;
                for i in 0..n.min(back) {
                    out.push(out[from + i]);
                }
            }
            _ => out.extend((0..n).map(|i| (i % 251) as u8)),
        }
    }
    out.truncate(len);
    out
}

fn put(out: &mut Vec<u8>, name: &str, mode: u32, body: &[u8]) {
    common::put(out, Format::Newc, name, mode, body, 1, 1);
}

/// A zstd frame with a window of 2^`window_log` bytes and a checksum.
fn zstd_frame(cpio: &[u8], window_log: u32) -> Vec<u8> {
    let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    e.window_log(window_log).unwrap();
    e.include_checksum(true).unwrap();
    std::io::copy(&mut &cpio[..], &mut e).unwrap();
    e.finish().unwrap()
}

/// Collects every regular file's bytes; optionally slow.
struct Collect {
    files: Vec<(String, Vec<u8>)>,
    chunks: u64,
    slow: bool,
}
impl Visitor for Collect {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        self.files.push((e.name_lossy(), Vec::new()));
        Ok(true)
    }
    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.chunks += 1;
        if self.slow && self.chunks.is_multiple_of(8) {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.files.last_mut().unwrap().1.extend_from_slice(chunk);
        Ok(())
    }
}

fn read_all(image: &[u8], threaded: bool, slow: bool) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let img = Image::from_bytes("ring.img", image);
    let mut c = Collect {
        files: Vec::new(),
        chunks: 0,
        slow,
    };
    let opts = ReadOptions {
        threaded,
        ..ReadOptions::default()
    };
    read::read_image(&img, &opts, &NoProgress, &mut c)?;
    Ok(c.files)
}

#[test]
fn frames_many_times_the_ring_decode_exactly() {
    // Window 1 MiB: the one-thread ring is ~1.3 MiB, the threaded one
    // ~17 MiB; 48 MiB of data goes round them 35 and 3 times.
    let window_log = 20;
    let a = data(40 << 20, 1 << window_log, 1);
    let b = data(8 << 20, 1 << window_log, 2);
    let small = data(3000, 1 << window_log, 3);
    let mut cpio1 = Vec::new();
    put(&mut cpio1, "a", 0o100644, &a);
    put(&mut cpio1, "small", 0o100644, &small);
    put(&mut cpio1, "TRAILER!!!", 0, b"");
    let mut cpio2 = Vec::new();
    put(&mut cpio2, "b", 0o100644, &b);
    put(&mut cpio2, "TRAILER!!!", 0, b"");
    // Two frames in a row, the second with a smaller window: the ring is
    // reused from its start while the parser may still hold the first's
    // last bytes.
    let mut image = zstd_frame(&cpio1, window_log);
    image.extend_from_slice(&zstd_frame(&cpio2, 17));
    let want = vec![
        ("a".to_string(), a),
        ("small".to_string(), small),
        ("b".to_string(), b),
    ];
    for (threaded, slow) in [(false, false), (true, false), (true, true)] {
        let got = read_all(&image, threaded, slow).unwrap();
        assert_eq!(got.len(), want.len(), "threaded {threaded}, slow {slow}");
        for ((gn, gd), (wn, wd)) in got.iter().zip(&want) {
            assert_eq!(gn, wn);
            assert!(
                gd == wd,
                "{gn}: decoded bytes differ (threaded {threaded}, slow {slow}): {} vs {} bytes, first difference at {:?}",
                gd.len(),
                wd.len(),
                gd.iter().zip(wd).position(|(x, y)| x != y)
            );
        }
    }
}

#[test]
fn a_corrupted_frame_fails_in_the_ring_too() {
    let payload = data(6 << 20, 1 << 20, 4);
    let mut cpio = Vec::new();
    put(&mut cpio, "a", 0o100644, &payload);
    put(&mut cpio, "TRAILER!!!", 0, b"");
    let good = zstd_frame(&cpio, 20);
    // The checksum (last four bytes), then a byte inside a block.
    for at in [good.len() - 2, good.len() / 2] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        for threaded in [false, true] {
            let Err(err) = read_all(&bad, threaded, false) else {
                panic!("byte {at} flipped, threaded {threaded}: the corrupt frame was read without an error");
            };
            let msg = err.to_string();
            assert!(
                msg.contains("zstd") && msg.contains("ring.img"),
                "byte {at}, threaded {threaded}: {msg}"
            );
        }
    }
    // Cut short: the frame ends early.
    let cut = &good[..good.len() - 1000];
    for threaded in [false, true] {
        let Err(err) = read_all(cut, threaded, false) else {
            panic!("threaded {threaded}: the cut frame was read without an error");
        };
        let msg = err.to_string();
        assert!(msg.contains("zstd"), "{msg}");
    }
}
