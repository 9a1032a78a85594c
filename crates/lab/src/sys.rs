//! The only module of the lab that calls into libc directly: the TUNSETIFF ioctl that turns an
//! open `/dev/net/tun` into a TAP device, `kill(2)`, `geteuid(2)` and a SIGINT/SIGTERM handler
//! that only sets a flag. Everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    // The union in the kernel's `struct ifreq` is 24 bytes; pad so the ioctl never reads past
    // the end of our value.
    _pad: [u8; 22],
}

/// `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// Opens `/dev/net/tun` and attaches it to a new TAP interface `name` (no packet-info header).
/// The device lives as long as the returned file is open.
pub(crate) fn open_tap(name: &str) -> std::io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || !name.is_ascii() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: 0,
        _pad: [0; 22],
    };
    for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: `file` is an open descriptor of /dev/net/tun; `req` is a properly initialised,
    // NUL-terminated `struct ifreq`-compatible value that outlives the call, and TUNSETIFF only
    // reads and writes within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Sends `signal` to `pid`. Returns false when there is no such process.
pub(crate) fn kill(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // 0 and negatives address process groups; the lab only ever signals single processes.
        return false;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; pid is a single positive pid.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The effective user id.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to a flag that [`terminate_requested`] reads, so a run tears the
/// lab down instead of dying with namespaces left behind.
pub(crate) fn catch_terminate() {
    let handler = on_terminate as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only performs an atomic store, which is async-signal-safe, and it
        // is a plain `extern "C"` function that lives for the whole program.
        unsafe {
            libc::signal(signal, handler);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_terminate`].
pub(crate) fn terminate_requested() -> bool {
    TERMINATE.load(Ordering::SeqCst)
}
