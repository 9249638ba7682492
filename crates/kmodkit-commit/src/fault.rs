//! Test hooks. With the `fault-injection` feature (enabled only in test
//! builds) and `KMODKIT_FAULT=POINT:N[:SIGNAL]`, the N-th time the process
//! reaches POINT (`any` matches every point) it aborts, as if killed with
//! -9, or, with SIGNAL `INT`, `TERM` or `HUP`, sends itself that signal and
//! waits for it to act, as if the user had pressed Ctrl-C right there.
//! Without the feature, `fault_point` is empty.

#[cfg(feature = "fault-injection")]
pub fn fault_point(point: &str) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static HITS: AtomicUsize = AtomicUsize::new(0);
    let Ok(spec) = std::env::var("KMODKIT_FAULT") else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let (Some(name), Some(n)) = (parts.next(), parts.next()) else {
        return;
    };
    if name != point && name != "any" {
        return;
    }
    let hit = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    if n.parse::<usize>().ok() != Some(hit) {
        return;
    }
    let sig = match parts.next() {
        Some("INT") => libc::SIGINT,
        Some("TERM") => libc::SIGTERM,
        Some("HUP") => libc::SIGHUP,
        _ => std::process::abort(),
    };
    // SAFETY: kill(2) on our own process id.
    unsafe {
        libc::kill(libc::getpid(), sig);
    }
    // The signal ends the process; this thread must not go on meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(60));
    std::process::abort();
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fault_point(_point: &str) {}
