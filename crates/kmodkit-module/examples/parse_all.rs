//! Reads and parses every module file named on stdin (one path per line),
//! on N threads (default: all cores), and prints how long it took. Used by
//! `scripts/bench-modinfo` to measure the reader without any output cost.

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let files: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .collect();
    let next = AtomicUsize::new(0);
    let symbols = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                match kmodkit_module::read_module(path) {
                    Ok((_, m)) => {
                        symbols.fetch_add(
                            m.exports.len() + m.undefined.len() + m.versions.len(),
                            Ordering::Relaxed,
                        );
                    }
                    Err(e) => eprintln!("{e}"),
                }
            });
        }
    });
    println!(
        "parsed {} modules ({} symbols) on {threads} thread(s) in {:.3} s",
        files.len(),
        symbols.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64()
    );
}
