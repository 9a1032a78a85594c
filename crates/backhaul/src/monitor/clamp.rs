//! The MSS clamp for upload connections: our own connections carry what the path carries, so
//! uploads keep flowing through a PMTUD black hole instead of stalling until a person fixes
//! the MTU.
//!
//! The best known path MTU is a measurement when there is one (the prober's search or a
//! full-size probe that passed, toward either target; an ICMP fragmentation-needed), else the
//! inventory's `path_mtu_bytes`. When it is below the WAN interface's MTU, new connections get
//! `TCP_MAXSEG` = path MTU − 40 before connect. A WAN MTU change forgets the measurements (they
//! crossed another configuration), so the interface MTU against the inventory decides until the
//! change's probe round reports: the 2025-11-12 change (1500 → 9000 behind a 1500-byte path) is
//! clamped the moment rtnetlink reports it.
//!
//! Without any measurement (probes not permitted) and with a path smaller than the inventory
//! says, the [`Ladder`] steps the clamp down when upload connections are stuck retransmitting
//! full-size segments, in the style of RFC 8899's search, and raises it again after its
//! `PMTU_RAISE_TIMER` (600 s).

use std::time::{Duration, Instant};

use backhaul_diagnose::{Signal, Target};
use serde::{Deserialize, Serialize};

/// IPv4 and TCP header bytes between a packet size and the segment it carries.
const TCP_IP_HEADER_BYTES: u32 = 40;
/// The smallest path MTU a clamp follows: IPv4's minimum reassembly size; a smaller report is
/// not believed.
const MIN_PATH_MTU_BYTES: u32 = 576;

/// Where the path MTU behind a clamp came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClampSource {
    /// The prober's path-MTU search (or a full-size probe that passed).
    Probe,
    /// An ICMP fragmentation-needed next-hop MTU.
    FragNeeded,
    /// The inventory's `path_mtu_bytes` (nothing measured since the last WAN change).
    Inventory,
    /// The [`Ladder`]: stuck connections, nothing measured.
    Ladder,
}

impl ClampSource {
    /// `probe`, `frag_needed`, `inventory`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClampSource::Probe => "probe",
            ClampSource::FragNeeded => "frag_needed",
            ClampSource::Inventory => "inventory",
            ClampSource::Ladder => "ladder",
        }
    }
}

/// The clamp new upload connections get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MssClamp {
    /// `TCP_MAXSEG`.
    pub mss_bytes: u32,
    /// The path MTU it follows.
    pub path_mtu_bytes: u32,
    /// Where that came from.
    pub source: ClampSource,
}

/// What has been measured about the path since the last WAN change.
#[derive(Debug, Default, Clone)]
pub struct PathMtuKnown {
    by_target: [Option<u32>; 2],
    frag_needed: Option<u32>,
}

impl PathMtuKnown {
    /// Takes the measurements in one observation.
    pub fn observe(&mut self, signal: &Signal) {
        match *signal {
            Signal::PathMtu { target, bytes } if bytes >= MIN_PATH_MTU_BYTES => {
                self.by_target[target as usize] = Some(bytes);
                // A newer search toward the endpoint supersedes what a router said before.
                if target == Target::Endpoint && self.frag_needed.is_some_and(|f| bytes >= f) {
                    self.frag_needed = None;
                }
            }
            Signal::FragNeeded { next_hop_mtu, .. } if next_hop_mtu >= MIN_PATH_MTU_BYTES => {
                self.frag_needed = Some(
                    self.frag_needed
                        .map_or(next_hop_mtu, |f| f.min(next_hop_mtu)),
                );
            }
            _ => {}
        }
    }

    /// Forgets everything (the WAN's MTU changed).
    pub fn forget(&mut self) {
        *self = Self::default();
    }

    /// Whether anything was measured since the last WAN change.
    pub fn measured(&self) -> bool {
        self.best().is_some()
    }

    fn best(&self) -> Option<(u32, ClampSource)> {
        let probed = self
            .by_target
            .iter()
            .flatten()
            .min()
            .map(|&b| (b, ClampSource::Probe));
        let icmp = self.frag_needed.map(|b| (b, ClampSource::FragNeeded));
        match (probed, icmp) {
            (Some(p), Some(f)) => Some(if f.0 < p.0 { f } else { p }),
            (p, f) => p.or(f),
        }
    }
}

/// The clamp for a WAN interface at `interface_mtu`: none while the best known path MTU is at
/// least the interface's (the kernel's own MSS then fits); the ladder's rung when it is lower.
pub fn decide(
    interface_mtu: Option<u32>,
    known: &PathMtuKnown,
    inventory_path_mtu: u32,
    ladder: &Ladder,
) -> Option<MssClamp> {
    let interface = interface_mtu?;
    let (path, source) = known
        .best()
        .unwrap_or((inventory_path_mtu, ClampSource::Inventory));
    let from_path = (path < interface).then(|| MssClamp {
        mss_bytes: path.saturating_sub(TCP_IP_HEADER_BYTES),
        path_mtu_bytes: path,
        source,
    });
    let rung = ladder.mss().map(|mss| MssClamp {
        mss_bytes: mss,
        path_mtu_bytes: mss + TCP_IP_HEADER_BYTES,
        source: ClampSource::Ladder,
    });
    match (from_path, rung) {
        (Some(p), Some(r)) if r.mss_bytes < p.mss_bytes => Some(r),
        (None, r) => r,
        (p, _) => p,
    }
}

/// The ladder's rungs (MSS), largest first: 1400, 1240 and 1064-byte paths (tunnels, PPPoE
/// over tunnels), then TCP's default 536.
pub const LADDER_MSS_BYTES: [u32; 4] = [1360, 1200, 1024, 536];
/// RFC 8899's `PMTU_RAISE_TIMER`: a rung is held this long, then the ladder goes one up.
pub const LADDER_RAISE_AFTER: Duration = Duration::from_secs(600);
/// Time a new rung gets to prove itself before stuck connections move it down again: fresh
/// connections must connect and send first.
const LADDER_SETTLE: Duration = Duration::from_secs(5);

/// The clamp found by stuck connections when nothing measures the path.
#[derive(Debug, Default, Clone)]
pub struct Ladder {
    rung: Option<usize>,
    since: Option<Instant>,
}

impl Ladder {
    /// Connections are stuck retransmitting segments of `snd_mss` bytes: go to the first rung
    /// below both that and the current rung. True when the rung changed.
    pub fn stuck(&mut self, snd_mss: u32, now: Instant) -> bool {
        if self
            .since
            .is_some_and(|t| now.saturating_duration_since(t) < LADDER_SETTLE)
        {
            return false;
        }
        let below_current = self.rung.map_or(0, |r| r + 1);
        let Some(next) =
            (below_current..LADDER_MSS_BYTES.len()).find(|&i| LADDER_MSS_BYTES[i] < snd_mss)
        else {
            return false;
        };
        self.rung = Some(next);
        self.since = Some(now);
        true
    }

    /// After [`LADDER_RAISE_AFTER`] on a rung, one rung up (off the ladder from the top one).
    /// True when it moved.
    pub fn raise_if_due(&mut self, now: Instant) -> bool {
        let (Some(rung), Some(since)) = (self.rung, self.since) else {
            return false;
        };
        if now.saturating_duration_since(since) < LADDER_RAISE_AFTER {
            return false;
        }
        self.rung = rung.checked_sub(1);
        self.since = self.rung.map(|_| now);
        true
    }

    /// Off the ladder (a measurement or a WAN change decides now).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The rung's MSS, if on the ladder.
    pub fn mss(&self) -> Option<u32> {
        self.rung.map(|r| LADDER_MSS_BYTES[r])
    }
}

/// Whether going from `before` to `after` makes segments smaller: connections opened before
/// carry segments the path drops, so they are abandoned, not left to stall.
pub fn tightens(before: Option<MssClamp>, after: Option<MssClamp>) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => a.mss_bytes < b.mss_bytes,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn pmtu(target: Target, bytes: u32) -> Signal {
        Signal::PathMtu { target, bytes }
    }

    #[test]
    fn the_incident_is_clamped_from_the_inventory_at_once_then_from_the_probe() {
        let mut known = PathMtuKnown::default();
        assert_eq!(
            decide(Some(1500), &known, 1500, &Ladder::default()),
            None,
            "healthy"
        );
        // eno1 1500 -> 9000: nothing measured yet for the new configuration.
        known.forget();
        let c = decide(Some(9000), &known, 1500, &Ladder::default()).unwrap();
        assert_eq!(
            (c.mss_bytes, c.path_mtu_bytes, c.source),
            (1460, 1500, ClampSource::Inventory)
        );
        known.observe(&pmtu(Target::Gateway, 1500));
        assert_eq!(
            decide(Some(9000), &known, 1500, &Ladder::default())
                .unwrap()
                .source,
            ClampSource::Probe
        );
        // The revert: the interface is back at what the path carries.
        known.forget();
        assert_eq!(decide(Some(1500), &known, 1500, &Ladder::default()), None);
    }

    #[test]
    fn a_path_that_carries_the_interface_mtu_is_not_clamped() {
        let mut known = PathMtuKnown::default();
        known.observe(&pmtu(Target::Gateway, 9000));
        known.observe(&pmtu(Target::Endpoint, 9000));
        assert_eq!(
            decide(Some(9000), &known, 1500, &Ladder::default()),
            None,
            "measured beats inventory"
        );
        assert_eq!(
            decide(None, &known, 1500, &Ladder::default()),
            None,
            "no WAN MTU known"
        );
    }

    #[test]
    fn the_smallest_measurement_wins_and_a_newer_search_ends_a_frag_needed() {
        let mut known = PathMtuKnown::default();
        known.observe(&pmtu(Target::Gateway, 1500));
        known.observe(&pmtu(Target::Endpoint, 1400));
        assert_eq!(
            decide(Some(1500), &known, 1500, &Ladder::default())
                .unwrap()
                .mss_bytes,
            1360
        );
        known.observe(&Signal::FragNeeded {
            from: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            next_hop_mtu: 1280,
        });
        let c = decide(Some(1500), &known, 1500, &Ladder::default()).unwrap();
        assert_eq!((c.mss_bytes, c.source), (1240, ClampSource::FragNeeded));
        // The path is whole again: full-size passes toward both.
        known.observe(&pmtu(Target::Endpoint, 1500));
        known.observe(&pmtu(Target::Gateway, 1500));
        assert_eq!(decide(Some(1500), &known, 1500, &Ladder::default()), None);
        // Nonsense is not believed.
        known.observe(&pmtu(Target::Endpoint, 100));
        assert_eq!(decide(Some(1500), &known, 1500, &Ladder::default()), None);
    }

    #[test]
    fn the_ladder_steps_below_stuck_segments_and_climbs_back_after_the_raise_timer() {
        let t0 = Instant::now();
        let known = PathMtuKnown::default();
        let mut ladder = Ladder::default();
        assert_eq!(decide(Some(1500), &known, 1500, &ladder), None);
        // Stuck with the interface's 1448-byte segments: first rung.
        assert!(ladder.stuck(1448, t0));
        let c = decide(Some(1500), &known, 1500, &ladder).unwrap();
        assert_eq!((c.mss_bytes, c.source), (1360, ClampSource::Ladder));
        // Fresh connections get time to prove the rung before it moves again.
        assert!(!ladder.stuck(1360, t0 + Duration::from_secs(2)));
        assert!(ladder.stuck(1360, t0 + Duration::from_secs(6)));
        assert_eq!(ladder.mss(), Some(1200));
        // Not below the bottom.
        let (mut now, mut at) = (t0 + Duration::from_secs(6), t0);
        for _ in 0..5 {
            now += Duration::from_secs(6);
            let current = ladder.mss().unwrap();
            if ladder.stuck(current, now) {
                at = now;
            }
        }
        assert_eq!(ladder.mss(), Some(536));
        // Ten minutes on a rung: one up, then off the ladder from the top.
        assert!(!ladder.raise_if_due(at + Duration::from_secs(599)));
        assert!(ladder.raise_if_due(at + LADDER_RAISE_AFTER));
        assert_eq!(ladder.mss(), Some(1024));
        let mut ladder = Ladder::default();
        ladder.stuck(1448, t0);
        assert!(ladder.raise_if_due(t0 + LADDER_RAISE_AFTER));
        assert_eq!(ladder.mss(), None);
        // A measured clamp below the rung wins; a rung below a measured clamp wins.
        let mut known = PathMtuKnown::default();
        known.observe(&pmtu(Target::Endpoint, 1300));
        let mut ladder = Ladder::default();
        ladder.stuck(1448, t0);
        assert_eq!(
            decide(Some(1500), &known, 1500, &ladder).unwrap().mss_bytes,
            1260
        );
        ladder.stuck(1260, t0 + Duration::from_secs(6));
        assert_eq!(
            decide(Some(1500), &known, 1500, &ladder).unwrap().mss_bytes,
            1200
        );
    }

    #[test]
    fn only_a_smaller_clamp_drops_connections() {
        let c = |mss_bytes| {
            Some(MssClamp {
                mss_bytes,
                path_mtu_bytes: mss_bytes + 40,
                source: ClampSource::Probe,
            })
        };
        assert!(tightens(None, c(1460)));
        assert!(tightens(c(1460), c(1360)));
        assert!(
            !tightens(c(1360), c(1460)),
            "raised: flowing connections stay"
        );
        assert!(!tightens(c(1460), None), "lifted: flowing connections stay");
        assert!(!tightens(None, None));
    }
}
