//! The iteration order of kmod's `shared/hash.c` tables.
//!
//! depmod writes `modules.symbols` in the order it iterates its symbol
//! table, and builds its module array from its module-name table (modules
//! absent from `modules.order` keep that order). kmod's table is an array
//! of `n_buckets` (a power of two) buckets selected by Paul Hsieh's
//! SuperFastHash of the key; each bucket keeps its entries sorted by
//! `strcmp`. Iteration walks buckets in index order, entries in bucket
//! order. So the order is fully determined by the keys: sort by
//! (bucket, bytes).

/// kmod's `hash_superfast` (little-endian 16-bit loads, signed `char`, as
/// on x86, the architecture kmodkit targets).
pub fn superfast(key: &[u8]) -> u32 {
    let len = key.len() as u32;
    let mut hash: u32 = len;
    let rem = key.len() & 3;
    let load16 = |b: &[u8]| u32::from(u16::from_le_bytes([b[0], b[1]]));
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        hash = hash.wrapping_add(load16(&c[0..2]));
        let tmp = (load16(&c[2..4]) << 11) ^ hash;
        hash = (hash << 16) ^ tmp;
        hash = hash.wrapping_add(hash >> 11);
    }
    let tail = chunks.remainder();
    // `key[2]` and `*key` are plain `char`: signed on x86.
    let signed = |b: u8| b as i8 as i32 as u32;
    match rem {
        3 => {
            hash = hash.wrapping_add(load16(&tail[0..2]));
            hash ^= hash << 16;
            hash ^= signed(tail[2]) << 18;
            hash = hash.wrapping_add(hash >> 11);
        }
        2 => {
            hash = hash.wrapping_add(load16(&tail[0..2]));
            hash ^= hash << 11;
            hash = hash.wrapping_add(hash >> 17);
        }
        1 => {
            hash = hash.wrapping_add(signed(tail[0]));
            hash ^= hash << 10;
            hash = hash.wrapping_add(hash >> 1);
        }
        _ => {}
    }
    hash ^= hash << 3;
    hash = hash.wrapping_add(hash >> 5);
    hash ^= hash << 4;
    hash = hash.wrapping_add(hash >> 17);
    hash ^= hash << 25;
    hash = hash.wrapping_add(hash >> 6);
    hash
}

/// Sorts `items` into the order kmod iterates a table of `n_buckets`
/// (rounded up to a power of two) keyed by `key(item)`.
pub fn sort_in_iteration_order<T>(items: &mut [T], n_buckets: u32, key: impl Fn(&T) -> &[u8]) {
    let mask = n_buckets.next_power_of_two() - 1;
    items.sort_by_cached_key(|item| {
        let k = key(item);
        (superfast(k) & mask, k.to_vec())
    });
}
