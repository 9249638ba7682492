//! Synthetic hostile inputs that real files cannot show, shared by the
//! library and CLI tests that feed them in.

/// Issue 13, failure 1: 192 bytes of ELF64 LE (`e_shoff` 64,
/// `e_shentsize` 64, `e_shnum` 2, `e_shstrndx` 1) whose section-name
/// table has offset 100 and size 2^64 - 50, so `offset + size` wraps to
/// 50. kmodkit's sparse reader once re-parsed the headers without checks
/// and sliced `[100..50]`: a panic in depmod and abi check.
pub fn wrapping_name_table() -> Vec<u8> {
    let mut bytes = vec![0u8; 192];
    bytes[..4].copy_from_slice(b"\x7fELF");
    bytes[4] = 2; // ELFCLASS64
    bytes[5] = 1; // ELFDATA2LSB
    bytes[6] = 1; // EV_CURRENT
    bytes[40..48].copy_from_slice(&64u64.to_le_bytes()); // e_shoff
    bytes[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    bytes[60..62].copy_from_slice(&2u16.to_le_bytes()); // e_shnum
    bytes[62..64].copy_from_slice(&1u16.to_le_bytes()); // e_shstrndx
    let shdr1 = 64 + 64;
    bytes[shdr1 + 24..shdr1 + 32].copy_from_slice(&100u64.to_le_bytes()); // sh_offset
    bytes[shdr1 + 32..shdr1 + 40].copy_from_slice(&(u64::MAX - 49).to_le_bytes()); // sh_size
    bytes
}
