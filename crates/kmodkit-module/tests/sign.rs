//! `sign_module` against the kernel's own `scripts/sign-file` (from the
//! cached Kbuild environment) and kmod's `modinfo`, on real modules, with
//! keys made by `openssl req` as DKMS makes them and by
//! `create_signing_key`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use common::{modinfo_field, real_modules, run, RealModule};
use kmodkit_module::signature::{hex_colon, parse_signature};
use kmodkit_module::{
    compress_module, create_signing_key, sign_module, Compression, HashAlgorithm, NewKey,
    SignError, SigningKey,
};

/// The newest Kbuild environment's `scripts/sign-file`.
fn sign_file() -> PathBuf {
    let kbuild = kmodkit_fixtures::cache_dir().join("oot/kbuild");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&kbuild)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/oot-fixtures", kbuild.display()))
        .flatten()
        .flat_map(|k| {
            std::fs::read_dir(k.path().join("usr/lib"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|d| d.path().join("scripts/sign-file"))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("no scripts/sign-file under {}", kbuild.display()))
}

struct KeyPair {
    key: PathBuf,
    cert: PathBuf,
    common_name: String,
}

/// DKMS 3.0.10's key: `openssl req -new -x509 -nodes -days 36500
/// -newkey rsa:2048 -outform DER` (with the kernel's -utf8 -sha256 -batch).
fn openssl_pair(dir: &Path) -> KeyPair {
    kmodkit_fixtures::require_tool("openssl", "openssl");
    let common_name = "kmodkit test DKMS-style key".to_string();
    let (key, cert) = (dir.join("mok.key"), dir.join("mok.pub"));
    run(Command::new("openssl")
        .args([
            "req", "-new", "-nodes", "-utf8", "-sha256", "-days", "36500",
        ])
        .args(["-batch", "-x509", "-outform", "DER", "-newkey", "rsa:2048"])
        .arg("-subj")
        .arg(format!("/CN={common_name}/O=kmodkit tests"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    KeyPair {
        key,
        cert,
        common_name,
    }
}

fn our_pair(dir: &Path) -> KeyPair {
    let common_name = "kmodkit test key".to_string();
    let (key, cert) = (dir.join("ours.key"), dir.join("ours.der"));
    create_signing_key(
        &NewKey {
            common_name: &common_name,
            bits: 2048,
            not_before: SystemTime::now(),
            days: 36500,
        },
        &key,
        &cert,
    )
    .unwrap();
    KeyPair {
        key,
        cert,
        common_name,
    }
}

/// sign-file's output for a copy of `module`.
fn oracle(
    dir: &Path,
    module: &[u8],
    hash: HashAlgorithm,
    key_id: bool,
    key: &Path,
    cert: &Path,
    pin: Option<&str>,
) -> Vec<u8> {
    let (input, output) = (dir.join("in.ko"), dir.join("out.ko"));
    std::fs::write(&input, module).unwrap();
    let mut cmd = Command::new(sign_file());
    if key_id {
        cmd.arg("-k");
    }
    cmd.arg(hash.name())
        .arg(key)
        .arg(cert)
        .arg(&input)
        .arg(&output);
    cmd.env_remove("KBUILD_SIGN_PIN");
    if let Some(pin) = pin {
        cmd.env("KBUILD_SIGN_PIN", pin);
    }
    run(&mut cmd);
    std::fs::read(&output).unwrap()
}

/// `openssl x509 -noout -serial` as kmod prints a key id.
fn openssl_serial(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-serial", "-in"])
        .arg(cert));
    let hex = String::from_utf8_lossy(&out)
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    hex_colon(&bytes)
}

fn check_pair(pair: &KeyPair, modules: &[RealModule], tmp: &Path) {
    let key = SigningKey::load(&pair.key, &pair.cert, None).unwrap();
    assert_eq!(key.signer(), pair.common_name);
    let serial = openssl_serial(&pair.cert);
    assert_eq!(hex_colon(&key.serial()), serial);
    for (i, m) in modules.iter().enumerate() {
        for hash in [HashAlgorithm::Sha256, HashAlgorithm::Sha512] {
            for key_id in [false, true] {
                // Every module with the defaults, a sample for the rest.
                if (hash, key_id) != (HashAlgorithm::Sha256, false) && i % 4 != 0 {
                    continue;
                }
                let ours = sign_module(&m.elf, &key, hash, key_id).unwrap();
                let theirs = oracle(tmp, &m.elf, hash, key_id, &pair.key, &pair.cert, None);
                assert!(
                    ours == theirs,
                    "{} {hash} -k={key_id}: differs from sign-file ({} vs {} bytes)",
                    m.label,
                    ours.len(),
                    theirs.len()
                );
                let signed = tmp.join("signed.ko");
                std::fs::write(&signed, &ours).unwrap();
                if key_id {
                    // kmod 30's PKCS#7 reader knows only
                    // issuerAndSerialNumber: for -k's subjectKeyIdentifier
                    // it prints no signature fields at all, and so do we.
                    assert_eq!(modinfo_field(&signed, "sig_id"), "");
                    assert!(!parse_signature(&ours).unwrap().pkcs7_decoded);
                } else {
                    assert_eq!(modinfo_field(&signed, "sig_id"), "PKCS#7");
                    // kmod's PKCS#7 reader names the signer only by
                    // issuerAndSerialNumber; -k leaves these fields out.
                    assert_eq!(modinfo_field(&signed, "signer"), pair.common_name);
                    assert_eq!(modinfo_field(&signed, "sig_key"), serial);
                    assert_eq!(modinfo_field(&signed, "sig_hashalgo"), hash.name());
                    let parsed = parse_signature(&ours).unwrap();
                    assert_eq!(parsed.signed_size, m.elf.len());
                    assert_eq!(parsed.hash_algorithm.as_deref(), Some(hash.name()));
                }
            }
        }
    }
}

#[test]
fn byte_identical_to_sign_file_with_a_dkms_style_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = openssl_pair(tmp.path());
    check_pair(&pair, &real_modules(), tmp.path());
}

#[test]
fn byte_identical_to_sign_file_with_a_created_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = our_pair(tmp.path());
    check_pair(&pair, &real_modules(), tmp.path());
}

#[test]
fn every_hash_matches_sign_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = openssl_pair(tmp.path());
    let key = SigningKey::load(&pair.key, &pair.cert, None).unwrap();
    let m = &real_modules()[0];
    for hash in HashAlgorithm::ALL {
        assert_eq!(
            HashAlgorithm::from_kconfig_name(&format!("\"{hash}\"")).unwrap(),
            hash
        );
        let ours = sign_module(&m.elf, &key, hash, false).unwrap();
        let theirs = oracle(tmp.path(), &m.elf, hash, false, &pair.key, &pair.cert, None);
        assert!(ours == theirs, "{hash}: differs from sign-file");
    }
}

/// The key-id form names the certificate's subjectKeyIdentifier.
#[test]
fn key_id_is_the_subject_key_identifier() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = openssl_pair(tmp.path());
    let key = SigningKey::load(&pair.key, &pair.cert, None).unwrap();
    let out = run(Command::new("openssl")
        .args([
            "x509",
            "-inform",
            "DER",
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
            "-in",
        ])
        .arg(&pair.cert));
    let text = String::from_utf8_lossy(&out);
    let expected = text.lines().nth(1).unwrap().trim();
    assert_eq!(hex_colon(key.key_id().unwrap()), expected);
}

/// Encrypted PKCS#8 (`openssl pkcs8 -topk8`, PBES2/AES-256), PKCS#1
/// ("RSA PRIVATE KEY") and the kernel's one-file `signing_key.pem` all
/// sign as sign-file does with the same key; a wrong or missing password
/// is a clear error naming the key file.
#[test]
fn key_formats_and_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pair = openssl_pair(dir);
    let m = &real_modules()[1];
    let expected = oracle(
        dir,
        &m.elf,
        HashAlgorithm::Sha256,
        false,
        &pair.key,
        &pair.cert,
        None,
    );

    let encrypted = dir.join("encrypted.key");
    run(Command::new("openssl")
        .args(["pkcs8", "-topk8", "-passout", "pass:s3cret", "-in"])
        .arg(&pair.key)
        .arg("-out")
        .arg(&encrypted));
    let theirs = oracle(
        dir,
        &m.elf,
        HashAlgorithm::Sha256,
        false,
        &encrypted,
        &pair.cert,
        Some("s3cret"),
    );
    assert!(theirs == expected);
    let key = SigningKey::load(&encrypted, &pair.cert, Some(b"s3cret")).unwrap();
    assert!(sign_module(&m.elf, &key, HashAlgorithm::Sha256, false).unwrap() == expected);
    let wrong = SigningKey::load(&encrypted, &pair.cert, Some(b"wrong")).unwrap_err();
    assert!(matches!(wrong, SignError::Password { .. }), "{wrong:?}");
    assert!(wrong.to_string().contains("encrypted.key"), "{wrong}");
    assert!(wrong.to_string().contains("wrong password"), "{wrong}");
    let missing = SigningKey::load(&encrypted, &pair.cert, None).unwrap_err();
    assert!(
        matches!(missing, SignError::PasswordRequired { .. }),
        "{missing:?}"
    );

    let pkcs1 = dir.join("rsa.key");
    run(Command::new("openssl")
        .args(["rsa", "-traditional", "-in"])
        .arg(&pair.key)
        .arg("-out")
        .arg(&pkcs1));
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let key = SigningKey::load(&pkcs1, &pair.cert, None).unwrap();
    assert!(sign_module(&m.elf, &key, HashAlgorithm::Sha256, false).unwrap() == expected);

    let cert_pem = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&pair.cert));
    let combined = dir.join("signing_key.pem");
    let mut both = std::fs::read(&pair.key).unwrap();
    both.extend_from_slice(&cert_pem);
    std::fs::write(&combined, both).unwrap();
    let theirs = oracle(
        dir,
        &m.elf,
        HashAlgorithm::Sha256,
        false,
        &combined,
        &combined,
        None,
    );
    assert!(theirs == expected);
    let key = SigningKey::load(&combined, &combined, None).unwrap();
    assert!(sign_module(&m.elf, &key, HashAlgorithm::Sha256, false).unwrap() == expected);

    // An EC key (sign-file could; DKMS's MOK and Debian's are RSA).
    let ec = dir.join("ec.key");
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&ec));
    let e = SigningKey::load(&ec, &pair.cert, None).unwrap_err();
    assert!(matches!(e, SignError::UnsupportedKey { .. }), "{e:?}");

    // Damaged certificates and keys are errors, never panics.
    let cert = std::fs::read(&pair.cert).unwrap();
    let damaged = dir.join("damaged.der");
    for cut in [2, 3, 40, cert.len() / 2, cert.len() - 1] {
        std::fs::write(&damaged, &cert[..cut]).unwrap();
        let e = SigningKey::load(&pair.key, &damaged, None).unwrap_err();
        assert!(
            matches!(e, SignError::Certificate { .. }),
            "cut {cut}: {e:?}"
        );
    }
    let e = SigningKey::load(&pair.cert, &pair.cert, None).unwrap_err();
    assert!(matches!(e, SignError::NoKey { .. }), "{e:?}");

    // Another key's certificate.
    let other = our_pair(dir);
    let e = SigningKey::load(&pair.key, &other.cert, None).unwrap_err();
    assert!(matches!(e, SignError::KeyMismatch { .. }), "{e:?}");
}

#[test]
fn refuses_signed_compressed_and_non_elf() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = openssl_pair(tmp.path());
    let key = SigningKey::load(&pair.key, &pair.cert, None).unwrap();
    let m = &real_modules()[0];
    let signed = sign_module(&m.elf, &key, HashAlgorithm::Sha256, false).unwrap();
    let e = sign_module(&signed, &key, HashAlgorithm::Sha256, false).unwrap_err();
    assert!(matches!(e, SignError::AlreadySigned), "{e:?}");
    let xz = compress_module(&m.elf, Compression::Xz).unwrap();
    let e = sign_module(&xz, &key, HashAlgorithm::Sha256, false).unwrap_err();
    assert!(matches!(e, SignError::Compressed(Compression::Xz)), "{e:?}");
    let e = sign_module(b"not a module", &key, HashAlgorithm::Sha256, false).unwrap_err();
    assert!(matches!(e, SignError::NotElf), "{e:?}");
}

/// The created pair: key 0600, a DER certificate with DKMS's and the
/// kernel's extensions as openssl reads them, and never replaced.
#[test]
fn created_key_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = our_pair(tmp.path());
    let mode = std::fs::metadata(&pair.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&pair.cert));
    let text = String::from_utf8_lossy(&text);
    for want in [
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "Digital Signature",
        "Code Signing",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "Public-Key: (2048 bit)",
        "sha256WithRSAEncryption",
    ] {
        assert!(text.contains(want), "no {want:?} in\n{text}");
    }
    // Its self-signature verifies.
    let pem = tmp.path().join("ours.pem");
    run(Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in"])
        .arg(&pair.cert)
        .arg("-out")
        .arg(&pem));
    run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&pem)
        .arg(&pem));

    let before = (
        std::fs::read(&pair.key).unwrap(),
        std::fs::read(&pair.cert).unwrap(),
    );
    let again = create_signing_key(
        &NewKey {
            common_name: "another",
            bits: 2048,
            not_before: SystemTime::now(),
            days: 1,
        },
        &pair.key,
        &tmp.path().join("new.der"),
    )
    .unwrap_err();
    assert!(matches!(again, SignError::Exists { .. }), "{again:?}");
    assert!(!tmp.path().join("new.der").exists());
    assert_eq!(before.0, std::fs::read(&pair.key).unwrap());
    assert_eq!(before.1, std::fs::read(&pair.cert).unwrap());
}
