//! Round trips: archives made by `kmodkit initrd create` (every
//! compression, newc and crc, with an early segment) are read back by GNU
//! cpio and by 3cpio exactly as the source tree was; creation is
//! reproducible; repack and diff agree with the oracles.

mod initrd_common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use initrd_common::*;

const COMPRESSIONS: [&str; 7] = ["none", "gzip", "bzip2", "lzma", "xz", "lz4", "zstd"];

/// A tree with every kind of entry an initramfs holds.
fn make_tree(root: &Path) {
    let w = |p: &str, data: &[u8], mode: u32| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let noise: Vec<u8> = (0..3_000_000)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Half noise, half text-like: compressible but not trivially.
            if (i / 4096) % 2 == 0 {
                x as u8
            } else {
                b"abcdefgh"[(x % 8) as usize]
            }
        })
        .collect();
    w("usr/lib/modules/6.1.0/kernel/big.ko", &noise, 0o644);
    w("usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755);
    w("usr/bin/suid", b"suid\n", 0o4755);
    w("etc/secret", b"secret\n", 0o600);
    w("etc/empty", b"", 0o644);
    w("etc/odd name with spaces", b"spaces\n", 0o644);
    w("etc/ünïcödé", b"utf-8\n", 0o644);
    w("var/a/b/c/d/e/deep", b"deep\n", 0o640);
    w("etc/three", b"three bytes? no, more\n", 0o644);
    std::fs::hard_link(
        root.join("etc/three"),
        root.join("usr/bin/hardlink-of-three"),
    )
    .unwrap();
    std::fs::hard_link(root.join("etc/three"), root.join("var/third-link")).unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/usr/lib", root.join("lib")).unwrap();
    symlink("does/not/exist", root.join("dangling")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::set_permissions(
        root.join("empty-dir"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    sh(&format!(
        "mkfifo -m 600 '{}'",
        root.join("run-fifo").display()
    ));
    if rustix_root() {
        sh(&format!(
            "mknod -m 600 '{}' c 5 1",
            root.join("console").display()
        ));
    }
}

fn rustix_root() -> bool {
    String::from_utf8(sh("id -u")).unwrap().trim() == "0"
}

fn create(src: &Path, out: &Path, extra: &[&str]) {
    run(kmodkit()
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["initrd", "create"])
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra));
}

/// What GNU cpio extracts from segment `seg` of `image`.
fn cpio_extract(image: &Path, seg: &Segment, dir: &Path, scratch: &Scratch) {
    let cpio = scratch.join(&format!("seg{}.cpio", seg.index));
    segment_cpio(image, seg, &cpio);
    std::fs::create_dir_all(dir).unwrap();
    sh(&format!(
        "cd '{}' && cpio -idm --quiet --no-absolute-filenames < '{}'",
        dir.display(),
        cpio.display()
    ));
}

/// Source tree without what cpio cannot be asked to compare equally.
fn expected(src: &Path) -> std::collections::BTreeMap<String, Node> {
    tree(src)
}

#[test]
fn gnu_cpio_reads_back_every_compression() {
    let scratch = Scratch::new("rt-cpio");
    let src = scratch.join("src");
    make_tree(&src);
    let want = expected(&src);
    for c in COMPRESSIONS {
        let img = scratch.join(&format!("img.{c}"));
        create(&src, &img, &["--compress", c]);
        let segs = segments(&img);
        assert_eq!(segs.len(), 1);
        assert_eq!(segs[0].compression, c, "magic detected back");
        // The oracle decompressor must read the whole file as one stream.
        let out = scratch.join(&format!("cpio.{c}"));
        cpio_extract(&img, &segs[0], &out, &scratch);
        assert_same_tree(&format!("cpio -i of a {c} image"), &want, &tree(&out));
        // And cpio's listing is kmodkit's listing.
        let cpio = scratch.join(&format!("seg{}.cpio", segs[0].index));
        let theirs = sh(&format!("TZ=UTC cpio -tv --quiet < '{}'", cpio.display()));
        let ours = run(kmodkit().args(["initrd", "ls", "-l"]).arg(&img));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{c}: ls -l"
        );
    }
}

#[test]
fn threecpio_reads_back_every_compression() {
    initrd_common::require("3cpio", "cargo install threecpio (scripts/fixtures does)");
    let scratch = Scratch::new("rt-3cpio");
    let src = scratch.join("src");
    make_tree(&src);
    let want = expected(&src);
    for c in COMPRESSIONS {
        let img = scratch.join(&format!("img.{c}"));
        create(&src, &img, &["--compress", c]);
        let out = scratch.join(&format!("3cpio.{c}"));
        run(Command::new("3cpio")
            .arg("-x")
            .arg("-C")
            .arg(&out)
            .arg(&img));
        assert_same_tree(&format!("3cpio -x of a {c} image"), &want, &tree(&out));
        let theirs = run(Command::new("3cpio").arg("-t").arg(&img));
        let ours = run(kmodkit().args(["initrd", "ls"]).arg(&img));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{c}: 3cpio -t"
        );
    }
}

#[test]
fn crc_format_is_verified_by_cpio_and_kmodkit() {
    let scratch = Scratch::new("rt-crc");
    let src = scratch.join("src");
    make_tree(&src);
    let img = scratch.join("img.crc");
    create(&src, &img, &["--compress", "gzip", "--format", "crc"]);
    let segs = segments(&img);
    let cpio = scratch.join("seg.cpio");
    segment_cpio(&img, &segs[0], &cpio);
    assert_eq!(&std::fs::read(&cpio).unwrap()[..6], b"070702");
    // GNU cpio checks every crc on extraction and says so on mismatch.
    let out = scratch.join("x");
    std::fs::create_dir_all(&out).unwrap();
    let res = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && cpio -idm --quiet < '{}'",
            out.display(),
            cpio.display()
        ))
        .output()
        .unwrap();
    assert!(
        res.status.success() && res.stderr.is_empty(),
        "cpio: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_same_tree("cpio -i of a crc image", &expected(&src), &tree(&out));
    let ours = scratch.join("k");
    run(kmodkit().args(["initrd", "extract"]).arg(&img).arg(&ours));
    assert_same_tree(
        "kmodkit extract of a crc image",
        &expected(&src),
        &tree(&ours),
    );
}

#[test]
fn create_is_reproducible() {
    let scratch = Scratch::new("repro");
    let src = scratch.join("src");
    make_tree(&src);
    // The same tree copied elsewhere (other inode numbers, other
    // directory order on disk) must give the same bytes.
    let copy = scratch.join("copy");
    sh(&format!("cp -a '{}' '{}'", src.display(), copy.display()));
    for c in ["zstd", "xz", "gzip"] {
        let a = scratch.join(&format!("a.{c}"));
        let b = scratch.join(&format!("b.{c}"));
        let t1 = scratch.join(&format!("t1.{c}"));
        create(&src, &a, &["--compress", c]);
        create(&copy, &b, &["--compress", c]);
        create(&src, &t1, &["--compress", c, "--threads", "1"]);
        let (ba, bb, bt) = (
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            std::fs::read(&t1).unwrap(),
        );
        assert!(ba == bb, "{c}: same tree, different bytes");
        assert!(ba == bt, "{c}: output depends on the thread count");
    }
    // SOURCE_DATE_EPOCH clamps every mtime; owners are 0.
    let img = scratch.join("sde");
    run(kmodkit()
        .env("SOURCE_DATE_EPOCH", "1000000")
        .args(["initrd", "create"])
        .arg(&src)
        .arg("-o")
        .arg(&img));
    let list: serde_json::Value =
        serde_json::from_slice(&run(kmodkit().args(["initrd", "ls", "--json"]).arg(&img))).unwrap();
    let entries = list.as_array().unwrap();
    assert!(entries.len() > 10);
    let mut names = Vec::new();
    for e in entries {
        assert!(e["mtime"].as_u64().unwrap() <= 1_000_000);
        assert_eq!(e["uid"], 0);
        assert_eq!(e["gid"], 0);
        names.push(e["name"].as_str().unwrap().to_string());
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "entries are sorted");
    // Inodes are renumbered; the three hard links share one.
    let ino = |n: &str| {
        entries.iter().find(|e| e["name"] == n).unwrap()["ino"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(ino("etc/three"), ino("var/third-link"));
    assert_eq!(ino("etc/three"), ino("usr/bin/hardlink-of-three"));
    assert!(
        entries
            .iter()
            .map(|e| e["ino"].as_u64().unwrap())
            .max()
            .unwrap()
            <= entries.len() as u64
    );
}

#[test]
fn early_segment_and_manifest() {
    let scratch = Scratch::new("early");
    let src = scratch.join("src");
    make_tree(&src);
    let ucode = scratch.join("ucode");
    std::fs::create_dir_all(ucode.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        ucode.join("kernel/x86/microcode/AuthenticAMD.bin"),
        vec![0x55u8; 12345],
    )
    .unwrap();
    let img = scratch.join("two.img");
    run(kmodkit()
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["initrd", "create"])
        .arg(&src)
        .arg("--early")
        .arg(&ucode)
        .args(["-o"])
        .arg(&img)
        .args(["--compress", "xz"]));
    let segs = segments(&img);
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[0].compression, "none");
    assert_eq!(segs[0].offset, 0);
    assert_eq!(segs[1].offset % 4, 0);
    let early_list = sh(&format!(
        "head -c {} '{}' | cpio -t --quiet",
        segs[0].size,
        img.display()
    ));
    // As dracut makes its early cpio: `find . | sort | cpio -o`, "." first.
    let want = sh(&format!(
        "cd '{}' && find . | LC_ALL=C sort | sed 's|^\\./||'",
        ucode.display()
    ));
    assert_eq!(
        String::from_utf8(early_list).unwrap(),
        String::from_utf8(want).unwrap()
    );
    // unmkinitramfs splits it the same way.
    let u = scratch.join("u");
    run(Command::new("unmkinitramfs").arg(&img).arg(&u));
    assert_same_tree("early", &tree(&ucode), &tree(&u.join("early")));
    assert_same_tree("main", &expected(&src), &tree(&u.join("main")));

    // A gen_init_cpio manifest.
    let m = scratch.join("list.txt");
    std::fs::write(
        &m,
        "# comment\ndir /dev 0755 0 0\nnod /dev/console 0600 0 0 c 5 1\nfile /init src/usr/bin/tool 0755 0 0\n\
         slink /bin/sh busybox 0777 0 0\nfile /etc/x src/etc/three 0644 1 2 /etc/y\npipe /run/p 0600 0 0\n",
    )
    .unwrap();
    let mi = scratch.join("manifest.img");
    create(&m, &mi, &["--compress", "gzip"]);
    let cpio = scratch.join("m.cpio");
    segment_cpio(&mi, &segments(&mi)[0], &cpio);
    let listing = String::from_utf8(sh(&format!(
        "TZ=UTC cpio -tvn --quiet < '{}'",
        cpio.display()
    )))
    .unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 10, "{listing}");
    assert!(
        lines.iter().any(|l| l.starts_with("crw-------")
            && l.contains("5,   1")
            && l.ends_with("dev/console")),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh -> busybox")),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("-rw-r--r--   2 1        2 ") && l.ends_with("etc/y")),
        "{listing}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("prw-------") && l.ends_with("run/p")),
        "{listing}"
    );
}

#[test]
fn repack_keeps_the_cpio_streams_and_diff_agrees() {
    let scratch = Scratch::new("repack");
    let src = scratch.join("src");
    make_tree(&src);
    let ucode = scratch.join("ucode");
    std::fs::create_dir_all(ucode.join("kernel/x86/microcode")).unwrap();
    std::fs::write(
        ucode.join("kernel/x86/microcode/GenuineIntel.bin"),
        b"intel",
    )
    .unwrap();
    let img = scratch.join("a.img");
    run(kmodkit()
        .env_remove("SOURCE_DATE_EPOCH")
        .args(["initrd", "create"])
        .arg(&src)
        .arg("--early")
        .arg(&ucode)
        .arg("-o")
        .arg(&img)
        .args(["--compress", "gzip"]));
    let before = segments(&img);
    for c in ["zstd", "xz", "lz4", "bzip2", "lzma"] {
        let out = scratch.join(&format!("b.{c}"));
        run(kmodkit()
            .args(["initrd", "repack"])
            .arg(&img)
            .arg("-o")
            .arg(&out)
            .args(["--compress", c]));
        let after = segments(&out);
        assert_eq!(after.len(), 2);
        assert_eq!(after[0].compression, "none");
        assert_eq!(after[1].compression, c);
        // The decompressed cpio bytes are the same, per the oracles.
        let (x, y) = (scratch.join("x.cpio"), scratch.join("y.cpio"));
        segment_cpio(&img, &before[1], &x);
        segment_cpio(&out, &after[1], &y);
        assert!(
            std::fs::read(&x).unwrap() == std::fs::read(&y).unwrap(),
            "{c}: cpio stream changed"
        );
        let d = kmodkit()
            .args(["initrd", "diff"])
            .arg(&img)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            d.status.success() && d.stdout.is_empty(),
            "diff after repack: {}",
            String::from_utf8_lossy(&d.stdout)
        );
    }
    // A real change shows up.
    std::fs::write(src.join("etc/secret"), b"changed\n").unwrap();
    std::fs::remove_file(src.join("etc/empty")).unwrap();
    std::fs::write(src.join("etc/new"), b"new\n").unwrap();
    let changed = scratch.join("changed.img");
    create(&src, &changed, &["--compress", "zstd"]);
    let d = kmodkit()
        .args(["initrd", "diff"])
        .arg(&img)
        .arg(&changed)
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(1));
    let text = String::from_utf8(d.stdout).unwrap();
    assert!(
        text.contains("M etc/secret (size 7 -> 8, content)"),
        "{text}"
    );
    assert!(text.contains("- etc/empty"), "{text}");
    assert!(text.contains("+ etc/new"), "{text}");
    assert!(
        text.contains("- kernel/x86/microcode/GenuineIntel.bin"),
        "{text}"
    );
}

#[test]
fn lzo_images_made_by_lzop_are_read() {
    // kmodkit does not write lzo; the kernel reads it, so kmodkit must too.
    require("lzop", "lzop");
    let scratch = Scratch::new("lzo");
    let src = scratch.join("src");
    make_tree(&src);
    let img = scratch.join("img.lzo");
    sh(&format!(
        "cd '{}' && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc | lzop -c > '{}'",
        src.display(),
        img.display()
    ));
    assert_eq!(segments(&img)[0].compression, "lzo");
    let theirs = sh(&format!(
        "lzop -dc '{}' | TZ=UTC cpio -tv --quiet",
        img.display()
    ));
    let ours = run(kmodkit().args(["initrd", "ls", "-l"]).arg(&img));
    assert_eq!(
        String::from_utf8_lossy(&ours),
        String::from_utf8_lossy(&theirs)
    );
    let out = scratch.join("x");
    run(kmodkit().args(["initrd", "extract"]).arg(&img).arg(&out));
    assert_same_tree("extract of an lzop image", &expected(&src), &tree(&out));
}
