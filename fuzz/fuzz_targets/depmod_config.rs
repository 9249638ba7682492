//! Any bytes, as a depmod.d file: `DepmodConfig::parse_text` (kmod 30's
//! `depmod_config_parse` with `freadline_wrapped` line joining, kernel
//! version patterns compiled as regexes) must come back with a
//! configuration and diagnostics, never a panic or a hang.
//!
//! Input: an optional kernel release, a NUL, then the file's bytes (read
//! lossily, as `DepmodConfig::load` does); without a NUL the release is a
//! fixed Debian one. Seeds: `corpus/depmod_config/` (this machine's
//! modprobe.d files, which share the line syntax, and depmod.d directives).
//!
//! The same text also goes through kmodkit-inject's `Softdeps`, the
//! modprobe.d parser add-drivers uses (its `softdep` lines), and every
//! module it names is asked for.

#![no_main]

use std::hint::black_box;
use std::path::Path;

use kmodkit_depmod::DepmodConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (kver, text) = match data.iter().position(|&b| b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]), &data[i + 1..]),
        None => ("6.1.0-9-amd64".into(), data),
    };
    let text = String::from_utf8_lossy(text);
    let mut config = DepmodConfig::default();
    config.parse_text(Path::new("/etc/depmod.d/fuzz.conf"), &text, &kver);
    black_box(format!("{config:?}"));
    let mut softdeps = kmodkit_inject::resolve::Softdeps::default();
    softdeps.parse(&text);
    for name in text.split_whitespace().take(64) {
        black_box((softdeps.get(name, true), softdeps.get(name, false)));
    }
});
