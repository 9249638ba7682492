//! A cache of parsed modules, so an unchanged tree is re-indexed without
//! reading (and decompressing) its modules again.
//!
//! One file per module directory, `<cache dir>/<hash of the directory
//! path>.depmod-cache`, holding for every module file its [`CacheKey`]
//! (path, size, mtime in nanoseconds, inode, device) and the
//! [`ModuleRecord`] depmod needs. A record is used only when all key fields
//! match the file on disk. The file is written atomically (temporary file,
//! fsync, rename); a damaged or foreign file is ignored.
//!
//! Format (little-endian): magic `KMKDEPC1`, u32 count, then per module:
//! path, u64 size, i64 mtime_ns, u64 inode, u64 dev, exports (u32 count,
//! (string, u64)), info (u32 count, (string, string)), needs (u32 count,
//! (string, u64, u8 weak)). Strings are u32 length + bytes.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::index_file::OutputFile;
use crate::record::ModuleRecord;

const MAGIC: &[u8; 8] = b"KMKDEPC1";

/// Identity of a module file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheKey {
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    pub dev: u64,
}

impl CacheKey {
    /// Follows symlinks: a weak-updates link is keyed by its target.
    pub fn of(path: &Path) -> std::io::Result<CacheKey> {
        let m = std::fs::metadata(path)?;
        Ok(CacheKey {
            size: m.size(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            inode: m.ino(),
            dev: m.dev(),
        })
    }
}

/// The cache of one module directory.
#[derive(Debug)]
pub struct ModuleCache {
    file: PathBuf,
    entries: HashMap<String, (CacheKey, ModuleRecord)>,
}

/// FNV-1a, to name the cache file after the module directory.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn u64(&mut self) -> Option<u64> {
        self.bytes(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.bytes(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl ModuleCache {
    /// Opens (or starts) the cache for `module_dir` under `cache_dir`.
    pub fn open(cache_dir: &Path, module_dir: &str) -> ModuleCache {
        let file = cache_dir.join(format!("{:016x}.depmod-cache", fnv1a(module_dir)));
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|d| Self::decode(&d))
            .unwrap_or_default();
        ModuleCache { file, entries }
    }

    fn decode(data: &[u8]) -> Option<HashMap<String, (CacheKey, ModuleRecord)>> {
        let mut r = Reader { data, pos: 0 };
        if r.bytes(8)? != MAGIC {
            return None;
        }
        let count = r.u32()? as usize;
        let mut map = HashMap::with_capacity(count.min(1 << 20));
        for _ in 0..count {
            let path = r.string()?;
            let key = CacheKey {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                inode: r.u64()?,
                dev: r.u64()?,
            };
            let mut rec = ModuleRecord::default();
            for _ in 0..r.u32()? {
                rec.exports.push((r.string()?, r.u64()?));
            }
            for _ in 0..r.u32()? {
                rec.info.push((r.string()?, r.string()?));
            }
            for _ in 0..r.u32()? {
                rec.needs.push((r.string()?, r.u64()?, r.u8()? != 0));
            }
            map.insert(path, (key, rec));
        }
        Some(map)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cached record for `path` if the file is unchanged.
    pub fn get(&self, path: &str, key: &CacheKey) -> Option<ModuleRecord> {
        self.entries
            .get(path)
            .filter(|(k, _)| k == key)
            .map(|(_, r)| r.clone())
    }

    /// Adds fresh records and drops files no longer in the tree.
    pub fn update(&mut self, fresh: Vec<(String, CacheKey, ModuleRecord)>, keep: &[&str]) {
        for (path, key, rec) in fresh {
            self.entries.insert(path, (key, rec));
        }
        let keep: std::collections::HashSet<&str> = keep.iter().copied().collect();
        self.entries.retain(|p, _| keep.contains(p.as_str()));
    }

    /// Writes the cache atomically.
    pub fn save(&self) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(self.entries.len() * 2048);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (path, (key, rec)) in &self.entries {
            put_str(&mut out, path);
            for v in [key.size, key.mtime_ns as u64, key.inode, key.dev] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(rec.exports.len() as u32).to_le_bytes());
            for (n, crc) in &rec.exports {
                put_str(&mut out, n);
                out.extend_from_slice(&crc.to_le_bytes());
            }
            out.extend_from_slice(&(rec.info.len() as u32).to_le_bytes());
            for (k, v) in &rec.info {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
            out.extend_from_slice(&(rec.needs.len() as u32).to_le_bytes());
            for (n, crc, weak) in &rec.needs {
                put_str(&mut out, n);
                out.extend_from_slice(&crc.to_le_bytes());
                out.push(u8::from(*weak));
            }
        }
        write_atomically(&self.file, &out)
    }
}

const OUTPUT_MAGIC: &[u8; 8] = b"KMKDEPO1";

/// The index files of the last run, kept beside the module cache and
/// reused when a [`crate::scan::TreeScan::fingerprint`] matches: an
/// unchanged tree is re-indexed by writing these bytes, without reading a
/// single module.
///
/// Format: magic `KMKDEPO1`, u64 fingerprint, u32 diagnostic count,
/// (severity, text) strings, u32 file count, (name, u8 text flag, u64
/// length, bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedOutput {
    pub files: Vec<OutputFile>,
    /// (severity, message) as printed by the run that produced the files.
    pub diagnostics: Vec<(String, String)>,
}

fn output_path(cache_dir: &Path, module_dir: &str) -> PathBuf {
    cache_dir.join(format!("{:016x}.depmod-out", fnv1a(module_dir)))
}

/// Every index file depmod writes, in kmod's order.
pub const OUTPUT_NAMES: [&str; 10] = [
    "modules.dep",
    "modules.dep.bin",
    "modules.alias",
    "modules.alias.bin",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.builtin.bin",
    "modules.builtin.alias.bin",
    "modules.devname",
];

impl CachedOutput {
    /// The cached output for this fingerprint, if any.
    pub fn load(cache_dir: &Path, module_dir: &str, fingerprint: u64) -> Option<CachedOutput> {
        let data = std::fs::read(output_path(cache_dir, module_dir)).ok()?;
        let mut r = Reader {
            data: &data,
            pos: 0,
        };
        if r.bytes(8)? != OUTPUT_MAGIC || r.u64()? != fingerprint {
            return None;
        }
        let mut diagnostics = Vec::new();
        for _ in 0..r.u32()? {
            diagnostics.push((r.string()?, r.string()?));
        }
        let mut files = Vec::new();
        for _ in 0..r.u32()? {
            let name = r.string()?;
            let name = *OUTPUT_NAMES.iter().find(|n| **n == name)?;
            let text = r.u8()? != 0;
            let len = usize::try_from(r.u64()?).ok()?;
            let contents = r.bytes(len)?.to_vec();
            files.push(OutputFile {
                name,
                contents,
                text,
            });
        }
        Some(CachedOutput { files, diagnostics })
    }

    /// Stores the output of a run (atomically).
    pub fn store(
        &self,
        cache_dir: &Path,
        module_dir: &str,
        fingerprint: u64,
    ) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(
            self.files
                .iter()
                .map(|f| f.contents.len() + 64)
                .sum::<usize>()
                + 64,
        );
        out.extend_from_slice(OUTPUT_MAGIC);
        out.extend_from_slice(&fingerprint.to_le_bytes());
        out.extend_from_slice(&(self.diagnostics.len() as u32).to_le_bytes());
        for (sev, msg) in &self.diagnostics {
            put_str(&mut out, sev);
            put_str(&mut out, msg);
        }
        out.extend_from_slice(&(self.files.len() as u32).to_le_bytes());
        for f in &self.files {
            put_str(&mut out, f.name);
            out.push(u8::from(f.text));
            out.extend_from_slice(&(f.contents.len() as u64).to_le_bytes());
            out.extend_from_slice(&f.contents);
        }
        write_atomically(&output_path(cache_dir, module_dir), &out)
    }
}

/// Through `kmodkit_commit`: the temporary is removed on error and on
/// signals, and the directory is fsynced after the rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    kmodkit_commit::replace_file(path, bytes, None)?;
    Ok(())
}
