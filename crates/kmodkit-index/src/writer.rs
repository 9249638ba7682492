//! Writing kmod index files byte for byte as kmod 30's depmod does
//! (`index_insert` / `index_write` in tools/depmod.c).
//!
//! The trie is a Patricia trie over key bytes: a node holds the prefix
//! shared by all keys below it, its values, and children indexed by the next
//! byte. kmod 30 writes nodes post-order (children before their parent) and
//! patches the root offset into the header at byte 8. A node's child table
//! spans `first..=last`, with 0 for missing children. Values under one key
//! are ordered by priority; among equal priorities the value inserted last
//! comes first (`index_add_value` inserts before the first entry whose
//! priority is not lower).

use crate::{FLAG_CHILDS, FLAG_PREFIX, FLAG_VALUES, MAGIC, VERSION};

/// Keys must be 7-bit ASCII: each key byte indexes a 128-entry child
/// table (`index__checkstring`, `INDEX_CHILDMAX`).
#[derive(Debug, thiserror::Error)]
#[error("index {what} {text:?} has a byte outside 7-bit ASCII; kmod's index cannot store it")]
pub struct NotAscii {
    pub what: &'static str,
    pub text: String,
}

#[derive(Debug, Default)]
struct Node {
    prefix: Vec<u8>,
    /// (priority, value), kept in kmod's order.
    values: Vec<(u32, Vec<u8>)>,
    /// Children sorted by byte.
    children: Vec<(u8, usize)>,
}

/// An index being built in memory.
#[derive(Debug)]
pub struct IndexBuilder {
    nodes: Vec<Node>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl IndexBuilder {
    pub fn new() -> Self {
        IndexBuilder {
            nodes: vec![Node::default()],
        }
    }

    fn check(what: &'static str, s: &[u8]) -> Result<(), NotAscii> {
        if s.iter().any(|&b| b >= 128) {
            return Err(NotAscii {
                what,
                text: String::from_utf8_lossy(s).into_owned(),
            });
        }
        Ok(())
    }

    fn add_value(values: &mut Vec<(u32, Vec<u8>)>, value: &[u8], priority: u32) -> bool {
        let duplicate = values.iter().any(|(_, v)| v == value);
        let pos = values
            .iter()
            .position(|(p, _)| *p >= priority)
            .unwrap_or(values.len());
        values.insert(pos, (priority, value.to_vec()));
        duplicate
    }

    /// Adds `value` under `key`; returns true when the key already held an
    /// equal value (kmod's "duplicate", reported with `depmod -w`).
    pub fn insert(&mut self, key: &[u8], value: &[u8], priority: u32) -> Result<bool, NotAscii> {
        Self::check("key", key)?;
        // kmod 30 checks values too, but `index__checkstring` reads each
        // byte as a (signed on x86) `char`, so a byte >= 0x80 passes: a
        // modules.dep.bin line for `kernel/dum.日.ko` holds the path's raw
        // bytes. Values are only copied, so any byte is safe to store.
        let mut node = 0usize;
        let mut i = 0usize;
        loop {
            // Make the node's prefix a prefix of key[i..], splitting if not.
            let plen = self.nodes[node].prefix.len();
            let mut j = 0;
            while j < plen {
                let ch = self.nodes[node].prefix[j];
                if key.get(i + j) != Some(&ch) {
                    // New child holds the old node's tail; node keeps prefix[..j].
                    let old = std::mem::take(&mut self.nodes[node]);
                    let child = Node {
                        prefix: old.prefix[j + 1..].to_vec(),
                        values: old.values,
                        children: old.children,
                    };
                    let child_idx = self.nodes.len();
                    self.nodes.push(child);
                    let n = &mut self.nodes[node];
                    n.prefix = old.prefix[..j].to_vec();
                    n.children = vec![(ch, child_idx)];
                    break;
                }
                j += 1;
            }
            i += j;
            let Some(&ch) = key.get(i) else {
                return Ok(Self::add_value(
                    &mut self.nodes[node].values,
                    value,
                    priority,
                ));
            };
            match self.nodes[node]
                .children
                .binary_search_by_key(&ch, |(c, _)| *c)
            {
                Ok(pos) => {
                    node = self.nodes[node].children[pos].1;
                    i += 1;
                }
                Err(pos) => {
                    let child_idx = self.nodes.len();
                    self.nodes.push(Node {
                        prefix: key[i + 1..].to_vec(),
                        values: vec![(priority, value.to_vec())],
                        children: Vec::new(),
                    });
                    self.nodes[node].children.insert(pos, (ch, child_idx));
                    return Ok(false);
                }
            }
        }
    }

    /// Serialises the index as kmod 30 does.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.nodes.len() * 32 + 12);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        let root = self.write_node(0, &mut out);
        out[8..12].copy_from_slice(&root.to_be_bytes());
        out
    }

    fn write_node(&self, idx: usize, out: &mut Vec<u8>) -> u32 {
        let node = &self.nodes[idx];
        let mut child_offsets: Vec<u32> = Vec::new();
        let (first, last) = match (node.children.first(), node.children.last()) {
            (Some(f), Some(l)) => (f.0, l.0),
            _ => (0, 0),
        };
        if !node.children.is_empty() {
            child_offsets = vec![0; (last - first) as usize + 1];
            for &(ch, child) in &node.children {
                child_offsets[(ch - first) as usize] = self.write_node(child, out);
            }
        }
        let mut offset = out.len() as u32;
        if !node.prefix.is_empty() {
            out.extend_from_slice(&node.prefix);
            out.push(0);
            offset |= FLAG_PREFIX;
        }
        if !node.children.is_empty() {
            out.push(first);
            out.push(last);
            for o in child_offsets {
                out.extend_from_slice(&o.to_be_bytes());
            }
            offset |= FLAG_CHILDS;
        }
        if !node.values.is_empty() {
            out.extend_from_slice(&(node.values.len() as u32).to_be_bytes());
            for (p, v) in &node.values {
                out.extend_from_slice(&p.to_be_bytes());
                out.extend_from_slice(v);
                out.push(0);
            }
            offset |= FLAG_VALUES;
        }
        offset
    }
}
