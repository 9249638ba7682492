//! Any bytes, as a module file on disk, through every file reader:
//! `read_module_mapped` (depmod's scan, abi check, add-drivers: the sparse
//! `pread` path for a plain ELF file, a mapping for a compressed one) and
//! `ModuleFile::open` + `parse` (modinfo), beside the in-memory
//! `ModuleFile::from_bytes`. None may panic, and all must give the same
//! module or the same error: the sparse path reads only the ranges the
//! parser asks for, so any difference is a range it failed to fetch.
//! Seeds: `corpus/module_file/`, real Debian modules and synthetic ones.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use kmodkit_module::{read_module_mapped, ModuleFile};
use libfuzzer_sys::fuzz_target;

/// Decompressed size ceiling: large enough for the seeds, small enough
/// that a bomb stops at once.
const LIMIT: u64 = 4 << 20;

/// One scratch file per fuzzing process, rewritten for every input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "kmodkit-fuzz-module-file-{}.ko",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    std::fs::write(path, data).expect("write the scratch module file");

    let outcome = |r: Result<kmodkit_module::Module, kmodkit_module::Error>| match r {
        Ok(m) => Ok(format!("{m:?}")),
        Err(e) => {
            assert_eq!(&e.path, path, "error names another file: {e}");
            Err(e.kind.to_string())
        }
    };
    let mapped = outcome(read_module_mapped(path, LIMIT));
    let opened = outcome(ModuleFile::open_with_limit(path, LIMIT).and_then(|f| f.parse()));
    let in_memory = ModuleFile::from_bytes(path, data.to_vec(), LIMIT).and_then(|f| f.parse());
    let in_memory = outcome(in_memory);

    assert_eq!(
        mapped, in_memory,
        "read_module_mapped and the in-memory read differ"
    );
    assert_eq!(
        opened, in_memory,
        "ModuleFile::open and the in-memory read differ"
    );
});
