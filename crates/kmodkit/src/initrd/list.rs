//! `initrd examine` (one row per segment) and `initrd ls` (names, or
//! `-l` rows like `cpio -tv`, or JSON).

use std::io::{self, BufWriter, Write};

use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::read::{self, Entry, Visitor};
use kmodkit_initramfs::Error;
use serde::Serialize;

use super::args::{ExamineArgs, LsArgs};
use super::{check_segments, open, read_opts, Selection};
use crate::progress::Bar;

struct Nothing;
impl Visitor for Nothing {
    fn entry(&mut self, _: &Entry<'_>) -> Result<bool, Error> {
        Ok(false)
    }
}

pub(super) fn examine(a: &ExamineArgs) -> anyhow::Result<bool> {
    let image = open(&a.image)?;
    let bar = Bar::new("examine");
    let segs = read::read_image(&image, &read_opts(&a.read), &bar, &mut Nothing)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if a.json {
        serde_json::to_writer_pretty(&mut out, &segs)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{:>7} {:>12} {:>12} {:<6} {:>8} {:>14}  format",
            "segment", "offset", "size", "comp", "entries", "uncompressed"
        )?;
        for s in &segs {
            writeln!(
                out,
                "{:>7} {:>12} {:>12} {:<6} {:>8} {:>14}  {}",
                s.index,
                s.offset,
                s.size,
                s.compression.name(),
                s.entries,
                s.uncompressed_size,
                match s.format {
                    Some(Format::Crc) => "crc",
                    _ => "newc",
                }
            )?;
        }
        for s in &segs {
            if let Some(n) = &s.kernel_note {
                diag!("kmodkit: warning: segment {}: {n}", s.index);
            }
        }
    }
    out.flush()?;
    Ok(true)
}

#[derive(Serialize)]
struct JsonEntry {
    segment: usize,
    name: String,
    #[serde(rename = "type")]
    file_type: FileType,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    size: u32,
    mtime: u32,
    ino: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rdev: Option<(u32, u32)>,
}

struct Lister<'a, W: Write> {
    out: W,
    sel: &'a Selection,
    long: bool,
    numeric: bool,
    json: bool,
    first: bool,
    now: i64,
    users: Names,
    groups: Names,
}

impl<W: Write> Visitor for Lister<'_, W> {
    fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
        if !self.sel.matches(e.segment, e.name) {
            return Ok(false);
        }
        let r = if self.json {
            self.json_entry(e)
        } else if self.long {
            self.long_entry(e)
        } else {
            self.out
                .write_all(e.name)
                .and_then(|()| self.out.write_all(b"\n"))
        };
        r.map_err(|err| Error::write("(standard output)", err))?;
        Ok(false)
    }
}

impl<W: Write> Lister<'_, W> {
    fn json_entry(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let h = e.header;
        let j = JsonEntry {
            segment: e.segment,
            name: e.name_lossy(),
            file_type: e.file_type(),
            mode: h.mode & 0o7777,
            uid: h.uid,
            gid: h.gid,
            nlink: h.nlink,
            size: h.filesize,
            mtime: h.mtime,
            ino: h.ino,
            link_target: e
                .link_target
                .map(|t| String::from_utf8_lossy(t).into_owned()),
            rdev: matches!(e.file_type(), FileType::CharDevice | FileType::BlockDevice)
                .then_some((h.rdev_major, h.rdev_minor)),
        };
        self.out
            .write_all(if self.first { b"[\n" } else { b",\n" })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &j).map_err(io::Error::other)
    }

    /// GNU cpio's long_format() (src/util.c): mode string, links, owner,
    /// group, size or major/minor, ctime-style date (year instead of the
    /// time for dates more than 6 months away), name, `-> target`.
    fn long_entry(&mut self, e: &Entry<'_>) -> io::Result<()> {
        let h = e.header;
        let ft = e.file_type();
        let mut mode = String::with_capacity(10);
        mode.push(ft.letter());
        let m = h.mode;
        let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
        mode.push(bit(0o400, 'r'));
        mode.push(bit(0o200, 'w'));
        mode.push(match (m & 0o100 != 0, m & 0o4000 != 0) {
            (true, true) => 's',
            (false, true) => 'S',
            (true, false) => 'x',
            _ => '-',
        });
        mode.push(bit(0o040, 'r'));
        mode.push(bit(0o020, 'w'));
        mode.push(match (m & 0o010 != 0, m & 0o2000 != 0) {
            (true, true) => 's',
            (false, true) => 'S',
            (true, false) => 'x',
            _ => '-',
        });
        mode.push(bit(0o004, 'r'));
        mode.push(bit(0o002, 'w'));
        mode.push(match (m & 0o001 != 0, m & 0o1000 != 0) {
            (true, true) => 't',
            (false, true) => 'T',
            (true, false) => 'x',
            _ => '-',
        });
        write!(self.out, "{mode} {:>3} ", h.nlink)?;
        if self.numeric {
            write!(self.out, "{:<8} {:<8} ", h.uid, h.gid)?;
        } else {
            let u = self.users.name(h.uid);
            let g = self.groups.name(h.gid);
            write!(self.out, "{:<8.8} {:<8.8} ", u, g)?;
        }
        if matches!(ft, FileType::CharDevice | FileType::BlockDevice) {
            write!(self.out, "{:>3}, {:>3} ", h.rdev_major, h.rdev_minor)?;
        } else {
            write!(self.out, "{:>8} ", h.filesize)?;
        }
        let when = i64::from(h.mtime);
        let six_months = 6 * 30 * 24 * 60 * 60;
        let (y, mo, d, hh, mm, _ss) = civil(when);
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        if self.now - when > six_months || self.now - when < 0 {
            write!(self.out, "{} {:>2}  {y} ", MONTHS[mo as usize - 1], d)?;
        } else {
            write!(
                self.out,
                "{} {:>2} {hh:02}:{mm:02} ",
                MONTHS[mo as usize - 1],
                d
            )?;
        }
        self.out.write_all(e.name)?;
        if let Some(t) = e.link_target {
            self.out.write_all(b" -> ")?;
            self.out.write_all(t)?;
        }
        self.out.write_all(b"\n")
    }
}

/// UTC calendar fields of a Unix time (days-from-civil inverse, Howard
/// Hinnant's algorithm).
fn civil(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

/// uid/gid -> name from /etc/passwd or /etc/group (the CLI's view of the
/// host, as cpio -tv shows it).
struct Names(std::collections::HashMap<u32, String>);

impl Names {
    fn load(path: &str) -> Names {
        let mut m = std::collections::HashMap::new();
        if let Ok(text) = std::fs::read_to_string(path) {
            for line in text.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() >= 3 {
                    if let Ok(id) = f[2].parse::<u32>() {
                        m.entry(id).or_insert_with(|| f[0].to_string());
                    }
                }
            }
        }
        Names(m)
    }
    fn name(&self, id: u32) -> String {
        self.0.get(&id).cloned().unwrap_or_else(|| id.to_string())
    }
}

pub(super) fn ls(a: &LsArgs) -> anyhow::Result<bool> {
    let image = open(&a.image)?;
    let sel = Selection::new(&a.globs, &a.segments)?;
    let stdout = io::stdout().lock();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut l = Lister {
        out: BufWriter::with_capacity(1 << 16, stdout),
        sel: &sel,
        long: a.long,
        numeric: a.numeric,
        json: a.json,
        first: true,
        now,
        users: if a.long && !a.numeric {
            Names::load("/etc/passwd")
        } else {
            Names(Default::default())
        },
        groups: if a.long && !a.numeric {
            Names::load("/etc/group")
        } else {
            Names(Default::default())
        },
    };
    let bar = Bar::new("ls");
    let segs = read::read_image(&image, &read_opts(&a.read), &bar, &mut l)?;
    if a.json {
        l.out
            .write_all(if l.first { b"[\n]\n" } else { b"\n]\n" })?;
    }
    l.out.flush()?;
    check_segments(&a.segments, &segs)?;
    Ok(true)
}
