//! Whether a plan's additions would change the image at all. A second
//! identical `add-drivers` run plans the same generated files again (load
//! lists, configuration), each equal to what the first run put there;
//! writing them would only stack another segment on the image.

use std::collections::BTreeMap;

use kmodkit_initramfs::read::{self, Entry, Image, NoProgress, ReadOptions, Visitor};

use crate::image::{normalise, Node};
use crate::plan::{Addition, Content, Plan};
use crate::InjectError;

impl Plan {
    /// True when writing the additions would change what the image unpacks
    /// to: some file is missing, or differs in size, mode or bytes
    /// (modification times are not compared). Reads the image again only
    /// for files that match in size and mode and whose bytes the plan does
    /// not hold already.
    pub fn changes_image(&self, max_output: u64) -> Result<bool, InjectError> {
        let mut to_read: BTreeMap<String, &Addition> = BTreeMap::new();
        for a in &self.additions {
            let path = self.facts.canonical(&a.path);
            let size = match &a.content {
                Content::Generated(b) => b.len() as u64,
                Content::Source(p) => std::fs::metadata(p)
                    .map_err(|source| InjectError::Io {
                        path: p.clone(),
                        source,
                    })?
                    .len(),
            };
            match self.facts.nodes.get(&path) {
                Some(Node::File { size: s, mode }) if *s == size && *mode == a.mode => {}
                _ => return Ok(true),
            }
            match (&a.content, self.facts.files.get(&path)) {
                (Content::Generated(b), Some(have)) if b != have => return Ok(true),
                (Content::Generated(_), Some(_)) => {}
                _ => {
                    to_read.insert(path, a);
                }
            }
        }
        if to_read.is_empty() {
            return Ok(false);
        }
        let image = Image::open(&self.image)?;
        let mut found = Collect {
            wanted: &to_read,
            current: None,
            got: BTreeMap::new(),
        };
        let opts = ReadOptions {
            max_output,
            threaded: true,
        };
        read::read_image(&image, &opts, &NoProgress, &mut found)?;
        for (path, a) in &to_read {
            let want = match &a.content {
                Content::Generated(b) => b.clone(),
                Content::Source(p) => std::fs::read(p).map_err(|source| InjectError::Io {
                    path: p.clone(),
                    source,
                })?,
            };
            if found.got.get(path) != Some(&want) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The bytes of the wanted paths; a later entry replaces an earlier one,
/// as when the kernel unpacks.
struct Collect<'a> {
    wanted: &'a BTreeMap<String, &'a Addition>,
    current: Option<(String, Vec<u8>)>,
    got: BTreeMap<String, Vec<u8>>,
}

impl Visitor for Collect<'_> {
    fn entry(&mut self, entry: &Entry<'_>) -> Result<bool, kmodkit_initramfs::Error> {
        let name = normalise(entry.name);
        self.got.remove(&name);
        if self.wanted.contains_key(&name) {
            self.current = Some((name, Vec::new()));
            return Ok(true);
        }
        Ok(false)
    }
    fn data(&mut self, chunk: &[u8]) -> Result<(), kmodkit_initramfs::Error> {
        if let Some((_, buf)) = &mut self.current {
            buf.extend_from_slice(chunk);
        }
        Ok(())
    }
    fn entry_end(&mut self) -> Result<(), kmodkit_initramfs::Error> {
        if let Some((name, buf)) = self.current.take() {
            self.got.insert(name, buf);
        }
        Ok(())
    }
}
