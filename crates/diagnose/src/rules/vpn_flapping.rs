//! `vpn_flapping`: the VPN tunnel dropped and came back repeatedly within the flap window. A
//! site without a VPN reports `absent` and is "not monitored", never an incident.

use super::{Context, attributed_fix, attribution_suffix};
use crate::settings::Settings;
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, VpnState};

/// Finds a tunnel that flapped at least `vpn_flaps` times within one flap window, the last
/// time within the window before now. Counting back from the last flap (not from now) keeps
/// a tunnel that flaps every few minutes one incident instead of a string of them.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let window_ms = Settings::ms(ctx.settings.vpn_flap_window_seconds);
    let mut state = None;
    let mut prev: Option<u32> = None;
    let mut flaps: Vec<(u64, u32)> = Vec::new();
    for o in store.iter() {
        if let Signal::Vpn {
            state: s,
            flaps: count,
        } = o.signal
        {
            if prev.is_some_and(|p| count > p) {
                flaps.push((o.at_ms, count));
            }
            prev = Some(count);
            state = Some(s);
        }
    }
    if state? == VpnState::Absent {
        return None;
    }
    let &(last_ms, _) = flaps.last()?;
    if last_ms < ctx.now_ms.saturating_sub(window_ms) {
        return None;
    }
    let cluster: Vec<(u64, u32)> = flaps
        .into_iter()
        .filter(|(at, _)| *at >= last_ms.saturating_sub(window_ms))
        .collect();
    let count = cluster.len();
    if count < ctx.settings.vpn_flaps as usize {
        return None;
    }
    let onset = cluster.first().map_or(last_ms, |f| f.0);
    let evidence = cluster
        .iter()
        .map(|&(at, n)| Evidence::new(at, format!("VPN tunnel flap #{n}")))
        .collect();
    let now_state = if state == Some(VpnState::Up) {
        "up now"
    } else {
        "down now"
    };
    let mut fix = attributed_fix(store, ctx, onset);
    fix.push("# check DPD/keepalive and packet loss toward the gateway:".into());
    fix.push("swanctl --list-sas".into());
    Some(Finding {
        kind: Kind::VpnFlapping,
        subject: "vpn".into(),
        severity: Severity::Warning,
        started_at_ms: onset,
        root_cause: format!(
            "VPN tunnel flapped {count} times within {} min, last at {} ({now_state}){}",
            window_ms / 60_000,
            ctx.hms(last_ms),
            attribution_suffix(store, ctx, onset)
        ),
        evidence,
        fix,
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn two_flaps_in_ten_minutes_after_the_change_are_attributed() {
        let tl = incident_2025_11_12(false);
        assert!(run_rule(&tl, "08:24:00", evaluate).is_none());
        let f = run_rule(&tl, "08:25:01", evaluate).unwrap();
        assert_eq!(
            f.root_cause,
            "VPN tunnel flapped 2 times within 10 min, last at 08:25:00 (up now); follows eno1 \
             MTU change 1500 → 9000 at 08:15:03"
        );
        assert_eq!(f.fix[0], "ip link set eno1 mtu 1500");
    }

    #[test]
    fn flapping_every_few_minutes_stays_one_incident() {
        let tl = incident_2025_11_12(false);
        // Flaps at 08:21, 08:25, 08:35: still flapping between them.
        assert!(run_rule(&tl, "08:31:00", evaluate).is_some());
        assert!(run_rule(&tl, "08:40:00", evaluate).is_some());
        // Ten minutes after the last flap of a cluster it is over.
        assert!(run_rule(&tl, "08:45:01", evaluate).is_none());
    }

    #[test]
    fn absent_vpn_is_not_monitored() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", vpn(VpnState::Absent, 0));
        assert!(run_rule(&tl.obs, "08:00:01", evaluate).is_none());
    }
}
