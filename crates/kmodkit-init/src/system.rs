//! The PID 1 system calls: the early mounts, the boot clock, the console,
//! `switch_root`, halting and rebooting.
//!
//! `switch_root` follows busybox's util-linux/switch_root.c: move the API
//! mounts into the new root, delete the initramfs contents without
//! crossing into other file systems (only when `/` is ramfs or tmpfs),
//! `chdir` to the new root, `mount --move` it onto `/`, `chroot .`, exec.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// include/uapi/linux/magic.h; libc has TMPFS_MAGIC but not this one.
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput.into())
}

/// `mount(2)`; `source`/`fstype` may be empty for a move or bind.
pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    // Only a missing mount point is made: asking a read-only root (an NFS
    // export shared by every node) to mkdir what it has fails with EROFS.
    if !target.is_dir() {
        std::fs::create_dir_all(target)?;
    }
    let source = CString::new(source)?;
    let target = c_path(target)?;
    let fstype = CString::new(fstype)?;
    let data = CString::new(data)?;
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            if fstype.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                fstype.as_ptr()
            },
            flags,
            if data.as_bytes().is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mounts `/proc`, `/sys`, `/dev` (devtmpfs) and `/run` (tmpfs); a
/// mount that is already there (`EBUSY`) is fine.
pub fn mount_api_filesystems() -> Result<(), String> {
    let nodev = (libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC) as libc::c_ulong;
    for (source, target, fstype, flags, data) in [
        ("proc", "/proc", "proc", nodev, ""),
        ("sysfs", "/sys", "sysfs", nodev, ""),
        (
            "devtmpfs",
            "/dev",
            "devtmpfs",
            libc::MS_NOSUID as libc::c_ulong,
            "mode=0755",
        ),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            (libc::MS_NOSUID | libc::MS_NODEV) as libc::c_ulong,
            "mode=0755",
        ),
    ] {
        match mount(source, Path::new(target), fstype, flags, data) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("mount {fstype} on {target}: {e}")),
        }
    }
    Ok(())
}

/// Points fds 0, 1 and 2 at `/dev/console` (the kernel opened it before
/// exec only if the initramfs had the node).
pub fn open_console() {
    // SAFETY: open/dup2/close on fds this process owns.
    unsafe {
        let fd = libc::open(c"/dev/console".as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}

/// Time since boot (`CLOCK_BOOTTIME`), the clock of the kernel's log.
pub fn since_boot() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uts is valid for writing.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The kernel log's lines that start with `prefix` (after the level and
/// time stamp), e.g. `"virtio_net: "`: with `quiet` or a low `loglevel`
/// the loader's reason ("Unknown symbol ...") is not on the console.
pub fn kernel_log_lines(prefix: &str) -> Vec<String> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER takes no buffer.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    let mut buf = vec![0u8; size.clamp(4096, 1 << 22) as usize];
    // SAFETY: buf is writable for its length.
    let n = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    if n <= 0 {
        return Vec::new();
    }
    String::from_utf8_lossy(&buf[..n as usize])
        .lines()
        .filter_map(|line| {
            // "<4>[    2.840000] virtio_net: Unknown symbol ..."
            let text = line.split_once("] ").map_or(line, |(_, rest)| rest);
            text.starts_with(prefix).then(|| text.to_string())
        })
        .collect()
}

/// Deletes everything under `dir` that lives on device `dev` (the
/// initramfs), not descending into other mounts.
pub fn delete_on_device(dir: &Path, dev: u64) -> usize {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            removed += delete_on_device(&path, dev);
            if std::fs::remove_dir(&path).is_ok() {
                removed += 1;
            }
        } else if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Switches to `new_root` and execs `init` there; returns only on failure.
/// `before_exec` gets the number of initramfs entries deleted (0 when `/`
/// is not ramfs/tmpfs), for the log.
pub fn switch_root(new_root: &Path, init: &str, before_exec: &mut dyn FnMut(usize)) -> String {
    let check =
        |what: &str, result: std::io::Result<()>| result.map_err(|e| format!("{what}: {e}"));
    let mut run = || -> Result<std::convert::Infallible, String> {
        let target_init = new_root.join(init.trim_start_matches('/'));
        // A symlink may point into the new root only once we are there.
        if std::fs::symlink_metadata(&target_init).is_err() {
            return Err(format!("{init} does not exist in the new root"));
        }
        for api in ["dev", "proc", "sys", "run"] {
            check(
                &format!("move /{api} to {}/{api}", new_root.display()),
                mount(
                    &format!("/{api}"),
                    &new_root.join(api),
                    "",
                    libc::MS_MOVE as libc::c_ulong,
                    "",
                ),
            )?;
        }
        let root_meta = std::fs::metadata("/").map_err(|e| format!("stat /: {e}"))?;
        let new_meta =
            std::fs::metadata(new_root).map_err(|e| format!("stat {}: {e}", new_root.display()))?;
        if root_meta.dev() == new_meta.dev() {
            return Err(format!("{} is not a mount point", new_root.display()));
        }
        // Only free the initramfs when it is one (ramfs or tmpfs), never a real disk.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: fs is valid for writing; the path is a static C string.
        let is_ram = unsafe { libc::statfs(c"/".as_ptr(), &mut fs) } == 0
            && (fs.f_type == RAMFS_MAGIC || fs.f_type == libc::TMPFS_MAGIC);
        let deleted = if is_ram {
            delete_on_device(Path::new("/"), root_meta.dev())
        } else {
            0
        };
        check("chdir to the new root", std::env::set_current_dir(new_root))?;
        check(
            "mount --move . /",
            mount(".", Path::new("/"), "", libc::MS_MOVE as libc::c_ulong, ""),
        )?;
        // SAFETY: static C string.
        if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
            return Err(format!("chroot .: {}", std::io::Error::last_os_error()));
        }
        check("chdir /", std::env::set_current_dir("/"))?;
        before_exec(deleted);
        use std::os::unix::process::CommandExt;
        let error = std::process::Command::new(init).exec();
        Err(format!("exec {init}: {error}"))
    };
    match run() {
        Ok(never) => match never {},
        Err(reason) => reason,
    }
}

/// Sleeps forever (PID 1 must never exit: the kernel would panic).
pub fn halt_forever() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Syncs and reboots (qemu `-no-reboot` ends then).
pub fn reboot() -> ! {
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    halt_forever()
}
