//! The socket options socket2 does not expose. The crate's one module with `unsafe`.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`: set DF on every packet and ignore the cached path
/// MTU, so a probe tests the path itself rather than what the kernel already believes.
pub(crate) fn set_pmtudisc_probe(sock: &socket2::Socket) -> std::io::Result<()> {
    set_ip_int(sock, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_PROBE)
}

/// `IP_RECVERR`: ICMP errors about this socket's packets are queued for
/// [`read_error_queue`] (an unconnected ping socket otherwise drops them).
pub(crate) fn set_recverr(sock: &socket2::Socket) -> std::io::Result<()> {
    set_ip_int(sock, libc::IP_RECVERR, 1)
}

/// An `IPPROTO_IP` socket option whose value is a C int.
fn set_ip_int(
    sock: &socket2::Socket,
    option: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: `sock` is an open socket for the duration of the call; `value` is a c_int that
    // outlives it and its size is passed exactly.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            option,
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

/// One ICMP error from a socket's error queue (`MSG_ERRQUEUE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QueuedIcmpError {
    /// ICMP type and code.
    pub(crate) icmp: (u8, u8),
    /// `ee_info`: the next-hop MTU for a frag-needed.
    pub(crate) info: u32,
    /// The router that sent it (`SO_EE_OFFENDER`).
    pub(crate) from: std::net::Ipv4Addr,
    /// The start of the packet it was about, as this socket sent it (for a ping socket: the
    /// ICMP echo header with its sequence number).
    pub(crate) quoted: Vec<u8>,
}

/// Takes the next ICMP error from `sock`'s error queue without waiting; `None` when it is
/// empty. Errors of other origins (local) are skipped.
pub(crate) fn read_error_queue(sock: &socket2::Socket) -> std::io::Result<Option<QueuedIcmpError>> {
    const SO_EE_ORIGIN_ICMP: u8 = 2;
    loop {
        let mut data = [0u8; 64];
        // u64 elements keep the control buffer aligned for `cmsghdr`.
        let mut control = [0u64; 32];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: `msghdr` is plain old data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: every pointer in `msg` points into `data`, `iov` or `control`, which outlive
        // the call, with their exact lengths.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock => Ok(None),
                _ => Err(e),
            };
        }
        let quoted = data[..(n as usize).min(data.len())].to_vec();
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, bounded by
        // `msg.msg_controllen`; each header they return lies inside `control`.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` is non-null and inside `control` (see above).
            let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
            if level == libc::IPPROTO_IP && kind == libc::IP_RECVERR {
                // SAFETY: an IP_RECVERR message carries a `sock_extended_err` followed by the
                // offender's `sockaddr_in` (SO_EE_OFFENDER); read unaligned, as copies.
                let (ee, offender) = unsafe {
                    let p = libc::CMSG_DATA(cmsg);
                    let ee = std::ptr::read_unaligned(p.cast::<libc::sock_extended_err>());
                    let off = std::ptr::read_unaligned(
                        p.add(std::mem::size_of::<libc::sock_extended_err>())
                            .cast::<libc::sockaddr_in>(),
                    );
                    (ee, off)
                };
                if ee.ee_origin == SO_EE_ORIGIN_ICMP {
                    return Ok(Some(QueuedIcmpError {
                        icmp: (ee.ee_type, ee.ee_code),
                        info: ee.ee_info,
                        from: std::net::Ipv4Addr::from(u32::from_be(offender.sin_addr.s_addr)),
                        quoted,
                    }));
                }
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
}
