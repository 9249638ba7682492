//! `initrd create` and `initrd repack`: images written atomically.

use std::io::{self, Write};
use std::path::Path;

use anyhow::Context;
use kmodkit_commit::Backup;
use kmodkit_initramfs::compression::EncodeOptions;
use kmodkit_initramfs::cpio::Format;
use kmodkit_initramfs::create::{self, CreateOptions, SegmentSpec};
use kmodkit_initramfs::Compression;

use super::args::{CompressArg, CreateArgs, EncodeFlags, FormatArg, RepackArgs};
use super::{open, read_opts_threaded};
use crate::progress::Bar;

fn encode_opts(e: &EncodeFlags) -> EncodeOptions {
    EncodeOptions {
        compression: e.compress.unwrap_or(CompressArg::Zstd).compression(),
        level: e.level,
        threads: e.threads,
    }
}

fn source_entries(input: &Path) -> anyhow::Result<(Vec<create::SourceEntry>, bool)> {
    let meta = std::fs::metadata(input).with_context(|| format!("{}", input.display()))?;
    if meta.is_dir() {
        Ok((create::scan_dir(input)?, false))
    } else {
        let text = std::fs::read_to_string(input)
            .with_context(|| format!("{}: cannot read the manifest", input.display()))?;
        Ok((create::parse_manifest(&text, input)?, true))
    }
}

pub(super) fn create_cmd(a: &CreateArgs) -> anyhow::Result<bool> {
    let clamp =
        match a.source_date_epoch {
            Some(t) => Some(t),
            None => match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) if !v.is_empty() => Some(v.parse::<u64>().with_context(|| {
                    format!("SOURCE_DATE_EPOCH='{v}' is not a number of seconds")
                })?),
                _ => None,
            },
        };
    let format = match a.format {
        FormatArg::Newc => Format::Newc,
        FormatArg::Crc => Format::Crc,
    };
    let base = CreateOptions {
        format,
        keep_owners: a.keep_owners,
        clamp_mtime: clamp,
    };
    let plan = |input: &Path| -> anyhow::Result<Vec<create::PlannedEntry>> {
        let (entries, manifest) = source_entries(input)?;
        let opts = if manifest {
            create::manifest_options(base)
        } else {
            base
        };
        Ok(create::plan(entries, &opts)?)
    };
    let early = a.early.as_deref().map(plan).transpose()?;
    let main = plan(&a.input)?;
    let encode = encode_opts(&a.encode);
    let mut segments = Vec::new();
    if let Some(early) = &early {
        segments.push(SegmentSpec {
            entries: early,
            format,
            encode: EncodeOptions {
                compression: Compression::None,
                level: None,
                threads: 1,
            },
        });
    }
    segments.push(SegmentSpec {
        entries: &main,
        format,
        encode,
    });
    let bar = Bar::new("create");
    create::write_atomically(&a.output, Backup::None, None, |f| {
        create::write_segments(&segments, f, &bar)
    })?;
    Ok(true)
}

pub(super) fn repack(a: &RepackArgs) -> anyhow::Result<bool> {
    let image = open(&a.image)?;
    let out = a.output.clone().unwrap_or_else(|| a.image.clone());
    let backup = if a.output.is_none() && !a.no_backup {
        Backup::Keep
    } else {
        Backup::None
    };
    let bar = Bar::new("repack");
    let recompress = create::RecompressOptions {
        compression: a.encode.compress.map(CompressArg::compression),
        level: a.encode.level,
        threads: a.encode.threads,
    };
    let committed = create::write_atomically(&out, backup, None, |f| {
        create::repack(&image, &read_opts_threaded(&a.read), &recompress, &bar, f).map(|_| ())
    })
    .with_context(|| {
        format!(
            "{}: repack failed; nothing was changed (no temporary file or backup left)",
            a.image.display()
        )
    })?;
    let mut stdout = io::stdout().lock();
    write!(stdout, "wrote {}", committed.path.display())?;
    if let Some(b) = &committed.backup {
        write!(stdout, "; original kept as {}", b.display())?;
    }
    writeln!(stdout)?;
    Ok(true)
}
