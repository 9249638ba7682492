//! The build cache: `CACHE/KEY/` holds a build's stripped, unsigned
//! modules (`DEST_NAME.ko`), its `Module.symvers` and its log; signing
//! and compression happen at install, so one entry serves any key pair.

use std::path::{Path, PathBuf};

use super::{io_err, RunError};
use crate::conf::{ModuleSpec, Recipe};

/// The build cache: `CACHE/KEY/` holds the stripped modules
/// (`DEST_NAME.ko`), the build's `Module.symvers` and the log.
pub(super) fn cache_entry(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(key)
}

pub(super) fn cached_products(
    cache_dir: &Path,
    key: &str,
    recipe: &Recipe,
) -> Option<Vec<(ModuleSpec, PathBuf)>> {
    let dir = cache_entry(cache_dir, key);
    let specs: Vec<ModuleSpec> = if recipe.discover_modules {
        let text = std::fs::read_to_string(dir.join("modules")).ok()?;
        text.lines()
            .map(|n| ModuleSpec {
                built_name: n.to_string(),
                built_location: String::new(),
                dest_name: n.to_string(),
                dest_location: "/updates".into(),
                strip: true,
            })
            .collect()
    } else {
        recipe.modules.clone()
    };
    specs
        .into_iter()
        .map(|s| {
            let p = dir.join(format!("{}.ko", s.dest_name));
            p.is_file().then_some((s, p))
        })
        .collect()
}

/// Stores a finished build in the cache (a complete directory renamed
/// into place, so a reader never sees half of one).
pub(super) fn store_cache(
    cache_dir: &Path,
    key: &str,
    products: &[(ModuleSpec, PathBuf)],
    symvers: Option<&Path>,
    log: &Path,
) -> Result<PathBuf, RunError> {
    std::fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let final_dir = cache_entry(cache_dir, key);
    let tmp = cache_dir.join(format!(".{key}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let mut names = String::new();
    for (spec, path) in products {
        let to = tmp.join(format!("{}.ko", spec.dest_name));
        std::fs::copy(path, &to).map_err(io_err(&to))?;
        names.push_str(&spec.dest_name);
        names.push('\n');
    }
    std::fs::write(tmp.join("modules"), names).map_err(io_err(&tmp))?;
    if let Some(s) = symvers {
        std::fs::copy(s, tmp.join("Module.symvers")).map_err(io_err(s))?;
    }
    let _ = std::fs::copy(log, tmp.join("build.log"));
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    Ok(final_dir)
}
