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
//! Inside a VPN tunnel (a CHILD_SA covering the endpoint, a route through a tunnel device, or
//! `[inventory] vpn_overhead_bytes`) every upload packet pays the tunnel's overhead on the
//! outer path: the clamp follows the measured inner path MTU (the endpoint's probes cross the
//! tunnel), else the outer one less the SA's overhead ([`super::tunnel`]), against the MTU of
//! the device the uploads leave through.
//!
//! When upload connections stay stuck retransmitting full-size segments, with or without a
//! measurement (probes not permitted, or probes that call a clamp good which the connections
//! show is not), the [`Ladder`] steps the clamp down in the style of RFC 8899's search, and
//! raises it again after its `PMTU_RAISE_TIMER` (600 s) or when full-size probes pass again.

use std::time::{Duration, Instant};

use backhaul_diagnose::{Signal, Target};
use serde::{Deserialize, Serialize};

use super::tunnel::EspOverhead;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MssClamp {
    /// `TCP_MAXSEG`.
    pub mss_bytes: u32,
    /// The path MTU it follows (inside the tunnel, when uploads ride one).
    pub path_mtu_bytes: u32,
    /// Where that came from.
    pub source: ClampSource,
    /// The tunnel whose overhead was taken off the outer path (`ESP AES_GCM_16 over UDP: 62 B`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
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
            // A DF packet bigger than what was measured crossed: the path grew back (a probe
            // capped by a tunnel device's MTU measures no path MTU, but it passed).
            Signal::Probe {
                target,
                size_bytes,
                df: true,
                ok: true,
                ..
            } => {
                let known = &mut self.by_target[target as usize];
                if known.is_some_and(|k| size_bytes > k) {
                    *known = Some(size_bytes);
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

    /// The outer path as measured: the gateway's probes and frag-needed (the endpoint's
    /// probes cross the tunnel when there is one).
    fn outer(&self) -> Option<(u32, ClampSource)> {
        self.or_frag_needed(self.by_target[Target::Gateway as usize])
    }

    fn best(&self) -> Option<(u32, ClampSource)> {
        self.or_frag_needed(self.by_target.iter().flatten().min().copied())
    }

    /// The smaller of a probed path MTU and a frag-needed's next-hop MTU, with its source.
    fn or_frag_needed(&self, probed: Option<u32>) -> Option<(u32, ClampSource)> {
        let probed = probed.map(|b| (b, ClampSource::Probe));
        let icmp = self.frag_needed.map(|b| (b, ClampSource::FragNeeded));
        match (probed, icmp) {
            (Some(p), Some(f)) => Some(if f.0 < p.0 { f } else { p }),
            (p, f) => p.or(f),
        }
    }
}

/// What the clamp decision reads; everything is measured or configured elsewhere.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The WAN interface's MTU now.
    pub wan_mtu: Option<u32>,
    /// MTU of the device the route toward the endpoint leaves through, when it is not the WAN
    /// interface (a tunnel device): the size the kernel's own MSS follows.
    pub route_mtu: Option<u32>,
    /// The tunnel the uploads ride, if any.
    pub tunnel: Option<&'a EspOverhead>,
    /// Measurements since the last WAN change.
    pub known: &'a PathMtuKnown,
    /// The inventory's `path_mtu_bytes` (the outer path).
    pub inventory_path_mtu: u32,
    /// Stuck connections' verdict.
    pub ladder: &'a Ladder,
}

/// The clamp for uploads: none while what the path carries is at least what the kernel sends
/// (the device's MTU); the ladder's rung when that is lower. Inside a tunnel the path MTU is
/// the measured inner one (the endpoint's probes cross the tunnel), else the outer path's
/// The largest IPv4 packet (the total-length field's limit).
const MAX_IPV4_PACKET_BYTES: u32 = 65535;

/// (gateway probes, frag-needed, inventory) less the tunnel's overhead.
pub fn decide(inputs: &Inputs<'_>) -> Option<MssClamp> {
    // Under xfrm the route leaves through the WAN interface and the kernel takes the SA's
    // overhead off its MTU itself; a tunnel device has its own MTU.
    let sends = match (inputs.route_mtu, inputs.tunnel) {
        (Some(device), _) => device,
        (None, Some(t)) => t.inner_mtu(inputs.wan_mtu?),
        (None, None) => inputs.wan_mtu?,
    };
    let known = inputs.known;
    let (path, source, tunnel) = match inputs.tunnel {
        None => {
            let (path, source) = known
                .best()
                .unwrap_or((inputs.inventory_path_mtu, ClampSource::Inventory));
            (path, source, None)
        }
        Some(t) => {
            let (path, source) = match known.by_target[Target::Endpoint as usize] {
                Some(inner) => (inner, ClampSource::Probe),
                None => {
                    let (outer, source) = known
                        .outer()
                        .unwrap_or((inputs.inventory_path_mtu, ClampSource::Inventory));
                    (t.inner_mtu(outer), source)
                }
            };
            (path, source, Some(t.describe()))
        }
    };
    // No IPv4 packet is larger than 65535 bytes, whatever the device allows (loopback's
    // 65536): a path of 65535 clamps nothing.
    let from_path = (path < sends.min(MAX_IPV4_PACKET_BYTES)).then(|| MssClamp {
        mss_bytes: path.saturating_sub(TCP_IP_HEADER_BYTES),
        path_mtu_bytes: path,
        source,
        tunnel: tunnel.clone(),
    });
    let rung = inputs.ladder.mss().map(|mss| MssClamp {
        mss_bytes: mss,
        path_mtu_bytes: mss + TCP_IP_HEADER_BYTES,
        source: ClampSource::Ladder,
        tunnel,
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
pub fn tightens(before: Option<&MssClamp>, after: Option<&MssClamp>) -> bool {
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

    /// No tunnel: the WAN interface is what the kernel sends on.
    fn plain(
        wan_mtu: Option<u32>,
        known: &PathMtuKnown,
        inventory_path_mtu: u32,
        ladder: &Ladder,
    ) -> Option<MssClamp> {
        decide(&Inputs {
            wan_mtu,
            route_mtu: None,
            tunnel: None,
            known,
            inventory_path_mtu,
            ladder,
        })
    }

    fn gcm() -> EspOverhead {
        EspOverhead::of(&backhaul_netprobe::ChildSa {
            encap: true,
            encr_alg: "AES_GCM_16".into(),
            remote_host: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10))),
            ..Default::default()
        })
    }

    fn tunneled(
        wan_mtu: u32,
        tunnel_device_mtu: u32,
        known: &PathMtuKnown,
        ladder: &Ladder,
    ) -> Option<MssClamp> {
        decide(&Inputs {
            wan_mtu: Some(wan_mtu),
            route_mtu: Some(tunnel_device_mtu),
            tunnel: Some(&gcm()),
            known,
            inventory_path_mtu: 1500,
            ladder,
        })
    }

    /// Loopback declared with its own MTU: the largest IPv4 packet is the path, nothing is
    /// clamped (and nothing is logged as a clamp at every start).
    #[test]
    fn a_path_of_the_largest_ipv4_packet_clamps_nothing() {
        let known = PathMtuKnown::default();
        let ladder = Ladder::default();
        assert_eq!(plain(Some(65536), &known, 65535, &ladder), None);
        assert_eq!(
            plain(Some(65536), &known, 1500, &ladder).map(|c| c.mss_bytes),
            Some(1460)
        );
    }

    /// The 2025-11-12 change as xfrm models it: eno1 and the tunnel device follow 9000.
    #[test]
    fn inside_a_tunnel_the_clamp_takes_the_esp_overhead_off_the_outer_path() {
        let mut known = PathMtuKnown::default();
        let ladder = Ladder::default();
        assert_eq!(tunneled(1500, 1438, &known, &ladder), None, "healthy");
        let c = tunneled(9000, 8938, &known, &ladder).unwrap();
        assert_eq!(
            (c.mss_bytes, c.path_mtu_bytes, c.source),
            (1398, 1438, ClampSource::Inventory)
        );
        assert_eq!(c.tunnel.as_deref(), Some("ESP AES_GCM_16 over UDP: 62 B"));
        // The gateway's probes measure the outer path; the endpoint's cross the tunnel and win.
        known.observe(&pmtu(Target::Gateway, 1450));
        let c = tunneled(9000, 8938, &known, &ladder).unwrap();
        assert_eq!((c.mss_bytes, c.source), (1346, ClampSource::Probe));
        known.observe(&pmtu(Target::Endpoint, 1386));
        assert_eq!(
            tunneled(9000, 8938, &known, &ladder).unwrap().mss_bytes,
            1346
        );
    }

    /// libipsec's stock 1400-byte device behind a hop that shrank to 1450: nothing changed on
    /// the site, only the measurement tells.
    #[test]
    fn a_stock_tunnel_device_is_clamped_only_when_the_inner_path_is_below_it() {
        let mut known = PathMtuKnown::default();
        let ladder = Ladder::default();
        assert_eq!(tunneled(1500, 1400, &known, &ladder), None);
        known.observe(&pmtu(Target::Endpoint, 1386));
        let c = tunneled(1500, 1400, &known, &ladder).unwrap();
        assert_eq!((c.mss_bytes, c.path_mtu_bytes), (1346, 1386));
        // The hop recovers: the endpoint's full size (capped at the device's 1400) passes again.
        known.observe(&Signal::Probe {
            target: Target::Endpoint,
            size_bytes: 1400,
            df: true,
            ok: true,
            rtt_ms: Some(40.0),
        });
        assert_eq!(tunneled(1500, 1400, &known, &ladder), None, "lifted");
        // Without probes, stuck connections at the device's 1360 take the ladder below it.
        let mut ladder = Ladder::default();
        assert!(ladder.stuck(1360, Instant::now()));
        let c = tunneled(1500, 1400, &PathMtuKnown::default(), &ladder).unwrap();
        assert!(
            c.mss_bytes <= 1346 && c.source == ClampSource::Ladder,
            "{c:?}"
        );
    }

    #[test]
    fn the_incident_is_clamped_from_the_inventory_at_once_then_from_the_probe() {
        let mut known = PathMtuKnown::default();
        assert_eq!(
            plain(Some(1500), &known, 1500, &Ladder::default()),
            None,
            "healthy"
        );
        // eno1 1500 -> 9000: nothing measured yet for the new configuration.
        known.forget();
        let c = plain(Some(9000), &known, 1500, &Ladder::default()).unwrap();
        assert_eq!(
            (c.mss_bytes, c.path_mtu_bytes, c.source),
            (1460, 1500, ClampSource::Inventory)
        );
        known.observe(&pmtu(Target::Gateway, 1500));
        assert_eq!(
            plain(Some(9000), &known, 1500, &Ladder::default())
                .unwrap()
                .source,
            ClampSource::Probe
        );
        // The revert: the interface is back at what the path carries.
        known.forget();
        assert_eq!(plain(Some(1500), &known, 1500, &Ladder::default()), None);
    }

    #[test]
    fn a_path_that_carries_the_interface_mtu_is_not_clamped() {
        let mut known = PathMtuKnown::default();
        known.observe(&pmtu(Target::Gateway, 9000));
        known.observe(&pmtu(Target::Endpoint, 9000));
        assert_eq!(
            plain(Some(9000), &known, 1500, &Ladder::default()),
            None,
            "measured beats inventory"
        );
        assert_eq!(
            plain(None, &known, 1500, &Ladder::default()),
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
            plain(Some(1500), &known, 1500, &Ladder::default())
                .unwrap()
                .mss_bytes,
            1360
        );
        known.observe(&Signal::FragNeeded {
            from: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            next_hop_mtu: 1280,
        });
        let c = plain(Some(1500), &known, 1500, &Ladder::default()).unwrap();
        assert_eq!((c.mss_bytes, c.source), (1240, ClampSource::FragNeeded));
        // The path is whole again: full-size passes toward both.
        known.observe(&pmtu(Target::Endpoint, 1500));
        known.observe(&pmtu(Target::Gateway, 1500));
        assert_eq!(plain(Some(1500), &known, 1500, &Ladder::default()), None);
        // Nonsense is not believed.
        known.observe(&pmtu(Target::Endpoint, 100));
        assert_eq!(plain(Some(1500), &known, 1500, &Ladder::default()), None);
    }

    #[test]
    fn the_ladder_steps_below_stuck_segments_and_climbs_back_after_the_raise_timer() {
        let t0 = Instant::now();
        let known = PathMtuKnown::default();
        let mut ladder = Ladder::default();
        assert_eq!(plain(Some(1500), &known, 1500, &ladder), None);
        // Stuck with the interface's 1448-byte segments: first rung.
        assert!(ladder.stuck(1448, t0));
        let c = plain(Some(1500), &known, 1500, &ladder).unwrap();
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
            plain(Some(1500), &known, 1500, &ladder).unwrap().mss_bytes,
            1260
        );
        ladder.stuck(1260, t0 + Duration::from_secs(6));
        assert_eq!(
            plain(Some(1500), &known, 1500, &ladder).unwrap().mss_bytes,
            1200
        );
    }

    #[test]
    fn only_a_smaller_clamp_drops_connections() {
        let c = |mss_bytes| MssClamp {
            mss_bytes,
            path_mtu_bytes: mss_bytes + 40,
            source: ClampSource::Probe,
            tunnel: None,
        };
        let (big, small) = (c(1460), c(1360));
        assert!(tightens(None, Some(&big)));
        assert!(tightens(Some(&big), Some(&small)));
        assert!(
            !tightens(Some(&small), Some(&big)),
            "raised: flowing connections stay"
        );
        assert!(
            !tightens(Some(&big), None),
            "lifted: flowing connections stay"
        );
        assert!(!tightens(None, None));
    }
}
