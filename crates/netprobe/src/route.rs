//! The route the kernel takes toward an address (`ip route get`), as one `RTM_GETROUTE`
//! request: which device packets leave through, in which table (strongSwan's routes live in
//! table 220), and that device's MTU and kind. A probe bigger than the device's MTU never leaves
//! the host (`EMSGSIZE`), so probes start at that size; a route through a tunnel device means
//! every packet pays the tunnel's overhead on the path outside.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::Error;
use crate::link::{NLM_F_REQUEST, NLMSG_ERROR, NLMSG_HEADER, align4, u16_at, u32_at};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTMSG: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_METRICS: u16 = 8;
const RTA_TABLE: u16 = 15;
const RTAX_MTU: u16 = 2;
/// `ARPHRD_*` of devices that carry IP packets inside other packets: TUN (and WireGuard,
/// xfrm interfaces) `NONE`, IPIP/SIT `TUNNEL`/`TUNNEL6`/`SIT`, GRE `IPGRE`/`IP6GRE`.
const TUNNEL_ARPHRD: [u16; 6] = [65534, 768, 769, 776, 778, 823];

/// Where the kernel sends packets for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Output device (`eno1`, `ipsec0`).
    pub device: String,
    /// The device's MTU: the largest packet that leaves this host on that route.
    pub device_mtu: u32,
    /// The route's own `mtu` (set by `ip route … mtu`, or a cached path MTU), if any.
    pub route_mtu: Option<u32>,
    /// Routing table (254 main; strongSwan installs its routes in 220).
    pub table: u32,
    /// The device encapsulates (TUN, GRE, IPIP, WireGuard, an xfrm interface).
    pub tunnel_device: bool,
}

impl Route {
    /// Asks the kernel for the route toward `dst`, in the caller's network namespace. An
    /// `unreachable` route (a tunnel's guard while it is down) is `Ok(None)`.
    pub fn to(dst: Ipv4Addr) -> Result<Option<Route>, Error> {
        let op = |op| {
            move |e: rustix::io::Errno| Error::Netlink {
                op,
                source: e.into(),
            }
        };
        let socket: OwnedFd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(op("socket(AF_NETLINK, NETLINK_ROUTE)"))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(1)),
        )
        .map_err(op("SO_RCVTIMEO"))?;
        rustix::net::sendto(
            &socket,
            &request(dst),
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(op("send RTM_GETROUTE"))?;
        let mut buf = vec![0u8; 8192];
        let n = loop {
            match rustix::net::recv(&socket, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(op("recv RTM_GETROUTE")(e)),
            }
        };
        let answer = parse(&buf[..n]).ok_or(Error::Netlink {
            op: "parse RTM_NEWROUTE",
            source: std::io::ErrorKind::InvalidData.into(),
        })?;
        let found = match answer {
            Err(libc::ENETUNREACH | libc::EHOSTUNREACH) => return Ok(None),
            Err(errno) => {
                return Err(Error::Netlink {
                    op: "RTM_GETROUTE",
                    source: std::io::Error::from_raw_os_error(errno),
                });
            }
            Ok(found) => found,
        };
        let device = crate::sys::if_indextoname(found.oif).map_err(|source| Error::Netlink {
            op: "if_indextoname",
            source,
        })?;
        let sys = |file: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{device}/{file}"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
        };
        let device_mtu = sys("mtu").ok_or_else(|| Error::Netlink {
            op: "read the route device's MTU",
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let tunnel_device =
            sys("type").is_some_and(|t| TUNNEL_ARPHRD.iter().any(|&a| u32::from(a) == t));
        Ok(Some(Route {
            device,
            device_mtu,
            route_mtu: found.mtu,
            table: found.table,
            tunnel_device,
        }))
    }
}

/// `RTM_GETROUTE` for one IPv4 host: nlmsghdr, rtmsg, `RTA_DST`.
fn request(dst: Ipv4Addr) -> Vec<u8> {
    let len = NLMSG_HEADER + RTMSG + 8;
    let mut req = Vec::with_capacity(len);
    req.extend((len as u32).to_ne_bytes());
    req.extend(RTM_GETROUTE.to_ne_bytes());
    req.extend(NLM_F_REQUEST.to_ne_bytes());
    req.extend(1u32.to_ne_bytes());
    req.extend(0u32.to_ne_bytes());
    // rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    req.extend([libc::AF_INET as u8, 32, 0, 0, 0, 0, 0, 0]);
    req.extend(0u32.to_ne_bytes());
    req.extend(8u16.to_ne_bytes());
    req.extend(RTA_DST.to_ne_bytes());
    req.extend(dst.octets());
    req
}

/// The parts of an `RTM_NEWROUTE` answer we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Found {
    oif: u32,
    table: u32,
    mtu: Option<u32>,
}

/// The answer to [`request`]: the route, or the kernel's errno.
fn parse(datagram: &[u8]) -> Option<Result<Found, i32>> {
    let len = u32_at(datagram, 0)? as usize;
    let kind = u16_at(datagram, 4)?;
    let body = datagram.get(NLMSG_HEADER..len)?;
    match kind {
        NLMSG_ERROR => Some(Err(-(u32_at(body, 0)? as i32))),
        RTM_NEWROUTE => {
            let mut found = Found {
                oif: 0,
                table: u32::from(*body.get(4)?),
                mtu: None,
            };
            for (kind, data) in attributes(body.get(RTMSG..)?) {
                match kind {
                    RTA_OIF => found.oif = u32_at(data, 0)?,
                    RTA_TABLE => found.table = u32_at(data, 0)?,
                    RTA_METRICS => {
                        found.mtu = attributes(data)
                            .find(|(k, _)| *k == RTAX_MTU)
                            .and_then(|(_, d)| u32_at(d, 0))
                    }
                    _ => {}
                }
            }
            (found.oif != 0).then_some(Ok(found))
        }
        _ => None,
    }
}

/// Netlink attributes (type without the nested/byte-order bits, payload) until the first
/// malformed one.
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16_at(b, 0)?);
        let kind = u16_at(b, 2)? & 0x3fff;
        let data = b.get(4..len)?;
        b = b.get(align4(len)..).unwrap_or_default();
        Some((kind, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, data: &[u8]) -> Vec<u8> {
        let mut a = ((4 + data.len()) as u16).to_ne_bytes().to_vec();
        a.extend(kind.to_ne_bytes());
        a.extend(data);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = ((NLMSG_HEADER + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend(kind.to_ne_bytes());
        m.extend([0u8; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn reads_device_table_and_mtu_of_a_route_in_strongswans_table() {
        // rtmsg with table 252 (the u8 field saturates); RTA_TABLE carries the real 220.
        let mut body = vec![2, 32, 0, 0, 252, 4, 0, 1, 0, 0, 0, 0];
        body.extend(attr(RTA_TABLE, &220u32.to_ne_bytes()));
        body.extend(attr(RTA_DST, &[203, 0, 113, 130]));
        body.extend(attr(RTA_OIF, &7u32.to_ne_bytes()));
        body.extend(attr(RTA_METRICS, &attr(RTAX_MTU, &1438u32.to_ne_bytes())));
        assert_eq!(
            parse(&message(RTM_NEWROUTE, &body)),
            Some(Ok(Found {
                oif: 7,
                table: 220,
                mtu: Some(1438)
            }))
        );
        let mut err = (-libc::ENETUNREACH).to_ne_bytes().to_vec();
        err.extend([0u8; 16]);
        assert_eq!(
            parse(&message(NLMSG_ERROR, &err)),
            Some(Err(libc::ENETUNREACH))
        );
        assert_eq!(
            parse(&message(RTM_NEWROUTE, &body[..12])),
            None,
            "no device"
        );
    }

    #[test]
    fn the_loopback_route_is_a_plain_device() {
        let r = Route::to(Ipv4Addr::LOCALHOST).unwrap().unwrap();
        assert_eq!(r.device, "lo");
        assert!(!r.tunnel_device);
        assert!(r.device_mtu >= 1500);
    }
}
