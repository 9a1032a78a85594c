//! Interface MTU and state changes as the kernel announces them: an rtnetlink socket subscribed
//! to `RTNLGRP_LINK`, so an `ip link set eno1 mtu 9000` is an event within milliseconds
//! instead of at the next poll.
//!
//! `RTM_NEWLINK` carries only the new values, so [`LinkTable`] keeps the last known state of
//! every interface (seeded by an `RTM_GETLINK` dump taken after subscribing, so no change
//! between the two is lost) and turns each message into a [`LinkEvent`] with old and new
//! values. When the socket's receive queue overflows (`ENOBUFS`), messages were lost: the
//! watcher dumps again and the table diff yields whatever changed meanwhile.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

use crate::Error;

pub(crate) const NLMSG_HEADER: usize = 16;
const IFINFOMSG: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
pub(crate) const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const RTMGRP_LINK: u32 = 0x1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_OPERSTATE: u16 = 16;
const IFF_UP: u32 = 0x1;
// The kernel sets IFF_RUNNING in netlink flags when the operational state is UP or UNKNOWN
// (dev_get_flags), which is what `ip link` shows as usable; TAP and loopback report UNKNOWN.
const IFF_RUNNING: u32 = 0x40;
const IF_OPER_UP: u8 = 6;

/// One interface as an `RTM_NEWLINK` message describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index (stable across renames).
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// MTU in bytes.
    pub mtu_bytes: u32,
    /// Administratively up and operationally usable (`IFF_UP` and `IFF_RUNNING`, or
    /// `IF_OPER_UP`).
    pub up: bool,
}

impl Link {
    /// The interface as sysfs shows it now (the polling fallback); `None` if it does not
    /// exist or `name` could walk out of `/sys/class/net`.
    pub fn from_sysfs(name: &str) -> Option<Link> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return None;
        }
        let read = |file: &str| {
            std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        let flags = read("flags")?;
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        // sysfs `flags` lacks IFF_RUNNING (it is derived), so the operational state stands in.
        let oper = read("operstate")?;
        Some(Link {
            index: read("ifindex")?.parse().ok()?,
            name: name.to_owned(),
            mtu_bytes: read("mtu")?.parse().ok()?,
            up: flags & IFF_UP != 0 && matches!(oper.as_str(), "up" | "unknown"),
        })
    }
}

/// What one rtnetlink message said about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkMessage {
    /// `RTM_NEWLINK`: the interface exists with these values (sent on every change, and for
    /// every interface in a dump).
    New(Link),
    /// `RTM_DELLINK`: the interface with this index is gone.
    Removed {
        /// Interface index.
        index: u32,
    },
    /// `NLMSG_DONE`: the end of a dump.
    DumpDone,
}

/// A change to one interface, with the values before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// An interface appeared (or was renamed to this name).
    Appeared(Link),
    /// An interface's MTU changed.
    MtuChanged {
        /// Interface name.
        ifname: String,
        /// MTU before.
        old_bytes: u32,
        /// MTU after.
        new_bytes: u32,
    },
    /// An interface went up or down.
    StateChanged {
        /// Interface name.
        ifname: String,
        /// Whether it is up now.
        up: bool,
    },
    /// An interface disappeared (or was renamed away from this name).
    Removed {
        /// Interface name.
        ifname: String,
    },
}

/// A malformed rtnetlink datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed rtnetlink message at byte {offset}: {what}")]
pub(crate) struct ParseError {
    /// Where in the datagram.
    pub(crate) offset: usize,
    /// What was wrong.
    pub(crate) what: &'static str,
}

pub(crate) fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

pub(crate) const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one datagram from an rtnetlink socket (several messages may share it). Messages of
/// other types are skipped; a kernel error reply (`NLMSG_ERROR` with a non-zero code) is
/// returned as that errno.
pub(crate) fn parse(datagram: &[u8]) -> Result<Result<Vec<LinkMessage>, i32>, ParseError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + NLMSG_HEADER <= datagram.len() {
        let bad = |what| ParseError { offset: at, what };
        let len = u32_at(datagram, at).ok_or(bad("header"))? as usize;
        let kind = u16_at(datagram, at + 4).ok_or(bad("header"))?;
        if len < NLMSG_HEADER || at + len > datagram.len() {
            return Err(bad("length outside the datagram"));
        }
        let body = &datagram[at + NLMSG_HEADER..at + len];
        match kind {
            RTM_NEWLINK => out.push(LinkMessage::New(
                parse_link(body).ok_or(bad("truncated RTM_NEWLINK"))?,
            )),
            RTM_DELLINK => out.push(LinkMessage::Removed {
                index: u32_at(body, 4).ok_or(bad("truncated RTM_DELLINK"))?,
            }),
            NLMSG_DONE => out.push(LinkMessage::DumpDone),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or(bad("truncated NLMSG_ERROR"))? as i32;
                if code != 0 {
                    return Ok(Err(-code));
                }
            }
            NLMSG_OVERRUN => return Ok(Err(libc::ENOBUFS)),
            _ => {}
        }
        at += align4(len);
    }
    Ok(Ok(out))
}

fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut name = None;
    let mut mtu = None;
    let mut operstate = None;
    let mut at = IFINFOMSG;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        // The top two bits of rta_type are NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let kind = u16_at(body, at + 2)? & 0x3fff;
        if len < 4 {
            return None;
        }
        let data = body.get(at + 4..at + len)?;
        match kind {
            IFLA_IFNAME => {
                let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
                name = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            IFLA_MTU => mtu = u32_at(data, 0),
            IFLA_OPERSTATE => operstate = data.first().copied(),
            _ => {}
        }
        at += align4(len);
    }
    Some(Link {
        index,
        name: name?,
        mtu_bytes: mtu?,
        up: flags & IFF_UP != 0 && (flags & IFF_RUNNING != 0 || operstate == Some(IF_OPER_UP)),
    })
}

/// The last known state of every interface; turns messages into events with old values.
#[derive(Debug, Clone, Default)]
pub struct LinkTable {
    links: BTreeMap<u32, Link>,
}

impl LinkTable {
    /// The interface with this name, if known.
    pub fn get(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    /// Every known interface, by index.
    pub fn links(&self) -> impl Iterator<Item = &Link> {
        self.links.values()
    }

    /// Applies one message and returns what changed.
    pub(crate) fn apply(&mut self, msg: LinkMessage) -> Vec<LinkEvent> {
        match msg {
            LinkMessage::New(new) => match self.links.insert(new.index, new.clone()) {
                None => vec![LinkEvent::Appeared(new)],
                Some(old) => diff(&old, &new),
            },
            LinkMessage::Removed { index } => self
                .links
                .remove(&index)
                .map(|old| vec![LinkEvent::Removed { ifname: old.name }])
                .unwrap_or_default(),
            LinkMessage::DumpDone => Vec::new(),
        }
    }

    /// Replaces the table with a complete list and returns what differs from before
    /// (interfaces missing from it are gone): after lost rtnetlink messages, and on every
    /// sysfs poll of the fallback.
    pub fn resync(&mut self, dump: Vec<Link>) -> Vec<LinkEvent> {
        let mut old = std::mem::take(&mut self.links);
        let mut events = Vec::new();
        for new in dump {
            match old.remove(&new.index) {
                None => events.push(LinkEvent::Appeared(new.clone())),
                Some(before) => events.extend(diff(&before, &new)),
            }
            self.links.insert(new.index, new);
        }
        events.extend(
            old.into_values()
                .map(|l| LinkEvent::Removed { ifname: l.name }),
        );
        events
    }
}

fn diff(old: &Link, new: &Link) -> Vec<LinkEvent> {
    if old.name != new.name {
        return vec![
            LinkEvent::Removed {
                ifname: old.name.clone(),
            },
            LinkEvent::Appeared(new.clone()),
        ];
    }
    let mut events = Vec::new();
    if old.mtu_bytes != new.mtu_bytes {
        events.push(LinkEvent::MtuChanged {
            ifname: new.name.clone(),
            old_bytes: old.mtu_bytes,
            new_bytes: new.mtu_bytes,
        });
    }
    if old.up != new.up {
        events.push(LinkEvent::StateChanged {
            ifname: new.name.clone(),
            up: new.up,
        });
    }
    events
}

/// How long [`LinkWatcher::next_events`] waits at most, so its thread can notice that nobody
/// listens any more.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
/// Room for a dump batch: the kernel fills up to about 32 KiB per datagram.
const RECV_BUFFER: usize = 64 * 1024;

/// An rtnetlink subscription to link changes, in the network namespace of the thread that
/// created it.
#[derive(Debug)]
pub struct LinkWatcher {
    socket: OwnedFd,
    table: LinkTable,
    seq: u32,
    buf: Vec<u8>,
}

impl LinkWatcher {
    /// Subscribes to `RTNLGRP_LINK` and reads the current interfaces. Needs no privilege.
    pub fn subscribe() -> Result<Self, Error> {
        let op = |op| {
            move |e: rustix::io::Errno| Error::Netlink {
                op,
                source: e.into(),
            }
        };
        let socket = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(op("socket(AF_NETLINK, NETLINK_ROUTE)"))?;
        rustix::net::bind(&socket, &SocketAddrNetlink::new(0, RTMGRP_LINK))
            .map_err(op("bind(RTMGRP_LINK)"))?;
        rustix::net::sockopt::set_socket_timeout(
            &socket,
            rustix::net::sockopt::Timeout::Recv,
            Some(RECV_TIMEOUT),
        )
        .map_err(op("SO_RCVTIMEO"))?;
        let mut watcher = Self {
            socket,
            table: LinkTable::default(),
            seq: 0,
            buf: vec![0; RECV_BUFFER],
        };
        watcher.dump()?;
        Ok(watcher)
    }

    /// The current state of every interface.
    pub fn table(&self) -> &LinkTable {
        &self.table
    }

    /// Waits up to about a second for link messages; returns the changes they made (empty
    /// on timeout).
    pub fn next_events(&mut self) -> Result<Vec<LinkEvent>, Error> {
        match self.recv()? {
            None => Ok(Vec::new()),
            // The queue overflowed and changes were lost: the dump's diff recovers them.
            Some(Err(libc::ENOBUFS)) => self.dump(),
            Some(Err(errno)) => Err(Error::Netlink {
                op: "recv",
                source: std::io::Error::from_raw_os_error(errno),
            }),
            Some(Ok(msgs)) => Ok(msgs.into_iter().flat_map(|m| self.table.apply(m)).collect()),
        }
    }

    /// `Ok(None)` on timeout; `Some(Err(errno))` for a kernel error or lost messages.
    fn recv(&mut self) -> Result<Option<Result<Vec<LinkMessage>, i32>>, Error> {
        loop {
            match rustix::net::recv(&self.socket, &mut self.buf[..], RecvFlags::empty()) {
                Ok((n, _)) => {
                    let parsed = parse(&self.buf[..n]).map_err(|e| Error::Netlink {
                        op: "parse",
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?;
                    return Ok(Some(parsed));
                }
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::NOBUFS) => return Ok(Some(Err(libc::ENOBUFS))),
                Err(e) => {
                    return Err(Error::Netlink {
                        op: "recv",
                        source: e.into(),
                    });
                }
            }
        }
    }

    /// Requests a full `RTM_GETLINK` dump and resynchronises the table with it. Multicast
    /// notifications that arrive during the dump are applied in order too.
    fn dump(&mut self) -> Result<Vec<LinkEvent>, Error> {
        loop {
            if let Some(dump) = self.try_dump()? {
                return Ok(self.table.resync(dump));
            }
        }
    }

    /// One dump attempt; `None` when notifications overran the queue meanwhile.
    fn try_dump(&mut self) -> Result<Option<Vec<Link>>, Error> {
        self.seq = self.seq.wrapping_add(1);
        let mut req = Vec::with_capacity(NLMSG_HEADER + IFINFOMSG);
        req.extend(((NLMSG_HEADER + IFINFOMSG) as u32).to_ne_bytes());
        req.extend(RTM_GETLINK.to_ne_bytes());
        req.extend((NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req.extend(self.seq.to_ne_bytes());
        req.extend(0u32.to_ne_bytes());
        req.extend([0u8; IFINFOMSG]); // ifinfomsg: AF_UNSPEC, every interface
        rustix::net::sendto(
            &self.socket,
            &req,
            SendFlags::empty(),
            &SocketAddrNetlink::new(0, 0),
        )
        .map_err(|e| Error::Netlink {
            op: "send RTM_GETLINK",
            source: e.into(),
        })?;
        // Keyed by index: a notification that arrives during the dump replaces its entry.
        let mut dump = BTreeMap::new();
        loop {
            match self.recv()? {
                None => {
                    return Err(Error::Netlink {
                        op: "RTM_GETLINK dump",
                        source: std::io::ErrorKind::TimedOut.into(),
                    });
                }
                // A notification overran the queue mid-dump: start over.
                Some(Err(libc::ENOBUFS)) => return Ok(None),
                Some(Err(errno)) => {
                    return Err(Error::Netlink {
                        op: "RTM_GETLINK dump",
                        source: std::io::Error::from_raw_os_error(errno),
                    });
                }
                Some(Ok(msgs)) => {
                    for m in msgs {
                        match m {
                            LinkMessage::New(l) => {
                                dump.insert(l.index, l);
                            }
                            LinkMessage::Removed { index } => {
                                dump.remove(&index);
                            }
                            LinkMessage::DumpDone => {
                                return Ok(Some(dump.into_values().collect()));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
