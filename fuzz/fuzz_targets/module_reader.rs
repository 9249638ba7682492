//! Any bytes, as a module file: detection, decompression (bounded at
//! 1 MiB), ELF parsing and every field the reader exposes must come back
//! as a value or an error, never a panic, a hang or a runaway allocation.
//! Seeds: `corpus/module_reader/`, written by the crate's synthetic tests.

#![no_main]

use std::hint::black_box;

use kmodkit_module::{signature::hex_colon, ModuleFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = match ModuleFile::from_bytes("fuzz", data.to_vec(), 1 << 20) {
        Ok(file) => file,
        Err(e) => {
            black_box(e.to_string());
            return;
        }
    };
    let module = match file.parse() {
        Ok(module) => module,
        Err(e) => {
            black_box(e.to_string());
            return;
        }
    };
    // Debug and the JSON form reach every field; the accessors below are
    // the ones the CLI calls on top.
    black_box(format!("{module:?}"));
    black_box(serde_json::to_string(&module).ok());
    black_box((
        module.class.to_string(),
        module.endian,
        module.machine,
        module.this_module_size,
    ));
    for entry in &module.modinfo {
        black_box((entry.key_str(), entry.value_str()));
        black_box(module.modinfo_first(&entry.key_str()));
    }
    black_box(module.modinfo_values("alias").count());
    for version in module
        .versions
        .iter()
        .chain(module.extended_versions.iter().flatten())
    {
        black_box((&version.name, version.crc));
    }
    for export in &module.exports {
        black_box((&export.name, export.crc, export.gpl_only, &export.namespace));
    }
    for symbol in &module.undefined {
        black_box((&symbol.name, symbol.weak));
    }
    if let Some(sig) = &module.signature {
        black_box((hex_colon(&sig.key_id), hex_colon(&sig.signature)));
        black_box((
            &sig.id_type,
            &sig.algorithm,
            &sig.hash_algorithm,
            sig.signed_size,
            sig.pkcs7_decoded,
        ));
        black_box(String::from_utf8_lossy(&sig.signer));
    }
});
