//! What differs between two images, as the kernel would unpack them: the
//! last entry of a name wins (init/initramfs.c opens with O_TRUNC and
//! replaces other types), hard-linked names share their inode's data.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::cpio::FileType;
use crate::error::Error;
use crate::read::{self, Entry, Image, Progress, ReadOptions, Visitor};

/// What an image holds at one path once unpacked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathState {
    pub file_type: FileType,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// xxh3-128 of the data (regular files), hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// Paths of an image and their states, keyed by normalised name.
pub type Tree = BTreeMap<String, PathState>;

/// Normalised name: no leading `/` or `./`, no empty components.
pub fn normal_name(name: &[u8]) -> String {
    let parts: Vec<&[u8]> = name
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let joined = parts.join(&b'/');
    if joined.is_empty() {
        ".".into()
    } else {
        String::from_utf8_lossy(&joined).into_owned()
    }
}

struct Collector {
    tree: Tree,
    current: Option<(String, xxhash_rust::xxh3::Xxh3)>,
    /// Names of each inode in this archive (hard links).
    links: HashMap<(u32, u32, u32), Vec<String>>,
    current_key: Option<(u32, u32, u32)>,
}

impl Visitor for Collector {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        let h = e.header;
        let name = normal_name(e.name);
        let ft = e.file_type();
        let state = PathState {
            file_type: ft,
            mode: h.mode & 0o7777,
            uid: h.uid,
            gid: h.gid,
            size: u64::from(h.filesize),
            mtime: h.mtime,
            link_target: e
                .link_target
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            rdev: matches!(ft, FileType::CharDevice | FileType::BlockDevice)
                .then_some((h.rdev_major, h.rdev_minor)),
            content: None,
        };
        self.tree.insert(name.clone(), state);
        if ft == FileType::Regular {
            self.current_key = None;
            if h.nlink >= 2 {
                let key = (h.ino, h.dev_major, h.dev_minor);
                self.links.entry(key).or_default().push(name.clone());
                self.current_key = Some(key);
            }
            self.current = Some((name, xxhash_rust::xxh3::Xxh3::new()));
            return Ok(true);
        }
        Ok(false)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
        if let Some((_, h)) = self.current.as_mut() {
            h.update(chunk);
        }
        Ok(())
    }

    fn entry_end(&mut self) -> Result<(), Error> {
        if let Some((name, h)) = self.current.take() {
            let digest = format!("{:032x}", h.digest128());
            let size = self.tree.get(&name).map_or(0, |s| s.size);
            let names = match self.current_key {
                // A hard link with data: every earlier name of the inode
                // now has this content (maybe_link() + write).
                Some(key) if size > 0 => self.links.get(&key).cloned().unwrap_or_default(),
                _ => vec![name],
            };
            for n in names {
                if let Some(s) = self.tree.get_mut(&n) {
                    s.content = Some(digest.clone());
                    s.size = size;
                }
            }
        }
        Ok(())
    }

    fn trailer(&mut self) -> Result<(), Error> {
        self.links.clear();
        Ok(())
    }
}

/// The unpacked state of every path of an image.
pub fn tree(image: &Image<'_>, opts: &ReadOptions, progress: &dyn Progress) -> Result<Tree, Error> {
    let mut c = Collector {
        tree: Tree::new(),
        current: None,
        links: HashMap::new(),
        current_key: None,
    };
    read::read_image(image, opts, progress, &mut c)?;
    Ok(c.tree)
}

/// One difference.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub path: String,
    /// "added", "removed" or "changed".
    pub kind: &'static str,
    /// What changed: type, mode, uid, gid, size, content, link_target,
    /// rdev, mtime.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<PathState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<PathState>,
}

/// Differences between two trees, sorted by path. `mtime` decides whether
/// modification times count.
pub fn compare(a: &Tree, b: &Tree, mtime: bool) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        match (a.get(n), b.get(n)) {
            (Some(x), None) => out.push(Difference {
                path: n.clone(),
                kind: "removed",
                changes: Vec::new(),
                a: Some(x.clone()),
                b: None,
            }),
            (None, Some(y)) => out.push(Difference {
                path: n.clone(),
                kind: "added",
                changes: Vec::new(),
                a: None,
                b: Some(y.clone()),
            }),
            (Some(x), Some(y)) => {
                let mut changes = Vec::new();
                if x.file_type != y.file_type {
                    changes.push("type".to_string());
                }
                if x.mode != y.mode {
                    changes.push(format!("mode {:04o} -> {:04o}", x.mode, y.mode));
                }
                if x.uid != y.uid {
                    changes.push(format!("uid {} -> {}", x.uid, y.uid));
                }
                if x.gid != y.gid {
                    changes.push(format!("gid {} -> {}", x.gid, y.gid));
                }
                if x.file_type == y.file_type && x.size != y.size {
                    changes.push(format!("size {} -> {}", x.size, y.size));
                }
                if x.content != y.content && x.file_type == y.file_type {
                    changes.push("content".to_string());
                }
                if x.link_target != y.link_target && x.file_type == y.file_type {
                    changes.push(format!(
                        "target {} -> {}",
                        x.link_target.as_deref().unwrap_or(""),
                        y.link_target.as_deref().unwrap_or("")
                    ));
                }
                if x.rdev != y.rdev && x.file_type == y.file_type {
                    changes.push("rdev".to_string());
                }
                if mtime && x.mtime != y.mtime {
                    changes.push(format!("mtime {} -> {}", x.mtime, y.mtime));
                }
                if !changes.is_empty() {
                    out.push(Difference {
                        path: n.clone(),
                        kind: "changed",
                        changes,
                        a: Some(x.clone()),
                        b: Some(y.clone()),
                    });
                }
            }
            (None, None) => {}
        }
    }
    out
}
