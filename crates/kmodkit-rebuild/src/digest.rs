//! Content digests that key the build cache: SHA-256 over length-prefixed
//! named fields, so no two different inputs hash the same stream.

use std::path::Path;

use sha2::{Digest as _, Sha256};

#[derive(Clone, Default)]
pub struct Digest(Sha256);

impl Digest {
    pub fn new() -> Digest {
        Digest(Sha256::new())
    }

    pub fn field(&mut self, name: &str, value: &[u8]) {
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((value.len() as u64).to_le_bytes());
        self.0.update(value);
    }

    pub fn hex(self) -> String {
        self.0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The digest of a source tree: every path (sorted), its type, mode and
/// content or link text. Build products a previous in-place build left
/// behind would change it; DKMS trees under /usr/src are never built in.
pub fn tree_digest(dir: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Digest::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            }
            files.push((e.path(), ft));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, ft) in files {
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        let rel = rel.as_os_str().as_encoded_bytes();
        if ft.is_symlink() {
            d.field("link", rel);
            d.field(
                "text",
                std::fs::read_link(&path)?.as_os_str().as_encoded_bytes(),
            );
        } else if ft.is_dir() {
            d.field("dir", rel);
        } else {
            let meta = std::fs::metadata(&path)?;
            d.field("file", rel);
            d.field("mode", &(meta.permissions().mode() & 0o777).to_le_bytes());
            d.field("data", &std::fs::read(&path)?);
        }
    }
    Ok(d.hex())
}
