//! `uplink_down`: the WAN link has no carrier, or the gateway stopped answering small probes
//! while the endpoint does not answer either. A gateway that never answered a probe is not
//! judged (many drop ICMP by policy): it proves nothing about the uplink.

use super::{Context, attributed_fix, attribution_suffix, disk_escalation, probe_run, small_ok};
use crate::{Evidence, Finding, Kind, Role, Severity, Signal, Store, Target};

/// Finds a down WAN link or an unreachable gateway.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    // Without a declared gateway there is no WAN to judge (no `[inventory]`).
    let gw = ctx.inventory.gateway()?;
    let down = ctx
        .inventory
        .interfaces()
        .iter()
        .filter(|i| i.role == Role::Wan)
        .find_map(|i| {
            let link = store.link(&i.name)?;
            (link.up == Some(false)).then_some((i.name.clone(), link.up_at_ms))
        });
    let link_down = down.is_some();
    let (subject, onset, mut root_cause, mut evidence) = if let Some((name, at)) = down {
        (
            name.clone(),
            at,
            format!("{name} link down since {}", ctx.hms(at)),
            vec![Evidence::new(at, format!("{name} lost carrier"))],
        )
    } else {
        let run = probe_run(store, ctx, Target::Gateway, 0, false)?;
        let answered_before = store.iter().any(|o| {
            o.at_ms < run.first_fail_ms
                && matches!(
                    o.signal,
                    Signal::Probe {
                        target: Target::Gateway,
                        ok: true,
                        ..
                    }
                )
        });
        if run.failures < ctx.settings.large_probe_failures
            || !answered_before
            || small_ok(store, ctx, Target::Endpoint).is_some()
        {
            return None;
        }
        (
            "gateway".into(),
            run.first_fail_ms,
            format!(
                "gateway {gw} stopped answering at {}; {} is up",
                ctx.hms(run.first_fail_ms),
                ctx.wan_name()
            ),
            vec![
                Evidence::new(
                    run.first_fail_ms,
                    format!("small probe to gateway {gw} lost"),
                ),
                Evidence::new(
                    run.last_fail_ms,
                    format!("{} small probes to gateway lost in a row", run.failures),
                ),
            ],
        )
    };
    root_cause.push_str(&attribution_suffix(store, ctx, onset));
    let mut fix = attributed_fix(store, ctx, onset);
    if link_down {
        fix.push(format!("ip link set {subject} up"));
        fix.push("# then check cable and modem:".into());
        fix.push(format!("ip -s link show {subject}"));
    } else {
        fix.push("# check the gateway and modem:".into());
        fix.push(format!("ping -c 3 {gw}"));
        fix.push(format!("ip neigh show {gw}"));
    }
    let (severity, disk) = disk_escalation(store, ctx, Severity::Warning);
    evidence.extend(disk);
    evidence.sort();
    Some(Finding {
        kind: Kind::UplinkDown,
        subject,
        severity,
        started_at_ms: onset,
        root_cause,
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
    fn wan_carrier_loss_is_down() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_state("eno1", false));
        let f = run_rule(&tl.obs, "08:00:01", evaluate).unwrap();
        assert_eq!(f.subject, "eno1");
        assert!(f.root_cause.starts_with("eno1 link down since 08:00:00"));
        tl.push("08:01:00", link_state("eno1", true));
        assert!(run_rule(&tl.obs, "08:01:00", evaluate).is_none());
    }

    #[test]
    fn silent_gateway_is_down_only_if_it_used_to_answer() {
        let mut tl = Timeline::new();
        for at in ["08:00:00", "08:00:10", "08:00:20"] {
            tl.push(at, probe(Target::Gateway, 84, false));
            tl.push(at, probe(Target::Endpoint, 84, false));
        }
        assert!(
            run_rule(&tl.obs, "08:00:21", evaluate).is_none(),
            "never answered"
        );
        let mut tl2 = Timeline::new();
        tl2.push("07:59:50", probe(Target::Gateway, 84, true));
        tl2.obs.extend(tl.obs);
        let f = run_rule(&tl2.obs, "08:00:21", evaluate).unwrap();
        assert!(
            f.root_cause
                .starts_with("gateway 192.0.2.1 stopped answering at 08:00:00")
        );
    }
}
