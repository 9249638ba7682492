//! Module signing and compression for installed modules (kmodkit-module's
//! `sign` and `compress`, the key loaded once), and `kmodkit signing-key`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use kmodkit_module::compression::Compression;
use kmodkit_module::sign::{self, HashAlgorithm, SigningKey};

pub(crate) struct Signer(SigningKey);

impl Signer {
    pub(crate) fn load(key: &Path, cert: &Path, password: Option<&[u8]>) -> Result<Signer> {
        Ok(Signer(SigningKey::load(key, cert, password)?))
    }

    /// Signs as sign-file with the kernel's `CONFIG_MODULE_SIG_HASH` (DKMS
    /// falls back to sha512 when the kernel names none).
    pub(crate) fn sign(&self, module: &[u8], hash: Option<&str>) -> Result<Vec<u8>, String> {
        let hash = HashAlgorithm::from_kconfig_name(hash.unwrap_or("sha512"))
            .map_err(|e| e.to_string())?;
        sign::sign_module(module, &self.0, hash, false).map_err(|e| e.to_string())
    }
}

pub(crate) fn compress(data: &[u8], how: Compression) -> Result<Vec<u8>, String> {
    kmodkit_module::compress::compress_module(data, how).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum SigningKeyCommand {
    /// Create a module signing key pair (RSA private key PEM, self-signed X.509 certificate DER), as
    /// DKMS creates its MOK; never replaces an existing file
    #[command(
        after_help = "Enroll the certificate for Secure Boot with: mokutil --import CERT\n\n\
Examples:\n  kmodkit signing-key create\n  kmodkit signing-key create --key /etc/kmodkit/signing.key \\\n    --cert /etc/kmodkit/signing.der --name 'Cluster driver signing'"
    )]
    Create(CreateArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Root of the system the key is for
    #[arg(
        long,
        visible_alias = "basedir",
        value_name = "DIR",
        default_value = "/"
    )]
    pub root: PathBuf,
    /// Private key to write (default: ROOT/var/lib/dkms/mok.key, where DKMS and `kmodkit rebuild` look)
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Certificate to write (default: ROOT/var/lib/dkms/mok.pub)
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The certificate's common name (modinfo shows it as signer)
    #[arg(long, default_value = "kmodkit module signing key")]
    pub name: String,
    /// RSA key size
    #[arg(long, default_value_t = 2048, value_parser = clap::builder::TypedValueParser::map(clap::builder::PossibleValuesParser::new(["2048", "3072", "4096"]), |s: String| s.parse::<usize>().unwrap_or(2048)))]
    pub bits: usize,
    /// Also create the OpenPGP key that signs packages and repositories
    /// (`kmodkit package`, `kmodkit repo`); an existing module key pair is
    /// then kept
    #[arg(long)]
    pub openpgp: bool,
    /// OpenPGP secret key to write (default: ROOT/var/lib/kmodkit/repo-key.asc;
    /// the public key goes beside it as .pub.asc)
    #[arg(long, value_name = "FILE", requires = "openpgp")]
    pub gpg_key: Option<PathBuf>,
    /// The OpenPGP key's user id
    #[arg(
        long,
        value_name = "NAME <EMAIL>",
        default_value = "kmodkit repository signing key <root@localhost>",
        requires = "openpgp"
    )]
    pub user_id: String,
    /// OpenPGP key algorithm: rsa3072, rsa4096 or ed25519
    #[arg(
        long,
        default_value = "rsa3072",
        value_name = "ALGORITHM",
        requires = "openpgp"
    )]
    pub algorithm: kmodkit_package::pgp::KeyAlgorithm,
}

/// Writes a new file that must not exist yet (0600 for secrets).
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut staged = kmodkit_commit::Staged::new(path)?;
    staged.set_mode(mode)?;
    staged
        .file()
        .write_all(contents)
        .with_context(|| format!("writing {}", path.display()))?;
    staged.commit_new()?;
    Ok(())
}

fn create_openpgp(a: &CreateArgs) -> Result<()> {
    let secret = a
        .gpg_key
        .clone()
        .unwrap_or_else(|| crate::package::default_gpg_key(&a.root));
    let public = secret.with_extension("pub.asc");
    for p in [&secret, &public] {
        if p.exists() {
            anyhow::bail!("{}: exists; kmodkit never replaces a key", p.display());
        }
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = kmodkit_package::pgp::RepoKey::generate(&a.user_id, now, a.algorithm)?;
    write_new(&secret, key.secret_armored()?.as_bytes(), 0o600)?;
    write_new(&public, key.public_armored()?.as_bytes(), 0o644)?;
    writeln!(
        std::io::stdout().lock(),
        "created OpenPGP key {} ({}) and {}",
        secret.display(),
        key.fingerprint(),
        public.display()
    )?;
    Ok(())
}

pub fn run(cmd: &SigningKeyCommand) -> Result<bool> {
    match cmd {
        SigningKeyCommand::Create(a) => {
            let key = a
                .key
                .clone()
                .unwrap_or_else(|| a.root.join("var/lib/dkms/mok.key"));
            let cert = a
                .cert
                .clone()
                .unwrap_or_else(|| a.root.join("var/lib/dkms/mok.pub"));
            if a.openpgp && key.exists() && cert.exists() {
                create_openpgp(a)?;
                writeln!(
                    std::io::stdout().lock(),
                    "kept the module signing key pair {} and {}",
                    key.display(),
                    cert.display()
                )?;
                return Ok(true);
            }
            for p in [&key, &cert] {
                if let Some(d) = p.parent() {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("creating {}", d.display()))?;
                }
            }
            let new = sign::NewKey {
                common_name: &a.name,
                bits: a.bits,
                not_before: std::time::SystemTime::now(),
                days: 36500,
            };
            sign::create_signing_key(&new, &key, &cert)?;
            writeln!(
                std::io::stdout().lock(),
                "created {} and {}",
                key.display(),
                cert.display()
            )?;
            if a.openpgp {
                create_openpgp(a)?;
            }
            Ok(true)
        }
    }
}
