//! The two archive formats a `.deb` is made of, written as `dpkg-deb
//! --build` writes them and read back for the repository index.
//!
//! - The outer `ar` archive (dpkg's `lib/dpkg/ar.c`): the magic
//!   `!<arch>\n`, then per member a 60-byte header `%-16s%-12lu%-6lu%-6lu
//!   %-8lo%-10jd` + "`\n" (name, mtime, uid, gid, octal mode, size) and the
//!   data padded with `\n` to an even length. dpkg-deb writes
//!   `debian-binary`, `control.tar.*`, `data.tar.*` in that order, names
//!   without the System V `/` terminator, uid/gid 0 and mode 100644.
//! - The inner tar archives in the GNU format dpkg-deb asks GNU tar for
//!   (`--format=gnu`): 512-byte headers (name\[100\], mode\[8\], uid\[8\],
//!   gid\[8\], size\[12\], mtime\[12\], chksum\[8\], typeflag, linkname\[100\],
//!   magic `"ustar  \0"`, uname\[32\], gname\[32\], …), numbers in octal with
//!   a NUL terminator, names longer than 99 bytes in a preceding
//!   `././@LongLink` entry of type `L`, and two zero blocks at the end.
//!   Every entry is `./PATH`, owned by root/root (0/0).

use std::io::{Read, Write};

/// One tar entry to write.
#[derive(Debug, Clone)]
pub(crate) struct TarEntry {
    /// `./lib/modules/…/x.ko`, or `./lib/` for a directory.
    pub path: String,
    pub mode: u32,
    /// `None` for a directory.
    pub contents: Option<Vec<u8>>,
}

fn octal(field: &mut [u8], value: u64) {
    // width-1 digits and a NUL, as GNU tar writes them.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn header(name: &[u8], mode: u32, size: u64, mtime: u64, typeflag: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[257..265].copy_from_slice(b"ustar  \0");
    if typeflag != b'L' {
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
    }
    // The checksum is computed with its own field as spaces, then written
    // as six octal digits, NUL, space.
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(&s.as_bytes()[s.len() - 6..]);
    h[154] = 0;
    h[155] = b' ';
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.resize(out.len() + 512 - rem, 0);
    }
}

/// The largest size the 11 octal digits of a GNU tar size field hold.
pub(crate) const TAR_MAX_SIZE: u64 = 0o77777777777;

/// A tar archive of `entries`, in the given order, every time `mtime`.
/// The caller checks sizes against [`TAR_MAX_SIZE`].
pub(crate) fn tar(entries: &[TarEntry], mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let name = e.path.as_bytes();
        let (typeflag, size) = match &e.contents {
            Some(c) => (b'0', c.len() as u64),
            None => (b'5', 0),
        };
        if name.len() > 99 {
            // GNU: the full name (NUL-terminated) as the data of an `L`
            // entry named ././@LongLink, mode 0, the real header after.
            let mut long = name.to_vec();
            long.push(0);
            out.extend_from_slice(&header(b"././@LongLink", 0, long.len() as u64, 0, b'L'));
            out.extend_from_slice(&long);
            pad(&mut out);
        }
        out.extend_from_slice(&header(name, e.mode, size, mtime, typeflag));
        if let Some(c) = &e.contents {
            out.extend_from_slice(c);
            pad(&mut out);
        }
    }
    out.resize(out.len() + 1024, 0);
    // GNU tar pads the archive to its 10240-byte record size.
    let rem = out.len() % 10240;
    if rem != 0 {
        out.resize(out.len() + 10240 - rem, 0);
    }
    out
}

/// The regular files of a tar archive: `(name, contents)` with a leading
/// `./` removed. GNU long names are followed; pax headers and other entry
/// types are skipped. `Err` says what is wrong at which offset.
pub(crate) fn tar_files(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    let mut long_name: Option<String> = None;
    while at + 512 <= data.len() {
        let h = &data[at..at + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let size = parse_octal(&h[124..136])
            .ok_or_else(|| format!("tar header at offset {at}: bad size field"))?;
        let start = at + 512;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("tar entry at offset {at}: {size} bytes run past the end"))?;
        let body = &data[start..end];
        let raw_name = {
            let n = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
            let mut name = String::from_utf8_lossy(&h[..n]).into_owned();
            // ustar's prefix field (POSIX archives).
            if &h[257..263] == b"ustar\0" && h[345] != 0 {
                let p = h[345..500].iter().position(|&b| b == 0).unwrap_or(155);
                name = format!("{}/{name}", String::from_utf8_lossy(&h[345..345 + p]));
            }
            name
        };
        match h[156] {
            b'L' => {
                let n = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                long_name = Some(String::from_utf8_lossy(&body[..n]).into_owned());
            }
            b'0' | 0 => {
                let name = long_name.take().unwrap_or(raw_name);
                let name = name.strip_prefix("./").unwrap_or(&name).to_string();
                out.push((name, body.to_vec()));
            }
            _ => long_name = None,
        }
        at = start + size.div_ceil(512) as usize * 512;
    }
    Ok(out)
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// An `ar` archive of `members` (name, data), as dpkg-deb writes it.
pub(crate) fn ar(members: &[(&str, &[u8])], mtime: u64) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let h = format!(
            "{name:<16}{mtime:<12}{:<6}{:<6}{:<8o}{:<10}`\n",
            0,
            0,
            0o100644,
            data.len()
        );
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// The members of an `ar` archive: `(name, data)`, names without a
/// trailing `/`.
pub(crate) fn ar_members(data: &[u8]) -> Result<Vec<(String, &[u8])>, String> {
    if !data.starts_with(b"!<arch>\n") {
        return Err("not an ar archive (no !<arch> magic)".to_string());
    }
    let mut out = Vec::new();
    let mut at = 8usize;
    while at < data.len() {
        let h = data
            .get(at..at + 60)
            .ok_or_else(|| format!("ar header at offset {at} is truncated"))?;
        if &h[58..60] != b"`\n" {
            return Err(format!("ar header at offset {at} has no end marker"));
        }
        let name = String::from_utf8_lossy(&h[..16]).trim_end().to_string();
        let name = name.strip_suffix('/').unwrap_or(&name).to_string();
        let size: usize = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("ar member {name:?} at offset {at}: bad size field"))?;
        let start = at + 60;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| format!("ar member {name:?} at offset {at}: runs past the end"))?;
        out.push((name, &data[start..end]));
        at = end + (size % 2);
    }
    Ok(out)
}

/// xz as `dpkg-deb -Zxz` writes it (preset 6, CRC64 check), with
/// liblzma's multi-threaded encoder on every core, in 4 MiB blocks: the
/// block layout depends on the block size only, not on the thread count,
/// so the bytes depend on the input alone, on every machine. Preset 6's
/// own blocks are 24 MiB, one block (one thread) for most packages: an
/// unstripped 21 MB module took 11.4 s with `xz -6 -T2`, 6.3 s with
/// `--block-size=4MiB` (5 % larger). Stripped modules (what `kmodkit
/// rebuild` installs) are mostly below 4 MiB and come out the same size.
pub(crate) fn xz(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let threads = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .preset(6)
        .block_size(4 << 20)
        .check(liblzma::stream::Check::Crc64)
        .threads(threads)
        .encoder()
        .map_err(std::io::Error::other)?;
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data)?;
    enc.finish()
}

/// gzip at level 9 with no name and time 0 (`gzip -9n`).
pub(crate) fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(data)?;
    enc.finish()
}

/// Decompresses a `control.tar*`/`data.tar*` member by its name's suffix
/// (what dpkg accepts: none, `.gz`, `.xz`, `.zst`; `.bz2` and `.lzma` are
/// not read here).
pub(crate) fn decompress(name: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let r = if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(data).read_to_end(&mut out)
    } else if name.ends_with(".xz") {
        liblzma::read::XzDecoder::new_multi_decoder(data).read_to_end(&mut out)
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(data).and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".tar") {
        out.extend_from_slice(data);
        Ok(0)
    } else {
        return Err(format!("{name}: unsupported compression"));
    };
    r.map_err(|e| format!("{name}: {e}"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_round_trips_long_names() {
        let long = format!("./{}/file", "d".repeat(120));
        let entries = vec![
            TarEntry {
                path: "./".into(),
                mode: 0o755,
                contents: None,
            },
            TarEntry {
                path: "./control".into(),
                mode: 0o644,
                contents: Some(b"Package: x\n".to_vec()),
            },
            TarEntry {
                path: long.clone(),
                mode: 0o644,
                contents: Some(vec![7; 600]),
            },
        ];
        let t = tar(&entries, 1_700_000_000);
        assert_eq!(t.len() % 10240, 0);
        let files = tar_files(&t).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0], ("control".to_string(), b"Package: x\n".to_vec()));
        assert_eq!(files[1].0, long[2..]);
        assert_eq!(files[1].1.len(), 600);
    }

    #[test]
    fn ar_round_trips_odd_sizes() {
        let a = ar(&[("debian-binary", b"2.0\n"), ("odd", b"abc")], 5);
        let m = ar_members(&a).unwrap();
        assert_eq!(m[0].0, "debian-binary");
        assert_eq!(m[1].1, b"abc");
        assert!(ar_members(&a[..70]).is_err());
    }
}
