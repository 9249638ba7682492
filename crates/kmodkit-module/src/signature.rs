//! The signature appended to a module file.
//!
//! Layout, from the end of the file backwards (`scripts/sign-file.c`,
//! `include/linux/module_signature.h`, kmod's `libkmod-signature.c`):
//!
//! ```text
//! [ELF image][signer][key id][signature: sig_len bytes]
//! [struct module_signature: algo u8, hash u8, id_type u8, signer_len u8,
//!  key_id_len u8, pad[3], sig_len u32 big-endian]
//! ["~Module signature appended~\n"]
//! ```
//!
//! Modern kernels use `id_type` 2 (PKCS#7): signer and key id lengths are
//! 0 and the signature bytes are a DER `ContentInfo` (SignedData). As kmod
//! does, the signer is the issuer's commonName of the first SignerInfo, the
//! key id its serial number, the hash its digest algorithm and the
//! signature its encryptedDigest.

use serde::Serialize;

pub const SIGNATURE_MAGIC: &[u8] = b"~Module signature appended~\n";
/// `sizeof(struct module_signature)`.
pub(crate) const MODSIG_SIZE: usize = 12;
/// `PKEY_ID_PKCS7`, the `id_type` of every signature sign-file makes.
pub(crate) const PKEY_ID_PKCS7: u8 = 2;

const PKEY_ALGO: [&str; 2] = ["DSA", "RSA"];
const PKEY_HASH: [&str; 9] = [
    "md4", "md5", "sha1", "rmd160", "sha256", "sha384", "sha512", "sha224", "sm3",
];
const PKEY_ID_TYPE: [&str; 3] = ["PGP", "X509", "PKCS#7"];

/// A parsed module signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signature {
    /// `PGP`, `X509` or `PKCS#7`.
    pub id_type: String,
    /// Public-key algorithm (`RSA`, `ECDSA`, `DSA`, `SM2`, `Ed25519`, or
    /// the dotted OID when unknown). PKCS#7: the SignerInfo's
    /// digestEncryptionAlgorithm (sign-file leaves the trailer's byte 0,
    /// which would read as `DSA`), or `unknown` when the blob cannot be
    /// decoded. PGP/X509: the trailer's byte.
    pub algorithm: String,
    /// Digest algorithm (`sha256`, ...), or `None` when unrecognised.
    pub hash_algorithm: Option<String>,
    /// Signer name: the certificate issuer's commonName for PKCS#7.
    #[serde(serialize_with = "ser_lossy")]
    pub signer: Vec<u8>,
    /// Key identifier: the certificate serial number for PKCS#7.
    #[serde(serialize_with = "ser_hex")]
    pub key_id: Vec<u8>,
    /// The raw signature value (PKCS#7 encryptedDigest).
    #[serde(serialize_with = "ser_hex")]
    pub signature: Vec<u8>,
    /// Length of the ELF image before the signature.
    pub signed_size: usize,
    /// False when the PKCS#7 blob could not be decoded; the trailer was
    /// still valid. kmod prints no signature fields in that case.
    pub pkcs7_decoded: bool,
}

fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex_colon(v))
}

fn ser_lossy<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(v))
}

/// `01:AB:...` as kmod prints key ids, without line breaks.
pub fn hex_colon(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The fixed-size part at the very end of a signed file.
struct Trailer {
    algo: usize,
    hash: usize,
    id_type: usize,
    signer_start: usize,
    key_start: usize,
    sig_start: usize,
    /// Where `struct module_signature` starts (the signature ends there).
    modsig_start: usize,
}

/// Reads `struct module_signature` and the magic from the last
/// [`TRAILER_LEN`] bytes of `file`, with kmod's acceptance rules
/// (`kmod_module_signature_info`): a missing magic, an out-of-range
/// algorithm, hash or id type, or a length that does not fit make the file
/// "not signed".
fn trailer(file: &[u8]) -> Option<Trailer> {
    let size = file.len().checked_sub(SIGNATURE_MAGIC.len())?;
    if &file[size..] != SIGNATURE_MAGIC {
        return None;
    }
    let modsig_start = size.checked_sub(MODSIG_SIZE)?;
    let modsig = &file[modsig_start..size];
    let (algo, hash, id_type) = (modsig[0] as usize, modsig[1] as usize, modsig[2] as usize);
    let (signer_len, key_id_len) = (modsig[3] as usize, modsig[4] as usize);
    let sig_len = u32::from_be_bytes([modsig[8], modsig[9], modsig[10], modsig[11]]) as usize;
    if algo >= PKEY_ALGO.len() || hash >= PKEY_HASH.len() || id_type >= PKEY_ID_TYPE.len() {
        return None;
    }
    if sig_len == 0 {
        return None;
    }
    let sig_start = modsig_start.checked_sub(sig_len)?;
    let key_start = sig_start.checked_sub(key_id_len)?;
    let signer_start = key_start.checked_sub(signer_len)?;
    Some(Trailer {
        algo,
        hash,
        id_type,
        signer_start,
        key_start,
        sig_start,
        modsig_start,
    })
}

/// Bytes at the end of a file that [`signature_start`] needs to see.
pub const TRAILER_LEN: usize = MODSIG_SIZE + SIGNATURE_MAGIC.len();

/// Where the appended signature (signer, key id, signature, trailer)
/// starts in `file`, reading only its last [`TRAILER_LEN`] bytes; `None`
/// when the file is not signed. A reader that fetches parts of a file
/// (`crate::sparse`) reads from there to the end before
/// [`parse_signature`].
pub fn signature_start(file: &[u8]) -> Option<usize> {
    trailer(file).map(|t| t.signer_start)
}

/// Reads the signature trailer, with kmod's acceptance rules: a missing
/// magic, an out-of-range algorithm, hash or id type, or a length that does
/// not fit make the file "not signed" rather than an error.
pub fn parse_signature(file: &[u8]) -> Option<Signature> {
    let Trailer {
        algo,
        hash,
        id_type,
        signer_start,
        key_start,
        sig_start,
        modsig_start,
    } = trailer(file)?;
    let sig = &file[sig_start..modsig_start];
    let mut out = Signature {
        id_type: PKEY_ID_TYPE[id_type].to_string(),
        algorithm: PKEY_ALGO[algo].to_string(),
        hash_algorithm: Some(PKEY_HASH[hash].to_string()),
        signer: file[signer_start..key_start].to_vec(),
        key_id: file[key_start..sig_start].to_vec(),
        signature: sig.to_vec(),
        signed_size: signer_start,
        pkcs7_decoded: true,
    };
    if id_type == 2 {
        match decode_pkcs7(sig) {
            Some(p) => {
                out.algorithm = p.algorithm;
                out.signer = p.signer;
                out.key_id = p.serial;
                out.signature = p.encrypted_digest;
                out.hash_algorithm = p.hash;
            }
            None => {
                out.pkcs7_decoded = false;
                out.algorithm = "unknown".to_string();
                out.hash_algorithm = None;
            }
        }
    }
    Some(out)
}

struct Pkcs7Info {
    algorithm: String,
    signer: Vec<u8>,
    serial: Vec<u8>,
    hash: Option<String>,
    encrypted_digest: Vec<u8>,
}

/// A DER TLV: tag byte, contents, and the bytes after it.
pub(crate) struct Tlv<'a> {
    pub(crate) tag: u8,
    pub(crate) contents: &'a [u8],
    pub(crate) rest: &'a [u8],
}

pub(crate) fn der(input: &[u8]) -> Option<Tlv<'_>> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags never occur in PKCS#7 signatures
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some(Tlv {
        tag,
        contents: &rest[..len],
        rest: &rest[len..],
    })
}

pub(crate) fn expect(input: &[u8], tag: u8) -> Option<Tlv<'_>> {
    der(input).filter(|t| t.tag == tag)
}

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const SET: u8 = 0x31;
pub(crate) const OID: u8 = 0x06;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const OCTET_STRING: u8 = 0x04;
/// id-signedData 1.2.840.113549.1.7.2
pub(crate) const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// id-at-commonName 2.5.4.3
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

fn hash_name(oid: &[u8]) -> Option<&'static str> {
    Some(match oid {
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x04] => "md4",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x02, 0x05] => "md5",
        [0x2b, 0x0e, 0x03, 0x02, 0x1a] => "sha1",
        [0x2b, 0x24, 0x03, 0x02, 0x01] => "rmd160",
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01] => "sha256",
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02] => "sha384",
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03] => "sha512",
        [0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x04] => "sha224",
        [0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x83, 0x11] => "sm3",
        _ => return None,
    })
}

/// A DER OBJECT IDENTIFIER's contents in dotted form (X.690 §8.19).
fn dotted_oid(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in oid {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The public-key algorithm of a digestEncryptionAlgorithm OID: the plain
/// key OIDs and the signature-with-digest OIDs that OpenSSL and sign-file
/// write (RFC 3279, RFC 5758, RFC 8410, GM/T 0006).
fn public_key_algorithm(oid: &[u8]) -> String {
    let dotted = dotted_oid(oid);
    let name = match dotted.as_str() {
        "1.2.840.113549.1.1.1"
        | "1.2.840.113549.1.1.5"
        | "1.2.840.113549.1.1.11"
        | "1.2.840.113549.1.1.12"
        | "1.2.840.113549.1.1.13"
        | "1.2.840.113549.1.1.14" => "RSA",
        "1.2.840.10045.2.1"
        | "1.2.840.10045.4.1"
        | "1.2.840.10045.4.3.1"
        | "1.2.840.10045.4.3.2"
        | "1.2.840.10045.4.3.3"
        | "1.2.840.10045.4.3.4" => "ECDSA",
        "1.2.840.10040.4.1" | "1.2.840.10040.4.3" => "DSA",
        "1.2.156.10197.1.301" | "1.2.156.10197.1.501" => "SM2",
        "1.3.101.112" => "Ed25519",
        _ => return dotted,
    };
    name.to_string()
}

/// Decodes the first SignerInfo of a PKCS#7 SignedData (RFC 2315 §9).
fn decode_pkcs7(blob: &[u8]) -> Option<Pkcs7Info> {
    let content_info = expect(blob, SEQUENCE)?;
    let oid = expect(content_info.contents, OID)?;
    if oid.contents != OID_SIGNED_DATA {
        return None;
    }
    let explicit = expect(oid.rest, 0xa0)?;
    let signed_data = expect(explicit.contents, SEQUENCE)?;
    let version = expect(signed_data.contents, INTEGER)?;
    let digest_algs = expect(version.rest, SET)?;
    let content = expect(digest_algs.rest, SEQUENCE)?;
    let mut rest = content.rest;
    // Optional [0] certificates and [1] crls.
    let mut signer_infos = der(rest)?;
    while signer_infos.tag == 0xa0 || signer_infos.tag == 0xa1 {
        rest = signer_infos.rest;
        signer_infos = der(rest)?;
    }
    if signer_infos.tag != SET {
        return None;
    }
    let signer_info = expect(signer_infos.contents, SEQUENCE)?;
    let si_version = expect(signer_info.contents, INTEGER)?;
    // Only issuerAndSerialNumber is valid PKCS#7; OpenSSL's PKCS#7 decoder
    // (used by kmod) fails on a CMS subjectKeyIdentifier, and so do we.
    let issuer_serial = expect(si_version.rest, SEQUENCE)?;
    let issuer = expect(issuer_serial.contents, SEQUENCE)?;
    let serial = expect(issuer.rest, INTEGER)?;
    let digest_alg = expect(issuer_serial.rest, SEQUENCE)?;
    let digest_oid = expect(digest_alg.contents, OID)?;
    let mut after = digest_alg.rest;
    let mut next = der(after)?;
    if next.tag == 0xa0 {
        after = next.rest; // authenticatedAttributes
        next = der(after)?;
    }
    if next.tag != SEQUENCE {
        return None; // digestEncryptionAlgorithm
    }
    let algorithm = public_key_algorithm(expect(next.contents, OID)?.contents);
    let encrypted = expect(next.rest, OCTET_STRING)?;

    let signer = name_to_signer(issuer.contents)?;
    // BN_bn2bin: big-endian magnitude without leading zero bytes.
    let serial_bytes = serial
        .contents
        .iter()
        .skip_while(|&&b| b == 0)
        .copied()
        .collect();
    Some(Pkcs7Info {
        algorithm,
        signer,
        serial: serial_bytes,
        hash: hash_name(digest_oid.contents).map(str::to_string),
        encrypted_digest: encrypted.contents.to_vec(),
    })
}

/// What kmod prints as `signer` for an X.501 Name (the contents of its
/// SEQUENCE): kmod's `x509_name_to_str` takes the commonName, or when
/// there is none the value of the last attribute scanned, up to a NUL.
/// `None` when the Name is not valid DER.
pub(crate) fn name_to_signer(name: &[u8]) -> Option<Vec<u8>> {
    let mut signer: Option<&[u8]> = None;
    let mut rdns = name;
    while !rdns.is_empty() {
        let rdn = expect(rdns, SET)?;
        rdns = rdn.rest;
        let atv = expect(rdn.contents, SEQUENCE)?;
        let typ = expect(atv.contents, OID)?;
        let value = der(typ.rest)?;
        signer = Some(value.contents);
        if typ.contents == OID_COMMON_NAME {
            break;
        }
    }
    Some(
        signer
            .map(|s| s.split(|&b| b == 0).next().unwrap_or(&[]).to_vec())
            .unwrap_or_default(),
    )
}
