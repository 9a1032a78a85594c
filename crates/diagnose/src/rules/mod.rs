//! The rules: one file per root cause, each a plain function over the [`Store`] and a
//! [`Context`] that returns what it finds now. Rules do not remember anything between calls;
//! the [`crate::Engine`] turns their findings into incidents.
//!
//! Shared reading of the evidence lives here, so every rule means the same thing by "large
//! probes fail" or "the change that caused it":
//!
//! * **Evidence epoch.** A WAN MTU change invalidates probe and TCP evidence from before it
//!   (those packets crossed a different configuration), so rules read probe runs only from
//!   the last WAN change on. A revert therefore resolves a black hole at once, without waiting
//!   for the next probe. So does a path that carries full-size probes again after losing them
//!   ([`crate::PathRecovery`]): a path that shrank and recovered with no local change.
//! * **Large probes fail** toward a target when its last `large_probe_failures` DF probes
//!   larger than `small_probe_max_bytes` all failed, or when at least one failed and the
//!   prober's path-MTU search then reported a smaller size. The second form finds the black
//!   hole within one probe interval; the first keeps 1 % random loss from ever looking like
//!   one (three losses in a row at 1 % is one in a million).
//! * **Attribution.** A fault whose onset is at most `attribution_window_seconds` after a WAN
//!   interface's MTU change is attributed to that change (RFC 8899 §1: an L2 MTU mismatch
//!   sends no ICMP, so the change itself is the best evidence there is).

pub mod auth_failure;
pub mod clock_skew;
pub mod credentials_expiring;
pub mod disk_pressure;
pub mod endpoint_unreachable;
pub mod mtu_drift;
pub mod path_mtu_reduced;
pub mod pmtu_blackhole;
pub mod uplink_degraded;
pub mod uplink_down;
pub mod vpn_flapping;

use std::net::IpAddr;

use crate::settings::Settings;
use crate::{
    Change, Evidence, Finding, Interface, Inventory, MtuChange, PathRecovery, Role, Severity,
    Signal, Store, Target, TimeBase,
};

/// Everything a rule needs besides the store.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The site inventory.
    pub inventory: &'a Inventory,
    /// Thresholds.
    pub settings: &'a Settings,
    /// For formatting times in texts.
    pub time: TimeBase,
    /// The current time (same epoch as the observations).
    pub now_ms: u64,
}

impl Context<'_> {
    /// `HH:MM:SS` of `at_ms`.
    pub fn hms(&self, at_ms: u64) -> String {
        self.time.hms(at_ms)
    }

    /// The timestamp `seconds` before now.
    pub(crate) fn ago(&self, seconds: u64) -> u64 {
        self.now_ms.saturating_sub(Settings::ms(seconds))
    }

    fn wan_name(&self) -> &str {
        self.inventory
            .wan()
            .map_or("the WAN interface", |i| i.name.as_str())
    }
}

/// Runs every rule and returns all findings, in [`crate::Kind::ALL`] order.
pub fn evaluate_all(store: &Store, ctx: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    findings.extend(pmtu_blackhole::evaluate(store, ctx));
    findings.extend(mtu_drift::evaluate(store, ctx));
    findings.extend(path_mtu_reduced::evaluate(store, ctx));
    findings.extend(uplink_down::evaluate(store, ctx));
    findings.extend(uplink_degraded::evaluate(store, ctx));
    findings.extend(endpoint_unreachable::evaluate(store, ctx));
    findings.extend(auth_failure::evaluate(store, ctx));
    findings.extend(disk_pressure::evaluate(store, ctx));
    findings.extend(vpn_flapping::evaluate(store, ctx));
    findings.extend(clock_skew::evaluate(store, ctx));
    findings.extend(credentials_expiring::evaluate(store, ctx));
    findings
}

/// Goodput (Mbit/s) below which uploads do not count as flowing.
const FLOWING_MBPS: f64 = 0.5;

/// The latest MTU change of any WAN interface.
pub(crate) fn last_wan_change<'s>(store: &'s Store, ctx: &Context<'_>) -> Option<&'s MtuChange> {
    ctx.inventory
        .interfaces()
        .iter()
        .filter(|i| i.role == Role::Wan)
        .filter_map(|i| store.link(&i.name)?.last_mtu_change.as_ref())
        .max_by_key(|c| c.at_ms)
}

/// Where probe and TCP evidence starts counting (see the module docs).
pub(crate) fn evidence_epoch(store: &Store, ctx: &Context<'_>) -> u64 {
    let changed = last_wan_change(store, ctx).map_or(0, |c| c.at_ms);
    let mut recovery = PathRecovery::new(
        ctx.settings.small_probe_max_bytes,
        ctx.settings.large_probe_failures,
    );
    let restored = store
        .iter()
        .filter(|o| recovery.observe(&o.signal))
        .map(|o| o.at_ms)
        .last()
        .unwrap_or(0);
    changed.max(restored)
}

/// The WAN MTU change a fault with this onset is attributed to.
pub(crate) fn attribution<'s>(
    store: &'s Store,
    ctx: &Context<'_>,
    onset_ms: u64,
) -> Option<&'s MtuChange> {
    // A change back to the declared MTU (a revert) is never the cause of what follows it.
    last_wan_change(store, ctx).filter(|c| {
        c.at_ms <= onset_ms
            && onset_ms - c.at_ms <= Settings::ms(ctx.settings.attribution_window_seconds)
            && ctx
                .inventory
                .interface(&c.ifname)
                .is_none_or(|i| i.mtu_bytes != c.new_bytes)
    })
}

/// How long after an interface change a guarded apply's record still names it: the agent
/// reads the guard's lock when the link event arrives.
const GUARDED_APPLY_SLACK_MS: u64 = 5_000;

/// The change behind a fault with this onset on the site's WAN: the change it is attributed
/// to, or else the WAN's mismatch with its declared MTU found without a change event.
pub(crate) fn change_for(store: &Store, ctx: &Context<'_>, onset_ms: u64) -> Option<Change> {
    match attribution(store, ctx, onset_ms) {
        Some(c) => Some(change_of(store, c)),
        None => drifted_wan(store, ctx).map(|(i, mtu)| mismatch(i, mtu)),
    }
}

/// An interface change as a [`Change`], under the ticket of the guarded apply that made it.
pub(crate) fn change_of(store: &Store, c: &MtuChange) -> Change {
    let link = format!("{} mtu {}→{}", c.ifname, c.old_bytes, c.new_bytes);
    let ticket = store
        .iter()
        .filter(|o| o.at_ms >= c.at_ms && o.at_ms <= c.at_ms + GUARDED_APPLY_SLACK_MS)
        .find_map(|o| match &o.signal {
            Signal::GuardedApply { ticket, .. } => ticket.clone(),
            _ => None,
        });
    Change {
        id: ticket.unwrap_or_else(|| link.clone()),
        at_ms: Some(c.at_ms),
        link,
    }
}

/// An interface found at an MTU other than its declared one, with no change seen.
pub(crate) fn mismatch(iface: &Interface, mtu: u32) -> Change {
    let link = format!("{} mtu {mtu}, declared {}", iface.name, iface.mtu_bytes);
    Change {
        id: link.clone(),
        at_ms: None,
        link,
    }
}

/// "eno1 MTU changed 1500 → 9000 at 08:15:03".
pub(crate) fn change_clause(ctx: &Context<'_>, c: &MtuChange) -> String {
    format!(
        "{} MTU changed {} → {} at {}",
        c.ifname,
        c.old_bytes,
        c.new_bytes,
        ctx.hms(c.at_ms)
    )
}

/// "; follows eno1 MTU change 1500 → 9000 at 08:15:03" or the absence of any change.
pub(crate) fn attribution_suffix(store: &Store, ctx: &Context<'_>, onset_ms: u64) -> String {
    match attribution(store, ctx, onset_ms) {
        Some(c) => format!(
            "; follows {} MTU change {} → {} at {}",
            c.ifname,
            c.old_bytes,
            c.new_bytes,
            ctx.hms(c.at_ms)
        ),
        None => format!(
            "; no interface change in the {} min before",
            ctx.settings.attribution_window_seconds / 60
        ),
    }
}

/// The fix that restores an interface's declared MTU, now and across reboots.
pub(crate) fn mtu_fix(iface: &Interface) -> Vec<String> {
    let netplan = match &iface.netplan_file {
        Some(path) => format!(
            "# and across reboots: set mtu: {} for {} in {}",
            iface.mtu_bytes,
            iface.name,
            path.display()
        ),
        None => format!(
            "# and across reboots: set mtu: {} for {} in its netplan file (/etc/netplan/*.yaml)",
            iface.mtu_bytes, iface.name
        ),
    };
    vec![
        format!("ip link set {} mtu {}", iface.name, iface.mtu_bytes),
        netplan,
    ]
}

/// The revert fix for the change a fault is attributed to, if any.
pub(crate) fn attributed_fix(store: &Store, ctx: &Context<'_>, onset_ms: u64) -> Vec<String> {
    attribution(store, ctx, onset_ms)
        .and_then(|c| ctx.inventory.interface(&c.ifname))
        .filter(|i| {
            // Only revert what is still wrong.
            store.link(&i.name).and_then(|l| l.mtu_bytes) != Some(i.mtu_bytes)
        })
        .map(mtu_fix)
        .unwrap_or_default()
}

/// A WAN interface whose current MTU differs from the declared one.
pub(crate) fn drifted_wan<'i>(store: &Store, ctx: &Context<'i>) -> Option<(&'i Interface, u32)> {
    ctx.inventory
        .interfaces()
        .iter()
        .filter(|i| i.role == Role::Wan)
        .find_map(|i| {
            let mtu = store.link(&i.name)?.mtu_bytes?;
            (mtu != i.mtu_bytes).then_some((i, mtu))
        })
}

/// A run of consecutive failed probes ending with the latest probe of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProbeRun {
    /// The first failure of the run.
    pub first_fail_ms: u64,
    /// The latest failure.
    pub last_fail_ms: u64,
    /// How many failed in a row.
    pub failures: u32,
    /// The largest failed size.
    pub size_bytes: u32,
    /// When the last probe of this kind before the run succeeded.
    pub last_ok_ms: Option<u64>,
}

/// The current failure run of large (DF) or small probes toward `target` since `since_ms`,
/// if the latest such probe failed and is not stale.
pub(crate) fn probe_run(
    store: &Store,
    ctx: &Context<'_>,
    target: Target,
    since_ms: u64,
    large: bool,
) -> Option<ProbeRun> {
    let small_max = ctx.settings.small_probe_max_bytes;
    let stale = ctx.ago(ctx.settings.probe_stale_seconds);
    let mut run: Option<ProbeRun> = None;
    for obs in store.since(since_ms).rev() {
        let Signal::Probe {
            target: t,
            size_bytes,
            df,
            ok,
            ..
        } = obs.signal
        else {
            continue;
        };
        let is_large = df && size_bytes > small_max;
        if t != target || is_large != large || (!large && size_bytes > small_max) {
            continue;
        }
        match (&mut run, ok) {
            (None, _) if obs.at_ms < stale => return None,
            (None, true) => return None,
            (None, false) => {
                run = Some(ProbeRun {
                    first_fail_ms: obs.at_ms,
                    last_fail_ms: obs.at_ms,
                    failures: 1,
                    size_bytes,
                    last_ok_ms: None,
                })
            }
            (Some(r), false) => {
                r.first_fail_ms = obs.at_ms;
                r.failures += 1;
                r.size_bytes = r.size_bytes.max(size_bytes);
            }
            (Some(r), true) => {
                r.last_ok_ms = Some(obs.at_ms);
                break;
            }
        }
    }
    run
}

/// The run of failing large probes toward `target`, if it proves large packets are dropped.
pub(crate) fn large_failing(
    store: &Store,
    ctx: &Context<'_>,
    target: Target,
    since_ms: u64,
) -> Option<ProbeRun> {
    let run = probe_run(store, ctx, target, since_ms, true)?;
    let searched = path_mtu(store, target, run.first_fail_ms).map(|(_, bytes)| bytes);
    // A search after the failures that carried the failed size says the path carries it: the
    // probes were lost to congestion (a full queue drops big packets first), not to the MTU.
    if searched.is_some_and(|bytes| bytes >= run.size_bytes) {
        return None;
    }
    let confirmed = searched.is_some_and(|bytes| bytes < run.size_bytes);
    (run.failures >= ctx.settings.large_probe_failures || confirmed).then_some(run)
}

/// Whether large packets are proven dropped toward the gateway or the endpoint since the last
/// WAN change: then the cause is on our side of the path, whatever else looks wrong.
/// A target that does not answer even small probes is unreachable, not losing large packets:
/// its failed large probes say nothing about the MTU (a cut beyond the gateway).
pub(crate) fn large_failing_anywhere(store: &Store, ctx: &Context<'_>) -> bool {
    let epoch = evidence_epoch(store, ctx);
    [Target::Gateway, Target::Endpoint]
        .into_iter()
        .any(|t| !small_failed(store, ctx, t) && large_failing(store, ctx, t, epoch).is_some())
}

/// Whether the latest (not stale) small probe toward `target` went unanswered.
pub(crate) fn small_failed(store: &Store, ctx: &Context<'_>, target: Target) -> bool {
    let small_max = ctx.settings.small_probe_max_bytes;
    let stale = ctx.ago(ctx.settings.probe_stale_seconds);
    store
        .since(stale)
        .rev()
        .find_map(|o| match o.signal {
            Signal::Probe {
                target: t,
                size_bytes,
                ok,
                ..
            } if t == target && size_bytes <= small_max => Some(!ok),
            _ => None,
        })
        .unwrap_or(false)
}

/// When the latest small probe toward `target` answered, if it did and is not stale.
pub(crate) fn small_ok(store: &Store, ctx: &Context<'_>, target: Target) -> Option<u64> {
    let small_max = ctx.settings.small_probe_max_bytes;
    let stale = ctx.ago(ctx.settings.probe_stale_seconds);
    store.since(stale).rev().find_map(|o| match o.signal {
        Signal::Probe {
            target: t,
            size_bytes,
            ok,
            ..
        } if t == target && size_bytes <= small_max => Some(ok.then_some(o.at_ms)),
        _ => None,
    })?
}

/// The latest path-MTU search result toward `target` since `since_ms`.
pub(crate) fn path_mtu(store: &Store, target: Target, since_ms: u64) -> Option<(u64, u32)> {
    store.since(since_ms).rev().find_map(|o| match o.signal {
        Signal::PathMtu { target: t, bytes } if t == target => Some((o.at_ms, bytes)),
        _ => None,
    })
}

/// The latest ICMP fragmentation-needed since `since_ms`.
pub(crate) fn frag_needed(store: &Store, since_ms: u64) -> Option<(u64, IpAddr, u32)> {
    store.since(since_ms).rev().find_map(|o| match o.signal {
        Signal::FragNeeded { from, next_hop_mtu } => Some((o.at_ms, from, next_hop_mtu)),
        _ => None,
    })
}

/// How long after the last frag-needed a failing large probe and a path-MTU search toward the
/// same target, with no frag-needed since, mean that ICMP stopped arriving. Longer than one
/// probe round's spread (probe, its ICMP and the search land within a second or two), shorter
/// than the probe interval, so the first round after ICMP stops says so.
const ICMP_STOPPED_MS: u64 = 5_000;

/// The frag-needed that explains large probes failing toward `target` since `onset_ms`, as in
/// [`frag_needed`] over [`icmp_since`] — unless ICMP stopped since: after the last one, a
/// large probe toward `target` failed and a path-MTU search ran with none arriving (the
/// gateway began dropping its ICMP: a black hole now, whatever the window still holds).
pub(crate) fn icmp_explains(
    store: &Store,
    ctx: &Context<'_>,
    (epoch, onset_ms): (u64, u64),
    target: Option<Target>,
) -> Option<(u64, IpAddr, u32)> {
    let found = frag_needed(store, icmp_since(ctx, epoch, onset_ms))?;
    let Some(t) = target else {
        return Some(found);
    };
    let later = found.0 + ICMP_STOPPED_MS;
    let stopped =
        probe_run(store, ctx, t, later, true).is_some() && path_mtu(store, t, later).is_some();
    (!stopped).then_some(found)
}

/// Where to look for ICMP that would explain a probe failure starting at `onset_ms`: a little
/// before the onset or the signal window, whichever reaches further back, never before the
/// epoch.
pub(crate) fn icmp_since(ctx: &Context<'_>, epoch: u64, onset_ms: u64) -> u64 {
    let window = ctx.ago(ctx.settings.signal_window_seconds);
    epoch.max(onset_ms.saturating_sub(5_000).min(window))
}

/// Upload stalls since `since_ms`: (at, stalled seconds).
pub(crate) fn stalls(store: &Store, since_ms: u64) -> Vec<(u64, u64)> {
    store
        .since(since_ms)
        .filter_map(|o| match o.signal {
            Signal::UploadStall { stalled_seconds } => Some((o.at_ms, stalled_seconds)),
            _ => None,
        })
        .collect()
}

/// Goodput samples since `since_ms`: (at, Mbit/s).
pub(crate) fn goodput(store: &Store, since_ms: u64) -> Vec<(u64, f64)> {
    store
        .since(since_ms)
        .filter_map(|o| match o.signal {
            Signal::UploadGoodput { mbps_10s } => Some((o.at_ms, mbps_10s)),
            _ => None,
        })
        .collect()
}

/// Busy goodput samples needed before a learned baseline counts (two minutes of uploads at
/// the monitor's 2 s cadence).
const MIN_BASELINE_SAMPLES: usize = 60;

/// Where the expected upload rate came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Expected {
    /// `inventory.expected_upload_mbps`.
    Configured(f64),
    /// The 90th percentile of goodput while uploading, before the window under judgement.
    Learned(f64),
}

impl Expected {
    pub(crate) fn mbps(self) -> f64 {
        match self {
            Expected::Configured(m) | Expected::Learned(m) => m,
        }
    }
}

/// The rate uploads should reach: configured, or learned from the goodput the store holds
/// from before `before_ms` (so a current dip does not lower its own yardstick). Goodput is
/// only sampled while there is something to upload, so idle time does not drag it down; a
/// link that was slow for the whole retention period learns slow, and says so as "learned".
pub(crate) fn expected_upload(
    store: &Store,
    ctx: &Context<'_>,
    before_ms: u64,
) -> Option<Expected> {
    if let Some(m) = ctx.inventory.expected_upload_mbps() {
        return Some(Expected::Configured(m));
    }
    let mut busy: Vec<f64> = goodput(store, 0)
        .into_iter()
        .filter(|&(at, m)| at < before_ms && m >= FLOWING_MBPS)
        .map(|(_, m)| m)
        .collect();
    if busy.len() < MIN_BASELINE_SAMPLES {
        return None;
    }
    busy.sort_by(f64::total_cmp);
    Some(Expected::Learned(busy[busy.len() * 9 / 10]))
}

/// When uploads last flowed (goodput above a trickle), if they did within the store.
pub(crate) fn last_flowing(store: &Store) -> Option<u64> {
    store.iter().rev().find_map(|o| match o.signal {
        Signal::UploadGoodput { mbps_10s } if mbps_10s >= FLOWING_MBPS => Some(o.at_ms),
        _ => None,
    })
}

/// The clamp the agent's own upload connections are under now.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnClamp<'s> {
    /// Since when.
    pub(crate) at_ms: u64,
    /// `TCP_MAXSEG`.
    pub(crate) mss_bytes: u32,
    /// The tunnel whose overhead it includes, if the uploads ride one.
    pub(crate) tunnel: Option<&'s str>,
}

/// The agent's latest clamp, if its upload connections are clamped now.
pub(crate) fn own_clamp(store: &Store) -> Option<OwnClamp<'_>> {
    store.iter().rev().find_map(|o| match &o.signal {
        Signal::UploadMssClamp { mss_bytes, tunnel } => Some(mss_bytes.map(|m| OwnClamp {
            at_ms: o.at_ms,
            mss_bytes: m,
            tunnel: tunnel.as_deref(),
        })),
        _ => None,
    })?
}

/// How long without an acknowledged upload byte before uploads count as stopped.
const ACKED_WITHIN_MS: u64 = 10_000;

/// What the uploads did under the agent's clamp since `clamp_ms`, from acknowledged bytes
/// alone: a clamp being set proves nothing by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Bytes were acknowledged in the last [`ACKED_WITHIN_MS`], or were since the clamp and
    /// nothing has waited unacknowledged since (an idle uploader between chunks).
    Continues,
    /// Work waited unacknowledged for [`ACKED_WITHIN_MS`]: nothing acknowledged since this time.
    Stopped(u64),
    /// Nothing acknowledged since the clamp, and too soon to say.
    NotYet,
}

/// See [`Flow`]: a connection's `TCP_INFO` with bytes acknowledged, or goodput over the 10 s
/// window above a trickle, is an acknowledgement; a stuck connection or goodput below it while
/// there is a backlog (goodput is only reported then) is work waiting.
pub(crate) fn upload_flow(store: &Store, ctx: &Context<'_>, clamp_ms: u64) -> Flow {
    let recent = clamp_ms.max(ctx.now_ms.saturating_sub(ACKED_WITHIN_MS));
    let mut acked: Option<u64> = None;
    let mut waiting = false;
    for o in store.since(clamp_ms) {
        let (ack, wait) = match o.signal {
            Signal::TcpInfo {
                bytes_acked_delta, ..
            } => (bytes_acked_delta > 0, o.signal.tcp_stuck()),
            Signal::UploadGoodput { mbps_10s } => {
                (mbps_10s >= FLOWING_MBPS, mbps_10s < FLOWING_MBPS)
            }
            _ => (false, false),
        };
        if ack {
            acked = Some(o.at_ms);
        }
        waiting |= wait && o.at_ms >= recent;
    }
    let old_enough = ctx.now_ms.saturating_sub(clamp_ms) >= ACKED_WITHIN_MS;
    match acked {
        Some(at) if at >= recent => Flow::Continues,
        last if waiting && old_enough => Flow::Stopped(last.unwrap_or(clamp_ms)),
        Some(_) => Flow::Continues,
        None => Flow::NotYet,
    }
}

/// The first time since `since_ms` the tunnel sent into a hole: (when, bytes out, seconds).
pub(crate) fn vpn_one_way(store: &Store, since_ms: u64) -> Option<(u64, u64, u64)> {
    store.since(since_ms).find_map(|o| match o.signal {
        Signal::VpnOneWay { bytes_out, seconds } => Some((o.at_ms, bytes_out, seconds)),
        _ => None,
    })
}

/// The latest time stuck connections stepped the clamp down since `since_ms`: (when, stuck
/// MSS, new MSS, the measured path MTU they disagreed with).
pub(crate) fn clamp_stuck(store: &Store, since_ms: u64) -> Option<(u64, u32, u32, Option<u32>)> {
    store.since(since_ms).rev().find_map(|o| match o.signal {
        Signal::ClampStuck {
            stuck_mss,
            next_mss,
            measured_path_mtu,
        } => Some((o.at_ms, stuck_mss, next_mss, measured_path_mtu)),
        _ => None,
    })
}

/// The agent's own latest remediation of `ifname` since `since_ms` (undos aside): when,
/// what, and why it failed if it did.
pub(crate) fn remediation<'s>(
    store: &'s Store,
    ifname: &str,
    since_ms: u64,
) -> Option<(u64, &'s str, Option<&'s str>)> {
    store.since(since_ms).rev().find_map(|o| match &o.signal {
        Signal::Remediation {
            ifname: i,
            action,
            error,
            undo: false,
        } if i == ifname => Some((o.at_ms, action.as_str(), error.as_deref())),
        _ => None,
    })
}

/// Whether uploads are demonstrably healthy after `onset_ms`: a goodput sample whose 10 s
/// window lies wholly after the onset shows a healthy rate, and nothing stalled.
pub(crate) fn uploads_healthy_since(store: &Store, ctx: &Context<'_>, onset_ms: u64) -> bool {
    let floor = ctx
        .inventory
        .expected_upload_mbps()
        .map_or(1.0, |e| (e * ctx.settings.degraded_fraction).max(1.0));
    let latest = goodput(store, onset_ms.saturating_add(10_000))
        .last()
        .copied();
    stalls(store, onset_ms).is_empty() && latest.is_some_and(|(_, mbps)| mbps >= floor)
}

/// The fill-rate window of the latest disk report, in ms (how far back its projection looks).
pub(crate) fn disk_fill_window_ms(store: &Store) -> Option<u64> {
    store.iter().rev().find_map(|o| match o.signal {
        Signal::Disk {
            fill_window_seconds,
            ..
        } => Some(Settings::ms(fill_window_seconds)),
        _ => None,
    })
}

/// The latest disk report within the signal window: (at, used %, seconds to full).
pub(crate) fn latest_disk(store: &Store, ctx: &Context<'_>) -> Option<(u64, f64, Option<u64>)> {
    let since = ctx.ago(ctx.settings.signal_window_seconds);
    store.since(since).rev().find_map(|o| match o.signal {
        Signal::Disk {
            used_percent,
            seconds_to_full,
            ..
        } => Some((o.at_ms, used_percent, seconds_to_full)),
        _ => None,
    })
}

/// "full in 12 min".
pub(crate) fn fmt_duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..7200 => format!("{} min", seconds / 60),
        _ => format!("{} h {} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Escalates an incident that stops uploads to critical while the spool disk will be full
/// within `disk_critical_time_to_full_seconds` (or is past the critical watermark): at that
/// point the backlog is about to be lost, whatever the cause.
pub(crate) fn disk_escalation(
    store: &Store,
    ctx: &Context<'_>,
    base: Severity,
) -> (Severity, Option<Evidence>) {
    let Some((at, used, ttf)) = latest_disk(store, ctx) else {
        return (base, None);
    };
    let s = ctx.settings;
    let soon = ttf.is_some_and(|t| t < s.disk_critical_time_to_full_seconds);
    if soon || used >= s.disk_critical_percent {
        let when = ttf.map_or(String::new(), |t| format!(", full in {}", fmt_duration(t)));
        let text = format!("spool disk {used:.0}% used{when}: backlog at risk");
        (base.max(Severity::Critical), Some(Evidence::new(at, text)))
    } else {
        (base, None)
    }
}
