//! Kernel counters that help recognise PMTU trouble, read from `/proc/net/snmp` and
//! `/proc/net/netstat` (per network namespace). None of them counts frag-needed alone (that is
//! what [`crate::FragNeededListener`] is for), so they are context: `InDestUnreachs` counts
//! every destination-unreachable, `FragFails` counts packets this host itself could not
//! fragment (DF set and too big for the next hop), and `TCPMTUPFail`/`TCPMTUPSuccess` count
//! TCP's own packetization-layer path-MTU probing (`net.ipv4.tcp_mtu_probing`).

use crate::Error;

// `/proc/net` is `/proc/self/net`: the namespace of the process's main thread. The calling
// thread's own namespace (where its sockets live) is behind `thread-self` (Linux 3.17+).
const SNMP: &str = "/proc/thread-self/net/snmp";
const NETSTAT: &str = "/proc/thread-self/net/netstat";

/// The kernel's PMTU-related counters at one instant (monotonic since boot, or since the
/// namespace was created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// `Icmp: InDestUnreachs`.
    pub icmp_in_dest_unreachs: u64,
    /// `Ip: FragFails`.
    pub ip_frag_fails: u64,
    /// `TcpExt: TCPMTUPFail`.
    pub tcp_mtup_fail: u64,
    /// `TcpExt: TCPMTUPSuccess`.
    pub tcp_mtup_success: u64,
}

impl KernelCounters {
    /// Reads the counters of the calling thread's network namespace.
    pub fn read() -> Result<Self, Error> {
        let read = |path: &'static str| {
            std::fs::read_to_string(path).map_err(|source| Error::Counters { path, source })
        };
        Ok(Self::parse(&read(SNMP)?, &read(NETSTAT)?))
    }

    /// Parses the two files' texts; a counter the kernel does not have reads 0.
    pub fn parse(snmp: &str, netstat: &str) -> Self {
        Self {
            icmp_in_dest_unreachs: field(snmp, "Icmp", "InDestUnreachs"),
            ip_frag_fails: field(snmp, "Ip", "FragFails"),
            tcp_mtup_fail: field(netstat, "TcpExt", "TCPMTUPFail"),
            tcp_mtup_success: field(netstat, "TcpExt", "TCPMTUPSuccess"),
        }
    }

    /// How much each counter grew since `earlier` (0 where it went backwards).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            icmp_in_dest_unreachs: self
                .icmp_in_dest_unreachs
                .saturating_sub(earlier.icmp_in_dest_unreachs),
            ip_frag_fails: self.ip_frag_fails.saturating_sub(earlier.ip_frag_fails),
            tcp_mtup_fail: self.tcp_mtup_fail.saturating_sub(earlier.tcp_mtup_fail),
            tcp_mtup_success: self
                .tcp_mtup_success
                .saturating_sub(earlier.tcp_mtup_success),
        }
    }
}

/// Both files are pairs of lines, `Group: Name Name …` then `Group: value value …`.
fn field(text: &str, group: &str, name: &str) -> u64 {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let found = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name);
        if let Some((_, v)) = found {
            return v.parse().unwrap_or(0);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Trimmed from a Linux 6.x host: the group order and the name/value line pairs as the
    // kernel writes them (IcmpMsg has its own pair and must not be confused with Icmp).
    const SNMP_TEXT: &str = "\
Ip: Forwarding DefaultTTL InReceives FragOKs FragFails FragCreates
Ip: 2 64 1417578 0 7 0
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds
Icmp: 12 0 0 9 0
IcmpMsg: InType3
IcmpMsg: 2
";
    const NETSTAT_TEXT: &str = "\
TcpExt: SyncookiesSent TCPMTUPFail TCPMTUPSuccess TCPDelivered
TcpExt: 0 3 5 972004
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
";

    #[test]
    fn parses_snmp_and_netstat_and_deltas() {
        let c = KernelCounters::parse(SNMP_TEXT, NETSTAT_TEXT);
        assert_eq!(
            c,
            KernelCounters {
                icmp_in_dest_unreachs: 9,
                ip_frag_fails: 7,
                tcp_mtup_fail: 3,
                tcp_mtup_success: 5,
            }
        );
        let before = KernelCounters {
            icmp_in_dest_unreachs: 4,
            ip_frag_fails: 9,
            ..c
        };
        let d = c.since(&before);
        assert_eq!((d.icmp_in_dest_unreachs, d.ip_frag_fails), (5, 0));
        assert_eq!(KernelCounters::parse("", ""), KernelCounters::default());
    }

    #[test]
    fn reads_this_hosts_counters() {
        // /proc/net/snmp exists in every namespace; the parse must find the Ip group in it.
        let snmp = std::fs::read_to_string(SNMP).unwrap();
        assert!(field(&snmp, "Ip", "DefaultTTL") > 0, "{snmp}");
        KernelCounters::read().unwrap();
    }
}
