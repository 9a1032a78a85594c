//! Kernel network signals that see what small health checks miss.
//!
//! Owns: full-size ICMP echo probes with the DF bit set regardless of the local MTU
//! (`IP_PMTUDISC_PROBE`), the PLPMTUD-style search for the largest size that passes (RFC 8899:
//! loss of probes is the signal; ICMP "fragmentation needed" is only a bonus, an L2 mismatch
//! sends none), and the frag-needed messages seen on the probe socket with their next-hop MTU;
//! interface MTU and state changes from an rtnetlink `RTNLGRP_LINK` subscription, with old and
//! new values ([`LinkWatcher`]; [`Link::from_sysfs`] is the polling fallback); the host-wide
//! frag-needed listener for every socket's packets ([`FragNeededListener`]); the route toward an
//! address with its device, MTU and whether it is a tunnel ([`Route`]); the kernel's
//! PMTU-related counters ([`KernelCounters`]); `TCP_INFO` of a connection ([`TcpInfo`]);
//! strongSwan's tunnels, CHILD_SAs and up/down events over its VICI socket ([`Vici`]).
//!
//! Does not own: deciding what a signal means (`backhaul-diagnose`), when to probe or watch
//! (the agent), or metric names (`backhaul-telemetry`).
//!
//! The frag-needed listener needs a raw ICMP socket (root or `CAP_NET_RAW`); probes use one
//! when they may, else an ICMP ping socket, which `net.ipv4.ping_group_range` can open to an
//! unprivileged monitoring user ([`ProbeSocket`]). [`Prober::new`] and
//! [`FragNeededListener::open`] say what would grant them ([`Error::Permission`]) when they
//! cannot open one, and the rest of the agent keeps working without them. The rtnetlink subscription needs no privilege. The one module with `unsafe`
//! is `sys.rs`: the socket options neither socket2 nor rustix expose.

mod counters;
mod error;
mod frag;
mod icmp;
mod link;
mod pmtu;
mod route;
mod sys;
mod tcp;
mod vici;

pub use counters::KernelCounters;
pub use error::Error;
pub use frag::FragNeededListener;
pub use icmp::{FragNeeded, FragNeededSeen, ProbeOutcome, ProbeSocket};
pub use link::{Link, LinkEvent, LinkTable, LinkWatcher};
pub use pmtu::{MIN_IPV4_MTU, Prober, SearchResult};
pub use route::Route;
pub use tcp::TcpInfo;
pub use vici::{ChildSa, VICI_SOCKET, Vici, VpnEvent, VpnEventKind, VpnTunnels};
