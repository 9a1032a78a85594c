//! The uploader's own signals for the rules: `TCP_INFO` of its connections.

use std::collections::HashMap;

use backhaul_diagnose::{Observation, Signal};
use backhaul_netprobe::TcpInfo;
use backhaul_telemetry::Metrics;
use backhaul_upload::Transport;

/// Bytes acknowledged since the previous sample. A connection seen for the first time that is
/// already resending its oldest segment counts as having nothing acknowledged: what its
/// handshake and headers got acked says nothing about its data, and waiting for a second
/// sample would delay a path that shrank by one whole sampling interval.
fn acked_since(before: Option<TcpInfo>, now: TcpInfo) -> u64 {
    match before {
        Some(b) => now.bytes_acked.saturating_sub(b.bytes_acked),
        None if now.retransmits > 0 => 0,
        None => now.bytes_acked,
    }
}

/// Reads `TCP_INFO` of the uploader's open connections: sets the gauges, adds retransmissions
/// to their counter, and returns an observation for each connection with data in flight
/// (idle pooled connections say nothing about the path). `seen` holds each connection's
/// previous sample, for the deltas.
pub(super) fn sample_tcp(
    transport: &Transport,
    metrics: &Metrics,
    seen: &mut HashMap<u64, TcpInfo>,
    now: u64,
) -> Vec<Observation> {
    let current = transport.tcp_info();
    let max = |f: fn(&TcpInfo) -> u32| current.iter().map(|(_, i)| f(i)).max().unwrap_or(0);
    metrics
        .upload_tcp_snd_mss_bytes
        .set(f64::from(max(|i| i.snd_mss)));
    metrics
        .upload_tcp_rtt_seconds
        .set(f64::from(max(|i| i.rtt_us)) / 1e6);
    metrics.upload_tcp_pmtu_bytes.set(f64::from(
        current.iter().map(|(_, i)| i.pmtu).min().unwrap_or(0),
    ));
    let mut obs = Vec::new();
    let mut next = HashMap::new();
    for (id, info) in current {
        let before = seen.get(&id).copied();
        metrics.upload_tcp_retransmits.add(u64::from(
            info.total_retrans
                .saturating_sub(before.map_or(0, |b| b.total_retrans)),
        ));
        if info.unacked > 0 {
            obs.push(Observation::new(
                now,
                Signal::TcpInfo {
                    snd_mss: info.snd_mss,
                    pmtu: info.pmtu,
                    retransmits: info.retransmits,
                    bytes_acked_delta: acked_since(before, info),
                },
            ));
        }
        next.insert(id, info);
    }
    *seen = next;
    obs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_connection_already_resending_has_nothing_acknowledged() {
        let info = |retransmits, bytes_acked| TcpInfo {
            retransmits,
            bytes_acked,
            unacked: 10,
            ..TcpInfo::default()
        };
        assert_eq!(acked_since(None, info(1, 900)), 0);
        assert_eq!(acked_since(None, info(0, 900)), 900);
        assert_eq!(acked_since(Some(info(0, 900)), info(2, 900)), 0);
        assert_eq!(acked_since(Some(info(0, 900)), info(0, 5000)), 4100);
    }
}
