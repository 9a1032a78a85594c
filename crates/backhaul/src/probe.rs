//! Observations for the diagnosis rules gathered on this host: interface MTUs from sysfs and
//! DF probes toward a target. Shared by `backhaul diagnose`/`check` (once) and the daemon's
//! monitor (periodically).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_diagnose::{Observation, Signal, Target};
use backhaul_netprobe::{ProbeOutcome, Prober, Route};

/// Small probes: a ping's size, which passed all through the 2025-11-12 black hole.
pub const SMALL_PROBE_BYTES: usize = 84;
/// Full-size probes per target; the rules want repeated loss, not one dropped packet.
const LARGE_PROBES: u32 = 3;
/// The path-MTU search never goes below this (IPv6-safe minimum; IPv4 paths below it are broken).
const SEARCH_FLOOR_BYTES: usize = 1280;

/// Wall-clock Unix milliseconds, the diagnosis engine's time base.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The size of a full-size probe: what the WAN interface sends now (`wan_mtu`, when known),
/// never less than the path MTU the site declares, and never more than IPv4 allows.
pub fn full_size(inv: &backhaul_diagnose::Inventory, wan_mtu: Option<u32>) -> usize {
    // Loopback's 65536 is one more than an IPv4 packet can be.
    wan_mtu
        .unwrap_or(inv.path_mtu_bytes())
        .max(inv.path_mtu_bytes())
        .min(u32::from(u16::MAX)) as usize
}

/// The inventory's gateway, if it is IPv4 (the probes are ICMPv4).
pub fn gateway_v4(inv: &backhaul_diagnose::Inventory) -> Option<Ipv4Addr> {
    match inv.gateway()? {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

/// The first IPv4 address the upload endpoint's name resolves to.
pub fn endpoint_v4(inv: &backhaul_diagnose::Inventory) -> Option<Ipv4Addr> {
    use std::net::ToSocketAddrs as _;
    (inv.endpoint_host(), 443)
        .to_socket_addrs()
        .ok()?
        .find_map(|s| match s.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

/// A sysfs attribute of an interface, trimmed.
pub fn read_sys(ifname: &str, file: &str) -> Option<String> {
    // Interface names come from the config; refuse anything that could walk out of sysfs.
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{ifname}/{file}"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Small, full-size and (on failure) searching DF probes toward one target; pushes the
/// observations and returns what it found. Full-size probes start at the smaller of
/// `large_size` and the MTU of the device the route toward the target leaves through: a
/// bigger probe never leaves the host (the kernel refuses it with `EMSGSIZE`), which says
/// nothing about the path and is never counted as an answer.
pub fn probe_target(
    name: &'static str,
    target: Target,
    addr: Option<Ipv4Addr>,
    large_size: usize,
    hint: Option<usize>,
    timeout: Duration,
    obs: &mut Vec<Observation>,
) -> TargetReport {
    let mut r = TargetReport {
        name,
        addr,
        small_ok: None,
        large_size,
        large_ok: None,
        path_mtu: None,
        frag_needed: None,
        note: None,
        no_permission: false,
        route: None,
    };
    let Some(ip) = addr else {
        r.note = Some("no IPv4 address to probe".into());
        return r;
    };
    match Route::to(ip) {
        Ok(Some(route)) => {
            r.large_size = large_size.min(route.device_mtu as usize);
            r.route = Some(route);
        }
        Ok(None) => {
            r.note = Some(format!("no route toward {ip} (unreachable)"));
            return r;
        }
        Err(e) => tracing::debug!(error = %e, %ip, "route lookup failed; probing at full size"),
    }
    let (requested, large_size) = (large_size, r.large_size);
    let mut prober = match Prober::new(ip, timeout) {
        Ok(p) => p,
        Err(e) => {
            r.no_permission = matches!(e, backhaul_netprobe::Error::Permission { .. });
            r.note = Some(format!("{e}"));
            return r;
        }
    };
    let refused = |size: usize, route: &Option<Route>| match route {
        Some(route) => format!(
            "refused locally: {} MTU {} (a {size}-byte probe cannot leave the host)",
            route.device,
            backhaul_netprobe::Link::from_sysfs(&route.device)
                .map_or(route.device_mtu, |l| l.mtu_bytes)
        ),
        None => format!("refused locally: a {size}-byte probe cannot leave the host"),
    };
    // `None`: the probe never left the host (the device's MTU changed under it). That says
    // nothing about the path; the link MTU is observed separately.
    let record = |size: usize, outcome: &ProbeOutcome, obs: &mut Vec<Observation>| {
        if *outcome == ProbeOutcome::LocalTooBig {
            return None;
        }
        let (ok, rtt_ms) = match outcome {
            ProbeOutcome::Passed { rtt_us } => (true, Some(*rtt_us as f64 / 1000.0)),
            _ => (false, None),
        };
        obs.push(Observation::new(
            now_ms(),
            Signal::Probe {
                target,
                size_bytes: size as u32,
                df: true,
                ok,
                rtt_ms,
            },
        ));
        if let ProbeOutcome::FragNeeded(f) = outcome {
            obs.push(Observation::new(
                now_ms(),
                Signal::FragNeeded {
                    from: IpAddr::V4(f.from),
                    next_hop_mtu: u32::from(f.next_hop_mtu),
                },
            ));
        }
        Some(ok)
    };
    match prober.probe(SMALL_PROBE_BYTES) {
        Ok(o) => {
            r.small_ok = record(SMALL_PROBE_BYTES, &o, obs);
            if r.small_ok.is_none() {
                r.note = Some(refused(SMALL_PROBE_BYTES, &r.route));
            }
        }
        Err(e) => r.note = Some(e.to_string()),
    }
    // `None` until a probe actually went out: a send error is not a pass.
    let mut large_ok: Option<bool> = None;
    for _ in 0..LARGE_PROBES {
        match prober.probe(large_size) {
            Ok(o) => {
                if let ProbeOutcome::FragNeeded(f) = o {
                    r.frag_needed = Some((f.from, f.next_hop_mtu));
                }
                match record(large_size, &o, obs) {
                    Some(ok) => large_ok = Some(large_ok.unwrap_or(true) && ok),
                    None => r.note = Some(refused(large_size, &r.route)),
                }
            }
            Err(e) => r.note = Some(e.to_string()),
        }
    }
    r.large_ok = large_ok;
    let path_mtu = |bytes: usize| {
        Observation::new(
            now_ms(),
            Signal::PathMtu {
                target,
                bytes: bytes as u32,
            },
        )
    };
    if large_ok == Some(false) {
        match prober.search(SEARCH_FLOOR_BYTES, large_size, 2, hint) {
            Ok(s) => {
                if let Some(f) = s.frag_needed {
                    r.frag_needed.get_or_insert((f.from, f.next_hop_mtu));
                }
                // A search run while the uplink is saturated loses probes to the queue, not to
                // the path (it reported 1499 or 1402 on a 1500-byte path). A smaller path MTU
                // is believed only when the full size fails again and the boundary passes again.
                let confirmed = s.largest_passing.filter(|&bytes| {
                    let mut sizes = vec![large_size; CONFIRM_PROBES];
                    sizes.push(bytes);
                    prober.volley(&sizes).is_ok_and(|outcomes| {
                        outcomes
                            .iter()
                            .map(|o| matches!(o, ProbeOutcome::Passed { .. }))
                            .eq(sizes.iter().map(|&size| size == bytes))
                    })
                });
                match (s.largest_passing, confirmed) {
                    // The ceiling passes again (the path recovered during the search) and
                    // the ceiling is the route device's: no path MTU was measured beyond it.
                    (_, Some(bytes)) if bytes >= large_size && large_size < requested => {}
                    (_, Some(bytes)) => {
                        r.path_mtu = Some(bytes);
                        obs.push(path_mtu(bytes));
                    }
                    (Some(bytes), None) => {
                        r.note = Some(format!(
                            "path MTU search found {bytes} but the boundary did not hold on a second look; not reported"
                        ));
                    }
                    (None, None) => {}
                }
            }
            Err(e) => r.note = Some(e.to_string()),
        }
    } else if large_ok == Some(true) && large_size < requested {
        // The route's device (a tunnel's, inside which every packet is smaller than the WAN's)
        // is the limit, and the path carries what it sends: no path MTU was measured beyond it.
        r.note.get_or_insert_with(|| {
            format!(
                "full size capped at {} MTU {large_size}: the path carries all this host sends that way",
                r.route.as_ref().map_or("the route's device", |route| route.device.as_str())
            )
        });
    } else if large_ok == Some(true) {
        // A full-size packet passed: the path carries it, which ends a reduced path MTU.
        r.path_mtu = Some(large_size);
        obs.push(path_mtu(large_size));
    }
    r
}

/// Extra full-size probes before a smaller path MTU from a search is believed.
const CONFIRM_PROBES: usize = 2;

/// What one target's probes found, for the human report and the perfdata.
pub struct TargetReport {
    /// See `backhaul diagnose`.
    pub name: &'static str,
    /// See `backhaul diagnose`.
    pub addr: Option<Ipv4Addr>,
    /// See `backhaul diagnose`.
    pub small_ok: Option<bool>,
    /// See `backhaul diagnose`.
    pub large_size: usize,
    /// See `backhaul diagnose`.
    pub large_ok: Option<bool>,
    /// See `backhaul diagnose`.
    pub path_mtu: Option<usize>,
    /// See `backhaul diagnose`.
    pub frag_needed: Option<(Ipv4Addr, u16)>,
    /// See `backhaul diagnose`.
    pub note: Option<String>,
    /// The probe socket could not be opened for lack of CAP_NET_RAW.
    pub no_permission: bool,
    /// The route the probes took (`None`: not looked up).
    pub route: Option<Route>,
}
