//! The paths to remove when a signal stops the process, and the thread
//! that removes them.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by one
//! thread with sigwait(2), so the cleanup runs as ordinary code (it may
//! lock, allocate and walk directories) instead of inside an
//! async-signal handler. Afterwards that thread restores the default
//! action and raises the signal again: the process ends as killed by it,
//! which is what a shell or a service manager expects to see (e.g. 130
//! for Ctrl-C).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};

const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

struct Entry {
    id: u64,
    path: PathBuf,
    dir: bool,
}

pub(crate) struct Registry {
    next: u64,
    entries: Vec<Entry>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 1,
    entries: Vec::new(),
});

fn lock() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    pub(crate) fn add(&mut self, path: &Path, dir: bool) -> Registration {
        let id = self.next;
        self.next += 1;
        self.entries.push(Entry {
            id,
            path: path.to_path_buf(),
            dir,
        });
        Registration { id }
    }

    pub(crate) fn forget(&mut self, r: Option<&Registration>) {
        if let Some(r) = r {
            self.entries.retain(|e| e.id != r.id);
        }
    }
}

/// A path removed if a signal stops the process; dropping it takes the
/// path off the list (the path itself stays).
#[derive(Debug)]
#[must_use = "the path is only removed on signals while this lives"]
pub struct Registration {
    id: u64,
}

impl Registration {
    /// Drops it when the registry no longer holds it.
    pub(crate) fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock().entries.retain(|e| e.id != self.id);
    }
}

pub(crate) fn register_file(path: &Path) -> Registration {
    lock().add(path, false)
}

/// Removes `dir` and everything below it if a signal stops the process,
/// e.g. a scratch directory that is otherwise removed on drop.
pub fn remove_dir_on_signal(dir: &Path) -> Registration {
    lock().add(dir, true)
}

pub(crate) fn is_registered(path: &Path) -> bool {
    lock().entries.iter().any(|e| e.path == path)
}

/// Runs `f` with the registry locked: a signal arriving meanwhile is
/// handled after `f`, so `f` is atomic with respect to the cleanup.
pub(crate) fn with_registry_locked<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut lock())
}

fn signal_set(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset with valid
    // signal numbers cannot fail.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// From now on SIGINT, SIGTERM and SIGHUP remove every registered path
/// before they end the process. Call it first thing in `main`, before any
/// thread starts: threads inherit the signal mask set here. Calling it
/// again does nothing.
pub fn cleanup_on_signals() -> io::Result<()> {
    static INSTALLED: Once = Once::new();
    let mut result = Ok(());
    INSTALLED.call_once(|| result = install());
    result
}

fn install() -> io::Result<()> {
    let set = signal_set(&SIGNALS);
    // SAFETY: a valid, initialised set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new()
        .name("kmodkit-signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is initialised and `sig` is a valid out pointer.
            if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                continue;
            }
            // Kept locked until the process is gone: no commit can start
            // its rename after the cleanup.
            let registry = lock();
            for e in registry.entries.iter().rev() {
                let _ = if e.dir {
                    fs::remove_dir_all(&e.path)
                } else {
                    fs::remove_file(&e.path)
                };
            }
            die_by(sig);
        })?;
    Ok(())
}

fn die_by(sig: libc::c_int) -> ! {
    let only = signal_set(&[sig]);
    // SAFETY: restoring the default action and unblocking the signal in
    // this thread, then raising it: the default action ends the process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(sig);
    }
    // Not reached for the three signals handled here.
    std::process::exit(128 + sig)
}
