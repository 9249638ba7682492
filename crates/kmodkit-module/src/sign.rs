//! Signing a module file the way the kernel's `scripts/sign-file.c` does,
//! and creating a key pair to sign with.
//!
//! sign-file appends (see [`crate::signature`] for the layout):
//!
//! ```text
//! [module][PKCS#7 ContentInfo, DER]
//! [struct module_signature {0, 0, PKEY_ID_PKCS7, 0, 0, pad[3], sig_len be32}]
//! ["~Module signature appended~\n"]
//! ```
//!
//! The ContentInfo comes from OpenSSL's `CMS_sign` with
//! `CMS_NOCERTS | CMS_PARTIAL | CMS_BINARY | CMS_DETACHED | CMS_STREAM` and
//! `CMS_add1_signer` with `CMS_NOCERTS | CMS_BINARY | CMS_NOSMIMECAP |
//! CMS_NOATTR` (plus `CMS_USE_KEYID` for `-k`). No certificates, no
//! content, and no signed attributes (the kernel refuses a module
//! signature that has them): the RSA PKCS#1 v1.5 signature is over the
//! module's digest itself, so the whole blob is a function of key,
//! certificate, hash and module, and [`sign_module`] writes the same bytes
//! as sign-file. Its shape, as `openssl asn1parse` shows sign-file's:
//!
//! ```text
//! SEQUENCE { OID signedData, [0] { SEQUENCE {
//!   INTEGER 1 (3 with -k)
//!   SET { SEQUENCE { OID hash } }            -- no parameters
//!   SEQUENCE { OID data }                    -- detached: no content
//!   SET { SEQUENCE {                         -- SignerInfo
//!     INTEGER 1 (3 with -k)
//!     SEQUENCE { issuer Name, serial INTEGER }  | [0] subjectKeyIdentifier
//!     SEQUENCE { OID hash }
//!     SEQUENCE { OID rsaEncryption, NULL }
//!     OCTET STRING signature
//! } } } } }
//! ```
//!
//! kmod 30 reads the signer and key id only from the issuerAndSerialNumber
//! form (its PKCS#7 decoder fails on `-k`'s CMS subjectKeyIdentifier): it
//! prints the issuer's commonName as `signer` and the serial number as
//! `sig_key`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha2::Digest;

use crate::signature::{
    der, expect, name_to_signer, INTEGER, MODSIG_SIZE, OCTET_STRING, OID, OID_SIGNED_DATA,
    PKEY_ID_PKCS7, SEQUENCE, SET, SIGNATURE_MAGIC,
};
use crate::Compression;

/// Why a key could not be loaded or made, or a module not signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no private key in it (expected PEM 'PRIVATE KEY', 'ENCRYPTED PRIVATE KEY' or 'RSA PRIVATE KEY')", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: the private key is encrypted: give its password (sign-file reads it from KBUILD_SIGN_PIN)", path.display())]
    PasswordRequired { path: PathBuf },
    #[error("{}: wrong password for the private key (or the key is damaged)", path.display())]
    Password { path: PathBuf },
    #[error("{}: {what}", path.display())]
    UnsupportedKey { path: PathBuf, what: String },
    #[error("{}: invalid private key: {detail}", path.display())]
    Key { path: PathBuf, detail: String },
    #[error("{}: invalid X.509 certificate (PEM or DER expected): {detail}", path.display())]
    Certificate { path: PathBuf, detail: String },
    #[error("{}: the certificate does not belong to the private key {}", cert.display(), key.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("{}: the certificate has no subjectKeyIdentifier, so the signature cannot name the key by id (sign without -k)", cert.display())]
    NoKeyId { cert: PathBuf },
    #[error("the module is already signed: sign the unsigned module (the kernel reads only the last signature)")]
    AlreadySigned,
    #[error(
        "the module is {0}-compressed: sign before compressing, as scripts/Makefile.modinst does"
    )]
    Compressed(Compression),
    #[error("not an ELF module (no \\x7fELF magic)")]
    NotElf,
    #[error("RSA signing failed: {0}")]
    Rsa(String),
    #[error("unknown module signature hash '{0}' (sha1, sha224, sha256, sha384, sha512)")]
    UnknownHash(String),
    #[error("{}: exists; kmodkit never replaces a signing key or certificate (remove it or choose another path)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write the new key pair: {0}")]
    Write(#[from] kmodkit_commit::CommitError),
    #[error("cannot encode the new key pair: {0}")]
    Encode(String),
}

/// The digests `CONFIG_MODULE_SIG_HASH` names and sign-file takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub const ALL: [HashAlgorithm; 5] = [
        HashAlgorithm::Sha1,
        HashAlgorithm::Sha224,
        HashAlgorithm::Sha256,
        HashAlgorithm::Sha384,
        HashAlgorithm::Sha512,
    ];

    /// From `CONFIG_MODULE_SIG_HASH` (`"sha256"`, quotes optional) or
    /// sign-file's first argument.
    pub fn from_kconfig_name(name: &str) -> Result<HashAlgorithm, SignError> {
        let bare = name.trim().trim_matches('"');
        HashAlgorithm::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(bare))
            .ok_or_else(|| SignError::UnknownHash(name.to_string()))
    }

    /// The name kmod prints as `sig_hashalgo`.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha1 => "sha1",
            HashAlgorithm::Sha224 => "sha224",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Sha384 => "sha384",
            HashAlgorithm::Sha512 => "sha512",
        }
    }

    /// The OBJECT IDENTIFIER's contents (RFC 3279 §2.2.2, RFC 5754 §2).
    fn oid(self) -> &'static [u8] {
        match self {
            HashAlgorithm::Sha1 => &[0x2b, 0x0e, 0x03, 0x02, 0x1a],
            HashAlgorithm::Sha224 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04],
            HashAlgorithm::Sha256 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
            HashAlgorithm::Sha384 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
            HashAlgorithm::Sha512 => &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            HashAlgorithm::Sha1 => sha1::Sha1::digest(data).to_vec(),
            HashAlgorithm::Sha224 => sha2::Sha224::digest(data).to_vec(),
            HashAlgorithm::Sha256 => sha2::Sha256::digest(data).to_vec(),
            HashAlgorithm::Sha384 => sha2::Sha384::digest(data).to_vec(),
            HashAlgorithm::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// PKCS#1 v1.5 with this digest's DigestInfo prefix.
    fn pkcs1v15(self) -> Pkcs1v15Sign {
        match self {
            HashAlgorithm::Sha1 => Pkcs1v15Sign::new::<sha1::Sha1>(),
            HashAlgorithm::Sha224 => Pkcs1v15Sign::new::<sha2::Sha224>(),
            HashAlgorithm::Sha256 => Pkcs1v15Sign::new::<sha2::Sha256>(),
            HashAlgorithm::Sha384 => Pkcs1v15Sign::new::<sha2::Sha384>(),
            HashAlgorithm::Sha512 => Pkcs1v15Sign::new::<sha2::Sha512>(),
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A private key with its certificate, ready to sign modules.
pub struct SigningKey {
    private: RsaPrivateKey,
    /// The certificate's issuer Name and serialNumber, each a whole DER
    /// TLV copied from the certificate (issuerAndSerialNumber must match
    /// it byte for byte).
    issuer: Vec<u8>,
    serial: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    signer: Vec<u8>,
    cert_path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("signer", &String::from_utf8_lossy(&self.signer))
            .field("cert", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// `-----BEGIN LABEL-----` blocks of a PEM file: (label, whole block).
fn pem_blocks(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let block = &rest[start..];
        let Some(label_end) = block[11..].find("-----") else {
            break;
        };
        let label = &block[11..11 + label_end];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = block.find(&end_marker) else {
            break;
        };
        out.push((label, &block[..end + end_marker.len()]));
        rest = &block[end + end_marker.len()..];
    }
    out
}

fn read(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|source| SignError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl SigningKey {
    /// Loads a private key (PEM: PKCS#8, encrypted PKCS#8 with
    /// `password`, or PKCS#1 `RSA PRIVATE KEY`; a file that also holds
    /// the certificate, like the kernel's `certs/signing_key.pem`, is
    /// fine) and its certificate (DER, like DKMS's `mok.pub`, or PEM; may
    /// be the key file itself).
    pub fn load(key: &Path, cert: &Path, password: Option<&[u8]>) -> Result<SigningKey, SignError> {
        let private = load_private_key(key, password)?;
        let cert_der = load_certificate(cert)?;
        let cert_err = |detail: String| SignError::Certificate {
            path: cert.to_path_buf(),
            detail,
        };
        let parsed =
            x509_cert::Certificate::from_der(&cert_der).map_err(|e| cert_err(e.to_string()))?;
        let (issuer, serial) =
            issuer_and_serial(&cert_der).ok_or_else(|| cert_err("bad TBSCertificate".into()))?;
        let spki = parsed
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| cert_err(e.to_string()))?;
        let public =
            RsaPublicKey::from_public_key_der(&spki).map_err(|_| SignError::UnsupportedKey {
                path: cert.to_path_buf(),
                what: "the certificate's key is not RSA (only RSA keys are supported)".into(),
            })?;
        // OpenSSL's CMS_add1_signer refuses a mismatched pair
        // (X509_check_private_key); so do we, before signing anything.
        if public.n() != private.n() || public.e() != private.e() {
            return Err(SignError::KeyMismatch {
                key: key.to_path_buf(),
                cert: cert.to_path_buf(),
            });
        }
        let subject_key_id = parsed
            .tbs_certificate
            .get::<x509_cert::ext::pkix::SubjectKeyIdentifier>()
            .map_err(|e| cert_err(e.to_string()))?
            .map(|(_, ski)| ski.0.as_bytes().to_vec());
        let issuer_contents = expect(&issuer, SEQUENCE)
            .map(|t| t.contents)
            .ok_or_else(|| cert_err("bad issuer".into()))?;
        let signer =
            name_to_signer(issuer_contents).ok_or_else(|| cert_err("bad issuer".into()))?;
        Ok(SigningKey {
            private,
            issuer,
            serial,
            subject_key_id,
            signer,
            cert_path: cert.to_path_buf(),
        })
    }

    /// What kmod's `modinfo` will print as `signer` for a module signed
    /// with this key (without `-k`): the certificate issuer's commonName —
    /// the subject's, for a self-signed certificate like a MOK.
    pub fn signer(&self) -> String {
        String::from_utf8_lossy(&self.signer).into_owned()
    }

    /// The certificate's subjectKeyIdentifier, which names the key in a
    /// `-k` signature; `None` when the certificate has none.
    pub fn key_id(&self) -> Option<&[u8]> {
        self.subject_key_id.as_deref()
    }

    /// The certificate's serial number as kmod prints it for `sig_key`
    /// (big-endian magnitude, no leading zero bytes).
    pub fn serial(&self) -> Vec<u8> {
        expect(&self.serial, INTEGER)
            .map(|t| {
                t.contents
                    .iter()
                    .skip_while(|&&b| b == 0)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn load_private_key(path: &Path, password: Option<&[u8]>) -> Result<RsaPrivateKey, SignError> {
    let bytes = read(path)?;
    let text = String::from_utf8_lossy(&bytes);
    let bad = |detail: String| SignError::Key {
        path: path.to_path_buf(),
        detail,
    };
    for (label, block) in pem_blocks(&text) {
        let unsupported = |what: &str| SignError::UnsupportedKey {
            path: path.to_path_buf(),
            what: what.to_string(),
        };
        match label {
            "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" => {}
            "EC PRIVATE KEY" => return Err(unsupported("an EC key: only RSA keys are supported")),
            _ => continue,
        }
        if block.contains("Proc-Type: 4,ENCRYPTED") {
            return Err(unsupported(
                "a legacy-encrypted PEM key (Proc-Type): convert it with 'openssl pkcs8 -topk8'",
            ));
        }
        let (_, der_bytes) = pem_rfc7468::decode_vec(block.as_bytes())
            .map_err(|e| bad(format!("PEM {label}: {e}")))?;
        let not_rsa = |e: pkcs8::Error| match e {
            pkcs8::Error::KeyMalformed | pkcs8::Error::Asn1(_) => bad(e.to_string()),
            _ => unsupported("not an RSA key: only RSA keys are supported"),
        };
        return match label {
            "PRIVATE KEY" => RsaPrivateKey::from_pkcs8_der(&der_bytes).map_err(not_rsa),
            "RSA PRIVATE KEY" => {
                use pkcs1::DecodeRsaPrivateKey;
                RsaPrivateKey::from_pkcs1_der(&der_bytes).map_err(|e| bad(e.to_string()))
            }
            _ => {
                let password = password.ok_or_else(|| SignError::PasswordRequired {
                    path: path.to_path_buf(),
                })?;
                let encrypted = pkcs8::EncryptedPrivateKeyInfo::try_from(der_bytes.as_slice())
                    .map_err(|e| bad(e.to_string()))?;
                // A wrong password shows as a padding or DER error of the
                // decrypted bytes: PKCS#5 has no other way to tell.
                let document = encrypted
                    .decrypt(password)
                    .map_err(|_| SignError::Password {
                        path: path.to_path_buf(),
                    })?;
                RsaPrivateKey::from_pkcs8_der(document.as_bytes()).map_err(|e| match e {
                    pkcs8::Error::Asn1(_) | pkcs8::Error::KeyMalformed => SignError::Password {
                        path: path.to_path_buf(),
                    },
                    _ => not_rsa(e),
                })
            }
        };
    }
    Err(SignError::NoKey {
        path: path.to_path_buf(),
    })
}

/// The certificate's DER: sign-file's `read_x509` takes the file as DER
/// when its first two bytes are a SEQUENCE tag and a long-form length
/// (`0x30`, `0x81..=0x84`), as PEM otherwise.
fn load_certificate(path: &Path) -> Result<Vec<u8>, SignError> {
    let bytes = read(path)?;
    if let [0x30, 0x81..=0x84, ..] = bytes.as_slice() {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let block = pem_blocks(&text)
        .into_iter()
        .find(|(label, _)| *label == "CERTIFICATE")
        .ok_or_else(|| SignError::Certificate {
            path: path.to_path_buf(),
            detail: "no DER certificate and no PEM 'CERTIFICATE' block".into(),
        })?;
    pem_rfc7468::decode_vec(block.1.as_bytes())
        .map(|(_, der)| der)
        .map_err(|e| SignError::Certificate {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
}

/// The raw issuer Name and serialNumber TLVs of a certificate
/// (RFC 5280 §4.1: TBSCertificate ::= SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, ... }).
fn issuer_and_serial(cert: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let certificate = expect(cert, SEQUENCE)?;
    let tbs = expect(certificate.contents, SEQUENCE)?;
    let mut at = tbs.contents;
    let first = der(at)?;
    if first.tag == 0xa0 {
        at = first.rest;
    }
    let serial = expect(at, INTEGER)?;
    let serial_tlv = &at[..at.len() - serial.rest.len()];
    let algorithm = expect(serial.rest, SEQUENCE)?;
    let issuer = expect(algorithm.rest, SEQUENCE)?;
    let issuer_tlv = &algorithm.rest[..algorithm.rest.len() - issuer.rest.len()];
    Some((issuer_tlv.to_vec(), serial_tlv.to_vec()))
}

/// A DER TLV with a definite length (X.690 §8.1.3).
fn tlv(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// id-data 1.2.840.113549.1.7.1
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// rsaEncryption 1.2.840.113549.1.1.1: what OpenSSL's CMS writes as the
/// signatureAlgorithm of an RSA PKCS#1 v1.5 signer.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const NULL: &[u8] = &[0x05, 0x00];
/// `[0] IMPLICIT SubjectKeyIdentifier` in a CMS SignerIdentifier.
const TAG_SUBJECT_KEY_ID: u8 = 0x80;
const TAG_EXPLICIT_0: u8 = 0xa0;

/// The PKCS#7/CMS SignedData sign-file makes for `module`.
fn signed_data(
    module: &[u8],
    key: &SigningKey,
    hash: HashAlgorithm,
    use_key_id: bool,
) -> Result<Vec<u8>, SignError> {
    let digest = hash.digest(module);
    let signature = key
        .private
        .sign(hash.pkcs1v15(), &digest)
        .map_err(|e| SignError::Rsa(e.to_string()))?;
    // RFC 5652 §5.1/§5.3: version 3 when the signer is named by
    // subjectKeyIdentifier, 1 for issuerAndSerialNumber.
    let (version, sid) = if use_key_id {
        let ski = key.key_id().ok_or_else(|| SignError::NoKeyId {
            cert: key.cert_path.clone(),
        })?;
        (3u8, tlv(TAG_SUBJECT_KEY_ID, &[ski]))
    } else {
        (1u8, tlv(SEQUENCE, &[&key.issuer, &key.serial]))
    };
    let version = tlv(INTEGER, &[&[version]]);
    let digest_algorithm = tlv(SEQUENCE, &[&tlv(OID, &[hash.oid()])]);
    let signer_info = tlv(
        SEQUENCE,
        &[
            &version,
            &sid,
            &digest_algorithm,
            &tlv(SEQUENCE, &[&tlv(OID, &[OID_RSA_ENCRYPTION]), NULL]),
            &tlv(OCTET_STRING, &[&signature]),
        ],
    );
    let signed = tlv(
        SEQUENCE,
        &[
            &version,
            &tlv(SET, &[&digest_algorithm]),
            &tlv(SEQUENCE, &[&tlv(OID, &[OID_DATA])]),
            &tlv(SET, &[&signer_info]),
        ],
    );
    Ok(tlv(
        SEQUENCE,
        &[
            &tlv(OID, &[OID_SIGNED_DATA]),
            &tlv(TAG_EXPLICIT_0, &[&signed]),
        ],
    ))
}

/// Returns `module` with a signature appended, byte for byte what
/// `scripts/sign-file [-k] HASH KEY CERT` writes. Refuses a compressed
/// module (Makefile.modinst signs before compressing), one that is
/// already signed, and anything that is not ELF.
pub fn sign_module(
    module: &[u8],
    key: &SigningKey,
    hash: HashAlgorithm,
    use_key_id: bool,
) -> Result<Vec<u8>, SignError> {
    match Compression::detect(module) {
        Compression::None => {}
        c => return Err(SignError::Compressed(c)),
    }
    if !module.starts_with(b"\x7fELF") {
        return Err(SignError::NotElf);
    }
    if module.ends_with(SIGNATURE_MAGIC) {
        return Err(SignError::AlreadySigned);
    }
    let blob = signed_data(module, key, hash, use_key_id)?;
    let sig_len =
        u32::try_from(blob.len()).map_err(|_| SignError::Rsa("signature too large".into()))?;
    let mut out =
        Vec::with_capacity(module.len() + blob.len() + MODSIG_SIZE + SIGNATURE_MAGIC.len());
    out.extend_from_slice(module);
    out.extend_from_slice(&blob);
    // struct module_signature (include/linux/module_signature.h): algo,
    // hash, signer_len and key_id_len are 0 for PKCS#7, all in the blob.
    out.extend_from_slice(&[0, 0, PKEY_ID_PKCS7, 0, 0, 0, 0, 0]);
    out.extend_from_slice(&sig_len.to_be_bytes());
    out.extend_from_slice(SIGNATURE_MAGIC);
    Ok(out)
}

/// What [`create_signing_key`] makes.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// The certificate's subject (and issuer) commonName, e.g. DKMS's
    /// "DKMS module signing key".
    pub common_name: &'a str,
    /// RSA modulus size: 2048 (DKMS's `-newkey rsa:2048`) or 4096 (the
    /// kernel's `certs/default_x509.genkey`).
    pub bits: usize,
    /// Start of validity: the caller's clock (libraries read no clock).
    pub not_before: SystemTime,
    /// Validity in days; DKMS and the kernel use 36500.
    pub days: u64,
}

/// RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime after.
fn x509_time(t: SystemTime) -> Result<x509_cert::time::Time, der::Error> {
    match der::asn1::UtcTime::from_system_time(t) {
        Ok(utc) => Ok(x509_cert::time::Time::UtcTime(utc)),
        Err(_) => Ok(x509_cert::time::Time::GeneralTime(
            der::asn1::GeneralizedTime::from_system_time(t)?,
        )),
    }
}

/// Creates a new RSA key (PKCS#8 PEM, mode 0600, like `openssl req
/// -nodes -keyout`) and a self-signed X.509 certificate for it (DER, like
/// DKMS's `/var/lib/dkms/mok.pub`). Neither file may exist: an enrolled
/// key is never replaced. The extensions are those of the kernel's
/// `certs/default_x509.genkey` plus code signing: basicConstraints
/// critical CA:FALSE, keyUsage digitalSignature, extendedKeyUsage
/// codeSigning (1.3.6.1.5.5.7.3.3, which kernels with
/// `CONFIG_MODULE_SIG` key-usage checks and shim's MOK list expect),
/// subjectKeyIdentifier (SHA-1 of the public key, RFC 5280 §4.2.1.2) and
/// the same authorityKeyIdentifier.
pub fn create_signing_key(
    new: &NewKey<'_>,
    key_out: &Path,
    cert_out: &Path,
) -> Result<(), SignError> {
    use x509_cert::ext::pkix::{
        AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
        SubjectKeyIdentifier,
    };
    for path in [key_out, cert_out] {
        if path.symlink_metadata().is_ok() {
            return Err(SignError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    let enc = |e: &dyn std::fmt::Display| SignError::Encode(e.to_string());
    let mut rng = rand_core::OsRng;
    let private = RsaPrivateKey::new(&mut rng, new.bits).map_err(|e| enc(&e))?;
    let public = private.to_public_key();
    let spki_der = public.to_public_key_der().map_err(|e| enc(&e))?;
    let spki = x509_cert::spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes())
        .map_err(|e| enc(&e))?;
    let key_id = sha1::Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec();

    let cn = der::asn1::Utf8StringRef::new(new.common_name).map_err(|e| enc(&e))?;
    let atv = x509_cert::attr::AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value: der::Any::from(cn),
    };
    let rdn = x509_cert::name::RelativeDistinguishedName(
        der::asn1::SetOfVec::try_from(vec![atv]).map_err(|e| enc(&e))?,
    );
    let name = x509_cert::name::RdnSequence(vec![rdn]);

    // A positive 16-byte serial (RFC 5280 §4.1.2.2: at most 20 octets).
    let mut serial = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rng, &mut serial);
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let serial = x509_cert::serial_number::SerialNumber::new(&serial).map_err(|e| enc(&e))?;

    let extension =
        |oid, critical, value: Vec<u8>| -> Result<x509_cert::ext::Extension, SignError> {
            Ok(x509_cert::ext::Extension {
                extn_id: oid,
                critical,
                extn_value: der::asn1::OctetString::new(value).map_err(|e| enc(&e))?,
            })
        };
    use const_oid::AssociatedOid;
    let extensions = vec![
        extension(
            BasicConstraints::OID,
            true,
            BasicConstraints {
                ca: false,
                path_len_constraint: None,
            }
            .to_der()
            .map_err(|e| enc(&e))?,
        )?,
        extension(
            KeyUsage::OID,
            false,
            KeyUsage(KeyUsages::DigitalSignature.into())
                .to_der()
                .map_err(|e| enc(&e))?,
        )?,
        extension(
            ExtendedKeyUsage::OID,
            false,
            ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_CODE_SIGNING])
                .to_der()
                .map_err(|e| enc(&e))?,
        )?,
        extension(
            SubjectKeyIdentifier::OID,
            false,
            SubjectKeyIdentifier(der::asn1::OctetString::new(key_id.clone()).map_err(|e| enc(&e))?)
                .to_der()
                .map_err(|e| enc(&e))?,
        )?,
        extension(
            AuthorityKeyIdentifier::OID,
            false,
            AuthorityKeyIdentifier {
                key_identifier: Some(der::asn1::OctetString::new(key_id).map_err(|e| enc(&e))?),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            }
            .to_der()
            .map_err(|e| enc(&e))?,
        )?,
    ];
    // sha256WithRSAEncryption, parameters NULL (RFC 4055 §5).
    let signature_algorithm = x509_cert::spki::AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        parameters: Some(der::Any::null()),
    };
    let not_after = new
        .not_before
        .checked_add(Duration::from_secs(new.days.saturating_mul(86_400)))
        .ok_or_else(|| SignError::Encode("validity overflows".into()))?;
    let tbs = x509_cert::TbsCertificate {
        version: x509_cert::Version::V3,
        serial_number: serial,
        signature: signature_algorithm.clone(),
        issuer: name.clone(),
        validity: x509_cert::time::Validity {
            not_before: x509_time(new.not_before).map_err(|e| enc(&e))?,
            not_after: x509_time(not_after).map_err(|e| enc(&e))?,
        },
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let tbs_der = tbs.to_der().map_err(|e| enc(&e))?;
    let cert_signature = private
        .sign(
            Pkcs1v15Sign::new::<sha2::Sha256>(),
            &sha2::Sha256::digest(&tbs_der),
        )
        .map_err(|e| SignError::Rsa(e.to_string()))?;
    let cert = x509_cert::Certificate {
        tbs_certificate: tbs,
        signature_algorithm,
        signature: der::asn1::BitString::from_bytes(&cert_signature).map_err(|e| enc(&e))?,
    };
    let cert_der = cert.to_der().map_err(|e| enc(&e))?;
    let key_pem = private
        .to_pkcs8_pem(pkcs8::LineEnding::LF)
        .map_err(|e| enc(&e))?;

    let mut staged_key = kmodkit_commit::Staged::new(key_out)?;
    // 0600 before a byte of the key is written.
    staged_key.set_mode(0o600)?;
    write_all(&mut staged_key, key_pem.as_bytes())?;
    let mut staged_cert = kmodkit_commit::Staged::new(cert_out)?;
    write_all(&mut staged_cert, &cert_der)?;
    staged_key.commit_new().map_err(|e| exists_or(e, key_out))?;
    if let Err(e) = staged_cert.commit_new() {
        // Both or neither: the key just made has no certificate.
        let _ = std::fs::remove_file(key_out);
        return Err(exists_or(e, cert_out));
    }
    Ok(())
}

fn write_all(staged: &mut kmodkit_commit::Staged, bytes: &[u8]) -> Result<(), SignError> {
    staged.write_all(bytes).map_err(|source| {
        SignError::Write(kmodkit_commit::CommitError {
            path: staged.temporary_path().to_path_buf(),
            action: "write",
            source,
        })
    })
}

fn exists_or(e: kmodkit_commit::CommitError, path: &Path) -> SignError {
    if e.source.kind() == std::io::ErrorKind::AlreadyExists {
        SignError::Exists {
            path: path.to_path_buf(),
        }
    } else {
        SignError::Write(e)
    }
}
