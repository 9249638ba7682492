//! kmod's binary index files (`modules.dep.bin`, `modules.alias.bin`,
//! `modules.symbols.bin`, `modules.builtin.bin`,
//! `modules.builtin.alias.bin`), as `libkmod/libkmod-index.c` (kmod 30)
//! reads and writes them.
//!
//! Layout, all integers big-endian:
//!
//! ```text
//! header  u32 magic 0xB007F457, u32 version 0x00020001, u32 root offset
//! offset  u32: low 28 bits = file offset of a node, flags in the top bits:
//!         0x80000000 PREFIX, 0x40000000 VALUES, 0x20000000 CHILDS
//! node    [prefix: NUL-terminated]            if PREFIX
//!         [first u8, last u8,
//!          (last - first + 1) child offsets]  if CHILDS
//!         [u32 count, count × (u32 priority,
//!          NUL-terminated value)]             if VALUES
//! ```
//!
//! The trie is keyed by byte: a node's prefix is matched, then the next key
//! byte selects the child. Keys containing `*`, `?` or `[` are patterns
//! matched with `fnmatch(3)` by [`Index::search_wild`].

pub mod lookup;
pub mod name;
pub mod writer;

use std::path::{Path, PathBuf};

pub const MAGIC: u32 = 0xB007_F457;
pub const VERSION: u32 = 0x0002_0001;
const VERSION_MAJOR: u32 = 0x0002;
const FLAG_PREFIX: u32 = 0x8000_0000;
const FLAG_VALUES: u32 = 0x4000_0000;
const FLAG_CHILDS: u32 = 0x2000_0000;
const NODE_MASK: u32 = 0x0FFF_FFFF;

/// An index file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    // The OS error is in the message, not a source() (no doubled chain).
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not a kmod index (magic {found:#010x}, expected {MAGIC:#010x})", path.display())]
    BadMagic { path: PathBuf, found: u32 },
    #[error("{}: unsupported index version {found:#010x} (major 2 expected)", path.display())]
    BadVersion { path: PathBuf, found: u32 },
}

/// A value stored under a key, with its priority (lower sorts first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexValue {
    pub priority: u32,
    pub value: Vec<u8>,
}

/// A parsed node: offsets into the file, nothing copied.
struct Node<'a> {
    prefix: &'a [u8],
    first: u8,
    last: u8,
    children: &'a [u8],
    values: Vec<(u32, &'a [u8])>,
}

/// An index held in memory. Every read is bounds-checked: a damaged file
/// makes lookups miss, never panic.
#[derive(Debug)]
pub struct Index {
    data: Vec<u8>,
    root: u32,
}

fn be32(data: &[u8], off: usize) -> Option<u32> {
    let b = data.get(off..off.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn cstr(data: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let tail = data.get(off..)?;
    let n = tail.iter().position(|&b| b == 0)?;
    Some((&tail[..n], off + n + 1))
}

impl Index {
    /// Opens an index file; `Ok(None)` when it does not exist (kmod treats
    /// a missing index as "not found").
    pub fn open(path: impl AsRef<Path>) -> Result<Option<Index>, IndexError> {
        let path = path.as_ref();
        match std::fs::read(path) {
            // depmod writes an empty modules.builtin.bin when the tree has no
            // modules.builtin; libkmod's index_file_open fails on it and the
            // lookup finds nothing, as for a missing file.
            Ok(data) if data.is_empty() => Ok(None),
            Ok(data) => Index::from_bytes(path, data).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(cause) => Err(IndexError::Io {
                path: path.to_path_buf(),
                cause,
            }),
        }
    }

    pub fn from_bytes(path: &Path, data: Vec<u8>) -> Result<Index, IndexError> {
        let magic = be32(&data, 0).unwrap_or(0);
        if magic != MAGIC {
            return Err(IndexError::BadMagic {
                path: path.to_path_buf(),
                found: magic,
            });
        }
        let version = be32(&data, 4).unwrap_or(0);
        if version >> 16 != VERSION_MAJOR {
            return Err(IndexError::BadVersion {
                path: path.to_path_buf(),
                found: version,
            });
        }
        let root = be32(&data, 8).unwrap_or(0);
        Ok(Index { data, root })
    }

    fn node(&self, offset: u32) -> Option<Node<'_>> {
        if offset & NODE_MASK == 0 {
            return None;
        }
        let data = &self.data;
        let mut p = (offset & NODE_MASK) as usize;
        let prefix: &[u8] = if offset & FLAG_PREFIX != 0 {
            let (s, next) = cstr(data, p)?;
            p = next;
            s
        } else {
            &[]
        };
        let (first, last, children) = if offset & FLAG_CHILDS != 0 {
            let first = *data.get(p)?;
            let last = *data.get(p + 1)?;
            p += 2;
            let count = (last as usize + 1).checked_sub(first as usize)?;
            let children = data.get(p..p + 4 * count)?;
            p += 4 * count;
            (first, last, children)
        } else {
            (128, 0, &[][..])
        };
        let mut values = Vec::new();
        if offset & FLAG_VALUES != 0 {
            let count = be32(data, p)? as usize;
            p += 4;
            for _ in 0..count {
                let priority = be32(data, p)?;
                let (v, next) = cstr(data, p + 4)?;
                p = next;
                values.push((priority, v));
            }
        }
        Some(Node {
            prefix,
            first,
            last,
            children,
            values,
        })
    }

    fn child(&self, node: &Node<'_>, ch: u8) -> Option<Node<'_>> {
        if ch < node.first || ch > node.last {
            return None;
        }
        let i = (ch - node.first) as usize;
        self.node(be32(node.children, i * 4)?)
    }

    /// The first value stored under exactly `key` (kmod's `index_search`).
    pub fn search(&self, key: &[u8]) -> Option<Vec<u8>> {
        let mut node = self.node(self.root)?;
        let mut i = 0usize;
        loop {
            for (j, &ch) in node.prefix.iter().enumerate() {
                if key.get(i + j) != Some(&ch) {
                    return None;
                }
            }
            i += node.prefix.len();
            if i == key.len() {
                return node.values.first().map(|(_, v)| v.to_vec());
            }
            let next = self.child(&node, key[i])?;
            node = next;
            i += 1;
        }
    }

    /// Every value whose key, read as an `fnmatch` pattern, matches `key`,
    /// sorted by priority; equal priorities keep kmod's order (later found
    /// first). Mirrors `index_searchwild` step by step, since the order is
    /// visible to users (modinfo prints modules in it).
    pub fn search_wild(&self, key: &[u8]) -> Vec<IndexValue> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        if let Some(root) = self.node(self.root) {
            self.wild_node(root, &mut buf, key, 0, &mut out);
        }
        out
    }

    fn add_value(out: &mut Vec<IndexValue>, priority: u32, value: &[u8]) {
        let pos = out
            .iter()
            .position(|v| v.priority >= priority)
            .unwrap_or(out.len());
        out.insert(
            pos,
            IndexValue {
                priority,
                value: value.to_vec(),
            },
        );
    }

    fn wild_node<'a>(
        &'a self,
        mut node: Node<'a>,
        buf: &mut Vec<u8>,
        key: &[u8],
        mut i: usize,
        out: &mut Vec<IndexValue>,
    ) {
        loop {
            for (j, &ch) in node.prefix.iter().enumerate() {
                if matches!(ch, b'*' | b'?' | b'[') {
                    let sub = key.get(i + j..).unwrap_or(&[]);
                    self.wild_all(&node, j, buf, sub, out);
                    return;
                }
                if key.get(i + j) != Some(&ch) {
                    return;
                }
            }
            i += node.prefix.len();
            for wc in [b'*', b'?', b'['] {
                if let Some(child) = self.child(&node, wc) {
                    buf.push(wc);
                    self.wild_all(&child, 0, buf, &key[i..], out);
                    buf.pop();
                }
            }
            if i == key.len() {
                for (p, v) in &node.values {
                    Self::add_value(out, *p, v);
                }
                return;
            }
            match self.child(&node, key[i]) {
                Some(next) => node = next,
                None => return,
            }
            i += 1;
        }
    }

    fn wild_all(
        &self,
        node: &Node<'_>,
        j: usize,
        buf: &mut Vec<u8>,
        subkey: &[u8],
        out: &mut Vec<IndexValue>,
    ) {
        let pushed = node.prefix.len().saturating_sub(j);
        buf.extend_from_slice(node.prefix.get(j..).unwrap_or(&[]));
        if node.first <= node.last {
            for ch in node.first..=node.last {
                if let Some(child) = self.child(node, ch) {
                    buf.push(ch);
                    self.wild_all(&child, 0, buf, subkey, out);
                    buf.pop();
                }
            }
        }
        if !node.values.is_empty() && fnmatch(buf, subkey) {
            for (p, v) in &node.values {
                Self::add_value(out, *p, v);
            }
        }
        buf.truncate(buf.len() - pushed);
    }

    /// Every (key, values) pair in key order, as `index_dump` walks them.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<IndexValue>)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        if let Some(root) = self.node(self.root) {
            self.dump(&root, &mut buf, &mut out);
        }
        out
    }

    fn dump(&self, node: &Node<'_>, buf: &mut Vec<u8>, out: &mut Vec<(Vec<u8>, Vec<IndexValue>)>) {
        let len = buf.len();
        buf.extend_from_slice(node.prefix);
        if !node.values.is_empty() {
            let values = node
                .values
                .iter()
                .map(|(p, v)| IndexValue {
                    priority: *p,
                    value: v.to_vec(),
                })
                .collect();
            out.push((buf.clone(), values));
        }
        if node.first <= node.last {
            for ch in node.first..=node.last {
                if let Some(child) = self.child(node, ch) {
                    buf.push(ch);
                    self.dump(&child, buf, out);
                    buf.pop();
                }
            }
        }
        buf.truncate(len);
    }
}

/// `fnmatch(pattern, string, 0)` from glibc, for the patterns module
/// aliases use: `*`, `?`, bracket expressions with ranges and `!`/`^`
/// negation, and backslash escapes. No `FNM_PATHNAME`/`FNM_PERIOD`.
pub fn fnmatch(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    star = Some((p, i));
                    continue;
                }
                b'?' if i < s.len() => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' if i < s.len() => {
                    if let Some((matched, next)) = bracket(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    } else if s[i] == b'[' {
                        // An unterminated bracket is a literal '['.
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && i < s.len() && pattern[p + 1] == s[i] => {
                    p += 2;
                    i += 1;
                    continue;
                }
                c if c != b'\\' && i < s.len() && c == s[i] => {
                    p += 1;
                    i += 1;
                    continue;
                }
                _ => {}
            }
        } else if i == s.len() {
            return true;
        }
        // Mismatch: let the last star swallow one more byte.
        match star {
            Some((sp, si)) if si < s.len() => {
                star = Some((sp, si + 1));
                p = sp;
                i = si + 1;
            }
            _ => return false,
        }
    }
}

/// Matches `c` against the bracket expression at `pattern[start] == '['`.
/// Returns (matched, index after `]`), or `None` if the bracket is not
/// terminated.
fn bracket(pattern: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut p = start + 1;
    let negate = matches!(pattern.get(p), Some(b'!') | Some(b'^'));
    if negate {
        p += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *pattern.get(p)?;
        if ch == b']' && !first {
            return Some((matched != negate, p + 1));
        }
        first = false;
        let lo = if ch == b'\\' {
            p += 1;
            *pattern.get(p)?
        } else {
            ch
        };
        p += 1;
        if pattern.get(p) == Some(&b'-') && pattern.get(p + 1).is_some_and(|&n| n != b']') {
            let mut hi = pattern[p + 1];
            p += 2;
            if hi == b'\\' {
                hi = *pattern.get(p)?;
                p += 1;
            }
            if lo <= c && c <= hi {
                matched = true;
            }
        } else if lo == c {
            matched = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fnmatch;

    #[test]
    fn fnmatch_matches_glibc_semantics_for_alias_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            (
                "pci:v00008086d*sv*sd*bc*sc*i*",
                "pci:v00008086d00001234sv0sd0bc02sc00i00",
                true,
            ),
            ("pci:v00008086d*", "pci:v00008087d1", false),
            (
                "usb:v*p*d*dc*dsc*dp*ic03isc*ip*in*",
                "usb:v1p2d3dc0dsc0dp0ic03isc1ip1in0",
                true,
            ),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("[!a-c]x", "dx", true),
            ("x[]]", "x]", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("[abc", "[abc", true),
        ];
        for (p, s, want) in cases {
            assert_eq!(
                fnmatch(p.as_bytes(), s.as_bytes()),
                *want,
                "fnmatch({p:?}, {s:?})"
            );
        }
    }
}
