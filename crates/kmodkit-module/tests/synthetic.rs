//! Synthetic modules, for what real kernel packages cannot show:
//! big-endian and 32-bit objects, extended modversions (Linux 6.14+),
//! old-style absolute `__crc_` symbols, SPARC register symbols, every
//! compression format from one known image, and hostile bytes.
//!
//! The objects come from the `object` crate's ELF writer and carry the
//! sections modpost and `<linux/export-internal.h>` produce (see the crate
//! doc of `kmodkit_module`). The expected values are the ones put in, and
//! kmod 30 (`modprobe --dump-modversions`, `modinfo -F`) must read the same from the same files. Signatures are DER built by
//! hand, plus a real one from `openssl cms` checked with OpenSSL. kmod and
//! openssl are required: the test command installs both, and a missing
//! one fails the test rather than skipping it.
//!
//! With `KMODKIT_WRITE_FUZZ_CORPUS=1`, `fuzz_seed_corpus` rewrites the
//! seed inputs of `fuzz/corpus/module_reader/` from these builders.

use std::io::Write;
use std::path::{Path, PathBuf};

use kmodkit_module::{
    Class, Compression, Endian, ExportedSymbol, Module, ModuleFile, SymbolVersion, UndefinedSymbol,
};
use object::write::{Object, SectionId, Symbol, SymbolSection};
use object::{
    Architecture, BinaryFormat, Endianness, SectionKind, SymbolFlags, SymbolKind, SymbolScope,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Building modules

#[derive(Debug, Clone, Copy)]
struct Target {
    name: &'static str,
    arch: Architecture,
    endian: Endianness,
    class: Class,
    machine: u16,
}

/// One target per ELF class and byte order.
const TARGETS: [Target; 4] = [
    Target {
        name: "elf64-le",
        arch: Architecture::X86_64,
        endian: Endianness::Little,
        class: Class::Elf64,
        machine: 62, // EM_X86_64
    },
    Target {
        name: "elf64-be",
        arch: Architecture::PowerPc64,
        endian: Endianness::Big,
        class: Class::Elf64,
        machine: 21, // EM_PPC64
    },
    Target {
        name: "elf32-le",
        arch: Architecture::I386,
        endian: Endianness::Little,
        class: Class::Elf32,
        machine: 3, // EM_386
    },
    Target {
        name: "elf32-be",
        arch: Architecture::Mips,
        endian: Endianness::Big,
        class: Class::Elf32,
        machine: 8, // EM_MIPS
    },
];

impl Target {
    fn long_size(self) -> usize {
        match self.class {
            Class::Elf32 => 4,
            Class::Elf64 => 8,
        }
    }

    fn endian(self) -> Endian {
        match self.endian {
            Endianness::Little => Endian::Little,
            Endianness::Big => Endian::Big,
        }
    }

    /// `size` low bytes of `value` in the target's byte order.
    fn uint(self, value: u64, size: usize) -> Vec<u8> {
        match self.endian {
            Endianness::Little => value.to_le_bytes()[..size].to_vec(),
            Endianness::Big => value.to_be_bytes()[8 - size..].to_vec(),
        }
    }

    /// `sizeof(struct module)`: arbitrary but distinct per class, as on
    /// real kernels.
    fn this_module_size(self) -> u64 {
        match self.class {
            Class::Elf32 => 640,
            Class::Elf64 => 1344,
        }
    }

    /// The CRC of `module_layout` in `__versions`: all 64 bits on ELF64 so
    /// a swapped half shows.
    fn layout_crc(self) -> u64 {
        match self.class {
            Class::Elf32 => 0x5566_7788,
            Class::Elf64 => 0x1122_3344_5566_7788,
        }
    }
}

/// `.modinfo` as modpost and `MODULE_INFO` lay it out, with the oddities
/// kmod tolerates: leading NUL padding (section alignment), a doubled NUL,
/// a string without `=`, an empty value and a byte that is not UTF-8.
const MODINFO: &[u8] =
    b"\0\0\0license=GPL\0parm=debug:Enable debug output (int)\0parmtype=debug:int\0\0\
intree\0description=synthetic \xff module\0depends=\0vermagic=6.14.0 SMP mod_unload \0name=synth\0";

const MODINFO_ENTRIES: [(&[u8], &[u8]); 8] = [
    (b"license", b"GPL"),
    (b"parm", b"debug:Enable debug output (int)"),
    (b"parmtype", b"debug:int"),
    (b"intree", b""),
    (b"description", b"synthetic \xff module"),
    (b"depends", b""),
    (b"vermagic", b"6.14.0 SMP mod_unload "),
    (b"name", b"synth"),
];

const FOO_CRC: u32 = 0x1234_abcd;
const BAR_CRC: u32 = 0x0bad_f00d;
const BAZ_CRC: u32 = 0x600d_cafe;

/// A name too long for a 64-byte `__versions` record.
const EXT_LONG_NAME: &str =
    "a_rust_symbol_whose_mangled_name_is_far_longer_than_the_fifty_five_bytes_of_modversion_info";

fn versions(target: Target) -> Vec<SymbolVersion> {
    // The longest name that fits: 64 bytes less the CRC less the NUL.
    let longest = "x".repeat(64 - target.long_size() - 1);
    vec![
        SymbolVersion {
            name: "module_layout".into(),
            crc: target.layout_crc(),
        },
        SymbolVersion {
            name: "_printk".into(),
            crc: 0xc585_0110,
        },
        SymbolVersion {
            name: longest,
            crc: 0x0102_0304,
        },
    ]
}

fn extended_versions() -> Vec<SymbolVersion> {
    vec![
        SymbolVersion {
            name: EXT_LONG_NAME.into(),
            crc: 0xdead_beef,
        },
        SymbolVersion {
            name: "_printk".into(),
            crc: 0xc585_0110,
        },
    ]
}

fn exports() -> Vec<ExportedSymbol> {
    vec![
        ExportedSymbol {
            name: "foo".into(),
            crc: Some(FOO_CRC),
            gpl_only: false,
            namespace: Some("MY_NS".into()),
        },
        ExportedSymbol {
            name: "bar".into(),
            crc: Some(BAR_CRC),
            gpl_only: true,
            namespace: None,
        },
        ExportedSymbol {
            name: "baz".into(),
            crc: Some(BAZ_CRC),
            gpl_only: false,
            namespace: None,
        },
    ]
}

fn undefined() -> Vec<UndefinedSymbol> {
    vec![
        UndefinedSymbol {
            name: "_printk".into(),
            weak: false,
        },
        UndefinedSymbol {
            name: "kmalloc_caches".into(),
            weak: false,
        },
        UndefinedSymbol {
            name: "optional_hook".into(),
            weak: true,
        },
    ]
}

fn add_section(
    obj: &mut Object<'_>,
    name: &str,
    kind: SectionKind,
    data: &[u8],
    align: u64,
) -> SectionId {
    let id = obj.add_section(Vec::new(), name.as_bytes().to_vec(), kind);
    obj.append_section_data(id, data, align);
    id
}

fn add_symbol(
    obj: &mut Object<'_>,
    name: &str,
    section: SymbolSection,
    scope: SymbolScope,
    value: u64,
) {
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value,
        size: 0,
        kind: SymbolKind::Data,
        scope,
        weak: false,
        section,
        flags: SymbolFlags::None,
    });
}

fn add_local(obj: &mut Object<'_>, name: &str, section: SectionId, value: u64) {
    add_symbol(
        obj,
        name,
        SymbolSection::Section(section),
        SymbolScope::Compilation,
        value,
    );
}

fn add_undefined(obj: &mut Object<'_>, name: &str, weak: bool) {
    obj.add_symbol(Symbol {
        name: name.as_bytes().to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Text,
        scope: SymbolScope::Dynamic,
        weak,
        section: SymbolSection::Undefined,
        flags: SymbolFlags::None,
    });
}

/// A relocatable object shaped like a kernel module for `target`, with
/// extended modversions when `extended`.
fn build_module(target: Target, extended: bool) -> Vec<u8> {
    let mut obj = Object::new(BinaryFormat::Elf, target.arch, target.endian);
    obj.add_file_symbol(b"synth.mod.c".to_vec());

    let text = add_section(&mut obj, ".text", SectionKind::Text, &[0; 16], 16);
    add_section(&mut obj, ".modinfo", SectionKind::ReadOnlyData, MODINFO, 1);

    let records: Vec<u8> = versions(target)
        .iter()
        .flat_map(|v| {
            let mut rec = target.uint(v.crc, target.long_size());
            rec.extend_from_slice(v.name.as_bytes());
            rec.resize(64, 0);
            rec
        })
        .collect();
    add_section(
        &mut obj,
        "__versions",
        SectionKind::ReadOnlyData,
        &records,
        32,
    );

    if extended {
        let ext = extended_versions();
        let names: Vec<u8> = ext
            .iter()
            .flat_map(|v| [v.name.as_bytes(), b"\0"].concat())
            .collect();
        let crcs: Vec<u8> = ext.iter().flat_map(|v| target.uint(v.crc, 4)).collect();
        add_section(
            &mut obj,
            "__version_ext_names",
            SectionKind::ReadOnlyData,
            &names,
            1,
        );
        add_section(
            &mut obj,
            "__version_ext_crcs",
            SectionKind::ReadOnlyData,
            &crcs,
            4,
        );
    }

    // struct kernel_symbol with PREL32 references: three 4-byte offsets.
    let ksymtab = add_section(
        &mut obj,
        "__ksymtab",
        SectionKind::ReadOnlyData,
        &[0; 24],
        4,
    );
    let ksymtab_gpl = add_section(
        &mut obj,
        "__ksymtab_gpl",
        SectionKind::ReadOnlyData,
        &[0; 12],
        4,
    );
    let crcs = [
        target.uint(BAR_CRC.into(), 4),
        target.uint(FOO_CRC.into(), 4),
    ]
    .concat();
    let kcrctab = add_section(&mut obj, "__kcrctab", SectionKind::ReadOnlyData, &crcs, 4);
    // "foo" @0, "MY_NS" @4, "bar" @10, "" @14 (bar's empty namespace), "baz" @15.
    let strings = add_section(
        &mut obj,
        "__ksymtab_strings",
        SectionKind::ReadOnlyString,
        b"foo\0MY_NS\0bar\0\0baz\0",
        1,
    );
    let this_module = vec![0; target.this_module_size() as usize];
    add_section(
        &mut obj,
        ".gnu.linkonce.this_module",
        SectionKind::Data,
        &this_module,
        64,
    );

    add_local(&mut obj, "__ksymtab_foo", ksymtab, 0);
    add_local(&mut obj, "__ksymtab_bar", ksymtab_gpl, 0);
    add_local(&mut obj, "__ksymtab_baz", ksymtab, 12);
    add_local(&mut obj, "__crc_foo", kcrctab, 4);
    add_local(&mut obj, "__crc_bar", kcrctab, 0);
    // Before Linux 5.19 a CRC could be an absolute symbol holding the value.
    add_symbol(
        &mut obj,
        "__crc_baz",
        SymbolSection::Absolute,
        SymbolScope::Compilation,
        BAZ_CRC.into(),
    );
    add_local(&mut obj, "__kstrtab_foo", strings, 0);
    add_local(&mut obj, "__kstrtabns_foo", strings, 4);
    add_local(&mut obj, "__kstrtab_bar", strings, 10);
    add_local(&mut obj, "__kstrtabns_bar", strings, 14);
    add_local(&mut obj, "__kstrtab_baz", strings, 15);

    add_symbol(
        &mut obj,
        "init_module",
        SymbolSection::Section(text),
        SymbolScope::Dynamic,
        0,
    );
    for sym in undefined() {
        add_undefined(&mut obj, &sym.name, sym.weak);
    }
    obj.write().expect("object writes a relocatable ELF")
}

fn assert_module(target: Target, extended: bool, module: &Module) {
    let t = target.name;
    assert_eq!(module.class, target.class, "{t}");
    assert_eq!(module.endian, target.endian(), "{t}");
    assert_eq!(module.machine, target.machine, "{t}");
    let modinfo: Vec<(&[u8], &[u8])> = module
        .modinfo
        .iter()
        .map(|e| (e.key.as_slice(), e.value.as_slice()))
        .collect();
    assert_eq!(modinfo, MODINFO_ENTRIES, "{t}");
    assert_eq!(
        module.modinfo_first("parmtype").as_deref(),
        Some("debug:int"),
        "{t}"
    );
    assert_eq!(module.versions, versions(target), "{t}");
    assert_eq!(
        module.extended_versions,
        extended.then(extended_versions),
        "{t}"
    );
    assert_eq!(module.exports, exports(), "{t}");
    assert_eq!(module.undefined, undefined(), "{t}");
    assert_eq!(
        module.this_module_size,
        Some(target.this_module_size()),
        "{t}"
    );
    assert_eq!(module.signature, None, "{t}");
}

fn read(
    path: &str,
    bytes: Vec<u8>,
    limit: u64,
) -> Result<(ModuleFile, Module), kmodkit_module::Error> {
    let file = ModuleFile::from_bytes(path, bytes, limit)?;
    let module = file.parse()?;
    Ok((file, module))
}

const LIMIT: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Classes, byte orders, extended modversions

#[test]
fn every_field_in_each_class_and_byte_order() {
    for target in TARGETS {
        let (file, module) = read(target.name, build_module(target, false), LIMIT).unwrap();
        assert_eq!(file.compression, Compression::None);
        assert_module(target, false, &module);
    }
}

#[test]
fn extended_modversions_in_each_class_and_byte_order() {
    for target in TARGETS {
        let (_, module) = read(target.name, build_module(target, true), LIMIT).unwrap();
        assert_module(target, true, &module);
    }
}

#[test]
fn extended_modversions_need_both_sections() {
    let target = TARGETS[0];
    let mut bytes = build_module(target, true);
    rename_section(
        &mut bytes,
        target,
        "__version_ext_crcs",
        "__version_ext_xxxx",
    );
    let (_, module) = read("one-section", bytes, LIMIT).unwrap();
    assert_eq!(module.extended_versions, None);
    assert_eq!(module.versions, versions(target));
}

/// kmod's `kmod_elf_get_dependency_symbols` skips SPARC `STT_REGISTER`
/// symbols, which are undefined but name registers, not imports.
#[test]
fn sparc_register_symbols_are_not_imports() {
    let mut obj = Object::new(BinaryFormat::Elf, Architecture::Sparc64, Endianness::Big);
    add_section(
        &mut obj,
        ".modinfo",
        SectionKind::ReadOnlyData,
        b"name=sparc\0",
        1,
    );
    obj.add_symbol(Symbol {
        name: b"%g2".to_vec(),
        value: 0,
        size: 0,
        kind: SymbolKind::Unknown,
        scope: SymbolScope::Dynamic,
        weak: false,
        section: SymbolSection::Undefined,
        // STB_GLOBAL << 4 | STT_REGISTER
        flags: SymbolFlags::Elf {
            st_info: object::elf::SymbolInfo(0x10 | 13),
            st_other: object::elf::SymbolOther(0),
        },
    });
    add_undefined(&mut obj, "_printk", false);
    let (_, module) = read("sparc", obj.write().unwrap(), LIMIT).unwrap();
    assert_eq!(module.machine, 43); // EM_SPARCV9
    assert_eq!(
        module.undefined,
        [UndefinedSymbol {
            name: "_printk".into(),
            weak: false
        }]
    );
}

#[test]
fn open_reads_a_file_from_disk() {
    let dir = scratch_dir("open");
    let path = dir.join("synth.ko.zst");
    let plain = build_module(TARGETS[1], false);
    let packed = zstd::encode_all(plain.as_slice(), 19).unwrap();
    std::fs::write(&path, &packed).unwrap();
    let (file, module) = kmodkit_module::read_module(&path).unwrap();
    assert_eq!(file.compression, Compression::Zstd);
    assert_eq!(file.stored_size, packed.len() as u64);
    assert_eq!(file.data, plain);
    assert_module(TARGETS[1], false, &module);

    let missing = dir.join("missing.ko");
    let msg = ModuleFile::open(&missing).unwrap_err().to_string();
    assert!(
        msg.contains(&missing.display().to_string()) && msg.contains("cannot read"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------
// Signatures

fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn set(parts: &[Vec<u8>]) -> Vec<u8> {
    der(0x31, &parts.concat())
}

const OID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
const OID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_COUNTRY: &[u8] = &[0x55, 0x04, 0x06];
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

fn algorithm(oid: &[u8]) -> Vec<u8> {
    seq(&[der(0x06, oid), der(0x05, &[])])
}

fn attribute(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
    set(&[seq(&[der(0x06, oid), der(tag, value.as_bytes())])])
}

/// A PKCS#7 `ContentInfo` as `sign-file` writes it (RFC 2315 §9.1): no
/// certificates, no authenticated attributes, one SignerInfo identified by
/// issuer and serial number. The issuer has a country before and an
/// organisation after the commonName, which kmod must skip.
fn pkcs7(common_name: &str, serial: &[u8], signature: &[u8]) -> Vec<u8> {
    let issuer = seq(&[
        attribute(OID_COUNTRY, 0x13, "XX"),
        attribute(OID_COMMON_NAME, 0x0c, common_name),
        attribute(OID_ORGANIZATION, 0x0c, "Synthetic Org"),
    ]);
    let signer_info = seq(&[
        der(0x02, &[1]),
        seq(&[issuer, der(0x02, serial)]),
        algorithm(OID_SHA256),
        algorithm(OID_RSA),
        der(0x04, signature),
    ]);
    let signed_data = seq(&[
        der(0x02, &[1]),
        set(&[algorithm(OID_SHA256)]),
        seq(&[der(0x06, OID_DATA)]),
        set(&[signer_info]),
    ]);
    seq(&[der(0x06, OID_SIGNED_DATA), der(0xa0, &signed_data)])
}

/// `struct module_signature` for PKCS#7 and the magic string, as
/// `scripts/sign-file.c` appends them after the blob.
fn signature_trailer(id_type: u8, sig_len: usize) -> Vec<u8> {
    let mut out = vec![0, 0, id_type, 0, 0, 0, 0, 0];
    out.extend_from_slice(&(sig_len as u32).to_be_bytes());
    out.extend_from_slice(b"~Module signature appended~\n");
    out
}

fn sign(module: &[u8], blob: &[u8]) -> Vec<u8> {
    [module, blob, &signature_trailer(2, blob.len())].concat()
}

/// 256 bytes: an RSA-2048 signature's size, long enough for a two-byte DER
/// length.
fn fake_signature_value() -> Vec<u8> {
    (0..256u32).map(|i| (i * 7 + 3) as u8).collect()
}

fn signed_module(target: Target) -> Vec<u8> {
    let blob = pkcs7("Test CA", &[0x00, 0xab, 0x12], &fake_signature_value());
    sign(&build_module(target, false), &blob)
}

#[test]
fn hand_built_pkcs7_signature() {
    for target in TARGETS {
        let plain = build_module(target, false);
        let (_, module) = read(target.name, signed_module(target), LIMIT).unwrap();
        let sig = module.signature.expect("signature");
        assert_eq!(sig.id_type, "PKCS#7");
        assert!(sig.pkcs7_decoded);
        assert_eq!(sig.signer, b"Test CA");
        assert_eq!(sig.key_id, [0xab, 0x12]);
        assert_eq!(sig.hash_algorithm.as_deref(), Some("sha256"));
        assert_eq!(sig.signature, fake_signature_value());
        assert_eq!(sig.signed_size, plain.len());
        // The signature does not disturb the ELF sections before it.
        assert_eq!(module.exports, exports());
    }
}

#[test]
fn signature_trailer_rules() {
    let plain = build_module(TARGETS[0], false);
    let blob = pkcs7("Test CA", &[0x01], &[0x55; 16]);

    // An id_type outside PGP/X509/PKCS#7: kmod calls the module unsigned.
    let bad_type = [plain.as_slice(), &blob, &signature_trailer(3, blob.len())].concat();
    assert_eq!(read("bad-type", bad_type, LIMIT).unwrap().1.signature, None);

    // sig_len larger than the file: unsigned, no panic.
    let too_long = [plain.as_slice(), &blob, &signature_trailer(2, 1 << 30)].concat();
    assert_eq!(read("too-long", too_long, LIMIT).unwrap().1.signature, None);

    // A valid trailer over bytes that are not DER: signed, not decoded.
    let garbage = [0xff; 40];
    let undecodable = sign(&plain, &garbage);
    let sig = read("garbage", undecodable, LIMIT)
        .unwrap()
        .1
        .signature
        .unwrap();
    assert!(!sig.pkcs7_decoded);
    assert_eq!(sig.hash_algorithm, None);
    assert_eq!(sig.signed_size, plain.len());

    // The magic alone, or magic and trailer with nothing before them.
    assert!(kmodkit_module::signature::parse_signature(b"~Module signature appended~\n").is_none());
    assert!(kmodkit_module::signature::parse_signature(&signature_trailer(2, 1)).is_none());
}

/// A real signature from OpenSSL, checked against OpenSSL: the signer and
/// serial of the certificate, and the extracted signature value recovers a
/// DigestInfo whose digest is the module's SHA-256.
#[test]
fn openssl_cms_signature() {
    kmodkit_fixtures::require_tool("openssl", "openssl");
    let dir = scratch_dir("openssl");
    let module = build_module(TARGETS[0], false);
    let (ko, key, cert, blob, value, recovered) = (
        dir.join("synth.ko"),
        dir.join("key.pem"),
        dir.join("cert.pem"),
        dir.join("synth.p7s"),
        dir.join("value.bin"),
        dir.join("recovered.bin"),
    );
    std::fs::write(&ko, &module).unwrap();
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/O=kmodkit/CN=Synthetic module signing key",
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&cert),
    ]);
    // The options sign-file uses: DER, binary, no certs, no attributes.
    openssl(&[
        "cms",
        "-sign",
        "-binary",
        "-noattr",
        "-nocerts",
        "-md",
        "sha256",
        "-outform",
        "DER",
        "-signer",
        path_str(&cert),
        "-inkey",
        path_str(&key),
        "-in",
        path_str(&ko),
        "-out",
        path_str(&blob),
    ]);
    let serial_line = openssl(&["x509", "-in", path_str(&cert), "-noout", "-serial"]);
    let serial_hex = serial_line.trim().strip_prefix("serial=").unwrap();
    let serial = hex_decode(serial_hex);

    let signed = sign(&module, &std::fs::read(&blob).unwrap());
    let (_, parsed) = read("openssl", signed, LIMIT).unwrap();
    let sig = parsed.signature.expect("signature");
    assert!(sig.pkcs7_decoded);
    assert_eq!(
        String::from_utf8_lossy(&sig.signer),
        "Synthetic module signing key"
    );
    // BN_bn2bin drops leading zero bytes, as kmod prints the key id.
    let serial: Vec<u8> = serial.into_iter().skip_while(|&b| b == 0).collect();
    assert_eq!(sig.key_id, serial);
    assert_eq!(sig.hash_algorithm.as_deref(), Some("sha256"));
    assert_eq!(sig.signature.len(), 256);

    std::fs::write(&value, &sig.signature).unwrap();
    openssl(&[
        "pkeyutl",
        "-verifyrecover",
        "-inkey",
        path_str(&key),
        "-in",
        path_str(&value),
        "-out",
        path_str(&recovered),
    ]);
    let digest_info = std::fs::read(&recovered).unwrap();
    let digest = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", path_str(&ko)])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(digest.len(), 32);
    assert!(
        digest_info.ends_with(&digest),
        "recovered DigestInfo does not hold the module's digest"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn openssl(args: &[&str]) -> String {
    run(Path::new("openssl"), args)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn hex_decode(hex: &str) -> Vec<u8> {
    let hex = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("synthetic-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------
// kmod as the oracle

/// kmod 30 as the oracle where it reads the same fields: `modprobe
/// --dump-modversions` for `__versions` (kmod knows no extended
/// modversions) and `modinfo -F` for `.modinfo` and the signature, over
/// every class, byte order and compression.
#[test]
fn kmod_agrees() {
    let (kmod, modprobe, modinfo) = (
        sbin_tool("kmod"),
        sbin_tool("modprobe"),
        sbin_tool("modinfo"),
    );
    let mut compared = 0usize;
    // "+ZSTD +XZ -ZLIB ...": the formats this kmod build can read.
    let features = run(&kmod, &["--version"]);
    let reads = |c: Compression| {
        let feature = match c {
            Compression::None => return true,
            Compression::Gzip => "+ZLIB",
            Compression::Xz => "+XZ",
            Compression::Zstd => "+ZSTD",
        };
        features.split_whitespace().any(|f| f == feature)
    };
    let dir = scratch_dir("kmod");
    for target in TARGETS {
        let plain = signed_module(target);
        let (_, module) = read(target.name, plain.clone(), LIMIT).unwrap();
        let mut files = vec![(format!("{}.ko", target.name), plain.clone())];
        for (name, compression, packed) in compressed_variants(&plain) {
            // modinfo takes an argument for a path only with a module suffix.
            let suffix = match compression {
                Compression::Gzip => "gz",
                Compression::Xz => "xz",
                Compression::Zstd => "zst",
                Compression::None => unreachable!(),
            };
            if reads(compression) {
                files.push((format!("{}-{name}.ko.{suffix}", target.name), packed));
            }
        }
        for (file_name, bytes) in files {
            let path = dir.join(file_name);
            std::fs::write(&path, bytes).unwrap();
            let dump = run(&modprobe, &["--dump-modversions", path_str(&path)]);
            let kmod_versions: Vec<SymbolVersion> = dump
                .lines()
                .map(|line| {
                    let (crc, name) = line.split_once('\t').unwrap();
                    SymbolVersion {
                        name: name.into(),
                        crc: u64::from_str_radix(crc.trim_start_matches("0x"), 16).unwrap(),
                    }
                })
                .collect();
            assert_eq!(module.versions, kmod_versions, "{}", path.display());

            let field = |name: &str| run(&modinfo, &["-F", name, path_str(&path)]);
            for key in ["license", "description", "vermagic", "name"] {
                let ours: Vec<String> = module
                    .modinfo_values(key)
                    .map(|v| format!("{}\n", String::from_utf8_lossy(v)))
                    .collect();
                assert_eq!(field(key), ours.concat(), "{} {key}", path.display());
            }
            let sig = module.signature.as_ref().unwrap();
            assert_eq!(
                field("signer").trim_end(),
                String::from_utf8_lossy(&sig.signer)
            );
            assert_eq!(
                field("sig_key").trim_end(),
                kmodkit_module::signature::hex_colon(&sig.key_id)
            );
            assert_eq!(
                field("sig_hashalgo").trim_end(),
                sig.hash_algorithm.as_deref().unwrap()
            );
            let kmod_signature: String = field("signature").split_whitespace().collect();
            assert_eq!(
                kmod_signature,
                kmodkit_module::signature::hex_colon(&sig.signature)
            );
            compared += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // Every target in plain form at least, and every format kmod reads.
    assert!(
        compared >= TARGETS.len(),
        "kmod compared only {compared} files"
    );
}

/// A kmod tool from `PATH` or the sbin directories a non-root `PATH`
/// lacks; a missing one fails the test with what to install.
fn sbin_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("oracle '{name}' not installed: apt-get install kmod (scripts/fixtures does)")
        })
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Compression

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn xz(bytes: &[u8], check: liblzma::stream::Check) -> Vec<u8> {
    let stream = liblzma::stream::Stream::new_easy_encoder(6, check).unwrap();
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 19).unwrap()
}

fn compressed_variants(plain: &[u8]) -> Vec<(&'static str, Compression, Vec<u8>)> {
    use liblzma::stream::Check;
    let half = plain.len() / 2;
    vec![
        ("gzip", Compression::Gzip, gzip(plain)),
        // `cat a.gz b.gz` is one gzip file to gunzip and to kmod.
        (
            "gzip-members",
            Compression::Gzip,
            [gzip(&plain[..half]), gzip(&plain[half..])].concat(),
        ),
        ("xz-crc32", Compression::Xz, xz(plain, Check::Crc32)),
        ("xz-crc64", Compression::Xz, xz(plain, Check::Crc64)),
        (
            "xz-streams",
            Compression::Xz,
            [
                xz(&plain[..half], Check::Crc32),
                xz(&plain[half..], Check::Crc64),
            ]
            .concat(),
        ),
        ("zstd", Compression::Zstd, zstd(plain)),
        (
            "zstd-frames",
            Compression::Zstd,
            [zstd(&plain[..half]), zstd(&plain[half..])].concat(),
        ),
    ]
}

#[test]
fn compressed_round_trips() {
    for target in TARGETS {
        let plain = signed_module(target);
        let (_, expected) = read("plain", plain.clone(), LIMIT).unwrap();
        for (name, compression, packed) in compressed_variants(&plain) {
            let path = format!("{}.ko.{name}", target.name);
            let stored = packed.len() as u64;
            let (file, module) = read(&path, packed, LIMIT).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(file.compression, compression, "{path}");
            assert_eq!(file.stored_size, stored, "{path}");
            assert_eq!(file.data, plain, "{path}");
            assert_module(
                target,
                false,
                &Module {
                    signature: None,
                    ..module.clone()
                },
            );
            assert_eq!(module.signature, expected.signature, "{path}");
        }
    }
}

// ---------------------------------------------------------------------------
// Hostile inputs

/// Reads `bytes` as `hostile/<name>`, expects an error, and checks that its
/// text names the file and contains every keyword. The same bytes written
/// to a file must fail the same way through the file readers depmod, abi
/// check and modinfo use (see [`read_from_file`]).
fn expect_error(name: &str, bytes: Vec<u8>, limit: u64, keywords: &[&str]) -> String {
    let path = format!("hostile/{name}");
    let from_file = read_from_file(name, &bytes, limit);
    let msg = match read(&path, bytes, limit) {
        Ok(_) => panic!("{path}: read without error"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.starts_with(&format!("{path}: ")),
        "error does not name the file: {msg}"
    );
    for keyword in keywords {
        assert!(
            msg.contains(keyword),
            "{path}: {msg:?} does not mention {keyword:?}"
        );
    }
    let kind = &msg[path.len() + 2..];
    for (reader, result) in from_file {
        match result {
            Ok(_) => panic!("{name}: {reader} read without error; in memory: {msg}"),
            Err(e) => assert_eq!(
                e.kind.to_string(),
                kind,
                "{name}: {reader} and the in-memory reader disagree"
            ),
        }
    }
    msg
}

/// Writes `bytes` to a scratch file and reads it with each file reader:
/// `read_module_mapped` (depmod's scan, abi check, add-drivers: the
/// sparse `pread` path for a plain module, mmap for a compressed one) and
/// `read_module` (modinfo). Each result is as `Debug` text, to compare.
fn read_from_file(
    name: &str,
    bytes: &[u8],
    limit: u64,
) -> [(&'static str, Result<String, kmodkit_module::Error>); 2] {
    let path = scratch_dir("files").join(name);
    std::fs::write(&path, bytes).unwrap();
    let mapped = kmodkit_module::read_module_mapped(&path, limit).map(|m| format!("{m:?}"));
    let full = ModuleFile::open_with_limit(&path, limit)
        .and_then(|f| f.parse())
        .map(|m| format!("{m:?}"));
    let check_name = |r: &Result<String, kmodkit_module::Error>| {
        if let Err(e) = r {
            assert_eq!(e.path, path, "{name}: error names another file: {e}");
        }
    };
    check_name(&mapped);
    check_name(&full);
    std::fs::remove_file(&path).unwrap();
    [("read_module_mapped", mapped), ("ModuleFile::open", full)]
}

#[test]
fn wrapping_section_name_table_is_an_error_in_every_reader() {
    expect_error(
        "wrapping-shstrtab.ko",
        kmodkit_fixtures::hostile::wrapping_name_table(),
        LIMIT,
        &[".shstrtab", "offset 100", "runs past the end"],
    );
}

/// Offsets of the fields this file patches, per class (ELF spec, gABI).
struct Layout {
    target: Target,
}

impl Layout {
    fn rd(&self, bytes: &[u8], off: usize, size: usize) -> u64 {
        let field = &bytes[off..off + size];
        let mut v = 0u64;
        match self.target.endian {
            Endianness::Big => field.iter().for_each(|&b| v = (v << 8) | u64::from(b)),
            Endianness::Little => field
                .iter()
                .rev()
                .for_each(|&b| v = (v << 8) | u64::from(b)),
        }
        v
    }

    fn wr(&self, bytes: &mut [u8], off: usize, size: usize, value: u64) {
        bytes[off..off + size].copy_from_slice(&self.target.uint(value, size));
    }

    fn is64(&self) -> bool {
        self.target.class == Class::Elf64
    }

    /// (offset, size) of an `Ehdr` field: `shoff`, `shentsize`, `shnum`,
    /// `shstrndx`.
    fn ehdr(&self, field: &str) -> (usize, usize) {
        match (field, self.is64()) {
            ("shoff", false) => (32, 4),
            ("shoff", true) => (40, 8),
            ("shentsize", false) => (46, 2),
            ("shentsize", true) => (58, 2),
            ("shnum", false) => (48, 2),
            ("shnum", true) => (60, 2),
            ("shstrndx", false) => (50, 2),
            ("shstrndx", true) => (62, 2),
            _ => unreachable!("{field}"),
        }
    }

    /// (offset, size) of a field of section header `index`: `name`,
    /// `offset`, `size`.
    fn shdr(&self, bytes: &[u8], index: usize, field: &str) -> (usize, usize) {
        let (shoff, n) = self.ehdr("shoff");
        let entsize = if self.is64() { 64 } else { 40 };
        let base = self.rd(bytes, shoff, n) as usize + index * entsize;
        let (off, size) = match (field, self.is64()) {
            ("name", _) => (0, 4),
            ("offset", false) => (16, 4),
            ("offset", true) => (24, 8),
            ("size", false) => (20, 4),
            ("size", true) => (32, 8),
            _ => unreachable!("{field}"),
        };
        (base + off, size)
    }

    fn get_shdr(&self, bytes: &[u8], index: usize, field: &str) -> u64 {
        let (off, size) = self.shdr(bytes, index, field);
        self.rd(bytes, off, size)
    }

    fn set_shdr(&self, bytes: &mut [u8], index: usize, field: &str, value: u64) {
        let (off, size) = self.shdr(bytes, index, field);
        self.wr(bytes, off, size, value);
    }

    fn set_ehdr(&self, bytes: &mut [u8], field: &str, value: u64) {
        let (off, size) = self.ehdr(field);
        self.wr(bytes, off, size, value);
    }

    fn shstrndx(&self, bytes: &[u8]) -> usize {
        let (off, size) = self.ehdr("shstrndx");
        self.rd(bytes, off, size) as usize
    }

    fn section_index(&self, bytes: &[u8], name: &str) -> usize {
        let strtab = self.shstrndx(bytes);
        let names_off = self.get_shdr(bytes, strtab, "offset") as usize;
        let (off, size) = self.ehdr("shnum");
        (1..self.rd(bytes, off, size) as usize)
            .find(|&i| {
                let start = names_off + self.get_shdr(bytes, i, "name") as usize;
                bytes[start..].split(|&b| b == 0).next() == Some(name.as_bytes())
            })
            .unwrap_or_else(|| panic!("no section {name}"))
    }
}

/// Overwrites a section's name in `.shstrtab` with one of the same length.
fn rename_section(bytes: &mut [u8], target: Target, from: &str, to: &str) {
    assert_eq!(from.len(), to.len());
    let layout = Layout { target };
    let index = layout.section_index(bytes, from);
    let names_off = layout.get_shdr(bytes, layout.shstrndx(bytes), "offset") as usize;
    let start = names_off + layout.get_shdr(bytes, index, "name") as usize;
    bytes[start..start + to.len()].copy_from_slice(to.as_bytes());
}

#[test]
fn every_truncation_is_an_error() {
    for target in TARGETS {
        let bytes = build_module(target, true);
        for len in 0..bytes.len() {
            let name = format!("{}-cut-{len}", target.name);
            let msg = expect_error(&name, bytes[..len].to_vec(), LIMIT, &[]);
            assert!(
                ["past the end", "too short", "not an ELF file"]
                    .iter()
                    .any(|k| msg.contains(k)),
                "{msg}"
            );
        }
    }
}

#[test]
fn section_outside_the_file() {
    for target in TARGETS {
        let layout = Layout { target };
        let good = build_module(target, false);
        let index = layout.section_index(&good, ".modinfo");
        let len = good.len() as u64;
        let t = target.name;

        let mut bytes = good.clone();
        layout.set_shdr(&mut bytes, index, "offset", len);
        expect_error(
            &format!("{t}-offset"),
            bytes,
            LIMIT,
            &[".modinfo", "runs past the end"],
        );

        let mut bytes = good.clone();
        layout.set_shdr(&mut bytes, index, "size", len);
        expect_error(
            &format!("{t}-size"),
            bytes,
            LIMIT,
            &[".modinfo", "runs past the end"],
        );

        // offset + size wraps around: must not pass the bounds check.
        let max = if layout.is64() {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let mut bytes = good.clone();
        layout.set_shdr(&mut bytes, index, "offset", max - 3);
        layout.set_shdr(&mut bytes, index, "size", 16);
        expect_error(
            &format!("{t}-wrap"),
            bytes,
            LIMIT,
            &[".modinfo", "runs past the end"],
        );

        let strtab = layout.shstrndx(&good);
        let mut bytes = good.clone();
        layout.set_shdr(&mut bytes, strtab, "size", len);
        expect_error(
            &format!("{t}-shstrtab"),
            bytes,
            LIMIT,
            &[".shstrtab", "runs past the end"],
        );

        // The section header table itself.
        let mut bytes = good.clone();
        layout.set_ehdr(&mut bytes, "shoff", len - 8);
        expect_error(
            &format!("{t}-shoff"),
            bytes,
            LIMIT,
            &["section header table", "past the end"],
        );

        let mut bytes = good.clone();
        layout.set_ehdr(&mut bytes, "shnum", 0xffff);
        expect_error(
            &format!("{t}-shnum"),
            bytes,
            LIMIT,
            &["65535 entries", "past the end"],
        );
    }
}

#[test]
fn malformed_headers() {
    for target in TARGETS {
        let layout = Layout { target };
        let good = build_module(target, false);
        let t = target.name;
        let shnum = {
            let (off, size) = layout.ehdr("shnum");
            layout.rd(&good, off, size)
        };

        let mut bytes = good.clone();
        let (off, size) = layout.ehdr("shentsize");
        let expected = layout.rd(&bytes, off, size);
        layout.set_ehdr(&mut bytes, "shentsize", expected + 1);
        expect_error(
            &format!("{t}-shentsize"),
            bytes,
            LIMIT,
            &[&format!(
                "section header entry size is {}, expected {expected}",
                expected + 1
            )],
        );

        for bad in [0, shnum, 0xffff] {
            let mut bytes = good.clone();
            layout.set_ehdr(&mut bytes, "shstrndx", bad);
            expect_error(
                &format!("{t}-shstrndx-{bad}"),
                bytes,
                LIMIT,
                &[&format!("string table index {bad} is invalid")],
            );
        }

        // Drop the final NUL of .shstrtab from its size.
        let strtab = layout.shstrndx(&good);
        let mut bytes = good.clone();
        let size = layout.get_shdr(&bytes, strtab, "size");
        layout.set_shdr(&mut bytes, strtab, "size", size - 1);
        expect_error(
            &format!("{t}-shstrtab-nul"),
            bytes,
            LIMIT,
            &["does not end with a NUL"],
        );

        let mut bytes = good.clone();
        bytes[4] = 3;
        expect_error(&format!("{t}-class"), bytes, LIMIT, &["ELF class 3"]);
        let mut bytes = good.clone();
        bytes[5] = 0;
        expect_error(&format!("{t}-data"), bytes, LIMIT, &["data encoding 0"]);
        let mut bytes = good.clone();
        bytes[0] = b'M';
        expect_error(&format!("{t}-magic"), bytes, LIMIT, &["not an ELF file"]);
    }
}

#[test]
fn malformed_tables() {
    for target in TARGETS {
        let layout = Layout { target };
        let good = build_module(target, false);
        let t = target.name;
        let entry = if layout.is64() { 24 } else { 16 };

        let symtab = layout.section_index(&good, ".symtab");
        let mut bytes = good.clone();
        let size = layout.get_shdr(&bytes, symtab, "size");
        layout.set_shdr(&mut bytes, symtab, "size", size - 1);
        expect_error(
            &format!("{t}-symtab-size"),
            bytes,
            LIMIT,
            &[
                &format!(".symtab has size {}", size - 1),
                &format!("entry size {entry}"),
            ],
        );

        let strtab_len = layout.get_shdr(&good, layout.section_index(&good, ".strtab"), "size");
        let mut bytes = good.clone();
        let sym1 = layout.get_shdr(&bytes, symtab, "offset") as usize + entry;
        layout.wr(&mut bytes, sym1, 4, strtab_len);
        expect_error(
            &format!("{t}-symbol-name"),
            bytes,
            LIMIT,
            &[&format!(
                "symbol 1 names offset {strtab_len} past the end of .strtab"
            )],
        );

        let versions = layout.section_index(&good, "__versions");
        let mut bytes = good.clone();
        let size = layout.get_shdr(&bytes, versions, "size");
        layout.set_shdr(&mut bytes, versions, "size", size - 1);
        expect_error(
            &format!("{t}-versions"),
            bytes,
            LIMIT,
            &[&format!(
                "__versions has size {}, not a multiple of its entry size 64",
                size - 1
            )],
        );
    }
}

/// Odd but harmless: values pointing outside their sections read as
/// nothing rather than failing the module, as in kmod.
#[test]
fn dangling_symbol_values_are_tolerated() {
    let target = TARGETS[0];
    let layout = Layout { target };
    let mut bytes = build_module(target, false);
    // Every symbol's value to far past its section.
    let symtab = layout.section_index(&bytes, ".symtab");
    let (off, size) = (
        layout.get_shdr(&bytes, symtab, "offset") as usize,
        layout.get_shdr(&bytes, symtab, "size") as usize,
    );
    for sym in (off + 24..off + size).step_by(24) {
        layout.wr(&mut bytes, sym + 8, 8, u64::MAX - 1);
    }
    let (_, module) = read("dangling", bytes, LIMIT).unwrap();
    let names: Vec<&str> = module.exports.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["foo", "bar", "baz"]);
    assert_eq!(module.exports[0].crc, None);
    assert_eq!(module.exports[0].namespace, None);
    // The absolute CRC is the value itself, truncated to 32 bits.
    assert_eq!(module.exports[2].crc, Some(0xffff_fffe));
}

#[test]
fn garbage_after_a_compression_magic() {
    let garbage = [0x5a; 64];
    for (name, magic) in [
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd][..]),
        ("xz", &[0xfd, b'7', b'z', b'X', b'Z', 0x00][..]),
        ("gzip", &[0x1f, 0x8b][..]),
    ] {
        expect_error(
            &format!("garbage.{name}"),
            [magic, &garbage].concat(),
            LIMIT,
            &[&format!("{name} stream is corrupt or truncated")],
        );
        // Nothing but the magic.
        expect_error(
            &format!("magic-only.{name}"),
            magic.to_vec(),
            LIMIT,
            &[&format!("{name} stream is corrupt or truncated")],
        );
    }
}

#[test]
fn truncated_compressed_streams() {
    let plain = build_module(TARGETS[3], false);
    for (name, compression, packed) in compressed_variants(&plain) {
        let stride = (packed.len() / 97).max(1);
        // Lengths >= the magic, so the format is still detected.
        for len in (6..packed.len()).step_by(stride).chain([packed.len() - 1]) {
            expect_error(
                &format!("{name}-cut-{len}"),
                packed[..len].to_vec(),
                LIMIT,
                &[&format!("{compression} stream is corrupt or truncated")],
            );
        }
    }
}

#[test]
fn compressed_data_that_is_not_elf() {
    let text = b"this is a text file, not a kernel module\n".repeat(4);
    for (name, compression, packed) in compressed_variants(&text) {
        expect_error(
            &format!("text.{name}"),
            packed,
            LIMIT,
            &[&format!(
                "{compression}-compressed data does not hold an ELF object: not an ELF file"
            )],
        );
    }
}

#[test]
fn decompression_bombs_stop_at_the_limit() {
    let zeros = vec![0u8; 1 << 20];
    for (name, compression, packed) in compressed_variants(&zeros) {
        assert!(
            packed.len() < 64 * 1024,
            "{name} bomb is {} bytes",
            packed.len()
        );
        expect_error(
            &format!("bomb.{name}"),
            packed,
            4096,
            &[&format!(
                "{compression} stream expands past the limit of 4096 bytes"
            )],
        );
    }
    // Exactly at the limit is fine.
    let plain = build_module(TARGETS[0], false);
    let exact = plain.len() as u64;
    read("exact.zst", zstd(&plain), exact).unwrap();
    expect_error(
        "one-short.zst",
        zstd(&plain),
        exact - 1,
        &["past the limit"],
    );
}

/// An xz stream whose block header declares a dictionary of `2^(dict/2 +
/// 12)` bytes (LZMA2 dictionary-size byte, xz file format §5.3.1), with the
/// header CRC fixed up. A larger dictionary than the encoder used still
/// decodes the same data.
fn xz_with_dictionary_byte(plain: &[u8], dict: u8) -> Vec<u8> {
    let mut packed = xz(plain, liblzma::stream::Check::Crc32);
    // Stream header (12 bytes), then the block header: size byte, flags,
    // the LZMA2 filter flags (id 0x21, 1 property byte), padding, CRC32.
    let header_len = (usize::from(packed[12]) + 1) * 4;
    let header = &mut packed[12..12 + header_len];
    assert_eq!(
        &header[2..4],
        [0x21, 0x01],
        "xz block header with one LZMA2 filter"
    );
    header[4] = dict;
    let mut crc = flate2::Crc::new();
    crc.update(&header[..header_len - 4]);
    header[header_len - 4..].copy_from_slice(&crc.sum().to_le_bytes());
    packed
}

/// liblzma allocates the declared dictionary before decoding: a tiny file
/// declaring 4 GiB must be refused, not allocated; `xz -9`'s 64 MiB must
/// still read under a small output limit.
#[test]
fn xz_dictionary_is_bounded() {
    let plain = build_module(TARGETS[0], false);
    let (_, module) = read(
        "dict-64MiB.ko.xz",
        xz_with_dictionary_byte(&plain, 28),
        LIMIT,
    )
    .unwrap();
    assert_module(TARGETS[0], false, &module);
    expect_error(
        "dict-4GiB.ko.xz",
        xz_with_dictionary_byte(&plain, 40),
        LIMIT,
        &["xz stream is corrupt or truncated", "memory limit"],
    );
}

/// A zstd frame header declaring 2^62 bytes of content, then garbage: the
/// declared size is a hint for the output buffer, never an allocation of
/// that size (which aborts the process), even without a limit.
#[test]
fn declared_size_is_not_trusted() {
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0xe0];
    frame.extend_from_slice(&(1u64 << 62).to_le_bytes());
    frame.extend_from_slice(&[0x5a; 32]);
    for limit in [LIMIT, u64::MAX] {
        expect_error(
            &format!("huge-declared-{limit}.ko.zst"),
            frame.clone(),
            limit,
            &["zstd stream is corrupt or truncated"],
        );
    }
}

/// `u64::MAX` means "no limit" to a caller; it must not overflow.
#[test]
fn unbounded_limit() {
    let plain = build_module(TARGETS[0], false);
    for (name, _, packed) in compressed_variants(&plain) {
        let (file, _) = read(name, packed, u64::MAX).unwrap();
        assert_eq!(file.data, plain);
    }
}

// ---------------------------------------------------------------------------
// Random damage

/// Valid modules to damage: each class and byte order, one signed, one
/// compressed.
fn mutation_seeds() -> &'static [Vec<u8>] {
    static SEEDS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<Vec<u8>> = TARGETS.iter().map(|&t| build_module(t, true)).collect();
        seeds.push(signed_module(TARGETS[1]));
        seeds.push(gzip(&build_module(TARGETS[2], false)));
        seeds
    })
}

/// Where a mutation lands: the ELF header, anywhere, or the last quarter
/// (section headers and symbol tables, after the section data).
fn mutate(bytes: &mut [u8], region: u8, at: prop::sample::Index, value: u8) {
    let len = bytes.len();
    let (start, span) = match region {
        0 => (0, len.min(64)),
        1 => (0, len),
        _ => (len - len / 4, len / 4),
    };
    if span > 0 {
        bytes[start + at.index(span)] = value;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_damage_never_panics(
        seed in any::<prop::sample::Index>(),
        mutations in prop::collection::vec((0u8..3, any::<prop::sample::Index>(), any::<u8>()), 0..24),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let seeds = mutation_seeds();
        let mut bytes = seed.get(seeds).clone();
        for (region, at, value) in mutations {
            mutate(&mut bytes, region, at, value);
        }
        if let Some(cut) = cut {
            let len = cut.index(bytes.len());
            bytes.truncate(len);
        }
        let from_file = read_from_file("mutant.ko", &bytes, LIMIT);
        let in_memory = read("mutant.ko", bytes, LIMIT);
        if let Err(e) = &in_memory {
            prop_assert!(e.to_string().starts_with("mutant.ko: "), "{}", e);
        }
        let in_memory = in_memory.map(|(_, m)| format!("{m:?}")).map_err(|e| e.kind.to_string());
        for (reader, result) in from_file {
            prop_assert_eq!(&result.map_err(|e| e.kind.to_string()), &in_memory, "{}", reader);
        }
    }
}

// ---------------------------------------------------------------------------
// Fuzz corpus

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Writes the synthetic seeds of `module_reader` when
/// `KMODKIT_WRITE_FUZZ_CORPUS` is set. Then reads every input of the
/// module fuzz targets' corpora (seeds, and each crash input kept as a
/// regression) in memory and through the file readers: none may panic and
/// all readers must agree, as the `module_file` target requires.
#[test]
fn fuzz_seed_corpus() {
    if std::env::var_os("KMODKIT_WRITE_FUZZ_CORPUS").is_some() {
        let dir = corpus_dir("module_reader");
        std::fs::create_dir_all(&dir).unwrap();
        let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
        for target in TARGETS {
            seeds.push((format!("{}.ko", target.name), build_module(target, false)));
        }
        let ext = build_module(TARGETS[1], true);
        seeds.push(("elf64-be-ext.ko".into(), ext.clone()));
        seeds.push(("elf32-le-signed.ko".into(), signed_module(TARGETS[2])));
        seeds.push(("elf64-be-ext.ko.gz".into(), gzip(&ext)));
        seeds.push((
            "elf64-be-ext.ko.xz".into(),
            xz(&ext, liblzma::stream::Check::Crc32),
        ));
        seeds.push(("elf64-be-ext.ko.zst".into(), zstd(&ext)));
        for (name, bytes) in seeds {
            assert!(bytes.len() < 20 * 1024, "{name} is {} bytes", bytes.len());
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    for target in ["module_reader", "module_file"] {
        let dir = corpus_dir(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fuzz corpus {}: {e}", dir.display()));
        let (mut inputs, mut modules) = (0usize, 0usize);
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue; // libFuzzer's scratch files, ignored by git
            }
            let bytes = std::fs::read(&path).unwrap();
            let from_file = read_from_file(&format!("{target}-{name}"), &bytes, LIMIT);
            let in_memory = read(&name, bytes, LIMIT)
                .map(|(_, m)| format!("{m:?}"))
                .map_err(|e| e.kind.to_string());
            for (reader, result) in from_file {
                assert_eq!(
                    result.map_err(|e| e.kind.to_string()),
                    in_memory,
                    "{}: {reader} and the in-memory reader disagree",
                    path.display()
                );
            }
            inputs += 1;
            modules += usize::from(in_memory.is_ok());
        }
        // The seeds are valid modules; crash inputs add errors.
        assert!(
            modules > 0 && inputs >= modules,
            "{}: {inputs} inputs, {modules} read as modules",
            dir.display()
        );
    }
}
