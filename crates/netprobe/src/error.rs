use std::net::Ipv4Addr;

/// Errors of the network probes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No permission for the ICMP socket a purpose needs.
    #[error(
        "cannot open an ICMP socket for {purpose}: {needs} (the agent keeps uploading without them)"
    )]
    Permission {
        /// What the socket was for: `path-MTU probes` or `the fragmentation-needed listener`.
        purpose: &'static str,
        /// What would grant it, for this process on this host.
        needs: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("path-MTU probe socket: {op} failed")]
    Socket {
        /// Operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A probe size outside what IPv4 can carry.
    #[error("probe size {size} bytes is outside {min}..={max} (IPv4 packet size)")]
    Size {
        /// Requested size.
        size: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// The target is not an IPv4 address.
    #[error("probe target {0} is not usable (IPv4 unicast needed)")]
    Target(Ipv4Addr),
    /// The rtnetlink link subscription failed (callers fall back to polling sysfs).
    #[error("rtnetlink link watch: {op} failed")]
    Netlink {
        /// Operation.
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A kernel counter file could not be read.
    #[error("cannot read kernel counters from {path}")]
    Counters {
        /// The file.
        path: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// strongSwan's VICI socket could not be asked (absent: no VPN to monitor).
    #[error("strongSwan VICI: {op} failed")]
    Vici {
        /// Operation (`connect`, or the VICI command).
        op: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}
