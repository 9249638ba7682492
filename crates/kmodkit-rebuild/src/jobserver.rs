//! One job budget for every make of a run: a GNU make jobserver.
//!
//! GNU make (4.3, bookworm's; `src/posixos.c`) coordinates parallel jobs
//! through a pipe holding one byte per job slot; a make started with
//! `MAKEFLAGS=... --jobserver-auth=R,W` takes a byte before each job beyond
//! its first and writes it back when the job ends. Here the pipe is filled
//! with `jobs` bytes and this process takes one more byte for each make it
//! starts (that make's free first job): however many builds run at once,
//! at most `jobs` compiler processes run — `-j` is never multiplied by the
//! number of builds, as running several DKMS builds side by side would.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

#[derive(Debug)]
pub struct Jobserver {
    read: OwnedFd,
    write: OwnedFd,
    jobs: usize,
}

/// A job slot held by this process; given back on drop.
#[derive(Debug)]
pub struct Slot<'a> {
    server: &'a Jobserver,
    byte: u8,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        loop {
            // SAFETY: writes one byte from a live buffer to an owned fd.
            let n = unsafe {
                libc::write(
                    self.server.write.as_raw_fd(),
                    (&raw const self.byte).cast(),
                    1,
                )
            };
            if n == 1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
    }
}

impl Jobserver {
    /// A jobserver with `jobs` slots (at least one).
    pub fn new(jobs: usize) -> io::Result<Jobserver> {
        let jobs = jobs.max(1);
        let mut fds = [0 as RawFd; 2];
        // SAFETY: pipe2 fills the two-element array on success. The ends
        // are close-on-exec; only the makes get them (see `configure`).
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let tokens = vec![b'+'; jobs];
        let mut done = 0;
        while done < tokens.len() {
            // SAFETY: writes from a live buffer to an owned fd.
            let n = unsafe {
                libc::write(
                    write.as_raw_fd(),
                    tokens[done..].as_ptr().cast(),
                    tokens.len() - done,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            done += n as usize;
        }
        Ok(Jobserver { read, write, jobs })
    }

    pub fn jobs(&self) -> usize {
        self.jobs
    }

    /// Waits for a free slot (blocking; makes return theirs as jobs end).
    pub fn acquire(&self) -> io::Result<Slot<'_>> {
        let mut byte = 0u8;
        loop {
            // SAFETY: reads one byte into a live buffer from an owned fd.
            let n = unsafe { libc::read(self.read.as_raw_fd(), (&raw mut byte).cast(), 1) };
            if n == 1 {
                return Ok(Slot { server: self, byte });
            }
            let e = io::Error::last_os_error();
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "jobserver pipe closed",
                ));
            }
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                // GNU make sets the pipe's read end (one open file shared
                // with every make) non-blocking (posixos.c
                // `jobserver_pre_acquire`): wait until a byte is there.
                io::ErrorKind::WouldBlock => {
                    let mut pfd = libc::pollfd {
                        fd: self.read.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd for a fd this struct owns.
                    if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                        let e = io::Error::last_os_error();
                        if e.kind() != io::ErrorKind::Interrupted {
                            return Err(e);
                        }
                    }
                }
                _ => return Err(e),
            }
        }
    }

    /// `MAKEFLAGS` for a make that joins this jobserver.
    pub fn makeflags(&self) -> String {
        format!(
            "-j{} --jobserver-auth={},{}",
            self.jobs,
            self.read.as_raw_fd(),
            self.write.as_raw_fd()
        )
    }

    /// Lets `cmd` (and the makes it starts) use the jobserver: the pipe's
    /// ends stay open across its exec and `MAKEFLAGS` names them.
    pub fn configure(&self, cmd: &mut Command) {
        let fds = [self.read.as_raw_fd(), self.write.as_raw_fd()];
        cmd.env("MAKEFLAGS", self.makeflags());
        // SAFETY: the closure only calls fcntl, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                for fd in fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most jobs of a real GNU make that ran at the same time: each
    /// job logs its start and end (nanosecond clock) around a short sleep.
    fn max_concurrent(js: &Jobserver) -> usize {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Makefile"),
            "all: a b c d e f\na b c d e f:\n\t@echo \"$$(date +%s%N) 1\" >> log; sleep 0.2; echo \"$$(date +%s%N) -1\" >> log\n",
        )
        .unwrap();
        let mut cmd = Command::new("make");
        cmd.arg("-s")
            .current_dir(dir.path())
            .env_remove("MAKELEVEL");
        js.configure(&mut cmd);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !stderr.contains("jobserver"),
            "{stderr}"
        );
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        let mut events: Vec<(u128, i32)> = log
            .lines()
            .map(|l| {
                let (t, d) = l.split_once(' ').unwrap();
                (t.parse().unwrap(), d.parse().unwrap())
            })
            .collect();
        // Ends before starts at the same instant.
        events.sort();
        let (mut now, mut max) = (0i32, 0i32);
        for (_, d) in events {
            now += d;
            max = max.max(now);
        }
        max as usize
    }

    /// make takes its jobs beyond the first from the pipe: two slots give
    /// it three at once (its free first job and two), and with both slots
    /// held by this process it runs one job at a time.
    #[test]
    fn make_joins_the_jobserver() {
        if Command::new("make").arg("--version").output().is_err() {
            eprintln!("make not installed");
            return;
        }
        let js = Jobserver::new(2).unwrap();
        assert_eq!(max_concurrent(&js), 3);
        let held = (js.acquire().unwrap(), js.acquire().unwrap());
        assert_eq!(max_concurrent(&js), 1);
        drop(held);
        assert_eq!(max_concurrent(&js), 3);
    }
}
