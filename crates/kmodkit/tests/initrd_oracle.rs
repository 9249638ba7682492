//! `kmodkit initrd` against real images made on this machine by dracut and
//! initramfs-tools (scripts/initrd-fixtures), with the generators' own
//! tools and GNU cpio as oracles: `lsinitramfs` (the set of names),
//! `cpio -t` / `cpio -tv` on each segment (exact order and long format),
//! and `unmkinitramfs` (the extracted trees: content, modes, links).

mod initrd_common;

use initrd_common::*;

#[test]
fn images_cover_gzip_xz_zstd_and_an_early_segment() {
    let images = real_images();
    let early = images
        .iter()
        .filter(|i| {
            let segs = segments(&i.path);
            segs.len() >= 2 && segs[0].compression == "none"
        })
        .count();
    assert!(
        early >= 1,
        "no real image with an uncompressed early segment"
    );
    for i in &images {
        let segs = segments(&i.path);
        assert_eq!(
            segs.last().unwrap().compression,
            i.compression,
            "{}: main segment compression",
            i.path.display()
        );
    }
}

#[test]
fn ls_lists_what_lsinitramfs_lists() {
    initrd_common::require("lsinitramfs", "initramfs-tools-core");
    for img in real_images() {
        let mut ours: Vec<String> =
            String::from_utf8(run(kmodkit().args(["initrd", "ls"]).arg(&img.path)))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
        let mut theirs: Vec<String> =
            String::from_utf8(run(std::process::Command::new("lsinitramfs").arg(&img.path)))
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
        ours.sort();
        theirs.sort();
        assert!(!ours.is_empty());
        assert_eq!(
            ours,
            theirs,
            "{}: kmodkit initrd ls vs lsinitramfs",
            img.path.display()
        );
    }
}

#[test]
fn ls_per_segment_matches_cpio_t_and_cpio_tv() {
    for img in real_images() {
        let scratch = Scratch::new("cpio-t");
        for seg in segments(&img.path) {
            let cpio = scratch.join(&format!("seg{}.cpio", seg.index));
            segment_cpio(&img.path, &seg, &cpio);
            let n = seg.index.to_string();
            for (ours_args, cpio_flags) in [(vec!["ls"], "-t"), (vec!["ls", "-l"], "-tv")] {
                let mut cmd = kmodkit();
                cmd.arg("initrd")
                    .args(&ours_args)
                    .args(["--segment", &n])
                    .arg(&img.path);
                let ours = run(&mut cmd);
                let theirs = sh(&format!(
                    "TZ=UTC cpio {cpio_flags} --quiet < '{}'",
                    cpio.display()
                ));
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs),
                    "{} segment {}: kmodkit initrd {ours_args:?} vs cpio {cpio_flags}",
                    img.path.display(),
                    seg.index
                );
            }
            let count = String::from_utf8(run(kmodkit()
                .args(["initrd", "ls", "--segment", &n])
                .arg(&img.path)))
            .unwrap()
            .lines()
            .count() as u64;
            assert_eq!(count, seg.entries, "examine's entry count");
        }
    }
}

#[test]
fn extract_matches_unmkinitramfs() {
    initrd_common::require("unmkinitramfs", "initramfs-tools-core");
    for img in real_images() {
        let scratch = Scratch::new("unmk");
        let theirs = scratch.join("unmkinitramfs");
        run(std::process::Command::new("unmkinitramfs")
            .arg(&img.path)
            .arg(&theirs));
        let segs = segments(&img.path);
        // unmkinitramfs puts early segments into early, early2, ... and
        // the rest into main, or everything into DIR when there is no
        // early segment.
        let early: Vec<_> = segs
            .iter()
            .take_while(|s| s.compression == "none")
            .collect();
        let mut pairs = Vec::new();
        if early.is_empty() || early.len() == segs.len() {
            pairs.push((
                theirs.clone(),
                segs.iter().map(|s| s.index).collect::<Vec<_>>(),
            ));
        } else {
            for (i, s) in early.iter().enumerate() {
                let sub = if i == 0 {
                    "early".to_string()
                } else {
                    format!("early{}", i + 1)
                };
                pairs.push((theirs.join(sub), vec![s.index]));
            }
            pairs.push((
                theirs.join("main"),
                segs[early.len()..].iter().map(|s| s.index).collect(),
            ));
        }
        for (k, (their_dir, seg_indexes)) in pairs.iter().enumerate() {
            let ours = scratch.join(&format!("kmodkit{k}"));
            let mut cmd = kmodkit();
            cmd.args(["initrd", "extract"]).arg(&img.path).arg(&ours);
            for s in seg_indexes {
                cmd.args(["--segment", &s.to_string()]);
            }
            run(&mut cmd);
            let expected = tree(their_dir);
            assert!(
                expected.len() > 3,
                "{}: unmkinitramfs extracted almost nothing",
                their_dir.display()
            );
            assert_same_tree(
                &format!("{} segments {seg_indexes:?}", img.path.display()),
                &expected,
                &tree(&ours),
            );
        }
    }
}

#[test]
fn cat_prints_the_file_cpio_extracts() {
    for img in real_images() {
        let segs = segments(&img.path);
        let main = segs.last().unwrap();
        let scratch = Scratch::new("cat");
        let cpio = scratch.join("main.cpio");
        segment_cpio(&img.path, main, &cpio);
        // Regular files per cpio -tv: the first, one in the middle, the last.
        let listing = sh(&format!(
            "TZ=UTC cpio -tv --quiet < '{}' | awk '$1 ~ /^-/ && $5 > 0 {{ print $9 }}'",
            cpio.display()
        ));
        let files: Vec<String> = String::from_utf8(listing)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert!(
            files.len() > 10,
            "{}: too few regular files",
            img.path.display()
        );
        for name in [&files[0], &files[files.len() / 2], &files[files.len() - 1]] {
            let theirs = sh(&format!(
                "cpio -i --quiet --to-stdout '{name}' < '{}'",
                cpio.display()
            ));
            let ours = run(kmodkit().args(["initrd", "cat"]).arg(&img.path).arg(name));
            assert_eq!(ours, theirs, "{}: cat {name}", img.path.display());
        }
    }
}
