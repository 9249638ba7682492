//! The OpenPGP key that signs packages (RPM header signatures) and
//! repositories (`repomd.xml.asc`, `InRelease`, `Release.gpg`).
//!
//! One primary key that certifies and signs, no subkeys: what `rpm
//! --import`, `gpgv` (apt) and gpgme (dnf) all accept. v4 signatures with
//! SHA-256 (apt refuses SHA-1), whose only time is the one the caller
//! passes: RSA PKCS#1 v1.5 and Ed25519 signatures are deterministic, so the
//! same inputs give the same bytes.

use std::path::{Path, PathBuf};

use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, EncryptionCaps,
    KeyType, SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, Password, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not an OpenPGP secret key (armored): {cause}", path.display())]
    NotAKey { path: PathBuf, cause: String },
    #[error("{}: the key cannot sign ({algorithm}); use an RSA or Ed25519 key", path.display())]
    CannotSign { path: PathBuf, algorithm: String },
    #[error("{}: the key is protected by a passphrase; kmodkit signs unattended and needs an unprotected key (keep it readable by root only)", path.display())]
    Protected { path: PathBuf },
    #[error("OpenPGP: {0}")]
    Pgp(String),
    #[error("time {0} does not fit an OpenPGP timestamp (1970..2106)")]
    Time(u64),
}

fn pgp_err(e: impl std::fmt::Display) -> PgpError {
    PgpError::Pgp(e.to_string())
}

/// Key algorithms kmodkit creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// RSA, 3072 bits: what every rpm since RHEL 7 and every apt verifies.
    Rsa3072,
    /// RSA, 4096 bits.
    Rsa4096,
    /// Ed25519 (the v4 "legacy" EdDSA form): small and fast; rpm ≥ 4.16,
    /// apt, dnf.
    Ed25519,
}

impl std::str::FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rsa3072" => Ok(KeyAlgorithm::Rsa3072),
            "rsa4096" => Ok(KeyAlgorithm::Rsa4096),
            "ed25519" => Ok(KeyAlgorithm::Ed25519),
            _ => Err(format!(
                "unknown key algorithm {s:?} (rsa3072, rsa4096, ed25519)"
            )),
        }
    }
}

/// The signing key of a repository.
#[derive(Debug, Clone)]
pub struct RepoKey {
    key: SignedSecretKey,
    /// Where it was read from (for messages); `None` when just created.
    pub origin: Option<PathBuf>,
}

fn timestamp(secs: u64) -> Result<Timestamp, PgpError> {
    u32::try_from(secs)
        .map(Timestamp::from_secs)
        .map_err(|_| PgpError::Time(secs))
}

impl RepoKey {
    /// A new key for `user_id` ("Cluster drivers <drivers@example.org>"),
    /// created at `created` (seconds since the epoch).
    pub fn generate(
        user_id: &str,
        created: u64,
        algorithm: KeyAlgorithm,
    ) -> Result<RepoKey, PgpError> {
        let key_type = match algorithm {
            KeyAlgorithm::Rsa3072 => KeyType::Rsa(3072),
            KeyAlgorithm::Rsa4096 => KeyType::Rsa(4096),
            KeyAlgorithm::Ed25519 => KeyType::Ed25519Legacy,
        };
        let params = SecretKeyParamsBuilder::default()
            .key_type(key_type)
            .can_certify(true)
            .can_sign(true)
            .can_encrypt(EncryptionCaps::None)
            .primary_user_id(user_id.to_string())
            .preferred_hash_algorithms(vec![HashAlgorithm::Sha256, HashAlgorithm::Sha512].into())
            .created_at(timestamp(created)?)
            .build()
            .map_err(pgp_err)?;
        let key = params.generate(rand::rngs::OsRng).map_err(pgp_err)?;
        Ok(RepoKey { key, origin: None })
    }

    /// Reads an armored secret key (`kmodkit signing-key create --openpgp`
    /// writes one; `gpg --export-secret-keys --armor` too, without a
    /// passphrase).
    pub fn load(path: &Path) -> Result<RepoKey, PgpError> {
        let text = std::fs::read(path).map_err(|cause| PgpError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        let not_a_key = |cause: String| PgpError::NotAKey {
            path: path.to_path_buf(),
            cause,
        };
        let (key, _) = SignedSecretKey::from_armor_single(&text[..])
            .or_else(|_| SignedSecretKey::from_bytes(&text[..]).map(|k| (k, Default::default())))
            .map_err(|e| not_a_key(e.to_string()))?;
        key.verify_bindings()
            .map_err(|e| not_a_key(e.to_string()))?;
        let algorithm = key.algorithm();
        if !matches!(
            algorithm,
            pgp::crypto::public_key::PublicKeyAlgorithm::RSA
                | pgp::crypto::public_key::PublicKeyAlgorithm::EdDSALegacy
                | pgp::crypto::public_key::PublicKeyAlgorithm::Ed25519
        ) {
            return Err(PgpError::CannotSign {
                path: path.to_path_buf(),
                algorithm: format!("{algorithm:?}"),
            });
        }
        let me = RepoKey {
            key,
            origin: Some(path.to_path_buf()),
        };
        // A protected key fails to sign with the empty passphrase.
        if me.detached(b"probe", 1).is_err() {
            return Err(PgpError::Protected {
                path: path.to_path_buf(),
            });
        }
        Ok(me)
    }

    /// The secret key, armored.
    pub fn secret_armored(&self) -> Result<String, PgpError> {
        self.key
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_err)
    }

    fn public(&self) -> SignedPublicKey {
        SignedPublicKey::from(self.key.clone())
    }

    /// The public key, armored: `gpgkey=` of a `.repo` file, `rpm
    /// --import`, apt's `signed-by=KEY.asc`.
    pub fn public_armored(&self) -> Result<String, PgpError> {
        self.public()
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_err)
    }

    /// The public key as binary packets (a `.gpg` keyring for apt).
    pub fn public_binary(&self) -> Result<Vec<u8>, PgpError> {
        use pgp::ser::Serialize;
        self.public().to_bytes().map_err(pgp_err)
    }

    /// The fingerprint, upper-case hex.
    pub fn fingerprint(&self) -> String {
        hex_upper(self.key.fingerprint().as_bytes())
    }

    /// The long key id (last 16 hex digits), lower-case: how `rpm -K`
    /// and dnf name the key.
    pub fn key_id(&self) -> String {
        let f = self.fingerprint().to_ascii_lowercase();
        f[f.len().saturating_sub(16)..].to_string()
    }

    /// The primary user id.
    pub fn user_id(&self) -> String {
        self.key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default()
    }

    /// The time a signature made "at `time`" carries: `time`, but never
    /// before the key's creation. A signature older than its key is
    /// refused by gpgv and apt ("public key is N days newer than the
    /// signature") — which `SOURCE_DATE_EPOCH` of an old commit and a key
    /// made today would otherwise give. Still reproducible: both inputs
    /// are fixed.
    pub fn signature_time(&self, time: u64) -> u64 {
        time.max(u64::from(self.key.created_at().as_secs()))
    }

    fn config(&self, typ: SignatureType, time: u64) -> Result<SignatureConfig, PgpError> {
        let time = self.signature_time(time);
        let mut config = SignatureConfig::v4(typ, self.key.algorithm(), HashAlgorithm::Sha256);
        config.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(timestamp(time)?))
                .map_err(pgp_err)?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(self.key.fingerprint()))
                .map_err(pgp_err)?,
        ];
        config.unhashed_subpackets =
            vec![
                Subpacket::regular(SubpacketData::IssuerKeyId(self.key.legacy_key_id()))
                    .map_err(pgp_err)?,
            ];
        Ok(config)
    }

    fn detached(&self, data: &[u8], time: u64) -> Result<DetachedSignature, PgpError> {
        let sig = self
            .config(SignatureType::Binary, time)?
            .sign(&self.key.primary_key, &Password::empty(), data)
            .map_err(pgp_err)?;
        Ok(DetachedSignature::new(sig))
    }

    /// A detached binary signature, armored (`repomd.xml.asc`,
    /// `Release.gpg`).
    pub fn sign_detached(&self, data: &[u8], time: u64) -> Result<String, PgpError> {
        self.detached(data, time)?
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_err)
    }

    /// A cleartext-signed text (`InRelease`).
    pub fn sign_cleartext(&self, text: &str, time: u64) -> Result<String, PgpError> {
        let config = self.config(SignatureType::Text, time)?;
        CleartextSignedMessage::new(text, config, &self.key.primary_key, &Password::empty())
            .map_err(pgp_err)?
            .to_armored_string(ArmorOptions::default())
            .map_err(pgp_err)
    }

    /// The signer the `rpm` crate signs package headers with.
    pub fn rpm_signer(&self) -> Result<::rpm::signature::pgp::Signer, PgpError> {
        ::rpm::signature::pgp::Signer::from_asc(&self.secret_armored()?).map_err(pgp_err)
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}
