//! Any bytes, as an initramfs image: segment splitting, every decoder
//! (bounded at 16 MiB of output), the cpio state machine, checksums and
//! the diff collector must return entries or an error, never a panic, a
//! hang or a runaway allocation. Seeds: `corpus/initramfs_reader/`, small
//! images of every compression made by `kmodkit initrd create`.

#![no_main]

use std::hint::black_box;

use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};
use kmodkit_initramfs::{diff, Error};
use libfuzzer_sys::fuzz_target;

struct Touch(u64);

impl Visitor for Touch {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        black_box((e.name_lossy(), e.file_type(), e.link_target));
        Ok(true)
    }
    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        self.0 = self.0.wrapping_add(chunk.len() as u64);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let image = Image::from_bytes("fuzz", data);
    let opts = ReadOptions {
        max_output: 16 << 20,
        threaded: false,
    };
    match read::read_image(&image, &opts, &NoProgress, &mut Touch(0)) {
        Ok(segments) => {
            black_box(format!("{segments:?}"));
        }
        Err(e) => {
            black_box(e.to_string());
        }
    }
    let threaded = ReadOptions {
        max_output: 16 << 20,
        threaded: true,
    };
    black_box(
        diff::tree(&image, &threaded, &NoProgress)
            .map(|t| t.len())
            .ok(),
    );
});
