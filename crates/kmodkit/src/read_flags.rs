//! Flags of every command that reads an image: the decompression limit.

use clap::Args;

#[derive(Debug, Args)]
pub struct ReadFlags {
    /// Stop when an image decompresses to more than SIZE bytes (K, M, G
    /// suffixes); protects against decompression bombs
    #[arg(long, value_name = "SIZE", default_value = "16G", value_parser = parse_size)]
    pub max_size: u64,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        Some('T' | 't') => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (a number with an optional K, M, G or T)"))
}
