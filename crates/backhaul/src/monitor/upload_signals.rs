//! The uploader's own signals for the rules: `TCP_INFO` of its connections, and what the site
//! must trust to be heard at all: its clock against the store's, and its credentials.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use backhaul_diagnose::{Observation, Signal};
use backhaul_netprobe::TcpInfo;
use backhaul_telemetry::Metrics;

/// How often an unchanged clock reading or a refresh that keeps failing is reported again, so
/// the rules' window never loses it.
const REPORT_AGAIN: Duration = Duration::from_secs(60);
/// A clock reading this far from the last reported one is reported at once.
const SKEW_MOVED_SECONDS: i64 = 5;

/// The clock and credential reports sent so far.
#[derive(Debug, Default)]
pub(super) struct TrustReports {
    skew: Option<(i64, Instant)>,
    refresh: Option<(bool, Instant)>,
}

impl TrustReports {
    /// The store's clock offset (from the `Date` of its answers; none before one) and the
    /// credentials' refresh state, when they changed or are due again.
    pub(super) fn sample(
        &mut self,
        now: u64,
        metrics: &Metrics,
        creds: &backhaul_upload::CredentialsProvider,
    ) -> Vec<Observation> {
        let at = Instant::now();
        let due = |last: Instant| at.duration_since(last) >= REPORT_AGAIN;
        let mut out = Vec::new();
        let seconds = metrics.clock_skew_seconds.value().round() as i64;
        if metrics.clock_skew_answers.value() > 0
            && self
                .skew
                .is_none_or(|(s, t)| (s - seconds).abs() >= SKEW_MOVED_SECONDS || due(t))
        {
            self.skew = Some((seconds, at));
            out.push(Observation::new(now, Signal::ClockSkew { seconds }));
        }
        let status = creds.status();
        if status.source.is_none() && status.last_error.is_none() {
            return out;
        }
        let ok = status.last_error.is_none();
        if self
            .refresh
            .is_none_or(|(was, t)| was != ok || (!ok && due(t)))
        {
            self.refresh = Some((ok, at));
            let expires_in_seconds = status.expires_in_seconds(std::time::SystemTime::now());
            out.push(Observation::new(
                now,
                Signal::CredentialsRefresh {
                    ok,
                    expires_in_seconds,
                    error: status.last_error,
                },
            ));
        }
        out
    }
}

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

/// Takes `TCP_INFO` of the uploader's open connections (`backhaul_upload::Transport::tcp_info`): sets the
/// gauges, adds retransmissions to their counter, and returns an observation for each
/// connection with data in flight (idle pooled connections say nothing about the path). `seen`
/// holds each connection's previous sample, for the deltas.
pub(super) fn sample_tcp(
    current: &[(u64, TcpInfo)],
    metrics: &Metrics,
    seen: &mut HashMap<u64, TcpInfo>,
    now: u64,
) -> Vec<Observation> {
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
    for &(id, info) in current {
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

/// The look at the uploader's connections between upload samples (every monitor tick, at
/// least `QUICK_LOOK_EVERY` apart), for one question only: is one of them resending with
/// nothing acknowledged since the last look? The 2 s samples answer it late when a path shrinks
/// with no local change: the acknowledgements of what crossed before the change still arrive
/// in the first sample's window, so the stall showed only in the second, 2 to 4 s in.
#[derive(Debug, Default)]
pub(super) struct QuickLook {
    at: Option<Instant>,
    acked: HashMap<u64, u64>,
}

/// Shorter than any retransmission timeout of a stuck connection is long: a connection that
/// resends and got nothing acknowledged for this long is stuck, not between two ACKs.
const QUICK_LOOK_EVERY: Duration = Duration::from_millis(400);

impl QuickLook {
    /// Whether a look at `now` would say anything (the last one is far enough back).
    pub(super) fn due(&self, now: Instant) -> bool {
        self.at
            .is_none_or(|t| now.duration_since(t) >= QUICK_LOOK_EVERY)
    }

    /// True when a connection seen at the previous look is resending (`retransmits > 0`) with
    /// data unacknowledged and not a byte more acknowledged since.
    pub(super) fn stuck(&mut self, now: Instant, current: &[(u64, TcpInfo)]) -> bool {
        if !self.due(now) {
            return false;
        }
        let stuck = current.iter().any(|(id, i)| {
            i.retransmits > 0 && i.unacked > 0 && self.acked.get(id) == Some(&i.bytes_acked)
        });
        self.acked = current.iter().map(|(id, i)| (*id, i.bytes_acked)).collect();
        self.at = Some(now);
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection with data in flight.
    fn info(retransmits: u32, bytes_acked: u64) -> TcpInfo {
        TcpInfo {
            retransmits,
            bytes_acked,
            unacked: 10,
            ..TcpInfo::default()
        }
    }

    #[test]
    fn a_new_connection_already_resending_has_nothing_acknowledged() {
        assert_eq!(acked_since(None, info(1, 900)), 0);
        assert_eq!(acked_since(None, info(0, 900)), 900);
        assert_eq!(acked_since(Some(info(0, 900)), info(2, 900)), 0);
        assert_eq!(acked_since(Some(info(0, 900)), info(0, 5000)), 4100);
    }

    #[test]
    fn a_connection_resending_with_nothing_acked_since_the_last_look_is_stuck() {
        let t0 = Instant::now();
        let mut look = QuickLook::default();
        assert!(
            !look.stuck(t0, &[(1, info(1, 900))]),
            "first look: no history"
        );
        assert!(
            !look.stuck(t0 + Duration::from_millis(100), &[(1, info(1, 900))]),
            "too soon after the last look to say"
        );
        assert!(look.stuck(t0 + Duration::from_millis(500), &[(1, info(1, 900))]));
        assert!(
            !look.stuck(t0 + Duration::from_secs(1), &[(1, info(1, 5000))]),
            "acknowledged more: moving"
        );
        assert!(
            !look.stuck(t0 + Duration::from_millis(1500), &[(1, info(0, 5000))]),
            "not resending: idle or waiting, not stuck"
        );
        assert!(
            !look.stuck(t0 + Duration::from_secs(2), &[(2, info(3, 0))]),
            "a connection the last look did not see"
        );
    }
}
