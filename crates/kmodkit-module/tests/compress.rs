//! `compress_module` against the CLIs `make modules_install` runs
//! (`scripts/Makefile.modinst`) and against kmod, on real modules.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{modinfo_field, real_modules, run};
use kmodkit_module::{compress_module, Compression, ModuleFile};

/// The CLI's output for `input` on stdin.
fn cli(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", args[0]));
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{args:?} failed");
    out.stdout
}

/// xz: byte for byte what `xz --check=crc32 --lzma2=dict=1MiB` makes
/// (xz 5.4 is single-threaded by default, one block, like our encoder).
#[test]
fn xz_is_the_kernels_xz() {
    kmodkit_fixtures::require_tool("xz", "xz-utils");
    for m in real_modules() {
        let ours = compress_module(&m.elf, Compression::Xz).unwrap();
        let theirs = cli(&["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"], &m.elf);
        assert!(
            ours == theirs,
            "{}: xz output differs from the xz CLI",
            m.label
        );
        // Stream flags (xz format 1.2 §2.1.1.2): check type 1 = CRC32,
        // what the in-kernel decoder accepts.
        assert_eq!(ours[7], 0x01, "{}: not CRC32", m.label);
    }
}

/// The strongest oracle: the distribution kernel's own compressed modules
/// (Debian's 6.12 ships `.ko.xz`, made by `make modules_install`).
/// Decompressed and compressed again, each must come back byte for byte.
#[test]
fn xz_reproduces_the_kernels_own_modules() {
    let mut checked = 0;
    for (kernel, _series) in kmodkit_fixtures::kernels() {
        let dir = kmodkit_fixtures::fixture_root()
            .join("lib/modules")
            .join(&kernel);
        for m in common::IN_TREE {
            let path = dir.join(format!("{m}.ko.xz"));
            let Ok(shipped) = std::fs::read(&path) else {
                continue; // this kernel's modules are not xz-compressed
            };
            let elf = ModuleFile::open(&path).unwrap().data;
            let ours = compress_module(&elf, Compression::Xz).unwrap();
            assert!(
                ours == shipped,
                "{}: not the kernel's own bytes",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked > 0,
        "no .ko.xz kernel among the fixtures (6.12 expected)"
    );
}

/// The zstd CLI's version, e.g. 10504 for v1.5.4 (`ZSTD_versionNumber`).
fn zstd_cli_version() -> u32 {
    let out = String::from_utf8_lossy(&run(Command::new("zstd").arg("--version"))).into_owned();
    let v = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .unwrap_or_else(|| panic!("no version in {out:?}"));
    let n: Vec<u32> = v
        .trim_end_matches(',')
        .split('.')
        .map(|x| x.parse().unwrap())
        .collect();
    n[0] * 10000 + n[1] * 100 + n[2]
}

/// A zstd frame header (RFC 8878 §3.1.1.1): magic, descriptor, window
/// descriptor, dictionary id, content size.
fn zstd_frame_header(frame: &[u8]) -> &[u8] {
    let fhd = frame[4];
    let single_segment = (fhd >> 5) & 1 == 1;
    let fcs = match fhd >> 6 {
        0 if single_segment => 1,
        0 => 0,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let dict_id = [0, 1, 2, 4][usize::from(fhd & 3)];
    &frame[..5 + usize::from(!single_segment) + dict_id + fcs]
}

/// zstd: what `zstd -T0` makes (level 3, checksum, content size). Byte for
/// byte when the CLI's libzstd is the one we link; across versions the
/// encoder's choices differ (1.5.5 changed level 3's block splitting), so
/// then the frame header (window, size, checksum flag) must be the CLI's
/// and `zstd -d` must give the input back.
#[test]
fn zstd_is_the_kernels_zstd() {
    kmodkit_fixtures::require_tool("zstd", "zstd");
    let same_library = zstd_cli_version() == zstd::zstd_safe::version_number();
    let tmp = tempfile::tempdir().unwrap();
    for m in real_modules() {
        let ours = compress_module(&m.elf, Compression::Zstd).unwrap();
        // From a file, as modules_install does: the CLI knows the size.
        let src = tmp.path().join("m.ko");
        std::fs::write(&src, &m.elf).unwrap();
        let theirs = run(Command::new("zstd").args(["-T0", "-q", "-c"]).arg(&src));
        if same_library {
            assert!(
                ours == theirs,
                "{}: zstd output differs from the zstd CLI",
                m.label
            );
        } else {
            assert_eq!(
                zstd_frame_header(&ours),
                zstd_frame_header(&theirs),
                "{}: zstd frame header differs from the CLI's",
                m.label
            );
            // Content checksum flag (bit 2 of the descriptor).
            assert_ne!(ours[4] & 0x04, 0, "{}: no checksum", m.label);
            assert!(cli(&["zstd", "-d", "-c"], &ours) == m.elf, "{}", m.label);
        }
    }
}

/// Whether this kmod was built with zlib (`kmod --version`: `+ZLIB`).
/// Debian's kmod 30 is not (`-ZLIB`): it cannot read a `.ko.gz` at all.
fn kmod_has_zlib() -> bool {
    String::from_utf8_lossy(&run(Command::new("kmod").arg("--version"))).contains("+ZLIB")
}

/// Every format: kmod's modinfo reads the compressed file, our reader
/// gets the input back; gzip carries no name and no mtime (`gzip -n`) and
/// `gzip -d` expands it (and kmod reads it, when built with zlib).
#[test]
fn compressed_modules_read_back() {
    kmodkit_fixtures::require_tool("modinfo", "kmod");
    kmodkit_fixtures::require_tool("gzip", "gzip");
    let zlib = kmod_has_zlib();
    let tmp = tempfile::tempdir().unwrap();
    for m in real_modules().into_iter().step_by(3) {
        let plain = tmp.path().join("plain.ko");
        std::fs::write(&plain, &m.elf).unwrap();
        let name = modinfo_field(&plain, "name");
        let vermagic = modinfo_field(&plain, "vermagic");
        for (how, suffix) in [
            (Compression::Xz, "xz"),
            (Compression::Zstd, "zst"),
            (Compression::Gzip, "gz"),
        ] {
            let packed = compress_module(&m.elf, how).unwrap();
            assert_ne!(packed, m.elf);
            let path = tmp.path().join(format!("m.ko.{suffix}"));
            std::fs::write(&path, &packed).unwrap();
            if how != Compression::Gzip || zlib {
                assert_eq!(modinfo_field(&path, "name"), name, "{} {how}", m.label);
                assert_eq!(modinfo_field(&path, "vermagic"), vermagic);
            }
            let back = ModuleFile::open(&path).unwrap();
            assert_eq!(back.compression, how);
            assert!(back.data == m.elf, "{} {how}: read back differs", m.label);
            if how == Compression::Gzip {
                // RFC 1952: FLG (no FNAME), MTIME 0.
                assert_eq!(packed[3] & 0x08, 0, "gzip header names a file");
                assert_eq!(&packed[4..8], &[0, 0, 0, 0], "gzip header has an mtime");
                assert!(cli(&["gzip", "-d", "-c"], &packed) == m.elf);
            }
        }
    }
}

#[test]
fn none_is_identity() {
    let m = &real_modules()[0];
    assert!(compress_module(&m.elf, Compression::None).unwrap() == m.elf);
}
