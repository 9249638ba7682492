//! Crafted indexes that real depmod never writes (loops, forward
//! children, deep chains, shared subtrees, truncation): every lookup must
//! end with an error that names the file and node, never overflow the
//! stack, panic or run without end (issue 13, failure 3).

use std::path::Path;

use kmodkit_index::{Damage, Index, IndexError, MAGIC, VERSION};

const PREFIX: u32 = 0x8000_0000;
const VALUES: u32 = 0x4000_0000;
const CHILDS: u32 = 0x2000_0000;

/// Assembles an index node by node; `node` returns the flagged offset a
/// parent stores.
struct Raw(Vec<u8>);

impl Raw {
    fn new() -> Raw {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_be_bytes());
        b.extend_from_slice(&VERSION.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        Raw(b)
    }

    /// The offset the next node will get.
    fn next(&self) -> u32 {
        self.0.len() as u32
    }

    fn node(&mut self, prefix: &[u8], children: Option<(u8, &[u32])>, values: &[&[u8]]) -> u32 {
        let mut off = self.next();
        if !prefix.is_empty() {
            self.0.extend_from_slice(prefix);
            self.0.push(0);
            off |= PREFIX;
        }
        if let Some((first, kids)) = children {
            self.0.push(first);
            self.0.push(first + kids.len() as u8 - 1);
            for k in kids {
                self.0.extend_from_slice(&k.to_be_bytes());
            }
            off |= CHILDS;
        }
        if !values.is_empty() {
            self.0
                .extend_from_slice(&(values.len() as u32).to_be_bytes());
            for v in values {
                self.0.extend_from_slice(&0u32.to_be_bytes());
                self.0.extend_from_slice(v);
                self.0.push(0);
            }
            off |= VALUES;
        }
        off
    }

    fn finish(mut self, root: u32) -> Index {
        self.0[8..12].copy_from_slice(&root.to_be_bytes());
        Index::from_bytes(Path::new("/crafted/modules.alias.bin"), self.0).unwrap()
    }
}

fn damage(e: IndexError) -> (u32, Damage) {
    let text = e.to_string();
    assert!(
        text.contains("/crafted/modules.alias.bin"),
        "error does not name the file: {text}"
    );
    match e {
        IndexError::Damaged {
            offset, problem, ..
        } => (offset, problem),
        other => panic!("expected a damaged-index error, got {other}"),
    }
}

#[test]
fn wildcard_child_pointing_at_its_own_node_is_an_error() {
    let mut raw = Raw::new();
    let at = raw.next();
    // The '*' child is the node itself.
    let root = raw.node(b"", Some((b'*', &[at | CHILDS | VALUES])), &[b"loop"]);
    let index = raw.finish(root);
    let (offset, problem) = damage(index.search_wild(b"pci:v1").unwrap_err());
    assert_eq!(offset, at);
    assert_eq!(problem, Damage::ChildNotBelow { child: at });
    assert!(index.entries().is_err());
    assert!(index.search(b"**").is_err());
}

#[test]
fn child_pointing_forward_is_an_error() {
    // A at 12 points forward to B; B points back to A: a two-node loop.
    let mut raw = Raw::new();
    let a_at = raw.next();
    // A: prefix "x", one child '*'; its offset field is patched below.
    let a = raw.node(b"x", Some((b'*', &[0])), &[]);
    let b = raw.node(b"", Some((b'*', &[a])), &[b"m"]);
    let child_field = (a_at + 2 + 2) as usize;
    raw.0[child_field..child_field + 4].copy_from_slice(&b.to_be_bytes());
    let index = raw.finish(a);
    let (offset, problem) = damage(index.search_wild(b"xyz").unwrap_err());
    assert_eq!(offset, a_at);
    assert_eq!(
        problem,
        Damage::ChildNotBelow {
            child: b & 0x0FFF_FFFF
        }
    );
    assert!(index.entries().is_err());
}

#[test]
fn a_deep_chain_is_walked_without_recursion() {
    // 300,000 nodes, each the only child of the next: valid order, but a
    // recursive walk needs one stack frame per node.
    let mut raw = Raw::new();
    let mut below = raw.node(b"", None, &[b"leaf"]);
    for _ in 0..300_000 {
        below = raw.node(b"", Some((b'a', &[below])), &[]);
    }
    let index = raw.finish(below);
    let entries = index.entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0.len(), 300_000);
    assert!(index.search_wild(b"b").unwrap().is_empty());
}

#[test]
fn shared_subtrees_stop_the_walk_instead_of_exploding() {
    // Each level has two children that are the same node: 2^60 paths.
    let mut raw = Raw::new();
    let mut below = raw.node(b"", None, &[b"m"]);
    for _ in 0..60 {
        below = raw.node(b"", Some((b'*', &[below, below])), &[]);
    }
    let index = raw.finish(below);
    let (_, problem) = damage(index.entries().unwrap_err());
    assert_eq!(problem, Damage::NotATree);
    let (_, problem) = damage(index.search_wild(b"anything").unwrap_err());
    assert_eq!(problem, Damage::NotATree);
}

#[test]
fn truncated_nodes_are_errors_naming_the_offset() {
    let mut raw = Raw::new();
    let leaf = raw.node(b"", None, &[b"mod"]);
    let root = raw.node(b"ab", Some((b'c', &[leaf])), &[]);
    let whole = raw.0.clone();
    let full = raw.finish(root);
    assert_eq!(full.search(b"abc").unwrap(), Some(b"mod".to_vec()));
    // Cut inside the root's child table, then inside the leaf's value.
    for cut in [whole.len() - 2, 12 + 6] {
        let mut bytes = whole[..cut].to_vec();
        bytes[8..12].copy_from_slice(&root.to_be_bytes());
        let index = Index::from_bytes(Path::new("/crafted/modules.alias.bin"), bytes).unwrap();
        let (_, problem) = damage(index.search(b"abc").unwrap_err());
        assert_eq!(problem, Damage::Truncated);
        assert!(index.search_wild(b"abc").is_err());
        assert!(index.entries().is_err());
    }
}

#[test]
fn a_value_count_larger_than_the_file_is_an_error() {
    let mut raw = Raw::new();
    let at = raw.next();
    let root = raw.node(b"", None, &[b"m"]);
    let count = (at) as usize;
    raw.0[count..count + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    let index = raw.finish(root);
    assert!(index.entries().is_err());
}
