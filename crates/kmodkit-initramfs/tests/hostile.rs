//! Hostile and broken archives: path traversal, writing through a
//! symlink the archive made, hard links aimed outside, huge sizes,
//! decompression bombs, truncation, bad checksums, junk. Each must stop
//! with a clear error (naming the place) or be contained, and nothing may
//! appear outside the target directory. Synthetic: real images cannot
//! show these cases.

use std::io::Write;
use std::path::{Path, PathBuf};

use kmodkit_initramfs::compression::{self, Compression, EncodeOptions};
mod common;

use common::put;
use kmodkit_initramfs::cpio::{self, Format};
use kmodkit_initramfs::extract::{self, ExtractOptions};
use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};
use kmodkit_initramfs::Error;

const REG: u32 = 0o100644;
const DIR: u32 = 0o040755;
const LNK: u32 = 0o120777;

fn entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    put(out, Format::Newc, name, mode, data, 1, 1);
}

fn trailer(out: &mut Vec<u8>) {
    put(out, Format::Newc, "TRAILER!!!", 0, b"", 0, 1);
}

fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = compression::encoder(
        &EncodeOptions {
            compression: c,
            level: None,
            threads: 1,
        },
        &mut out,
    )
    .unwrap();
    e.write_all(data).unwrap();
    e.finish_encoder().unwrap();
    out
}

struct Scratch(PathBuf);
impl Scratch {
    fn new(tag: &str) -> Scratch {
        let p = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}
impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn extract_bytes(
    bytes: &[u8],
    dir: &Path,
    opts: &ExtractOptions,
) -> Result<extract::ExtractReport, Error> {
    let image = Image::from_bytes("hostile.img", bytes);
    extract::extract(
        &image,
        &ReadOptions::default(),
        &NoProgress,
        dir,
        opts,
        &|_, _| true,
    )
}

fn list(bytes: &[u8], opts: &ReadOptions) -> Result<Vec<String>, Error> {
    struct Names(Vec<String>);
    impl Visitor for Names {
        fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
            self.0.push(e.name_lossy());
            Ok(true)
        }
    }
    let mut n = Names(Vec::new());
    read::read_image(
        &Image::from_bytes("hostile.img", bytes),
        opts,
        &NoProgress,
        &mut n,
    )?;
    Ok(n.0)
}

/// Every path below `dir`, sorted.
fn contents(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(root, &p, out);
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A sandbox: `outside` next to `target`, both under one scratch dir.
fn sandbox(tag: &str) -> (Scratch, PathBuf, PathBuf) {
    let s = Scratch::new(tag);
    let target = s.0.join("target");
    let outside = s.0.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"original").unwrap();
    (s, target, outside)
}

fn assert_outside_untouched(outside: &Path) {
    assert_eq!(contents(outside), vec!["victim".to_string()]);
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"original");
    assert!(!outside.parent().unwrap().join("evil").exists());
}

#[test]
fn dotdot_names_are_refused() {
    for name in ["../evil", "a/../../evil", "./../evil", "/../evil"] {
        let (_s, target, outside) = sandbox("dotdot");
        let mut a = Vec::new();
        entry(&mut a, "a", DIR, b"");
        entry(&mut a, name, REG, b"PWNED");
        trailer(&mut a);
        let err = extract_bytes(&a, &target, &ExtractOptions::default()).unwrap_err();
        let msg = err.to_string();
        // Entry "a" was written before the refusal: the error says so.
        let Error::Incomplete { cause, entries, .. } = &err else {
            panic!("{name}: {msg}")
        };
        assert_eq!(*entries, 1, "{msg}");
        assert!(matches!(**cause, Error::Unsafe { .. }), "{name}: {cause}");
        let msg = cause.to_string();
        assert!(
            msg.contains("'..'") && msg.contains(name) && msg.contains("byte"),
            "{msg}"
        );
        assert_outside_untouched(&outside);
    }
}

#[test]
fn absolute_names_land_inside() {
    let (_s, target, outside) = sandbox("abs");
    let mut a = Vec::new();
    let abs = format!("{}/victim", outside.display());
    entry(&mut a, &abs, REG, b"PWNED");
    trailer(&mut a);
    extract_bytes(&a, &target, &ExtractOptions::default()).unwrap();
    assert_outside_untouched(&outside);
    let inside = target.join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"PWNED");
}

#[test]
fn no_write_through_an_archive_symlink() {
    let (_s, target, outside) = sandbox("symlink-dir");
    let mut a = Vec::new();
    entry(&mut a, "link", LNK, outside.to_str().unwrap().as_bytes());
    entry(&mut a, "link/victim", REG, b"PWNED");
    trailer(&mut a);
    let err = extract_bytes(&a, &target, &ExtractOptions::default()).unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
    assert_outside_untouched(&outside);

    // A relative symlink climbing out, then a file through it.
    let (_s2, target, outside) = sandbox("symlink-rel");
    let mut a = Vec::new();
    entry(&mut a, "up", LNK, b"../outside");
    entry(&mut a, "up/victim", REG, b"PWNED");
    trailer(&mut a);
    assert!(extract_bytes(&a, &target, &ExtractOptions::default()).is_err());
    assert_outside_untouched(&outside);
}

#[test]
fn a_symlink_at_a_file_name_is_replaced_not_followed() {
    let (_s, target, outside) = sandbox("symlink-file");
    let mut a = Vec::new();
    entry(
        &mut a,
        "f",
        LNK,
        format!("{}/victim", outside.display()).as_bytes(),
    );
    entry(&mut a, "f", REG, b"PWNED");
    trailer(&mut a);
    extract_bytes(&a, &target, &ExtractOptions::default()).unwrap();
    assert_outside_untouched(&outside);
    let m = std::fs::symlink_metadata(target.join("f")).unwrap();
    assert!(m.is_file());
    assert_eq!(std::fs::read(target.join("f")).unwrap(), b"PWNED");
}

#[test]
fn hard_links_cannot_reach_outside() {
    let (_s, target, outside) = sandbox("hardlink");
    let mut a = Vec::new();
    // Name 1 of inode 7, then replaced by a symlink to the victim, then
    // name 2 of inode 7 carrying the data (GNU cpio's layout).
    put(&mut a, Format::Newc, "a", REG, b"", 7, 2);
    entry(
        &mut a,
        "a",
        LNK,
        format!("{}/victim", outside.display()).as_bytes(),
    );
    put(&mut a, Format::Newc, "b", REG, b"PWNED", 7, 2);
    trailer(&mut a);
    let _ = extract_bytes(&a, &target, &ExtractOptions::default());
    assert_outside_untouched(&outside);
}

#[test]
fn hard_links_are_made_like_the_kernel() {
    let s = Scratch::new("links");
    let target = s.0.join("t");
    let mut a = Vec::new();
    put(&mut a, Format::Newc, "x", REG, b"", 9, 3);
    put(&mut a, Format::Newc, "y", REG, b"", 9, 3);
    put(&mut a, Format::Newc, "z", REG, b"shared", 9, 3);
    trailer(&mut a);
    extract_bytes(&a, &target, &ExtractOptions::default()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let ino = |n: &str| std::fs::metadata(target.join(n)).unwrap().ino();
    assert_eq!(ino("x"), ino("z"));
    assert_eq!(ino("y"), ino("z"));
    assert_eq!(std::fs::read(target.join("x")).unwrap(), b"shared");
}

#[test]
fn devices_are_skipped_with_a_report_when_not_allowed() {
    let s = Scratch::new("dev");
    let target = s.0.join("t");
    let mut a = Vec::new();
    entry(&mut a, "console", 0o020600, b"");
    entry(&mut a, "ok", REG, b"ok");
    trailer(&mut a);
    let opts = ExtractOptions {
        preserve_owner: false,
        make_devices: false,
        umask: 0o022,
    };
    let r = extract_bytes(&a, &target, &opts).unwrap();
    assert_eq!(r.skipped.len(), 1);
    assert!(r.skipped[0].reason.contains("root"));
    assert!(!target.join("console").exists());
    assert!(target.join("ok").exists());
}

#[test]
fn huge_claimed_sizes_fail_without_allocating() {
    // A 4 GiB file claimed by an archive of a few bytes.
    let mut a = Vec::new();
    entry(&mut a, "big", REG, b"");
    let h = cpio::parse_header(a[..110].try_into().unwrap()).unwrap();
    let mut h2 = h;
    h2.filesize = u32::MAX;
    a[..110].copy_from_slice(&cpio::format_header(&h2));
    trailer(&mut a);
    let err = list(&a, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("byte"), "{err}");
    // Compressed: the stream just ends inside the data.
    let z = compress(Compression::Zstd, &a);
    let err = list(&z, &ReadOptions::default()).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("'big'"), "{err}");
    // Names and symlink targets past PATH_MAX.
    let mut a = Vec::new();
    entry(&mut a, "n", REG, b"");
    let mut h3 = cpio::parse_header(a[..110].try_into().unwrap()).unwrap();
    h3.namesize = 0xffff_ffff;
    a[..110].copy_from_slice(&cpio::format_header(&h3));
    let err = list(&compress(Compression::Gzip, &a), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("name size"), "{err}");
    let mut a = Vec::new();
    entry(&mut a, "l", LNK, &vec![b'x'; 5000]);
    trailer(&mut a);
    let err = list(&compress(Compression::Gzip, &a), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("PATH_MAX"), "{err}");
}

#[test]
fn decompression_bombs_stop_at_the_limit() {
    let s = Scratch::new("bomb");
    let target = s.0.join("t");
    let mut a = Vec::new();
    let zeros = vec![0u8; 64 << 20];
    entry(&mut a, "bomb", REG, &zeros);
    trailer(&mut a);
    for c in [Compression::Zstd, Compression::Xz, Compression::Gzip] {
        let z = compress(c, &a);
        assert!(z.len() < 1 << 20);
        let opts = ReadOptions {
            max_output: 8 << 20,
            ..ReadOptions::default()
        };
        let err = list(&z, &opts).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{c}: {err}");
        let image = Image::from_bytes("bomb.img", &z);
        let err = extract::extract(
            &image,
            &opts,
            &NoProgress,
            &target,
            &ExtractOptions::default(),
            &|_, _| true,
        )
        .unwrap_err();
        // The limit stopped an extraction part way: it is the cause.
        let Error::Incomplete { cause, .. } = &err else {
            panic!("{err}")
        };
        assert!(cause.to_string().contains("--max-size"), "{cause}");
        let written = std::fs::metadata(target.join("bomb"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(
            written <= 8 << 20,
            "{c}: {written} bytes written past the limit"
        );
    }
}

fn sample_archive(format: Format) -> Vec<u8> {
    let mut a = Vec::new();
    put(&mut a, format, "dir", DIR, b"", 1, 2);
    put(
        &mut a,
        format,
        "dir/file",
        REG,
        &(0..3000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
        2,
        1,
    );
    put(&mut a, format, "dir/link", LNK, b"file", 3, 1);
    put(&mut a, format, "empty", REG, b"", 4, 1);
    put(&mut a, format, "TRAILER!!!", 0, b"", 0, 1);
    a
}

#[test]
fn every_truncation_is_an_error_with_a_place() {
    let plain = sample_archive(Format::Newc);
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Lzma,
        Compression::Xz,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let full = compress(c, &plain);
        assert_eq!(
            list(&full, &ReadOptions::default()).unwrap().len(),
            4,
            "{c}"
        );
        // Uncompressed: the trailer's own padding may go missing.
        let end = if c == Compression::None {
            full.len() - 3
        } else {
            full.len()
        };
        let step = (end / 97).max(1);
        for cut in (1..end).step_by(step).chain([end - 1]) {
            let opts = ReadOptions {
                threaded: cut % 2 == 0,
                ..ReadOptions::default()
            };
            let err = match list(&full[..cut], &opts) {
                Ok(names) => panic!(
                    "{c}: truncated at {cut} of {} read fine: {names:?}",
                    full.len()
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                err.contains("hostile.img") && err.contains("byte"),
                "{c} cut {cut}: {err}"
            );
        }
    }
}

#[test]
fn bad_checksums_are_caught() {
    let good = sample_archive(Format::Crc);
    assert_eq!(list(&good, &ReadOptions::default()).unwrap().len(), 4);
    // Flip one data byte of dir/file.
    let mut bad = good.clone();
    let at = bad.windows(8).position(|w| w == b"dir/file").unwrap() + 12;
    bad[at] ^= 0x55;
    let err = list(&bad, &ReadOptions::default()).unwrap_err().to_string();
    assert!(
        err.contains("bad data checksum") && err.contains("dir/file"),
        "{err}"
    );
    // Inside a compressed segment too.
    let err = list(&compress(Compression::Xz, &bad), &ReadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad data checksum") && err.contains("decompressed"),
        "{err}"
    );
    // A corrupt compressed stream (xz's own CRC32).
    let mut z = compress(Compression::Xz, &good);
    let mid = z.len() / 2;
    z[mid] ^= 0xff;
    assert!(list(&z, &ReadOptions::default()).is_err());
}

#[test]
fn junk_and_old_formats_are_refused_with_offsets() {
    let mut img = sample_archive(Format::Newc);
    let len = img.len();
    img.extend_from_slice(b"JUNKJUNK");
    let err = list(&img, &ReadOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::Junk { offset, .. } if offset == len as u64),
        "{err}"
    );
    // An uncompressed archive at an unaligned offset.
    let mut img = compress(Compression::Gzip, &sample_archive(Format::Newc));
    while img.len() % 4 != 1 {
        img.push(0);
    }
    img.extend_from_slice(&sample_archive(Format::Newc));
    assert!(list(&img, &ReadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("multiple of 4"));
    // The odc format.
    let mut odc = sample_archive(Format::Newc);
    odc[..6].copy_from_slice(b"070707");
    assert!(list(&odc, &ReadOptions::default())
        .unwrap_err()
        .to_string()
        .contains("newc"));
}

#[test]
fn segments_padding_and_lz4_ends() {
    // early (none) + zero padding + lz4 + zeros + zstd + zeros: all read.
    let a = sample_archive(Format::Newc);
    let mut img = a.clone();
    img.extend_from_slice(&[0; 512]);
    img.extend_from_slice(&compress(Compression::Lz4, &a));
    img.extend_from_slice(&[0; 4]);
    img.extend_from_slice(&compress(Compression::Zstd, &a));
    img.extend_from_slice(&[0; 7]);
    let names = list(&img, &ReadOptions::default()).unwrap();
    assert_eq!(names.len(), 12);
    let image = Image::from_bytes("x", &img);
    struct Nothing;
    impl Visitor for Nothing {
        fn entry(&mut self, _: &Entry<'_>) -> Result<bool, Error> {
            Ok(false)
        }
    }
    let segs =
        read::read_image(&image, &ReadOptions::default(), &NoProgress, &mut Nothing).unwrap();
    let kinds: Vec<_> = segs.iter().map(|s| s.compression).collect();
    assert_eq!(
        kinds,
        [Compression::None, Compression::Lz4, Compression::Zstd]
    );
    assert_eq!(segs[1].offset, a.len() as u64 + 512);
    assert!(segs
        .iter()
        .all(|s| s.entries == 4 && s.uncompressed_size == a.len() as u64));
}

/// The underlying error is the variant's `source()`, not pasted into its
/// message: a chain printer (the CLI's `{:#}`) says each thing once.
#[test]
fn causes_are_sources_said_once() {
    use std::error::Error as _;
    let said_once = |err: &Error| {
        let cause = err
            .source()
            .unwrap_or_else(|| panic!("no source: {err}"))
            .to_string();
        assert!(!err.to_string().contains(&cause), "{err} repeats {cause}");
    };
    // A compressed stream cut short: the decoder's error.
    let z = compress(Compression::Xz, &sample_archive(Format::Newc));
    let err = list(&z[..z.len() - 20], &ReadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Decompress { .. }), "{err}");
    said_once(&err);
    // An image that cannot be opened: the OS error.
    let missing = std::env::temp_dir().join("kmodkit-no-such-image.img");
    let err = Image::open(&missing).err().expect("a missing image");
    assert!(matches!(err, Error::Read { .. }), "{err}");
    said_once(&err);
    // Extraction stopped part way: the refusal that stopped it.
    let (_s, target, _outside) = sandbox("chain");
    let mut a = Vec::new();
    entry(&mut a, "a", DIR, b"");
    entry(&mut a, "../evil", REG, b"PWNED");
    trailer(&mut a);
    let err = extract_bytes(&a, &target, &ExtractOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Incomplete { .. }), "{err}");
    said_once(&err);
}
