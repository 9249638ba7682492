//! Property (issue 13): real fixture modules and initramfs images,
//! corrupted at random (truncated, bits flipped, a range spliced over
//! another), go through every library entry point the commands use —
//! modinfo's readers (whole file and the sparse mapped read), depmod's
//! tree load, `abi check`, the module index lookups, add-drivers'
//! resolution, initrd ls and extract — and each returns a value or an
//! error, never panics. Module file names are fuzzed too (any bytes
//! before the suffix, as a user's directory may hold).
//!
//! Bounded: 40 module cases and 8 image cases (images are also capped at
//! 8 MiB of decompressed output), so the test runs in well under a
//! minute in a debug build. A failure prints the mutation to replay.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kmodkit_initramfs::extract::{self, ExtractOptions};
use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};
use proptest::prelude::*;
use proptest::test_runner::Config;

/// One corruption, positions as fractions of the file (so the same
/// strategy fits files of any size).
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(Vec<(f64, u8)>),
    Splice {
        from: f64,
        to: f64,
        len: usize,
    },
    /// One 8-byte field of one ELF section header set to an edge value:
    /// random flips rarely hit the offsets and sizes whose sums wrap
    /// (issue 13 failure 1).
    /// `section` `None`: the section-name table (e_shstrndx), which every
    /// reader needs first.
    SectionField {
        section: Option<f64>,
        field: usize,
        value: u64,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (0.0..1.0f64).prop_map(Mutation::Truncate),
        1 => prop::collection::vec((0.0..1.0f64, 1u8..=255), 1..16).prop_map(Mutation::Flip),
        1 => (0.0..1.0f64, 0.0..1.0f64, 1usize..4096).prop_map(|(from, to, len)| Mutation::Splice {
            from,
            to,
            len
        }),
        3 => (
            prop::option::of(0.0..1.0f64),
            prop_oneof![Just(3usize), Just(4usize), 0usize..8],
            prop_oneof![
                1 => Just(0u64),
                1 => Just(u64::MAX),
                3 => (1u64..4096).prop_map(|d| 0u64.wrapping_sub(d)),
                1 => any::<u64>(),
                1 => 0u64..1 << 20,
            ]
        )
            .prop_map(|(section, field, value)| Mutation::SectionField {
                section,
                field,
                value
            }),
    ]
}

fn at(f: f64, len: usize) -> usize {
    ((f * len as f64) as usize).min(len.saturating_sub(1))
}

fn corrupt(original: &[u8], m: &Mutation) -> Vec<u8> {
    let mut d = original.to_vec();
    match m {
        Mutation::Truncate(f) => d.truncate(at(*f, d.len())),
        Mutation::Flip(flips) => {
            for (f, mask) in flips {
                let i = at(*f, d.len());
                d[i] ^= mask;
            }
        }
        Mutation::Splice { from, to, len } => {
            let (a, b) = (at(*from, d.len()), at(*to, d.len()));
            let n = (*len).min(d.len() - a).min(d.len() - b);
            d.copy_within(a..a + n, b);
        }
        Mutation::SectionField {
            section,
            field,
            value,
        } => {
            // ELF64: e_shoff at 0x28, e_shnum at 0x3c, 64-byte headers of
            // eight 8-byte words (sh_offset is word 3, sh_size word 4).
            let word = |i: usize, n: usize| -> Option<u64> {
                let b = d.get(i..i + n)?;
                let mut le = [0u8; 8];
                le[..n].copy_from_slice(b);
                Some(u64::from_le_bytes(le))
            };
            if let (Some(shoff), Some(shnum), Some(shstrndx)) =
                (word(0x28, 8), word(0x3c, 2), word(0x3e, 2))
            {
                let index = match section {
                    Some(f) => at(*f, shnum as usize) as u64,
                    None => shstrndx,
                };
                let pos = shoff
                    .saturating_add(index * 64)
                    .saturating_add(*field as u64 * 8);
                if let Some(slot) = usize::try_from(pos).ok().and_then(|p| d.get_mut(p..p + 8)) {
                    slot.copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    d
}

struct Fixture {
    kver: String,
    modules: Vec<(String, Vec<u8>)>,
    target: kmodkit_abi::Target,
}

/// Real modules of the first 6.1 kernel: small, large, and with aliases
/// and dependencies (so depmod and lookups have work to do).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = kmodkit_fixtures::fixture_root();
        let (kver, _) = kmodkit_fixtures::kernels()
            .into_iter()
            .find(|(_, series)| series == "6.1")
            .expect("a 6.1 kernel in kernels.list");
        let dir = root.join("lib/modules").join(&kver);
        let mut modules = Vec::new();
        for rel in [
            "kernel/drivers/net/dummy.ko",
            "kernel/drivers/net/geneve.ko",
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko",
        ] {
            let path = dir.join(rel);
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            modules.push((rel.rsplit('/').next().unwrap().to_string(), data));
        }
        let target = kmodkit_abi::Target::load(&root, &kver, None)
            .unwrap_or_else(|e| panic!("abi target of {kver}: {e}"));
        Fixture {
            kver,
            modules,
            target,
        }
    })
}

fn images() -> &'static Vec<(String, Vec<u8>)> {
    static I: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    I.get_or_init(|| {
        let dir = kmodkit_fixtures::cache_dir().join("initrd");
        ["mkinitramfs-gzip.img", "dracut-zstd.img"]
            .iter()
            .map(|name| {
                let path = dir.join(name);
                let data = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e}; run scripts/initrd-fixtures", path.display())
                });
                (name.to_string(), data)
            })
            .collect()
    })
}

/// A module tree under `root` holding `bytes` as one module, beside a
/// real one, with its index built by kmodkit's depmod (if it can be).
fn module_entry_points(root: &Path, kver: &str, name: &std::ffi::OsStr, bytes: &[u8]) {
    let fx = fixture();
    let dir = root.join("lib/modules").join(kver).join("kernel");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::write(dir.join("dummy.ko"), &fx.modules[0].1).unwrap();

    // modinfo: the whole-file reader and the sparse mapped one.
    let whole = kmodkit_module::ModuleFile::from_bytes(&path, bytes.to_vec(), 64 << 20)
        .and_then(|f| f.parse());
    let mapped = kmodkit_module::read_module_mapped(&path, 64 << 20);
    let _ = (whole, mapped);

    // depmod: scan and graph, then the index files it would write.
    let opts = kmodkit_depmod::TreeOptions::new(Some(root.to_string_lossy().into_owned()), kver);
    if let Ok(tree) = kmodkit_depmod::ModuleTree::load(opts) {
        drop(tree);
    }

    // abi check against the real kernel's symbols.
    let _ = kmodkit_abi::check(&fx.target, std::slice::from_ref(&path), "extra");
}

struct Touch;
impl Visitor for Touch {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, kmodkit_initramfs::Error> {
        std::hint::black_box(e.name_lossy());
        Ok(true)
    }
}

fn image_entry_points(scratch: &Path, name: &str, bytes: &[u8]) {
    let opts = ReadOptions {
        max_output: 8 << 20,
        ..ReadOptions::default()
    };
    let image = Image::from_bytes(name, bytes);
    let _ = read::read_image(&image, &opts, &NoProgress, &mut Touch);
    let out = scratch.join("extract");
    let _ = extract::extract(
        &image,
        &opts,
        &NoProgress,
        &out,
        &ExtractOptions {
            preserve_owner: false,
            make_devices: false,
            umask: 0o022,
        },
        &|_, _| true,
    );
    let _ = std::fs::remove_dir_all(&out);
}

proptest! {
    #![proptest_config(Config { cases: 64, failure_persistence: None, ..Config::default() })]

    #[test]
    fn corrupted_modules_give_errors_not_panics(which in 0usize..3, m in mutation()) {
        let fx = fixture();
        let (name, original) = &fx.modules[which];
        let bytes = corrupt(original, &m);
        let root = tempfile::tempdir().unwrap();
        module_entry_points(root.path(), &fx.kver, name.as_ref(), &bytes);
    }

    /// A real module under a file name of arbitrary bytes (issue 13
    /// failure 2: `dum.日.ko` panicked depmod).
    #[test]
    fn any_file_name_gives_errors_not_panics(
        stem in prop::collection::vec(any::<u8>().prop_filter("a path component", |&b| b != b'/' && b != 0), 1..24),
        suffix in prop::sample::select(kmodkit_index::name::MODULE_SUFFIXES.to_vec()),
    ) {
        use std::os::unix::ffi::OsStrExt;
        let fx = fixture();
        // Half of the names share the module name of the real module
        // beside it (`dummy.…`), so depmod must choose between the two.
        let mut name = if stem[0] % 2 == 0 { b"dummy.".to_vec() } else { Vec::new() };
        name.extend_from_slice(&stem);
        name.extend_from_slice(suffix.as_bytes());
        let root = tempfile::tempdir().unwrap();
        // Not a real compressed file under .ko.xz: the reader says so.
        module_entry_points(root.path(), &fx.kver, std::ffi::OsStr::from_bytes(&name), &fx.modules[0].1);
    }
}

proptest! {
    #![proptest_config(Config { cases: 8, failure_persistence: None, ..Config::default() })]

    #[test]
    fn corrupted_images_give_errors_not_panics(which in 0usize..2, m in mutation()) {
        let (name, original) = &images()[which];
        let bytes = corrupt(original, &m);
        let scratch = tempfile::tempdir().unwrap();
        image_entry_points(scratch.path(), name, &bytes);
    }
}

/// The index files depmod wrote for the real tree, corrupted, behind every
/// lookup modinfo and add-drivers use.
fn index_entry_points(dir: &Path, kver_dir: &Path, m: &Mutation) {
    for name in [
        "modules.dep.bin",
        "modules.alias.bin",
        "modules.symbols.bin",
        "modules.builtin.bin",
        "modules.builtin.alias.bin",
    ] {
        let original = std::fs::read(kver_dir.join(name)).unwrap();
        std::fs::write(dir.join(name), corrupt(&original, m)).unwrap();
    }
    let lookups = kmodkit_index::lookup::ModuleDirectory::new(dir.to_string_lossy().into_owned());
    for key in [
        "dummy",
        "e1000e",
        "pci:v00008086d000010D3sv00008086sd0000A01Fbc02sc00i00",
        "symbol:udp_tunnel_sock_release",
        "fs-ext4",
        "ext4",
    ] {
        let _ = lookups.lookup(key);
        let _ = lookups.lookup_name(key);
    }
    // add-drivers' resolution (closure, companions, firmware) over the
    // damaged index, with the real module files beside it.
    let _ = std::os::unix::fs::symlink(kver_dir.join("kernel"), dir.join("kernel"));
    let opts = kmodkit_inject::resolve::ResolveOptions {
        companions: true,
        firmware: true,
        firmware_dir: dir.join("no-firmware"),
        modprobe_dirs: Vec::new(),
    };
    let requested: Vec<String> = ["e1000e", "geneve", "mlx5_ib", "ib_ipoib"]
        .map(String::from)
        .to_vec();
    let _ = kmodkit_inject::resolve::resolve(&lookups, "test", &requested, &opts);
}

proptest! {
    #![proptest_config(Config { cases: 24, failure_persistence: None, ..Config::default() })]

    #[test]
    fn corrupted_indexes_give_errors_not_panics(m in mutation()) {
        let fx = fixture();
        let kver_dir: PathBuf = kmodkit_fixtures::fixture_root().join("lib/modules").join(&fx.kver);
        let dir = tempfile::tempdir().unwrap();
        index_entry_points(dir.path(), &kver_dir, &m);
    }
}
