//! The one definition of kmodkit's command line. The man page and shell
//! completions are generated from it (`kmodkit man`, `kmodkit completions`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kmodkit",
    version,
    about = "Keep out-of-tree NIC and InfiniBand drivers working across kernel updates and inside diskless boot images",
    long_about = "kmodkit keeps out-of-tree NIC and InfiniBand drivers (NVIDIA/Mellanox ConnectX, \
Ethernet and IB) working across kernel updates and gets them into the boot images of diskless \
nodes. It reads kernel modules exactly as kmod and the kernel do.\n\n\
After a kernel update: `abi check` says whether the vendor's modules load on the new kernel (and \
why not, symbol by symbol); `weak-modules --add-kernel` links the compatible ones into its \
weak-updates; `depmod` rebuilds the index byte for byte as kmod does.\n\n\
For a diskless node: `initrd add-drivers` puts the drivers, their dependencies, firmware, options \
and network settings (DHCP, static, the IPoIB client identifier) into an existing dracut, \
initramfs-tools or plain image; `initrd ls/extract/create/repack/diff` handle images of every \
kernel format.\n\n\
Plumbing commands (modinfo, depmod) behave like their kmod counterparts and add --json output \
for scripts.",
    after_help = "Exit status: 0 success, 1 the command failed (e.g. a module was not found), \
2 usage error; `abi check` and `initrd diff` say more in their own help.\n\n\
Examples:\n  \
kmodkit abi check --kernel 6.1.0-56-amd64 /lib/modules/6.1.0-54-amd64/updates\n  \
kmodkit weak-modules --add-kernel 6.1.0-56-amd64 --dry-run\n  \
kmodkit initrd add-drivers /boot/initrd.img-$(uname -r) \\\n    \
mlx4_en mlx4_ib ib_ipoib --net dhcp\n  \
kmodkit modinfo -k 6.1.0-56-amd64 -F depends mlx4_ib"
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
    /// Rebuild vendor driver sources (DKMS trees, Kbuild directories) for new kernels, only where the ABI broke
    Rebuild(crate::rebuild::RebuildArgs),
    /// Package rebuilt modules as kernel-only RPM and Debian packages, with their ABI dependencies
    Package(crate::package::PackageArgs),
    /// Write signed yum/dnf and apt metadata for the packages in a directory
    Repo(crate::package::RepoArgs),
    /// Create the key pair `rebuild` signs modules with (and the OpenPGP key for packages)
    #[command(subcommand)]
    SigningKey(crate::signing::SigningKeyCommand),
    /// Read, list, extract, create, repack and compare initramfs images
    Initrd(crate::initrd::InitrdArgs),
    /// Diskless boot sets with kmodkit's own init, and DHCP configuration for every boot stage
    Netboot(crate::netboot::NetbootArgs),
    /// Which file modprobe loads for each module of a package on every installed kernel, and what to do
    Status(crate::status::StatusArgs),
    /// Unload a package's modules and their users, load them again, with the kernel's reasons
    Reload(crate::reload::ReloadArgs),
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
