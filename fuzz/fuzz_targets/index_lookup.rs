//! Any bytes, as a kmod index (`modules.*.bin`): the reader and every
//! lookup over it (exact name, alias with `fnmatch` wildcards, the full
//! dump) and `ModuleDirectory`'s lookups over a directory that holds the
//! bytes as each index file must return results or an error, never a
//! panic, a stack overflow or a hang.
//!
//! Input: a key (up to the first `\n`, at most 256 bytes), then the index
//! bytes. Seeds: `corpus/index_lookup/`, kmod 30 depmod's indexes of a
//! five-module tree, each behind a key that hits it.

#![no_main]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kmodkit_index::lookup::ModuleDirectory;
use kmodkit_index::Index;
use libfuzzer_sys::fuzz_target;

const INDEXES: [&str; 5] = [
    "modules.dep.bin",
    "modules.alias.bin",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
];

/// One scratch module directory per fuzzing process, rewritten each run.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kmodkit-fuzz-index.{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().take(257).position(|&b| b == b'\n');
    let (key, bytes) = match split {
        Some(n) => (&data[..n], &data[n + 1..]),
        None => (&b"pci:v00008086d0000100Esv0sd0bc02sc00i00"[..], data),
    };

    if let Ok(index) = Index::from_bytes(Path::new("fuzz.bin"), bytes.to_vec()) {
        let _ = black_box(index.search(key));
        let _ = black_box(index.search_wild(key));
        let _ = black_box(index.entries());
    }

    let dir = scratch();
    for name in INDEXES {
        std::fs::write(dir.join(name), bytes).expect("scratch index");
    }
    let modules = ModuleDirectory::new(dir.to_string_lossy().into_owned());
    let key = String::from_utf8_lossy(key);
    let _ = black_box(modules.lookup(&key));
    let _ = black_box(modules.lookup(&format!("symbol:{key}")));
    let _ = black_box(modules.lookup_name(&key));
    let _ = black_box(modules.path_of(&key));
});
