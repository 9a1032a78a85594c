//! Network signals that see what small health checks miss.
//!
//! Owns: full-size ICMP echo probes with the DF bit set regardless of the local MTU
//! (`IP_PMTUDISC_PROBE`), the PLPMTUD-style search for the largest size that passes (RFC 8899:
//! loss of probes is the signal; ICMP "fragmentation needed" is only a bonus, an L2 mismatch
//! sends none), and the frag-needed messages seen on the probe socket with their next-hop MTU.
//!
//! Does not own: deciding what a failed probe means (`backhaul-diagnose`), when to probe (the
//! agent), or metric names (`backhaul-telemetry`).
//!
//! Probes use a raw ICMP socket, so they need root or `CAP_NET_RAW`; [`Prober::new`] says so
//! clearly when it cannot open one, and the rest of the agent keeps working without probes.

mod error;
mod icmp;
mod pmtu;
mod sys;

pub use error::Error;
pub use icmp::{FragNeeded, ProbeOutcome};
pub use pmtu::{MIN_IPV4_MTU, Prober, SearchResult};
