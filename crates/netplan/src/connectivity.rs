//! The connectivity test seam: what a measurement is and when one is worse than the baseline.
//! The probes themselves live in the binary (it owns `backhaul-netprobe`); this crate only
//! judges results.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Something the test probes: the WAN gateway, the upload endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeTarget {
    /// `gateway`, `endpoint`.
    pub name: String,
    /// Its address.
    pub addr: Ipv4Addr,
}

/// Small probes are what passed all through the 2025-11-12 black hole; large ones (the full
/// MTU of the link toward the target, DF set) are what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// A ping-sized probe.
    Small,
    /// A probe of the full interface MTU with DF set.
    Large,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Target name.
    pub target: String,
    /// Target address.
    pub addr: Ipv4Addr,
    /// Small or large.
    pub kind: ProbeKind,
    /// IPv4 packet size sent.
    pub size_bytes: u32,
    /// Whether an answer came back.
    pub ok: bool,
    /// Round-trip time of the answer.
    pub rtt_ms: Option<f64>,
    /// Why it failed, when known (`lost`, `frag-needed from 192.0.2.1 mtu 1500`, an error).
    pub note: Option<String>,
}

impl std::fmt::Display for ProbeResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            ProbeKind::Small => "small",
            ProbeKind::Large => "large",
        };
        write!(
            f,
            "{kind} {} B to {} {}: ",
            self.size_bytes, self.target, self.addr
        )?;
        match (self.ok, self.rtt_ms, &self.note) {
            (true, Some(rtt), _) => write!(f, "ok {rtt:.1} ms"),
            (true, None, _) => f.write_str("ok"),
            (false, _, Some(n)) => write!(f, "FAILED ({n})"),
            (false, _, None) => f.write_str("FAILED"),
        }
    }
}

/// One round of probes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Milliseconds since the apply started.
    pub at_ms: u64,
    /// Every probe of the round.
    pub probes: Vec<ProbeResult>,
}

impl Measurement {
    /// Whether every probe passed.
    pub fn all_ok(&self) -> bool {
        self.probes.iter().all(|p| p.ok)
    }

    /// The probes that passed in `baseline` and fail now, one line each. A probe that already
    /// failed before the change is not the change's fault (it may be the fix), so it is not
    /// counted.
    pub fn regressions(&self, baseline: &Measurement) -> Vec<String> {
        self.probes
            .iter()
            .filter(|p| !p.ok)
            .filter_map(|p| {
                let before = baseline
                    .probes
                    .iter()
                    .find(|b| b.target == p.target && b.kind == p.kind && b.ok)?;
                Some(format!(
                    "{p} (passed at {} B before the change)",
                    before.size_bytes
                ))
            })
            .collect()
    }

    /// One line: `large 1500 B to gateway 192.0.2.1: ok 0.4 ms; …`.
    pub fn summary(&self) -> String {
        if self.probes.is_empty() {
            return "no probes".into();
        }
        self.probes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Measures connectivity toward the plan's targets, once per call.
pub trait Connectivity {
    /// One round of small and large probes to every target (`at_ms` is filled by the caller).
    fn measure(&mut self) -> Measurement;

    /// What a round sends, for the dry run.
    fn describe(&self) -> Vec<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: ProbeKind, size: u32, ok: bool) -> ProbeResult {
        ProbeResult {
            target: "gateway".into(),
            addr: Ipv4Addr::new(192, 0, 2, 1),
            kind,
            size_bytes: size,
            ok,
            rtt_ms: ok.then_some(0.4),
            note: (!ok).then(|| "lost".into()),
        }
    }

    #[test]
    fn only_what_passed_before_counts_as_a_regression() {
        let baseline = Measurement {
            at_ms: 0,
            probes: vec![
                probe(ProbeKind::Small, 84, true),
                probe(ProbeKind::Large, 1500, true),
            ],
        };
        let after = Measurement {
            at_ms: 1,
            probes: vec![
                probe(ProbeKind::Small, 84, true),
                probe(ProbeKind::Large, 9000, false),
            ],
        };
        assert_eq!(
            after.regressions(&baseline),
            [
                "large 9000 B to gateway 192.0.2.1: FAILED (lost) (passed at 1500 B before the change)"
            ]
        );
        // The change fixing a broken large path: failing before, failing after is no regression.
        let broken = Measurement {
            at_ms: 0,
            probes: vec![probe(ProbeKind::Large, 9000, false)],
        };
        assert!(after.regressions(&broken).is_empty());
        assert!(!after.all_ok() && baseline.all_ok());
    }
}
