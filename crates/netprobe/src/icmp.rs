//! ICMPv4 echo packets and the replies and errors that come back, as bytes (pure, testable).

use std::net::Ipv4Addr;

const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;
const DEST_UNREACHABLE: u8 = 3;
const FRAG_NEEDED: u8 = 4;
/// IPv4 header without options.
pub(crate) const IP_HEADER: usize = 20;
/// ICMP echo header.
pub(crate) const ICMP_HEADER: usize = 8;

/// An ICMP "fragmentation needed and DF set" (type 3 code 4) about one of our probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragNeeded {
    /// The router that could not forward the packet.
    pub from: Ipv4Addr,
    /// The next-hop MTU it reported (0 when the router did not say, per RFC 1191 old routers).
    pub next_hop_mtu: u16,
}

/// An ICMP "fragmentation needed" seen by the host-wide listener, about any socket's packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragNeededSeen {
    /// The router and the next-hop MTU it reported.
    pub frag: FragNeeded,
    /// Destination of the packet that was too big (from the quoted IP header).
    pub destination: Ipv4Addr,
    /// IP protocol of that packet (6 TCP, 17 UDP, 1 ICMP, 50 ESP).
    pub protocol: u8,
}

/// What came back for one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The echo reply arrived: a packet of this size crosses the path.
    Passed {
        /// Round trip in microseconds.
        rtt_us: u64,
    },
    /// Nothing came back in time: the packet (or its reply) was dropped — the black hole's
    /// only symptom when the drop is at L2 or ICMP is filtered.
    Lost,
    /// A router said the packet is too big.
    FragNeeded(FragNeeded),
    /// The local interface MTU is smaller than the probe (EMSGSIZE); it never left the host.
    LocalTooBig,
}

/// Which kind of ICMP socket carries a prober's echo requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeSocket {
    /// A raw socket: root or `CAP_NET_RAW`. Sees every ICMP message, so also frag-needed
    /// about other sockets' packets.
    Raw,
    /// An ICMP datagram ("ping") socket, open to the groups `net.ipv4.ping_group_range`
    /// allows: what lets an unprivileged monitoring user probe. The kernel matches replies to
    /// it and queues the ICMP errors about its own packets.
    Ping,
}

/// A raw ICMPv4 socket; `purpose` names what it is for in the permission error, the one a
/// host without `CAP_NET_RAW` will see.
pub(crate) fn raw_socket(purpose: &'static str) -> Result<socket2::Socket, crate::Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => crate::Error::Permission {
            purpose,
            needs: "needs root or CAP_NET_RAW".into(),
            source: e,
        },
        _ => crate::Error::Socket {
            op: "socket(AF_INET, SOCK_RAW, ICMP)",
            source: e,
        },
    })
}

/// A socket for echo probes: raw when the process may, else a ping socket. When neither opens,
/// the error names the sysctl and the group that would grant the ping socket.
pub(crate) fn probe_socket(
    purpose: &'static str,
) -> Result<(socket2::Socket, ProbeSocket), crate::Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    match raw_socket(purpose) {
        Ok(s) => return Ok((s, ProbeSocket::Raw)),
        Err(crate::Error::Permission { .. }) => {}
        Err(e) => return Err(e),
    }
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(s) => Ok((s, ProbeSocket::Ping)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(crate::Error::Permission {
                purpose,
                needs: ping_refused(),
                source: e,
            })
        }
        Err(e) => Err(crate::Error::Socket {
            op: "socket(AF_INET, SOCK_DGRAM, ICMP)",
            source: e,
        }),
    }
}

/// What grants a ping socket to this process: the kernel allows one when the process's group
/// or one of its supplementary groups lies inside `net.ipv4.ping_group_range`.
fn ping_refused() -> String {
    use std::os::unix::fs::MetadataExt as _;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range")
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into());
    // /proc/self belongs to the process's effective user and group.
    let gid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.gid());
    format!(
        "needs root or CAP_NET_RAW, or a ping socket, which net.ipv4.ping_group_range \"{range}\" \
         refuses to group {gid}; grant it with `sysctl -w net.ipv4.ping_group_range=\"{gid} {gid}\"` \
         (keep it in /etc/sysctl.d/), or give the binary `setcap cap_net_raw+ep`"
    )
}

/// What a datagram from a ping socket (ICMP only, no IP header; the kernel delivers only
/// replies to this socket's id) says: the sequence number of an echo reply.
pub(crate) fn classify_ping(packet: &[u8]) -> Option<u16> {
    (packet.first() == Some(&ECHO_REPLY))
        .then(|| Some(u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?])))
        .flatten()
}

/// A frag-needed from a ping socket's error queue, with the sequence number of the probe it
/// was about (the queued error quotes the echo request as sent).
pub(crate) fn classify_queued(e: &crate::sys::QueuedIcmpError) -> Option<(u16, FragNeeded)> {
    if e.icmp != (DEST_UNREACHABLE, FRAG_NEEDED) || e.quoted.first() != Some(&ECHO_REQUEST) {
        return None;
    }
    let seq = u16::from_be_bytes([*e.quoted.get(6)?, *e.quoted.get(7)?]);
    Some((
        seq,
        FragNeeded {
            from: e.from,
            next_hop_mtu: u16::try_from(e.info).unwrap_or(u16::MAX),
        },
    ))
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for pair in data.chunks(2) {
        let word = match pair {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request whose IPv4 packet is `packet_size` bytes long.
pub(crate) fn echo_request(id: u16, seq: u16, packet_size: usize) -> Vec<u8> {
    let len = packet_size.saturating_sub(IP_HEADER).max(ICMP_HEADER);
    let mut p = vec![0u8; len];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[ICMP_HEADER..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// What a received datagram (raw socket: IPv4 header + ICMP) says about a probe of `id` to
/// `target`, with that probe's sequence number; `None` if it is about something else.
pub(crate) fn classify(
    packet: &[u8],
    id: u16,
    target: Ipv4Addr,
) -> Option<(u16, Result<(), FragNeeded>)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let src = Ipv4Addr::new(
        *packet.get(12)?,
        *packet.get(13)?,
        *packet.get(14)?,
        *packet.get(15)?,
    );
    let icmp = packet.get(ihl..)?;
    let (kind, code) = (*icmp.first()?, *icmp.get(1)?);
    let ours = |b: &[u8]| {
        (b.get(4..6)? == id.to_be_bytes()).then_some(u16::from_be_bytes([*b.get(6)?, *b.get(7)?]))
    };
    match (kind, code) {
        (ECHO_REPLY, 0) if src == target => Some((ours(icmp)?, Ok(()))),
        (DEST_UNREACHABLE, FRAG_NEEDED) => {
            let next_hop_mtu = u16::from_be_bytes([*icmp.get(6)?, *icmp.get(7)?]);
            // The error quotes our original IP header and the first 8 bytes of our ICMP.
            let inner = icmp.get(ICMP_HEADER..)?;
            let inner_ihl = usize::from(inner.first()? & 0x0f) * 4;
            let dst = Ipv4Addr::new(
                *inner.get(16)?,
                *inner.get(17)?,
                *inner.get(18)?,
                *inner.get(19)?,
            );
            let quoted = inner.get(inner_ihl..)?;
            if dst != target || quoted.first() != Some(&ECHO_REQUEST) {
                return None;
            }
            Some((
                ours(quoted)?,
                Err(FragNeeded {
                    from: src,
                    next_hop_mtu,
                }),
            ))
        }
        _ => None,
    }
}

/// Any ICMP "fragmentation needed" in a datagram from a raw ICMP socket (IPv4 header +
/// ICMP); `None` for every other message.
pub(crate) fn frag_needed_any(packet: &[u8]) -> Option<FragNeededSeen> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let from = Ipv4Addr::from(<[u8; 4]>::try_from(packet.get(12..16)?).ok()?);
    let icmp = packet.get(ihl..)?;
    if (icmp.first()?, icmp.get(1)?) != (&DEST_UNREACHABLE, &FRAG_NEEDED) {
        return None;
    }
    let next_hop_mtu = u16::from_be_bytes([*icmp.get(6)?, *icmp.get(7)?]);
    let inner = icmp.get(ICMP_HEADER..)?;
    Some(FragNeededSeen {
        frag: FragNeeded { from, next_hop_mtu },
        destination: Ipv4Addr::from(<[u8; 4]>::try_from(inner.get(16..20)?).ok()?),
        protocol: *inner.get(9)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 1, 0, 0];
        h.extend(src.octets());
        h.extend(dst.octets());
        h.extend(payload);
        h
    }

    #[test]
    fn request_has_valid_checksum_and_size() {
        let p = echo_request(0x1234, 7, 1500);
        assert_eq!(p.len(), 1480);
        assert_eq!(
            checksum(&p),
            0,
            "a packet including its checksum sums to zero"
        );
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn classifies_reply_frag_needed_and_noise() {
        let target = Ipv4Addr::new(203, 0, 113, 10);
        let me = Ipv4Addr::new(192, 0, 2, 2);
        let mut reply = echo_request(9, 1, 100);
        reply[0] = ECHO_REPLY;
        assert_eq!(
            classify(&ip(target, me, &reply), 9, target),
            Some((1, Ok(())))
        );
        assert_eq!(
            classify(&ip(me, me, &reply), 9, target),
            None,
            "reply from elsewhere"
        );

        let gw = Ipv4Addr::new(192, 0, 2, 1);
        let mut err = vec![DEST_UNREACHABLE, FRAG_NEEDED, 0, 0, 0, 0, 0x05, 0xdc];
        err.extend(ip(me, target, &echo_request(9, 3, 100)[..8]));
        assert_eq!(
            classify(&ip(gw, me, &err), 9, target),
            Some((
                3,
                Err(FragNeeded {
                    from: gw,
                    next_hop_mtu: 1500
                })
            ))
        );
        assert_eq!(
            classify(&ip(gw, me, &err), 8, target),
            None,
            "about another prober's probe"
        );
        assert_eq!(classify(&[0x45, 0], 9, target), None, "truncated");
    }

    #[test]
    fn host_wide_listener_reads_any_frag_needed() {
        let (gw, me, s3) = (
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 2),
            Ipv4Addr::new(203, 0, 113, 10),
        );
        // A TCP segment's header quoted by the gateway (protocol 6 at byte 9).
        let mut quoted = ip(me, s3, &[0x9c, 0x40, 0x23, 0x28, 0, 0, 0, 1]);
        quoted[9] = 6;
        let mut err = vec![DEST_UNREACHABLE, FRAG_NEEDED, 0, 0, 0, 0, 0x05, 0xdc];
        err.extend(&quoted);
        assert_eq!(
            frag_needed_any(&ip(gw, me, &err)),
            Some(FragNeededSeen {
                frag: FragNeeded {
                    from: gw,
                    next_hop_mtu: 1500
                },
                destination: s3,
                protocol: 6
            })
        );
        let mut port_unreachable = err.clone();
        port_unreachable[1] = 3;
        assert_eq!(frag_needed_any(&ip(gw, me, &port_unreachable)), None);
        assert_eq!(frag_needed_any(&ip(gw, me, &err[..12])), None, "truncated");
    }
}
