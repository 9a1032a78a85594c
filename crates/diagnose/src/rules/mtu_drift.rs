//! `mtu_drift`: an interface's MTU differs from its declared value. Opens the moment the link
//! watcher reports it, before anything breaks (the incident's P1 action item, live instead of
//! in a cron script). A WAN drift is a warning; on any other role it is information, since a
//! camera VLAN with the wrong MTU costs efficiency, not uploads. An interface changed *to* its
//! declared value is not drift at all.
//!
//! A WAN change waits up to `mtu_drift_hold_seconds` for the probe round it triggers ([`held`],
//! applied by the engine): a full-size probe that passes reports the drift at once; a round
//! that finds large packets dropped becomes one `pmtu_blackhole` (or `path_mtu_reduced`) alert
//! naming the change, which the engine lets stand for the drift, instead of two pages about one
//! change.

use super::{Context, change_clause, change_of, mismatch, mtu_fix};
use crate::settings::Settings;
use crate::{Evidence, Finding, Kind, Role, Severity, Signal, Store};

/// Whether a probe larger than a small one was answered at or after `since_ms`: the path
/// carries the new MTU's packets.
fn large_probe_answered(store: &Store, ctx: &Context<'_>, since_ms: u64) -> bool {
    store.since(since_ms).any(|o| {
        matches!(o.signal, Signal::Probe { size_bytes, ok: true, .. }
            if size_bytes > ctx.settings.small_probe_max_bytes)
    })
}

/// Whether a drift finding is still waiting for the probe round its WAN change triggered:
/// not yet `mtu_drift_hold_seconds` old and no full-size probe answered since.
pub(crate) fn held(store: &Store, ctx: &Context<'_>, finding: &Finding) -> bool {
    let wan = ctx
        .inventory
        .wan()
        .is_some_and(|w| w.name == finding.subject);
    let changed = store
        .link(&finding.subject)
        .and_then(|l| l.last_mtu_change.as_ref())
        .is_some_and(|c| c.at_ms == finding.started_at_ms);
    wan && changed
        && ctx.now_ms
            < finding
                .started_at_ms
                .saturating_add(Settings::ms(ctx.settings.mtu_drift_hold_seconds))
        && !large_probe_answered(store, ctx, finding.started_at_ms)
}

/// One finding per inventory interface whose current MTU differs from its declared value.
/// Interfaces the inventory does not list are ignored (bridges, VPN devices).
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for iface in ctx.inventory.interfaces() {
        let Some(link) = store.link(&iface.name) else {
            continue;
        };
        let Some(mtu) = link.mtu_bytes else {
            continue;
        };
        if mtu == iface.mtu_bytes {
            continue;
        }
        let change = link.last_mtu_change.as_ref().filter(|c| c.new_bytes == mtu);
        let (started_at_ms, head, line) = match change {
            Some(c) => (
                c.at_ms,
                change_clause(ctx, c),
                format!("{} MTU changed {} → {}", c.ifname, c.old_bytes, c.new_bytes),
            ),
            None => (
                link.mtu_at_ms,
                format!("{} MTU is {mtu}", iface.name),
                format!("{} reports MTU {mtu}", iface.name),
            ),
        };
        let severity = if iface.role == Role::Wan {
            Severity::Warning
        } else {
            Severity::Info
        };
        findings.push(Finding {
            kind: Kind::MtuDrift,
            subject: iface.name.clone(),
            severity,
            started_at_ms,
            root_cause: format!(
                "{head}; declared {} ({} interface)",
                iface.mtu_bytes,
                iface.role.as_str()
            ),
            evidence: vec![Evidence::new(started_at_ms, line)],
            fix: mtu_fix(iface),
            change: Some(change.map_or_else(|| mismatch(iface, mtu), |c| change_of(store, c))),
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;
    use crate::{Observation, Target};

    fn held_at(obs: &[Observation], now: &str) -> Vec<bool> {
        run_rule(obs, now, |store, ctx| {
            evaluate(store, ctx)
                .iter()
                .map(|f| held(store, ctx, f))
                .collect()
        })
    }

    #[test]
    fn wan_change_waits_for_its_probe_round_at_most_the_hold() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 1500));
        tl.push("08:15:03", mtu_changed("eno1", 1500, 9000));
        assert_eq!(held_at(&tl.obs, "08:15:03"), [true]);
        // A lost full-size probe is not an answer: still held, for the black hole rule.
        tl.push("08:15:04", probe(Target::Gateway, 9000, false));
        assert_eq!(held_at(&tl.obs, "08:15:12"), [true]);
        assert_eq!(held_at(&tl.obs, "08:15:13"), [false]);
        let f = run_rule(&tl.obs, "08:15:13", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Warning);
        assert_eq!(
            f[0].root_cause,
            "eno1 MTU changed 1500 → 9000 at 08:15:03; declared 1500 (wan interface)"
        );
        assert_eq!(f[0].fix[0], "ip link set eno1 mtu 1500");
    }

    #[test]
    fn wan_change_the_path_carries_is_reported_when_a_full_size_probe_passes() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 1500));
        tl.push("08:15:03", mtu_changed("eno1", 1500, 9000));
        tl.push("08:15:03", probe(Target::Gateway, 84, true));
        assert_eq!(held_at(&tl.obs, "08:15:03"), [true]);
        tl.push("08:15:03", probe(Target::Gateway, 9000, true));
        assert_eq!(held_at(&tl.obs, "08:15:03"), [false]);
    }

    #[test]
    fn camera_change_to_its_declared_value_is_nothing() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno2", 1500));
        tl.push("08:15:03", mtu_changed("eno2", 1500, 9000));
        assert!(run_rule(&tl.obs, "08:15:04", evaluate).is_empty());
    }

    #[test]
    fn camera_drift_is_only_info() {
        let mut tl = Timeline::new();
        tl.push("08:15:03", mtu_changed("eno2", 9000, 1500));
        let f = run_rule(&tl.obs, "08:15:04", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].severity, Severity::Info);
    }

    #[test]
    fn camera_changes_and_drift_found_at_start_are_never_held() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 9000));
        tl.push("08:15:03", mtu_changed("eno2", 1500, 9000));
        tl.push("08:15:03", mtu_changed("eno2", 9000, 1400));
        assert_eq!(held_at(&tl.obs, "08:15:03"), [false, false]);
    }

    #[test]
    fn drift_found_at_start_without_a_change_event() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 9000));
        tl.push("08:00:00", link_mtu("docker0", 1400));
        let f = run_rule(&tl.obs, "08:00:01", evaluate);
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].root_cause,
            "eno1 MTU is 9000; declared 1500 (wan interface)"
        );
    }
}
