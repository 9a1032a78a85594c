//! The uploader's own signals for the rules: `TCP_INFO` of its connections.

use std::collections::HashMap;

use backhaul_diagnose::{Observation, Signal};
use backhaul_netprobe::TcpInfo;
use backhaul_telemetry::Metrics;
use backhaul_upload::Transport;

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
        let before = seen.get(&id).copied().unwrap_or_default();
        metrics.upload_tcp_retransmits.add(u64::from(
            info.total_retrans.saturating_sub(before.total_retrans),
        ));
        if info.unacked > 0 {
            obs.push(Observation::new(
                now,
                Signal::TcpInfo {
                    snd_mss: info.snd_mss,
                    pmtu: info.pmtu,
                    retransmits: info.retransmits,
                    bytes_acked_delta: info.bytes_acked.saturating_sub(before.bytes_acked),
                },
            ));
        }
        next.insert(id, info);
    }
    *seen = next;
    obs
}
