//! Property: whatever tree goes into `create`, reading the image back
//! yields the same entries (names, types, modes, owners, times, data,
//! link targets, hard links), for every compression and both formats,
//! and creating twice gives the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kmodkit_initramfs::compression::{Compression, EncodeOptions};
use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::create::{self, CreateOptions, SegmentSpec, SourceEntry};
use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};
use kmodkit_initramfs::Error;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Link(String),
    Dir,
    Fifo,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..3000).prop_map(Kind::File),
        1 => "[a-z./]{1,20}".prop_map(Kind::Link),
        1 => Just(Kind::Dir),
        1 => Just(Kind::Fifo),
    ]
}

fn tree() -> impl Strategy<Value = BTreeMap<String, (Kind, u32, u32, u64)>> {
    prop::collection::btree_map(
        "[a-c]{1,3}(/[a-c]{1,3}){0,2}",
        (kind(), 0u32..0o7777, 0u32..70000, 0u64..2_000_000_000),
        1..25,
    )
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct Seen {
    ft: FileType,
    mode: u32,
    uid: u32,
    mtime: u32,
    data: Vec<u8>,
    link: Option<Vec<u8>>,
    ino: u32,
}

struct Collect(BTreeMap<String, Seen>, Option<String>);
impl Visitor for Collect {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        let name = e.name_lossy();
        self.0.insert(
            name.clone(),
            Seen {
                ft: e.file_type(),
                mode: e.header.mode & 0o7777,
                uid: e.header.uid,
                mtime: e.header.mtime,
                data: Vec::new(),
                link: e.link_target.map(<[u8]>::to_vec),
                ino: e.header.ino,
            },
        );
        self.1 = Some(name);
        Ok(true)
    }
    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let n = self.1.as_ref().unwrap();
        self.0.get_mut(n).unwrap().data.extend_from_slice(chunk);
        Ok(())
    }
}

fn scratch() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "prop-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&p).unwrap();
    p
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn create_then_read_gives_the_tree_back(
        t in tree(),
        ci in 0usize..7,
        crc in any::<bool>(),
        link_pair in any::<bool>(),
    ) {
        let c = [Compression::None, Compression::Gzip, Compression::Bzip2, Compression::Lzma,
                 Compression::Xz, Compression::Lz4, Compression::Zstd][ci];
        let dir = scratch();
        // Names that are also a prefix directory of another name become
        // directories (a file cannot have children).
        let names: Vec<String> = t.keys().cloned().collect();
        let mut entries = Vec::new();
        for (i, (name, (k, perm, uid, mtime))) in t.iter().enumerate() {
            let is_parent = names.iter().any(|n| n.starts_with(&format!("{name}/")));
            let k = if is_parent { Kind::Dir } else { k.clone() };
            let mut e = SourceEntry {
                uid: *uid,
                mtime: *mtime,
                ..SourceEntry::new(name.as_bytes().to_vec(), FileType::Regular, *perm)
            };
            match k {
                Kind::File(data) => {
                    let p = dir.join(format!("f{i}"));
                    std::fs::write(&p, &data).unwrap();
                    e.size = data.len() as u64;
                    e.source = Some(p);
                }
                Kind::Link(target) => {
                    e.file_type = FileType::Symlink;
                    e.link_target = target.into_bytes();
                }
                Kind::Dir => e.file_type = FileType::Directory,
                Kind::Fifo => e.file_type = FileType::Fifo,
            }
            entries.push(e);
        }
        // Optionally a hard-link pair of the first regular file.
        if link_pair {
            if let Some(first) = entries.iter().position(|e| e.file_type == FileType::Regular) {
                entries[first].inode_key = Some((1, 1));
                let mut twin = entries[first].clone();
                twin.name = b"zz-twin".to_vec();
                entries.push(twin);
            }
        }
        let opts = CreateOptions {
            format: if crc { Format::Crc } else { Format::Newc },
            keep_owners: true,
            clamp_mtime: Some(1_500_000_000),
        };
        let planned = create::plan(entries.clone(), &opts).unwrap();
        let spec = [SegmentSpec { entries: &planned, format: opts.format,
            encode: EncodeOptions { compression: c, level: None, threads: 2 } }];
        let mut image = Vec::new();
        create::write_segments(&spec, &mut image, &NoProgress).unwrap();
        let mut again = Vec::new();
        create::write_segments(&spec, &mut again, &NoProgress).unwrap();
        prop_assert!(image == again, "not reproducible");

        let mut seen = Collect(BTreeMap::new(), None);
        let segs = read::read_image(&Image::from_bytes("prop", &image), &ReadOptions::default(),
            &NoProgress, &mut seen).unwrap();
        prop_assert_eq!(segs.len(), 1);
        prop_assert_eq!(segs[0].compression, c);
        let got = seen.0;
        // Plus the parent directories create adds (0755, root).
        for (name, s) in &got {
            if !entries.iter().any(|e| e.name == name.as_bytes()) {
                prop_assert_eq!(s.ft, FileType::Directory);
                prop_assert_eq!(s.mode, 0o755);
                let prefix = format!("{name}/");
                let has_child = got.keys().any(|n| n.starts_with(&prefix));
                prop_assert!(has_child);
            }
        }
        for e in &entries {
            let name = String::from_utf8(e.name.clone()).unwrap();
            let s = &got[&name];
            prop_assert_eq!(s.ft, e.file_type);
            prop_assert_eq!(s.mode, e.perm);
            prop_assert_eq!(s.uid, e.uid);
            prop_assert_eq!(u64::from(s.mtime), e.mtime.min(1_500_000_000));
            match e.file_type {
                FileType::Regular => {
                    let want = std::fs::read(e.source.as_ref().unwrap()).unwrap();
                    if e.inode_key.is_some() {
                        // The data rides on the last name of the inode.
                        let twin = &got["zz-twin"];
                        prop_assert_eq!(&twin.data, &want);
                        prop_assert_eq!(s.ino, twin.ino);
                    } else {
                        prop_assert_eq!(&s.data, &want);
                    }
                }
                FileType::Symlink => prop_assert_eq!(s.link.as_deref(), Some(e.link_target.as_slice())),
                _ => {}
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
