//! Writing the result. `Append` adds one compressed segment at the end: the
//! kernel unpacks segments in order and a later file replaces an earlier
//! one (init/initramfs.c opens with O_TRUNC), so the original bytes stay
//! as they are. `Rebuild` unpacks the compressed segments, merges the
//! additions and compresses once more with the original compression;
//! uncompressed (early microcode) segments are copied unchanged.
//!
//! Either way the image is written through `kmodkit_commit::Staged`: a
//! temporary file beside it (removed on error and on SIGINT/SIGTERM),
//! fsynced and renamed over it. The backup is a hard link to the original
//! inode made at the commit, after the new image is complete (no copy, and
//! none left when the write fails); an existing backup is never replaced
//! (the next one is `IMAGE.bak.1`).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kmodkit_commit::{fault_point, Backup};
use kmodkit_initramfs::compression::EncodeOptions;
use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::create::{self, CreateOptions, SegmentSpec, SourceEntry};
use kmodkit_initramfs::extract::{self, ExtractOptions};
use kmodkit_initramfs::read::{Image, NoProgress, Progress, ReadOptions};
use kmodkit_initramfs::Compression;
use serde::Serialize;

use crate::plan::{Content, Plan};
use crate::InjectError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Append,
    Rebuild,
}

#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub mode: Mode,
    /// Write here instead of replacing the image.
    pub output: Option<PathBuf>,
    /// Keep the original as `IMAGE.bak` (in-place only).
    pub backup: bool,
    /// Compression level of the new segment (the format's default when
    /// `None`).
    pub level: Option<i32>,
    /// Modification time of the added entries.
    pub mtime: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub path: PathBuf,
    pub backup: Option<PathBuf>,
    pub mode: Mode,
    pub compression: Compression,
    pub size_before: u64,
    pub size_after: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> InjectError + '_ {
    move |source| InjectError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Entries for the additions; generated content is written to the scratch
/// directory first (the archive writer reads files).
fn addition_entries(plan: &Plan, mtime: u64) -> Result<Vec<SourceEntry>, InjectError> {
    let gen_dir = plan.scratch.path().join("generated");
    fs::create_dir_all(&gen_dir).map_err(io_err(&gen_dir))?;
    let mut entries = Vec::new();
    for (i, a) in plan.additions.iter().enumerate() {
        let (source, size) = match &a.content {
            Content::Source(p) => {
                let size = fs::metadata(p).map_err(io_err(p))?.len();
                (p.clone(), size)
            }
            Content::Generated(bytes) => {
                let p = gen_dir.join(i.to_string());
                fs::write(&p, bytes).map_err(io_err(&p))?;
                (p, bytes.len() as u64)
            }
        };
        entries.push(SourceEntry {
            mtime,
            source: Some(source),
            size,
            ..SourceEntry::new(a.path.clone().into_bytes(), FileType::Regular, a.mode)
        });
    }
    Ok(entries)
}

/// Directories the planner adds for missing parents get the usual 0755;
/// existing ones are left out so their modes in the image stay.
fn drop_existing_dirs(plan: &Plan, planned: &mut Vec<create::PlannedEntry>) {
    planned.retain(|e| {
        e.header.file_type() != FileType::Directory
            || !plan.facts.is_dir(&String::from_utf8_lossy(&e.name))
    });
}

/// Writes the plan's result. Nothing is changed when an error is returned.
pub fn write(
    plan: &Plan,
    opts: &WriteOptions,
    progress: &dyn Progress,
) -> Result<Written, InjectError> {
    let target = opts.output.clone().unwrap_or_else(|| plan.image.clone());
    let backup = if opts.output.is_none() && opts.backup {
        Backup::Keep
    } else {
        Backup::None
    };
    let compression = plan.facts.main_compression();
    let encode = EncodeOptions {
        compression,
        level: opts.level,
        threads: 0,
    };
    let size_before = plan.facts.len;
    let original_mode = fs::metadata(&plan.image)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o600);
    let create_opts = CreateOptions {
        format: Format::Newc,
        keep_owners: false,
        clamp_mtime: None,
    };
    let committed = match opts.mode {
        Mode::Append => {
            let entries = addition_entries(plan, opts.mtime)?;
            let mut planned = create::plan(entries, &create_opts)?;
            drop_existing_dirs(plan, &mut planned);
            // Directories the planner adds for missing parents carry the
            // run's time (SOURCE_DATE_EPOCH or now), like the files.
            for e in &mut planned {
                if e.header.file_type() == FileType::Directory {
                    e.header.mtime = u32::try_from(opts.mtime).unwrap_or(u32::MAX);
                }
            }
            let last_lz4 =
                plan.facts.segments.last().map(|s| s.compression) == Some(Compression::Lz4);
            create::write_atomically(&target, backup, Some(original_mode), |out| {
                let mut original = fs::File::open(&plan.image)
                    .map_err(|e| kmodkit_initramfs::Error::write(&plan.image, e))?;
                copy_all(&mut original, out, &plan.image)?;
                fault_point("add-drivers-write");
                if last_lz4 {
                    // The legacy lz4 frame has no end marker: a zero block
                    // size ends it (decompress_unlz4.c).
                    out.write_all(&[0u8; 4])
                        .map_err(kmodkit_initramfs::Error::write_output)?;
                }
                new_segment(&planned, encode, out, progress)
            })?
        }
        Mode::Rebuild => {
            let tree = plan.scratch.path().join("rebuild");
            let image = Image::open(&plan.image)?;
            let compressed: Vec<usize> = plan
                .facts
                .segments
                .iter()
                .filter(|s| s.compression != Compression::None)
                .map(|s| s.index)
                .collect();
            let report = extract::extract(
                &image,
                &ReadOptions::default(),
                &NoProgress,
                &tree,
                &ExtractOptions::default(),
                &|seg, _| compressed.contains(&seg),
            )?;
            if let Some(s) = report.skipped.first() {
                return Err(InjectError::Invalid(format!(
                    "{}: --rebuild cannot keep entry {} of segment {} ({}); use --append, which keeps the original bytes",
                    plan.image.display(),
                    s.name,
                    s.segment,
                    s.reason
                )));
            }
            for a in &plan.additions {
                let dst = tree.join(&a.path);
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let _ = fs::remove_file(&dst);
                match &a.content {
                    Content::Source(p) => {
                        fs::copy(p, &dst).map_err(io_err(&dst))?;
                    }
                    Content::Generated(b) => fs::write(&dst, b).map_err(io_err(&dst))?,
                }
                fs::set_permissions(&dst, fs::Permissions::from_mode(a.mode))
                    .map_err(io_err(&dst))?;
            }
            let mut entries = create::scan_dir(&tree)?;
            // The scratch tree's own root is no part of the image: the
            // image's `.` entry is kept as it was (or none, if it had none).
            entries.retain(|e| e.name != b"." || plan.facts.root_dir.is_some());
            if let (Some(dot), Some(root)) = (
                entries.iter_mut().find(|e| e.name == b"."),
                plan.facts.root_dir,
            ) {
                dot.perm = root.mode;
                dot.uid = root.uid;
                dot.gid = root.gid;
                dot.mtime = u64::from(root.mtime);
            }
            let keep_owners = CreateOptions {
                keep_owners: true,
                ..create_opts
            };
            let planned = create::plan(entries, &keep_owners)?;
            let early: Vec<(u64, u64)> = plan
                .facts
                .segments
                .iter()
                .filter(|s| s.compression == Compression::None)
                .map(|s| (s.offset, s.size))
                .collect();
            create::write_atomically(&target, backup, Some(original_mode), |out| {
                let mut original = fs::File::open(&plan.image)
                    .map_err(|e| kmodkit_initramfs::Error::write(&plan.image, e))?;
                let mut written = 0u64;
                for (offset, size) in &early {
                    use std::io::Seek;
                    original
                        .seek(std::io::SeekFrom::Start(*offset))
                        .map_err(|e| kmodkit_initramfs::Error::write(&plan.image, e))?;
                    let mut part = (&mut original).take(*size);
                    written += copy_all(&mut part, out, &plan.image)?;
                }
                let pad = (4 - written % 4) % 4;
                out.write_all(&[0u8; 4][..pad as usize])
                    .map_err(kmodkit_initramfs::Error::write_output)?;
                fault_point("add-drivers-write");
                new_segment(&planned, encode, out, progress)
            })?
        }
    };
    Ok(Written {
        size_after: fs::metadata(&target).map(|m| m.len()).unwrap_or(0),
        path: target,
        backup: committed.backup,
        mode: opts.mode,
        compression,
        size_before,
    })
}

/// The segment with the additions, after the bytes kept from the image.
fn new_segment(
    planned: &[create::PlannedEntry],
    encode: EncodeOptions,
    out: &mut create::OutputFile<'_>,
    progress: &dyn Progress,
) -> Result<(), kmodkit_initramfs::Error> {
    let spec = SegmentSpec {
        entries: planned,
        format: Format::Newc,
        encode,
    };
    create::write_segments(&[spec], out, progress)?;
    fault_point("add-drivers-written");
    Ok(())
}

fn copy_all(
    from: &mut impl Read,
    to: &mut impl Write,
    path: &Path,
) -> Result<u64, kmodkit_initramfs::Error> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let got = from
            .read(&mut buf)
            .map_err(|e| kmodkit_initramfs::Error::write(path, e))?;
        if got == 0 {
            return Ok(n);
        }
        to.write_all(&buf[..got])
            .map_err(kmodkit_initramfs::Error::write_output)?;
        n += got as u64;
    }
}
