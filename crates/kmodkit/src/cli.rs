//! The one definition of kmodkit's command line. The man page and shell
//! completions are generated from it (`kmodkit man`, `kmodkit completions`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kmodkit",
    version,
    about = "Keep out-of-tree NIC and InfiniBand drivers working across kernel updates and inside diskless boot images",
    long_about = "kmodkit reads kernel modules, builds the module index, decides ABI \
compatibility as the kernel's loader would, and reads and writes initramfs images.\n\n\
Plumbing commands (modinfo, ...) behave like their kmod counterparts and add --json \
output for scripts.",
    after_help = "Exit status: 0 success, 1 the command failed (e.g. a module was not found), \
2 usage error.\n\nExamples:\n  kmodkit modinfo mlx4_core\n  kmodkit modinfo -k 6.1.0-56-amd64 -b /srv/root -F depends mlx4_ib\n  kmodkit modinfo --json /lib/modules/$(uname -r)/kernel/drivers/net/ethernet/mellanox/mlx4/mlx4_en.ko"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show information about kernel modules (same output as kmod's modinfo)
    #[command(
        long_about = "Show information about kernel modules.\n\n\
Each argument is a module file (.ko, .ko.xz, .ko.zst, .ko.gz; compression is \
detected by content) or a module name or alias looked up in the module \
directory /lib/modules/KVER under BASEDIR. Output is byte-identical to kmod's \
modinfo; --json adds everything kmodkit reads: symbol versions, exports with \
CRCs, undefined symbols, struct module size and the signature.",
        after_help = "Examples:\n  kmodkit modinfo ib_ipoib\n  kmodkit modinfo -F parm ib_ipoib\n  kmodkit modinfo -k 6.12.117+deb12-amd64 -b /srv/node-root mlx5_core\n  kmodkit modinfo --json ./mlx4_core.ko | jq '.[0].exports | length'"
    )]
    Modinfo(ModinfoArgs),
    /// Generate modules.dep and the module index files (same files as kmod's depmod, byte for byte)
    Depmod(crate::depmod::DepmodArgs),
    /// ABI compatibility of out-of-tree modules with another kernel
    #[command(subcommand)]
    Abi(crate::abi::AbiCommand),
    /// Link compatible out-of-tree modules into other kernels' weak-updates (RHEL weak-modules)
    WeakModules(crate::weak_modules::WeakModulesArgs),
    /// Read, list, extract, create, repack and compare initramfs images
    Initrd(crate::initrd::InitrdArgs),
    /// Print the man page (roff) for kmodkit and its subcommands
    #[command(hide = false)]
    Man {
        /// Write one page per command into this directory instead of
        /// printing the top-level page
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ModinfoArgs {
    /// Print only 'author'
    #[arg(short = 'a', long = "author")]
    pub author: bool,
    /// Print only 'description'
    #[arg(short = 'd', long = "description")]
    pub description: bool,
    /// Print only 'license'
    #[arg(short = 'l', long = "license")]
    pub license: bool,
    /// Print only 'parm'
    #[arg(short = 'p', long = "parameters")]
    pub parameters: bool,
    /// Print only 'filename'
    #[arg(short = 'n', long = "filename")]
    pub filename: bool,
    /// Use \0 instead of \n
    #[arg(short = '0', long = "null")]
    pub null: bool,
    /// Handle arguments as module names instead of aliases or file names
    #[arg(short = 'm', long = "modname")]
    pub modname: bool,
    /// Print only the values of FIELD (a .modinfo key, or filename, name,
    /// signer, sig_key, sig_hashalgo, signature, sig_id)
    #[arg(short = 'F', long = "field", value_name = "FIELD")]
    pub field: Option<String>,
    /// Use VERSION instead of `uname -r`
    #[arg(
        short = 'k',
        long = "set-version",
        visible_alias = "kernel",
        value_name = "VERSION"
    )]
    pub set_version: Option<String>,
    /// Use DIR as filesystem root for /lib/modules
    #[arg(
        short = 'b',
        long = "basedir",
        visible_alias = "root",
        value_name = "DIR"
    )]
    pub basedir: Option<String>,
    /// Print everything kmodkit reads as JSON (an array, one object per module)
    #[arg(long, conflicts_with_all = ["field", "null", "author", "description", "license", "parameters", "filename"])]
    pub json: bool,
    /// Module files, names or aliases
    #[arg(required = true, value_name = "MODULE")]
    pub modules: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap checks flag names and aliases (e.g. `--root` next to kmod's
    /// `-b/--basedir`) only in debug builds; check them in every build.
    #[test]
    fn flags_and_aliases_do_not_clash() {
        super::Cli::command().debug_assert();
    }
}
