//! Any bytes, as `Module.symvers` or a compressed `symvers.gz`, through
//! both readers of that format: abi check's `SymbolTable::load`
//! (kmodkit-abi) and depmod's `-E` (kernel symbols of a `ModuleTree`, on an
//! empty tree). Errors are fine; a panic, hang or runaway allocation is
//! not. Seeds: `corpus/symvers/`, heads of real Debian `Module.symvers`
//! files, plain and gzip-compressed.

#![no_main]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::OnceLock;

use kmodkit_depmod::{KernelSymbols, ModuleTree, TreeOptions};
use libfuzzer_sys::fuzz_target;

const RELEASE: &str = "0.0.0-fuzz";

struct Scratch {
    /// An image root holding an empty `lib/modules/RELEASE/`.
    root: PathBuf,
    /// An empty depmod.d, so the host's configuration is not read.
    config: PathBuf,
    symvers: PathBuf,
}

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        let base =
            std::env::temp_dir().join(format!("kmodkit-fuzz-symvers-{}", std::process::id()));
        let root = base.join("root");
        let config = base.join("depmod.d");
        std::fs::create_dir_all(root.join("lib/modules").join(RELEASE)).expect("scratch tree");
        std::fs::create_dir_all(&config).expect("scratch depmod.d");
        Scratch {
            root,
            config,
            symvers: base.join("Module.symvers"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.symvers, data).expect("write the scratch Module.symvers");

    match kmodkit_abi::SymbolTable::load(&s.symvers) {
        Ok(table) => {
            for (name, export) in &table.exports {
                black_box((
                    name,
                    export.crc,
                    export.gpl_only,
                    &export.namespace,
                    &export.module,
                ));
            }
        }
        Err(e) => {
            black_box(e.to_string());
        }
    }

    let mut options = TreeOptions::new(Some(s.root.display().to_string()), RELEASE);
    options.config_paths = vec![s.config.clone()];
    options.kernel_symbols = Some(KernelSymbols::Symvers(s.symvers.clone()));
    match ModuleTree::load(options) {
        Ok(tree) => {
            black_box(tree.find_symbol("__this_module").is_some());
            black_box(tree.modules.len());
        }
        Err(e) => {
            black_box(e.to_string());
        }
    }
});
