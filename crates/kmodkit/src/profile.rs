//! `KMODKIT_PROFILE`: how long each step of a run took, on stderr. The
//! libraries only measure (e.g. [`kmodkit_depmod::StepTime`] in a tree);
//! the CLI, which may read the environment, decides to print.

use std::time::{Duration, Instant};

use kmodkit_depmod::StepTime;

fn enabled() -> bool {
    std::env::var_os("KMODKIT_PROFILE").is_some()
}

fn print(step: &str, elapsed: Duration) {
    eprintln!("profile: {step}: {:.1} ms", elapsed.as_secs_f64() * 1000.0);
}

/// Prints the time since `since` for `step`, when profiling.
pub fn step(step: &str, since: Instant) {
    if enabled() {
        print(step, since.elapsed());
    }
}

/// Prints the step times a library measured, when profiling.
pub fn steps(times: &[StepTime]) {
    if enabled() {
        for t in times {
            print(t.step, t.elapsed);
        }
    }
}
