//! The socket options socket2 does not expose. The crate's one module with `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`: set DF on every packet and ignore the cached path
/// MTU, so a probe tests the path itself rather than what the kernel already believes.
pub(crate) fn set_pmtudisc_probe(sock: &socket2::Socket) -> std::io::Result<()> {
    let value: libc::c_int = libc::IP_PMTUDISC_PROBE;
    // SAFETY: `sock` is an open socket for the duration of the call; `value` is a c_int that
    // outlives it and its size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
