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

/// `SOL_RAW`/`ICMP_FILTER` (linux/icmp.h; not in libc): a bit set in `blocked` drops ICMP
/// messages of that type before they reach the raw socket.
pub(crate) fn set_icmp_filter(sock: &socket2::Socket, blocked: u32) -> std::io::Result<()> {
    const SOL_RAW: libc::c_int = 255;
    const ICMP_FILTER: libc::c_int = 1;
    // SAFETY: `sock` is an open socket for the duration of the call; `blocked` is a u32 (the
    // kernel's `struct icmp_filter`) that outlives it and its size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            SOL_RAW,
            ICMP_FILTER,
            (&blocked as *const u32).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `getsockopt(TCP_INFO)`: neither socket2 nor rustix 1.1 expose it.
pub(crate) fn tcp_info(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<libc::tcp_info> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: `tcp_info` is plain old data; all-zero bytes are a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is borrowed, so open for the call; `info` and `len` outlive it and `len` is
    // `info`'s exact size. The kernel writes at most `len` bytes (fewer on older kernels; the
    // rest stay zero).
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `if_indextoname(3)`: the name of interface `index` in the caller's network namespace.
pub(crate) fn if_indextoname(index: u32) -> std::io::Result<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` is IF_NAMESIZE bytes, the size the function writes at most (with its NUL),
    // and outlives the call.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}
