//! Finding modules by name or alias in a `/lib/modules/<kver>` directory,
//! the way libkmod's `kmod_module_new_from_lookup` and
//! `kmod_module_new_from_name_lookup` do (kmod 30 `libkmod-module.c`,
//! `libkmod.c`), with no modprobe.d configuration (as `modinfo` runs).
//!
//! Lookup order for an alias: module names in `modules.dep.bin`; symbol
//! aliases (`symbol:foo`) in `modules.symbols.bin`; patterns in
//! `modules.alias.bin`; built-in names in `modules.builtin.bin`; built-in
//! aliases in `modules.builtin.alias.bin`. The first source with a match
//! wins.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::{Index, IndexError};

/// A module found by a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundModule {
    /// Normalised module name (`-` replaced by `_`).
    pub name: String,
    /// Path of the module file, or `None` for a built-in module.
    pub path: Option<PathBuf>,
}

/// Why a lookup failed (as opposed to finding nothing).
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("invalid alias '{0}': unbalanced '[' or ']'")]
    InvalidAlias(String),
    #[error(transparent)]
    Index(#[from] IndexError),
    // The OS error is in the message, not a source() (no doubled chain).
    #[error("{}: cannot read: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

/// A module directory such as `/lib/modules/6.1.0-56-amd64`.
/// Index files are read once per directory and kept.
#[derive(Debug)]
pub struct ModuleDirectory {
    dir: String,
    indexes: Mutex<HashMap<&'static str, Option<Arc<Index>>>>,
}

pub use crate::name::{module_name_from_path, normalize_module_name};

/// `alias_normalize`: `-` becomes `_` except inside `[...]`; unbalanced
/// brackets are an error.
pub fn normalize_alias(alias: &str) -> Result<String, LookupError> {
    let mut out = String::with_capacity(alias.len());
    let mut in_bracket = false;
    for c in alias.chars() {
        match c {
            '[' if !in_bracket => {
                in_bracket = true;
                out.push(c);
            }
            ']' if in_bracket => {
                in_bracket = false;
                out.push(c);
            }
            ']' => return Err(LookupError::InvalidAlias(alias.to_string())),
            '-' if !in_bracket => out.push('_'),
            _ => out.push(c),
        }
    }
    if in_bracket {
        return Err(LookupError::InvalidAlias(alias.to_string()));
    }
    Ok(out)
}

impl ModuleDirectory {
    /// `dir` is used verbatim when joining relative paths from
    /// `modules.dep`, so printed file names match kmod's byte for byte.
    pub fn new(dir: impl Into<String>) -> Self {
        ModuleDirectory {
            dir: dir.into(),
            indexes: Mutex::new(HashMap::new()),
        }
    }

    pub fn dir(&self) -> &str {
        &self.dir
    }

    fn index(&self, name: &'static str) -> Result<Option<Arc<Index>>, IndexError> {
        let mut cache = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(idx) = cache.get(name) {
            return Ok(idx.clone());
        }
        let idx = Index::open(format!("{}/{}", self.dir, name))?.map(Arc::new);
        cache.insert(name, idx.clone());
        Ok(idx)
    }

    /// The `modules.dep` line of a module (`path: deps...`), if any.
    pub fn dep_line(&self, name: &str) -> Result<Option<String>, LookupError> {
        let Some(idx) = self.index("modules.dep.bin")? else {
            return Ok(None);
        };
        Ok(idx
            .search(name.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The file of a module named in `modules.dep`, joined to the directory.
    pub fn path_of(&self, name: &str) -> Result<Option<PathBuf>, LookupError> {
        Ok(self.dep_line(name)?.map(|line| {
            let rel = line.split(':').next().unwrap_or("");
            if rel.starts_with('/') {
                PathBuf::from(rel)
            } else {
                PathBuf::from(format!("{}/{}", self.dir, rel))
            }
        }))
    }

    fn is_builtin_name(&self, name: &str) -> Result<bool, LookupError> {
        match self.index("modules.builtin.bin")? {
            Some(idx) => Ok(idx.search(name.as_bytes())?.is_some()),
            None => Ok(false),
        }
    }

    fn search_alias_index(
        &self,
        index: &'static str,
        alias: &str,
        builtin: bool,
    ) -> Result<Vec<FoundModule>, LookupError> {
        let Some(idx) = self.index(index)? else {
            return Ok(Vec::new());
        };
        idx.search_wild(alias.as_bytes())?
            .into_iter()
            .map(|v| {
                let name = String::from_utf8_lossy(&v.value).into_owned();
                let path = if builtin { None } else { self.path_of(&name)? };
                Ok(FoundModule { name, path })
            })
            .collect()
    }

    /// `kmod_module_new_from_lookup` without configuration files.
    pub fn lookup(&self, alias: &str) -> Result<Vec<FoundModule>, LookupError> {
        let alias = normalize_alias(alias)?;
        if !alias.contains(':') {
            if let Some(path) = self.path_of(&alias)? {
                return Ok(vec![FoundModule {
                    name: alias,
                    path: Some(path),
                }]);
            }
        }
        if alias.starts_with("symbol:") {
            let found = self.search_alias_index("modules.symbols.bin", &alias, false)?;
            if !found.is_empty() {
                return Ok(found);
            }
        }
        let found = self.search_alias_index("modules.alias.bin", &alias, false)?;
        if !found.is_empty() {
            return Ok(found);
        }
        if self.is_builtin_name(&alias)? {
            return Ok(vec![FoundModule {
                name: alias,
                path: None,
            }]);
        }
        self.search_alias_index("modules.builtin.alias.bin", &alias, true)
    }

    /// `kmod_module_new_from_name_lookup`: module names only, no aliases.
    pub fn lookup_name(&self, name: &str) -> Result<Option<FoundModule>, LookupError> {
        let name = normalize_module_name(name);
        if let Some(path) = self.path_of(&name)? {
            return Ok(Some(FoundModule {
                name,
                path: Some(path),
            }));
        }
        if self.is_builtin_name(&name)? {
            return Ok(Some(FoundModule { name, path: None }));
        }
        Ok(self
            .search_alias_index("modules.builtin.alias.bin", &name, true)?
            .into_iter()
            .next())
    }

    /// The `.modinfo` strings of a built-in module from
    /// `modules.builtin.modinfo` (`modname.key=value`, NUL-separated): the
    /// first consecutive run of strings for that module, prefix removed.
    /// `Ok(None)` when the file is missing or does not list the module.
    pub fn builtin_modinfo(&self, name: &str) -> Result<Option<Vec<Vec<u8>>>, LookupError> {
        let path = PathBuf::from(format!("{}/modules.builtin.modinfo", self.dir));
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(cause) => return Err(LookupError::Io { path, cause }),
        };
        let mut strings = data.split(|&b| b == 0).filter(|s| !s.is_empty()).peekable();
        let prefix_of = |s: &[u8]| s.iter().position(|&b| b == b'.').map(|n| s[..n].to_vec());
        while let Some(s) = strings.next() {
            let Some(module) = prefix_of(s) else {
                return Ok(None); // kmod stops at a string without a module prefix
            };
            if module != name.as_bytes() {
                continue;
            }
            let mut out = vec![s[module.len() + 1..].to_vec()];
            while let Some(next) = strings.peek() {
                if prefix_of(next).as_deref() != Some(module.as_slice()) {
                    break;
                }
                out.push(next[module.len() + 1..].to_vec());
                strings.next();
            }
            return Ok(Some(out));
        }
        Ok(None)
    }
}
