//! `kmodkit initrd`: the command line of the initramfs engine
//! (kmodkit-initramfs). Argument definitions live here so the man page and
//! completions include them; all format knowledge is in the library.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use kmodkit_commit::Backup;
use kmodkit_initramfs::compression::EncodeOptions;
use kmodkit_initramfs::cpio::{FileType, Format};
use kmodkit_initramfs::create::{self, CreateOptions, SegmentSpec};
use kmodkit_initramfs::extract::{self, ExtractOptions};
use kmodkit_initramfs::read::{self, Entry, Image, Progress, ReadOptions, SegmentSummary, Visitor};
use kmodkit_initramfs::{diff, Compression, Error};
use serde::Serialize;

#[derive(Debug, Args)]
pub struct InitrdArgs {
    #[command(subcommand)]
    pub command: InitrdCommand,
}

#[derive(Debug, Subcommand)]
pub enum InitrdCommand {
    /// One row per segment: offset, size, compression, entries, uncompressed size
    #[command(
        after_help = "Examples:\n  kmodkit initrd examine /boot/initrd.img-$(uname -r)\n  kmodkit initrd examine --json initrd.img | jq '.[].compression'"
    )]
    Examine(ExamineArgs),
    /// List the entries (names; -l like `cpio -tv`)
    #[command(
        after_help = "Examples:\n  kmodkit initrd ls initrd.img\n  kmodkit initrd ls -l --segment 2 initrd.img \\\n    'usr/lib/modules/*/kernel/drivers/net/*'"
    )]
    Ls(LsArgs),
    /// Extract entries into a directory, never writing outside it
    #[command(
        after_help = "Device nodes are only made when running as root; otherwise they are \
skipped with a warning. Names with '..', and entries whose parent is a symlink, stop the extraction.\n\n\
Examples:\n  kmodkit initrd extract initrd.img /tmp/root\n  kmodkit initrd extract --segment 1 initrd.img /tmp/early"
    )]
    Extract(ExtractArgs),
    /// Write one file's content to standard output
    #[command(
        after_help = "Exit status: 0 written, 1 no such file in the image (or an error), 2 usage error.\n\n\
Examples:\n  kmodkit initrd cat initrd.img etc/cmdline.d/50-kmodkit-net.conf\n  \
kmodkit initrd cat initrd.img usr/lib/modules/$(uname -r)/modules.dep"
    )]
    Cat(CatArgs),
    /// Create an image from a directory or a gen_init_cpio manifest
    #[command(
        long_about = "Create an image from a directory or a manifest. Reproducible by default: \
entries sorted by name, inode numbers renumbered, hard links kept, owners 0 (unless \
--keep-owners), modification times clamped to SOURCE_DATE_EPOCH (environment or \
--source-date-epoch). The same input gives the same bytes.\n\n\
MANIFEST is the kernel's gen_init_cpio format, one entry per line (modes octal; \
relative locations are taken from the manifest's directory; missing parent directories \
are added):\n  file  <name> <location> <mode> <uid> <gid> [<hard links>...]\n  \
dir   <name> <mode> <uid> <gid>\n  nod   <name> <mode> <uid> <gid> <b|c> <maj> <min>\n  \
slink <name> <target> <mode> <uid> <gid>\n  pipe  <name> <mode> <uid> <gid>\n  \
sock  <name> <mode> <uid> <gid>",
        after_help = "Examples:\n  kmodkit initrd create ./root -o initrd.img --compress zstd --level 19\n  \
kmodkit initrd create ./root --early ./ucode -o initrd.img\n  kmodkit initrd create initramfs.list -o initrd.img --compress xz"
    )]
    Create(CreateArgs),
    /// Recompress an image's compressed segments (each keeps its compression unless -c; early segments stay as they are)
    #[command(
        after_help = "The image is replaced atomically; the original is kept as IMAGE.bak (IMAGE.bak.N \
when that exists) unless --no-backup or -o.\n\n\
Examples:\n  kmodkit initrd repack /boot/initrd.img-$(uname -r)\n  \
kmodkit initrd repack -c zstd --level 19 initrd.img -o initrd-small.img"
    )]
    Repack(RepackArgs),
    /// Show what differs between two images once unpacked
    #[command(
        after_help = "Exit status: 0 no differences, 1 differences found, 2 error (as diff(1)).\n\n\
Examples:\n  kmodkit initrd diff initrd.img.bak initrd.img\n  \
kmodkit initrd diff --json old.img new.img | jq '.[].path'"
    )]
    Diff(DiffArgs),
    /// Put NIC/InfiniBand drivers (with dependencies, firmware, options and network settings) into an existing image
    #[command(long_about = crate::add_drivers::LONG_ABOUT, after_help = crate::add_drivers::AFTER_HELP)]
    AddDrivers(crate::add_drivers::AddDriversArgs),
    /// Which modules an image carries, which it loads and in what order
    Modules(crate::add_drivers::ModulesArgs),
}

#[derive(Debug, Args)]
pub struct ReadFlags {
    /// Stop when an image decompresses to more than SIZE bytes (K, M, G
    /// suffixes); protects against decompression bombs
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = parse_size)]
    pub max_size: u64,
}

#[derive(Debug, Args)]
pub struct ExamineArgs {
    /// The initramfs image (any compression, several segments)
    pub image: PathBuf,
    /// Print JSON (an array, one object per segment)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// The initramfs image (any compression, several segments)
    pub image: PathBuf,
    /// Only entries matching one of these globs (`*` does not cross `/`;
    /// a leading `/` or `./` in names is ignored)
    #[arg(value_name = "GLOB")]
    pub globs: Vec<String>,
    /// Long listing like `cpio -tv` (times in UTC)
    #[arg(short = 'l', long)]
    pub long: bool,
    /// Numeric owners in the long listing (like `cpio -tvn`)
    #[arg(short = 'n', long)]
    pub numeric: bool,
    /// Only these segments (1-based, as `examine` numbers them; repeatable)
    #[arg(short = 's', long = "segment", value_name = "N")]
    pub segments: Vec<usize>,
    /// Print JSON (an array, one object per entry)
    #[arg(long, conflicts_with = "long")]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    /// The initramfs image (any compression, several segments)
    pub image: PathBuf,
    /// Target directory (created when missing)
    pub dir: PathBuf,
    /// Only entries matching one of these globs
    #[arg(value_name = "GLOB")]
    pub globs: Vec<String>,
    /// Only these segments (1-based; repeatable)
    #[arg(short = 's', long = "segment", value_name = "N")]
    pub segments: Vec<usize>,
    /// Do not set owners from the archive (the default unless root)
    #[arg(long)]
    pub no_same_owner: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Args)]
pub struct CatArgs {
    /// The initramfs image (any compression, several segments)
    pub image: PathBuf,
    /// The path inside the image (as `ls` prints it)
    pub path: String,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Bzip2,
    Lzma,
    Xz,
    Lz4,
    Zstd,
}

impl CompressArg {
    fn compression(self) -> Compression {
        match self {
            CompressArg::None => Compression::None,
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Bzip2 => Compression::Bzip2,
            CompressArg::Lzma => Compression::Lzma,
            CompressArg::Xz => Compression::Xz,
            CompressArg::Lz4 => Compression::Lz4,
            CompressArg::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Newc,
    Crc,
}

#[derive(Debug, Args)]
pub struct EncodeFlags {
    /// Compression of the main segment (create: zstd when not given;
    /// repack: each segment keeps its own when not given)
    #[arg(short = 'c', long = "compress", value_enum)]
    pub compress: Option<CompressArg>,
    /// Compression level (default: the compressor's own default)
    #[arg(short = 'L', long)]
    pub level: Option<i32>,
    /// Compression threads for zstd and xz (0: all cores; the output does
    /// not depend on it)
    #[arg(long, default_value_t = 0)]
    pub threads: u32,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A directory, or a gen_init_cpio manifest file
    #[arg(value_name = "DIR|MANIFEST")]
    pub input: PathBuf,
    /// Output image (written to a temporary file, then renamed)
    #[arg(short = 'o', long, value_name = "IMG")]
    pub output: PathBuf,
    /// A directory (or manifest) for an uncompressed early segment placed
    /// first, e.g. with kernel/x86/microcode/AuthenticAMD.bin
    #[arg(long, value_name = "DIR|MANIFEST")]
    pub early: Option<PathBuf>,
    #[command(flatten)]
    pub encode: EncodeFlags,
    /// cpio format: newc, or crc (with data checksums the kernel verifies)
    #[arg(long, value_enum, default_value = "newc")]
    pub format: FormatArg,
    /// Keep the owners found in DIR (default: all owned by 0:0)
    #[arg(long)]
    pub keep_owners: bool,
    /// Clamp modification times to this Unix time (default: the
    /// SOURCE_DATE_EPOCH environment variable, if set)
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RepackArgs {
    /// The initramfs image (any compression, several segments)
    pub image: PathBuf,
    /// Output image (default: replace IMAGE, atomically, keeping the
    /// original as IMAGE.bak, or IMAGE.bak.N when that exists)
    #[arg(short = 'o', long, value_name = "IMG")]
    pub output: Option<PathBuf>,
    /// Replace IMAGE without keeping the original
    #[arg(long)]
    pub no_backup: bool,
    #[command(flatten)]
    pub encode: EncodeFlags,
    #[command(flatten)]
    pub read: ReadFlags,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The first image (e.g. the backup)
    pub a: PathBuf,
    /// The second image
    pub b: PathBuf,
    /// Count modification-time differences too
    #[arg(long)]
    pub mtime: bool,
    /// Print JSON (an array of differences)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub read: ReadFlags,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (a number with an optional K, M, G or T)"))
}

// ---------------------------------------------------------------------------
// Progress bar: only when stderr is a terminal.

pub(crate) struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    pub(crate) fn new(what: &str) -> Bar {
        if !io::stderr().is_terminal() {
            return Bar(None);
        }
        let pb =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_message(what.to_string());
        Bar(Some(pb))
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
        }
    }
    fn set_position(&self, pos: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(pos);
        }
    }
    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}

/// Listing-type commands parse on the decompressing thread (the parser's
/// work is small next to decompression, and a second thread would only add
/// hand-offs); extraction and repack decompress on a thread of their own.
fn read_opts(r: &ReadFlags) -> ReadOptions {
    ReadOptions {
        max_output: r.max_size,
        threaded: false,
    }
}

fn read_opts_threaded(r: &ReadFlags) -> ReadOptions {
    ReadOptions {
        max_output: r.max_size,
        threaded: true,
    }
}

fn open(path: &Path) -> anyhow::Result<Image<'static>> {
    Ok(Image::open(path)?)
}

/// Glob filter over normalised names (no leading `/` or `./`).
struct Selection {
    globs: Option<GlobSet>,
    segments: Vec<usize>,
}

impl Selection {
    fn new(globs: &[String], segments: &[usize]) -> anyhow::Result<Selection> {
        let globs = if globs.is_empty() {
            None
        } else {
            let mut b = GlobSetBuilder::new();
            for g in globs {
                let g = g.trim_start_matches("./").trim_start_matches('/');
                b.add(
                    GlobBuilder::new(g)
                        .literal_separator(true)
                        .build()
                        .with_context(|| format!("bad glob '{g}'"))?,
                );
            }
            Some(b.build()?)
        };
        Ok(Selection {
            globs,
            segments: segments.to_vec(),
        })
    }

    fn matches(&self, segment: usize, name: &[u8]) -> bool {
        if !self.segments.is_empty() && !self.segments.contains(&segment) {
            return false;
        }
        match &self.globs {
            None => true,
            Some(g) => g.is_match(diff::normal_name(name)),
        }
    }
}

/// `initrd diff` exits as diff(1): 0 same, 1 different, 2 trouble; main
/// maps its errors to [`DIFF_TROUBLE`].
pub fn is_diff(args: &InitrdArgs) -> bool {
    matches!(args.command, InitrdCommand::Diff(_))
}

pub const DIFF_TROUBLE: u8 = 2;

pub fn run(args: &InitrdArgs) -> anyhow::Result<bool> {
    match &args.command {
        InitrdCommand::Examine(a) => examine(a),
        InitrdCommand::Ls(a) => ls(a),
        InitrdCommand::Extract(a) => extract_cmd(a),
        InitrdCommand::Cat(a) => cat(a),
        InitrdCommand::Create(a) => create_cmd(a),
        InitrdCommand::Repack(a) => repack(a),
        InitrdCommand::Diff(a) => diff_cmd(a),
        InitrdCommand::AddDrivers(a) => crate::add_drivers::add_drivers(a),
        InitrdCommand::Modules(a) => crate::add_drivers::modules(a),
    }
}

struct Nothing;
impl Visitor for Nothing {
    fn entry(&mut self, _: &Entry<'_>) -> Result<bool, Error> {
        Ok(false)
    }
}

fn examine(a: &ExamineArgs) -> anyhow::Result<bool> {
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
                eprintln!("kmodkit: warning: segment {}: {n}", s.index);
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

fn ls(a: &LsArgs) -> anyhow::Result<bool> {
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

fn check_segments(wanted: &[usize], segs: &[SegmentSummary]) -> anyhow::Result<()> {
    for &w in wanted {
        if w == 0 || w > segs.len() {
            bail!(
                "--segment {w}: the image has {} segment(s), numbered from 1 (see `kmodkit initrd examine`)",
                segs.len()
            );
        }
    }
    Ok(())
}

fn extract_cmd(a: &ExtractArgs) -> anyhow::Result<bool> {
    let image = open(&a.image)?;
    let sel = Selection::new(&a.globs, &a.segments)?;
    let mut opts = ExtractOptions::default();
    if a.no_same_owner {
        opts.preserve_owner = false;
    }
    let bar = Bar::new("extract");
    let filter = |seg: usize, name: &[u8]| sel.matches(seg, name);
    let report = extract::extract(
        &image,
        &read_opts_threaded(&a.read),
        &bar,
        &a.dir,
        &opts,
        &filter,
    )?;
    for s in &report.skipped {
        eprintln!(
            "kmodkit: warning: {}: segment {}: '{}': {}",
            a.image.display(),
            s.segment,
            s.name,
            s.reason
        );
    }
    check_segments(&a.segments, &report.segments)?;
    Ok(true)
}

fn cat(a: &CatArgs) -> anyhow::Result<bool> {
    struct Cat<W: Write> {
        want: String,
        out: W,
        found: bool,
        /// Data of the last match (a later entry replaces an earlier one,
        /// as in the kernel), kept only while it is the latest.
        buf: Vec<u8>,
        collecting: bool,
        kind: Option<FileType>,
    }
    impl<W: Write> Visitor for Cat<W> {
        fn entry(&mut self, e: &Entry<'_>) -> Result<bool, Error> {
            if diff::normal_name(e.name) != self.want {
                return Ok(false);
            }
            self.found = true;
            self.kind = Some(e.file_type());
            self.buf.clear();
            self.collecting = e.file_type() == FileType::Regular;
            Ok(self.collecting)
        }
        fn data(&mut self, chunk: &[u8]) -> Result<(), Error> {
            self.buf.extend_from_slice(chunk);
            Ok(())
        }
    }
    let image = open(&a.image)?;
    let want = diff::normal_name(a.path.as_bytes());
    let mut c = Cat {
        want,
        out: io::stdout().lock(),
        found: false,
        buf: Vec::new(),
        collecting: false,
        kind: None,
    };
    read::read_image(&image, &read_opts(&a.read), &read::NoProgress, &mut c)?;
    if !c.found {
        bail!(
            "{}: no entry '{}' (see `kmodkit initrd ls`)",
            a.image.display(),
            a.path
        );
    }
    if c.kind != Some(FileType::Regular) {
        bail!("{}: '{}' is not a regular file", a.image.display(), a.path);
    }
    c.out.write_all(&c.buf)?;
    c.out.flush()?;
    Ok(true)
}

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

fn create_cmd(a: &CreateArgs) -> anyhow::Result<bool> {
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

fn repack(a: &RepackArgs) -> anyhow::Result<bool> {
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

fn diff_cmd(a: &DiffArgs) -> anyhow::Result<bool> {
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
