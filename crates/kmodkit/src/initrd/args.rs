//! The arguments of `kmodkit initrd`: subcommands and flags (the man page
//! and completions are generated from them).

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use kmodkit_initramfs::Compression;

use crate::read_flags::ReadFlags;

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
    pub(super) fn compression(self) -> Compression {
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
