//! What an existing initramfs holds, read in one pass: every path with its
//! type, the configuration files the generators use, the segments, and the
//! image's module directory (written to a scratch tree so its index can be
//! regenerated exactly as depmod would inside the image).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use kmodkit_initramfs::cpio::FileType;
use kmodkit_initramfs::read::{self, Entry, Image, Progress, ReadOptions, SegmentSummary, Visitor};
use kmodkit_initramfs::{Compression, Error as ImageError};
use serde::Serialize;

use crate::InjectError;

/// The type of one path in the image (the last entry of that name wins, as
/// when the kernel unpacks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    File { size: u64, mode: u32 },
    Dir,
    Symlink { target: String },
    Other,
}

pub use crate::generator::{Generator, LoadEntry};

/// Files whose content is kept in memory while reading: what the generators
/// read to load modules and configure the network.
fn wanted(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "init",
        "conf/modules",
        "conf/initramfs.conf",
        "etc/dhclient.conf",
        "etc/dhcp/dhclient.conf",
    ];
    const PREFIXES: &[&str] = &[
        "conf/conf.d/",
        "etc/cmdline.d/",
        "etc/modules-load.d/",
        "usr/lib/modules-load.d/",
        "etc/modprobe.d/",
        "usr/lib/modprobe.d/",
        "lib/modprobe.d/",
        // What kmodkit itself writes, so that a second identical run sees
        // it is there already.
        "etc/kmodkit/",
        "etc/systemd/network/",
        "etc/systemd/system/dracut-pre-mount.service.d/",
        "etc/NetworkManager/conf.d/",
        "etc/udev/rules.d/",
    ];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || (name.starts_with("scripts/") && name.ends_with("/ORDER"))
}

/// Everything add-drivers needs to know about an image.
#[derive(Debug)]
pub struct ImageFacts {
    pub path: PathBuf,
    pub len: u64,
    pub segments: Vec<SegmentSummary>,
    /// Every path (normalised: no leading `/` or `./`), last entry wins.
    pub nodes: BTreeMap<String, Node>,
    /// Contents of the configuration files ([`wanted`]).
    pub files: BTreeMap<String, Vec<u8>>,
    /// Kernel releases with a module directory in the image.
    pub kernel_releases: Vec<String>,
    /// Where the module files were written (`ROOT/lib/modules/KVER/...`).
    pub module_root: PathBuf,
    /// The image's `.` entry (the root directory's mode, owners, mtime),
    /// the last one if several segments have one.
    pub root_dir: Option<RootDir>,
}

/// The `.` entry of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootDir {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
}

/// Normalises a cpio name the way the kernel resolves it from `/`.
pub fn normalise(name: &[u8]) -> String {
    let s = String::from_utf8_lossy(name);
    let mut s: &str = &s;
    loop {
        if let Some(r) = s.strip_prefix("./") {
            s = r;
        } else if let Some(r) = s.strip_prefix('/') {
            s = r;
        } else {
            break;
        }
    }
    s.trim_end_matches('/').to_string()
}

/// The part of `name` after `lib/modules/` (for `lib/modules/K/...` and
/// `usr/lib/modules/K/...`).
fn module_tail(name: &str) -> Option<&str> {
    name.strip_prefix("lib/modules/")
        .or_else(|| name.strip_prefix("usr/lib/modules/"))
}

/// Whether a directory name under `lib/modules` is a kernel's: a kernel
/// release starts with its version number (KERNELRELEASE is
/// `$(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(EXTRAVERSION)$(LOCALVERSION)`,
/// the kernel's top Makefile). Other directories live there too: dracut's
/// modsign module puts the module-signing certificates in
/// `lib/modules/keys` (whenever keyctl is installed); they are carried
/// along, not taken for a kernel.
fn is_kernel_release(name: &str) -> bool {
    name.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

struct Collector<'a> {
    facts: &'a mut ImageFacts,
    /// The open scratch file and the kept-content buffer of the current
    /// entry.
    out: Option<(File, PathBuf)>,
    keep: Option<(String, Vec<u8>)>,
    /// Told each kernel release as soon as its module directory appears.
    notify: Option<std::sync::mpsc::Sender<String>>,
}

impl Visitor for Collector<'_> {
    fn entry(&mut self, entry: &Entry<'_>) -> Result<bool, ImageError> {
        let name = normalise(entry.name);
        if name.is_empty() || name == "." {
            if entry.file_type() == FileType::Directory {
                self.facts.root_dir = Some(RootDir {
                    mode: entry.header.mode & 0o7777,
                    uid: entry.header.uid,
                    gid: entry.header.gid,
                    mtime: entry.header.mtime,
                });
            }
            return Ok(false);
        }
        let node = match entry.file_type() {
            FileType::Regular => Node::File {
                size: u64::from(entry.size()),
                mode: entry.header.mode & 0o7777,
            },
            FileType::Directory => Node::Dir,
            FileType::Symlink => Node::Symlink {
                target: String::from_utf8_lossy(entry.link_target.unwrap_or_default()).into_owned(),
            },
            _ => Node::Other,
        };
        let regular = matches!(node, Node::File { .. });
        let mut want_data = false;
        if let Some(tail) = module_tail(&name) {
            let release = tail.split('/').next().unwrap_or("");
            if is_kernel_release(release)
                && !self.facts.kernel_releases.iter().any(|r| r == release)
            {
                self.facts.kernel_releases.push(release.to_string());
                if let Some(tx) = &self.notify {
                    // The listener may be gone; reading goes on regardless.
                    let _ = tx.send(release.to_string());
                }
            }
            let dest = self.facts.module_root.join("lib/modules").join(tail);
            match &node {
                Node::Dir => {
                    std::fs::create_dir_all(&dest).map_err(|e| ImageError::write(&dest, e))?;
                }
                Node::File { .. } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| ImageError::write(parent, e))?;
                    }
                    let f = File::create(&dest).map_err(|e| ImageError::write(&dest, e))?;
                    self.out = Some((f, dest));
                    want_data = true;
                }
                Node::Symlink { target } => {
                    if let Some(parent) = dest.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(|e| ImageError::write(parent, e))?;
                    }
                    let _ = std::fs::remove_file(&dest);
                    std::os::unix::fs::symlink(target, &dest)
                        .map_err(|e| ImageError::write(&dest, e))?;
                }
                Node::Other => {}
            }
        }
        if regular && wanted(&name) {
            self.keep = Some((name.clone(), Vec::with_capacity(entry.size() as usize)));
            want_data = true;
        } else {
            self.facts.files.remove(&name);
        }
        self.facts.nodes.insert(name, node);
        Ok(want_data)
    }

    fn data(&mut self, chunk: &[u8]) -> Result<(), ImageError> {
        if let Some((f, p)) = &mut self.out {
            f.write_all(chunk).map_err(|e| ImageError::write(&*p, e))?;
        }
        if let Some((_, buf)) = &mut self.keep {
            buf.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn entry_end(&mut self) -> Result<(), ImageError> {
        self.out = None;
        if let Some((name, buf)) = self.keep.take() {
            self.facts.files.insert(name, buf);
        }
        Ok(())
    }
}

impl ImageFacts {
    /// Reads `path`, writing the module directories into `scratch`.
    pub fn read(
        path: &Path,
        scratch: &Path,
        max_output: u64,
        progress: &dyn Progress,
    ) -> Result<ImageFacts, InjectError> {
        Self::read_notify(path, scratch, max_output, progress, None)
    }

    /// [`ImageFacts::read`], sending each kernel release on `notify` as
    /// soon as its module directory shows up.
    pub fn read_notify(
        path: &Path,
        scratch: &Path,
        max_output: u64,
        progress: &dyn Progress,
        notify: Option<std::sync::mpsc::Sender<String>>,
    ) -> Result<ImageFacts, InjectError> {
        let image = Image::open(path)?;
        let mut facts = ImageFacts {
            path: path.to_path_buf(),
            len: image.len(),
            segments: Vec::new(),
            nodes: BTreeMap::new(),
            files: BTreeMap::new(),
            kernel_releases: Vec::new(),
            module_root: scratch.to_path_buf(),
            root_dir: None,
        };
        let opts = ReadOptions {
            max_output,
            threaded: true,
        };
        let mut collector = Collector {
            facts: &mut facts,
            out: None,
            keep: None,
            notify,
        };
        let segments = read::read_image(&image, &opts, progress, &mut collector)?;
        facts.segments = segments;
        Ok(facts)
    }

    /// `path` with every symlink among its leading components resolved
    /// inside the image (the kernel follows them when it creates files).
    pub fn canonical(&self, path: &str) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut pending: Vec<String> = path.split('/').rev().map(str::to_string).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    parts.pop();
                    continue;
                }
                _ => {}
            }
            parts.push(c);
            // The last component is not followed (it is what gets written).
            if pending.is_empty() {
                break;
            }
            let cur = parts.join("/");
            if let Some(Node::Symlink { target }) = self.nodes.get(&cur) {
                hops += 1;
                if hops > 40 {
                    break;
                }
                parts.pop();
                if target.starts_with('/') {
                    parts.clear();
                }
                pending.extend(target.split('/').rev().map(str::to_string));
            }
        }
        parts.join("/")
    }

    /// The node at `path` after resolving leading symlinks.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(&self.canonical(path))
    }

    pub fn is_dir(&self, path: &str) -> bool {
        let c = self.canonical(path);
        match self.nodes.get(&c) {
            Some(Node::Dir) => true,
            Some(Node::Symlink { .. }) => self.is_dir(&(c + "/.")),
            _ => false,
        }
    }

    pub fn text(&self, path: &str) -> Option<String> {
        self.files
            .get(&self.canonical(path))
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    pub fn exists(&self, path: &str) -> bool {
        self.node(path).is_some()
    }

    /// The generator that made the image.
    pub fn generator(&self) -> Generator {
        Generator::detect(self)
    }

    /// The first of `paths` the image has (after symlinks).
    pub fn first_present<'p>(&self, paths: &[&'p str]) -> Option<&'p str> {
        paths.iter().copied().find(|p| self.exists(p))
    }

    /// Where the image keeps the modules of `release`, canonical
    /// (`usr/lib/modules/K` on merged-/usr images).
    pub fn module_dir(&self, release: &str) -> String {
        let usr = format!("usr/lib/modules/{release}");
        if self.nodes.contains_key(&usr)
            || self
                .nodes
                .keys()
                .any(|k| k.starts_with(&(usr.clone() + "/")))
        {
            return usr;
        }
        self.canonical(&format!("lib/modules/{release}"))
    }

    /// The compression of the last compressed segment (the main one), or
    /// `None` for an image without any.
    pub fn main_compression(&self) -> Compression {
        self.segments
            .iter()
            .rev()
            .map(|s| s.compression)
            .find(|c| *c != Compression::None)
            .unwrap_or(Compression::None)
    }

    /// Module files (relative to the module directory of `release`) the
    /// image carries.
    pub fn module_files(&self, release: &str) -> Vec<String> {
        let dir = self.module_dir(release) + "/";
        self.nodes
            .iter()
            .filter(|(k, n)| {
                matches!(n, Node::File { .. }) && k.starts_with(&dir) && is_module_name(k)
            })
            .map(|(k, _)| k[dir.len()..].to_string())
            .collect()
    }
}

pub fn is_module_name(name: &str) -> bool {
    kmodkit_index::name::is_module_file(name)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn kernel_releases_start_with_the_version() {
        for release in [
            "6.1.0-53-amd64",
            "6.12.117+deb12-amd64",
            "5.14.0-427.el9.x86_64",
        ] {
            assert!(is_kernel_release(release), "{release}");
        }
        for other in ["keys", "", "extra", ".hidden"] {
            assert!(!is_kernel_release(other), "{other:?}");
        }
    }

    /// Facts of an image that holds `dirs`, `files` (with their content)
    /// and `links`, for the generator and network-stack decisions that
    /// only look at names and configuration files.
    pub(crate) fn facts(
        dirs: &[&str],
        files: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> ImageFacts {
        let mut nodes = BTreeMap::new();
        let mut contents = BTreeMap::new();
        for d in dirs {
            nodes.insert(d.to_string(), Node::Dir);
        }
        for (name, text) in files {
            nodes.insert(
                name.to_string(),
                Node::File {
                    size: text.len() as u64,
                    mode: 0o100755,
                },
            );
            contents.insert(name.to_string(), text.as_bytes().to_vec());
        }
        for (name, target) in links {
            nodes.insert(
                name.to_string(),
                Node::Symlink {
                    target: target.to_string(),
                },
            );
        }
        ImageFacts {
            path: PathBuf::from("synthetic.img"),
            len: 0,
            segments: Vec::new(),
            nodes,
            files: contents,
            kernel_releases: Vec::new(),
            module_root: PathBuf::new(),
            root_dir: None,
        }
    }
}
