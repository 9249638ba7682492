//! Helpers for the `kmodkit initrd` tests: the real images made by
//! `scripts/initrd-fixtures`, scratch directories, and a comparable view
//! of an extracted tree.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// One image made by a real generator on this machine.
#[derive(Debug, Clone)]
pub struct RealImage {
    pub path: PathBuf,
    pub kver: String,
    /// Compression of the main segment (as the generator was asked).
    pub compression: String,
    pub generator: String,
}

fn cache_dir() -> PathBuf {
    kmodkit_fixtures::cache_dir()
}

/// The drivers issue 6 injects: ConnectX Ethernet and InfiniBand, the
/// RDMA upper layers, the VM's NIC, and soft-RoCE.
pub const ISSUE_DRIVERS: &[&str] = &[
    "mlx4_en",
    "mlx4_ib",
    "ib_ipoib",
    "rdma_ucm",
    "ib_umad",
    "virtio_net",
    "rdma_rxe",
];

/// The images of `scripts/initrd-fixtures`; panics with the command to run
/// when they are missing (a silently skipped test proves nothing).
pub fn real_images() -> Vec<RealImage> {
    let dir = cache_dir().join("initrd");
    let list = dir.join("images.list");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| {
        panic!(
            "real initramfs fixtures missing ({}: {e}); run scripts/initrd-fixtures (scripts/test does)",
            list.display()
        )
    });
    let images: Vec<RealImage> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| RealImage {
                path: dir.join(f[0]),
                kver: f[1].to_string(),
                compression: f[2].to_string(),
                generator: f[3].to_string(),
            })
        })
        .collect();
    for c in ["gzip", "xz", "zstd"] {
        assert!(
            images.iter().any(|i| i.compression == c),
            "{}: no image with a {c} main segment; rerun scripts/initrd-fixtures",
            list.display()
        );
    }
    for g in ["dracut", "initramfs-tools"] {
        assert!(
            images.iter().any(|i| i.generator == g),
            "no {g} image in {}",
            list.display()
        );
    }
    images
}

/// The first image of `generator` with a `compression` main segment.
pub fn image(generator: &str, compression: &str) -> RealImage {
    real_images()
        .into_iter()
        .find(|i| i.generator == generator && i.compression == compression)
        .unwrap_or_else(|| {
            panic!("no {generator} {compression} image; run scripts/initrd-fixtures")
        })
}

/// The image of `scripts/initrd-fixtures` named `file` (e.g. "dracut-nm.img").
pub fn find_image(file: &str) -> RealImage {
    real_images()
        .into_iter()
        .find(|i| i.path.file_name().is_some_and(|n| n == file))
        .unwrap_or_else(|| panic!("{file} missing; run scripts/initrd-fixtures"))
}

/// The fixture root of scripts/fixtures (kernels in boot/).
pub fn fixture_root() -> PathBuf {
    cache_dir().join("root")
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A scratch directory under cargo's per-target temporary directory,
/// removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "initrd-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn kmodkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kmodkit"))
}

/// Runs a command, asserts success, returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `sh -c SCRIPT` and returns stdout (asserting success).
pub fn sh(script: &str) -> Vec<u8> {
    run(Command::new("sh").arg("-c").arg(script))
}

/// The decompressor CLI (the oracle) for a compression name.
pub fn decompressor(compression: &str) -> &'static str {
    match compression {
        "none" => "cat",
        "gzip" => "gzip -dc",
        "bzip2" => "bzip2 -dc",
        "lzma" => "xz --format=lzma -dc",
        "xz" => "xz -dc",
        "lzo" => "lzop -dc",
        "lz4" => "lz4 -dc",
        "zstd" => "zstd -dc",
        other => panic!("no decompressor for {other}"),
    }
}

/// One segment as `kmodkit initrd examine --json` reports it.
#[derive(Debug, Clone)]
pub struct Segment {
    pub index: usize,
    pub offset: u64,
    pub size: u64,
    pub compression: String,
    pub entries: u64,
}

pub fn segments(image: &Path) -> Vec<Segment> {
    let out = run(kmodkit().args(["initrd", "examine", "--json"]).arg(image));
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| Segment {
            index: s["index"].as_u64().unwrap() as usize,
            offset: s["offset"].as_u64().unwrap(),
            size: s["size"].as_u64().unwrap(),
            compression: s["compression"].as_str().unwrap().to_string(),
            entries: s["entries"].as_u64().unwrap(),
        })
        .collect()
}

/// The decompressed cpio stream of one segment, cut out with `dd` and
/// decompressed by the compressor's own CLI, written to `out`.
pub fn segment_cpio(image: &Path, seg: &Segment, out: &Path) {
    sh(&format!(
        "dd if='{}' bs=64K iflag=skip_bytes,count_bytes skip={} count={} status=none | {} > '{}'",
        image.display(),
        seg.offset,
        seg.size,
        decompressor(&seg.compression),
        out.display()
    ));
}

/// What a path in an extracted tree looks like, for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: char,
    pub mode: u32,
    pub size: u64,
    pub link: Option<String>,
    pub content: Option<u64>,
    /// Regular files only (directory and symlink times are not kept by
    /// every extractor).
    pub mtime: Option<i64>,
    pub rdev: Option<u64>,
    /// Names sharing this inode (hard links), sorted.
    pub links: Vec<String>,
}

fn fnv(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Every path below `root` (not `root` itself).
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk(root, root, &mut out, &mut inodes);
    for names in inodes.values() {
        if names.len() > 1 {
            for n in names {
                out.get_mut(n).unwrap().links = names.clone();
            }
        }
    }
    out
}

fn walk(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, Node>,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let m = std::fs::symlink_metadata(&p).unwrap();
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            'f'
        } else {
            'o'
        };
        let node = Node {
            kind,
            mode: m.mode() & 0o7777,
            size: if ft.is_file() || ft.is_symlink() {
                m.len()
            } else {
                0
            },
            link: ft.is_symlink().then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            }),
            content: ft.is_file().then(|| fnv(&std::fs::read(&p).unwrap())),
            mtime: ft.is_file().then(|| m.mtime()),
            rdev: (kind == 'o').then(|| m.rdev()),
            links: Vec::new(),
        };
        if ft.is_file() && m.nlink() > 1 {
            inodes
                .entry((m.dev(), m.ino()))
                .or_default()
                .push(rel.clone());
        }
        out.insert(rel, node);
        if ft.is_dir() {
            walk(root, &p, out, inodes);
        }
    }
}

/// Asserts two trees are equal, printing the first differences.
pub fn assert_same_tree(
    what: &str,
    expected: &BTreeMap<String, Node>,
    actual: &BTreeMap<String, Node>,
) {
    let mut diffs = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => diffs.push(format!("missing {k}")),
            Some(a) if a != v => diffs.push(format!("{k}: expected {v:?}, got {a:?}")),
            _ => {}
        }
    }
    for k in actual.keys() {
        if !expected.contains_key(k) {
            diffs.push(format!("extra {k}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences, first: {:#?}",
        diffs.len(),
        &diffs[..diffs.len().min(10)]
    );
}

/// Asserts that an oracle tool exists, naming the package to install.
pub fn require(tool: &str, package: &str) {
    kmodkit_fixtures::require_tool(tool, package)
}

/// A plain initramfs (no generator): busybox with `applets` linked to it,
/// an empty module directory of `kver`, and `init` as /init; made with
/// `kmodkit initrd create` (gzip) at `scratch/NAME`.
pub fn busybox_image(
    scratch: &Scratch,
    name: &str,
    kver: &str,
    applets: &[&str],
    init: &str,
) -> PathBuf {
    require("busybox", "busybox-static");
    let tree = scratch.join(&format!("{name}.tree"));
    for d in ["bin", "proc", "sys", "dev", "run"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let busybox = String::from_utf8_lossy(&sh("command -v busybox"))
        .trim()
        .to_string();
    std::fs::copy(busybox, tree.join("bin/busybox")).unwrap();
    for app in applets {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(app)).unwrap();
    }
    std::fs::create_dir_all(tree.join(format!("lib/modules/{kver}"))).unwrap();
    std::fs::write(tree.join("init"), init).unwrap();
    std::fs::set_permissions(
        tree.join("init"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = scratch.join(name);
    run(kmodkit()
        .args(["initrd", "create", "--compress", "gzip", "-o"])
        .arg(&path)
        .arg(&tree));
    path
}
