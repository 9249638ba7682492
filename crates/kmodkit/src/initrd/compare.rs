//! `initrd diff`.

use std::io::{self, BufWriter, Write};

use kmodkit_initramfs::diff;
use kmodkit_initramfs::read;

use super::args::DiffArgs;
use super::{open, read_opts};

pub(super) fn diff_cmd(a: &DiffArgs) -> anyhow::Result<bool> {
    let (ia, ib) = (open(&a.a)?, open(&a.b)?);
    let opts = read_opts(&a.read);
    // Both images at once: each reader uses a thread for decompression.
    let (ta, tb) = std::thread::scope(|s| {
        let ha = s.spawn(|| diff::tree(&ia, &opts, &read::NoProgress));
        let tb = diff::tree(&ib, &opts, &read::NoProgress);
        (ha.join().expect("diff thread"), tb)
    });
    let (ta, tb) = (ta?, tb?);
    let d = diff::compare(&ta, &tb, a.mtime);
    let mut out = BufWriter::new(io::stdout().lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &d)?;
        writeln!(out)?;
    } else {
        for x in &d {
            match x.kind {
                "added" => writeln!(out, "+ {}", x.path)?,
                "removed" => writeln!(out, "- {}", x.path)?,
                _ => writeln!(out, "M {} ({})", x.path, x.changes.join(", "))?,
            }
        }
    }
    out.flush()?;
    Ok(d.is_empty())
}
