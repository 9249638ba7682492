//! Normalising entries: names as the kernel sees them, sorted with
//! parents first, checked, inodes numbered; missing parents added.

use std::collections::{BTreeMap, HashMap};

use super::{invalid, CreateOptions, PlannedEntry, SourceEntry};
use crate::cpio::{FileType, Header, PATH_MAX};
use crate::error::Error;

/// Sorts, checks and numbers entries; adds missing parent directories.
pub fn plan(
    mut entries: Vec<SourceEntry>,
    opts: &CreateOptions,
) -> Result<Vec<PlannedEntry>, Error> {
    // Names as the kernel sees them: no leading "/" or "./", no "//".
    for e in &mut entries {
        let parts: Vec<&[u8]> = e
            .name
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        e.name = parts.join(&b'/');
        if e.name.is_empty() && e.file_type == FileType::Directory {
            // The root itself: the kernel applies its mode, owners and
            // mtime to / (init/initramfs.c do_name on ".").
            e.name = b".".to_vec();
        }
        if e.name.is_empty() || e.name.len() + 1 > PATH_MAX as usize {
            return Err(invalid(format!(
                "entry name '{}' is empty or longer than PATH_MAX",
                String::from_utf8_lossy(&e.name)
            )));
        }
        if e.link_target.len() > PATH_MAX as usize {
            return Err(invalid(format!(
                "symlink '{}': target longer than PATH_MAX",
                String::from_utf8_lossy(&e.name)
            )));
        }
        if e.size > u64::from(u32::MAX) {
            return Err(invalid(format!(
                "'{}' is {} bytes; cpio newc cannot hold files of 4 GiB or more",
                String::from_utf8_lossy(&e.name),
                e.size
            )));
        }
    }
    // Keyed by name, "." as the empty key so that it comes first.
    let mut by_name: BTreeMap<Vec<u8>, SourceEntry> = BTreeMap::new();
    for e in entries {
        let key = if e.name == b"." {
            Vec::new()
        } else {
            e.name.clone()
        };
        if let Some(prev) = by_name.insert(key, e) {
            return Err(invalid(format!(
                "'{}' is listed twice",
                String::from_utf8_lossy(&prev.name)
            )));
        }
    }
    // Missing parents.
    let names: Vec<Vec<u8>> = by_name.keys().cloned().collect();
    for n in names {
        let mut p = n.as_slice();
        while let Some(i) = p.iter().rposition(|&b| b == b'/') {
            p = &p[..i];
            if by_name.contains_key(p) {
                break;
            }
            by_name.insert(
                p.to_vec(),
                SourceEntry::new(p.to_vec(), FileType::Directory, 0o755),
            );
        }
    }
    // Sorted by bytes: a parent is a prefix of its children, so it comes first.
    let sorted: Vec<SourceEntry> = by_name.into_values().collect();
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    let mut group_size: HashMap<(u64, u64), u32> = HashMap::new();
    let mut group_last: HashMap<(u64, u64), usize> = HashMap::new();
    for (i, e) in sorted.iter().enumerate() {
        if e.file_type == FileType::Directory {
            if let Some(p) = e.name.iter().rposition(|&b| b == b'/') {
                *subdirs.entry(&e.name[..p]).or_default() += 1;
            }
        }
        if let (FileType::Regular, Some(k)) = (e.file_type, e.inode_key) {
            *group_size.entry(k).or_default() += 1;
            group_last.insert(k, i);
        }
    }
    let mut ino_of: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next_ino = 1u32;
    let mut out = Vec::with_capacity(sorted.len());
    for (i, e) in sorted.iter().enumerate() {
        let group = match (e.file_type, e.inode_key) {
            (FileType::Regular, Some(k)) if group_size[&k] > 1 => Some(k),
            _ => None,
        };
        let ino = match group {
            Some(k) => *ino_of.entry(k).or_insert_with(|| {
                next_ino += 1;
                next_ino - 1
            }),
            None => {
                next_ino += 1;
                next_ino - 1
            }
        };
        let nlink = match (e.file_type, group) {
            (FileType::Directory, _) => 2 + subdirs.get(e.name.as_slice()).copied().unwrap_or(0),
            (_, Some(k)) => group_size[&k],
            _ => 1,
        };
        let carries_data = match group {
            Some(k) => group_last[&k] == i,
            None => e.file_type == FileType::Regular,
        };
        let mtime = match opts.clamp_mtime {
            Some(t) => e.mtime.min(t),
            None => e.mtime,
        };
        let (uid, gid) = if opts.keep_owners {
            (e.uid, e.gid)
        } else {
            (0, 0)
        };
        let filesize = match e.file_type {
            FileType::Regular if carries_data => e.size as u32,
            FileType::Symlink => e.link_target.len() as u32,
            _ => 0,
        };
        out.push(PlannedEntry {
            name: e.name.clone(),
            header: Header {
                format: opts.format,
                ino,
                mode: e.file_type.mode_bits() | (e.perm & 0o7777),
                uid,
                gid,
                nlink,
                mtime: mtime.min(u64::from(u32::MAX)) as u32,
                filesize,
                dev_major: 0,
                dev_minor: 0,
                rdev_major: e.rdev.0,
                rdev_minor: e.rdev.1,
                namesize: e.name.len() as u32 + 1,
                check: 0,
            },
            source: if carries_data { e.source.clone() } else { None },
            link_target: e.link_target.clone(),
        });
    }
    Ok(out)
}

/// Entries whose name was given explicitly by the manifest keep their
/// owners; a directory scan keeps them only when asked.
pub fn manifest_options(mut opts: CreateOptions) -> CreateOptions {
    opts.keep_owners = true;
    opts
}
