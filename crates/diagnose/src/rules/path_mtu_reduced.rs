//! `path_mtu_reduced`: the path carries less than the local MTU, but path-MTU discovery works —
//! a router answers with ICMP "fragmentation needed", or uploads flow regardless — so TCP
//! adapts and uploads continue. Information, not an outage; the fix is only needed to stop
//! depending on ICMP. Also raised when the prober's search finds less than the inventory's
//! expected upstream path MTU.

use super::{
    Context, attribution, change_clause, change_for, drifted_wan, evidence_epoch, icmp_explains,
    large_failing, mtu_fix, own_clamp, path_mtu, small_ok, uploads_healthy_since,
};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, Target};

/// Finds a reduced path MTU that PMTUD copes with.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let epoch = evidence_epoch(store, ctx);
    let wan = ctx.inventory.wan();
    let wan_name = ctx.wan_name().to_string();
    let current = wan.and_then(|w| store.link(&w.name)?.mtu_bytes);
    let mut evidence = Vec::new();
    let mut clauses = Vec::new();

    let failing = [Target::Gateway, Target::Endpoint]
        .into_iter()
        .find_map(|t| {
            let run = large_failing(store, ctx, t, epoch)?;
            Some((t, run, small_ok(store, ctx, t)?))
        });
    let (target, onset, how) = if let Some((t, run, _)) = failing {
        let how = if let Some((at, from, mtu)) =
            icmp_explains(store, ctx, (epoch, run.first_fail_ms), Some(t))
        {
            evidence.push(Evidence::new(
                at,
                format!("ICMP fragmentation-needed from {from}, next-hop MTU {mtu}"),
            ));
            format!("PMTUD works (ICMP fragmentation-needed from {from}, next-hop MTU {mtu})")
        } else if own_clamp(store).is_none() && uploads_healthy_since(store, ctx, run.first_fail_ms)
        {
            let probing: u64 = store
                .since(run.first_fail_ms)
                .filter_map(|o| match o.signal {
                    Signal::KernelMtuProbing { successes } => Some(successes),
                    _ => None,
                })
                .sum();
            // Say what the evidence shows: the kernel's counter, or only that TCP copes.
            if probing > 0 {
                format!(
                    "large probes dropped but uploads flow: the kernel's TCP MTU probing \
                     (net.ipv4.tcp_mtu_probing) shrank segments {probing} times"
                )
            } else {
                "large probes dropped but uploads flow (TCP copes by a mechanism the agent \
                 cannot see: an MSS clamp on the path, or the kernel's MTU probing)"
                    .into()
            }
        } else {
            return None;
        };
        evidence.push(Evidence::new(
            run.first_fail_ms,
            format!("large probe ({} bytes, DF) to {t} lost", run.size_bytes),
        ));
        (t, run.first_fail_ms, how)
    } else {
        let expected = ctx.inventory.path_mtu_bytes();
        let (t, at, bytes) = [Target::Gateway, Target::Endpoint]
            .into_iter()
            .find_map(|t| {
                let (at, bytes) = path_mtu(store, t, epoch)?;
                (bytes < expected).then_some((t, at, bytes))
            })?;
        evidence.push(Evidence::new(
            at,
            format!("path MTU search toward {t}: {bytes} bytes pass"),
        ));
        (t, at, format!("below the expected {expected}"))
    };

    if let Some(change) = attribution(store, ctx, onset) {
        clauses.push(change_clause(ctx, change));
        evidence.push(Evidence::new(
            change.at_ms,
            format!(
                "{} MTU changed {} → {}",
                change.ifname, change.old_bytes, change.new_bytes
            ),
        ));
    } else if let Some(mtu) = current {
        clauses.push(format!("{wan_name} MTU {mtu}"));
    }
    if let Some(w) = wan {
        clauses.push(format!("declared {}", w.mtu_bytes));
    }
    let pmtu = path_mtu(store, target, epoch);
    if let Some((at, bytes)) = pmtu {
        clauses.push(format!("path MTU to {target} {bytes}"));
        if failing.is_some() {
            evidence.push(Evidence::new(
                at,
                format!("path MTU search toward {target}: {bytes} bytes pass"),
            ));
        }
    }
    clauses.push(how);
    evidence.sort();
    evidence.dedup();

    let fix = match (drifted_wan(store, ctx), pmtu) {
        (Some((w, _)), _) => mtu_fix(w),
        (None, Some((_, bytes))) => vec![
            "no action needed while uploads flow".into(),
            format!("to stop relying on ICMP: ip link set {wan_name} mtu {bytes}"),
        ],
        (None, None) => vec!["no action needed while uploads flow".into()],
    };
    Some(Finding {
        kind: Kind::PathMtuReduced,
        subject: target.as_str().into(),
        severity: Severity::Info,
        started_at_ms: onset,
        root_cause: clauses.join("; "),
        evidence,
        fix,
        change: change_for(store, ctx, onset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    /// ICMP blocked, large probes lost, uploads at full rate: the wording says what made them
    /// flow only when the kernel's counter shows it.
    #[test]
    fn uploads_flowing_past_lost_large_probes_are_explained_by_the_evidence() {
        let timeline = |kernel: bool| {
            let mut tl = Timeline::new();
            tl.push("10:00:00", link_mtu("eno1", 1500));
            for step in 0..60u64 {
                let at = t("10:00:00") + step * 10_000;
                for target in [Target::Gateway, Target::Endpoint] {
                    tl.push_ms(at, probe(target, 84, true));
                    tl.push_ms(at, probe(target, 1500, false));
                }
                tl.push_ms(at, rate(42.0));
                if kernel && step == 3 {
                    tl.push_ms(at, Signal::KernelMtuProbing { successes: 4 });
                }
            }
            tl.sorted()
        };
        let with = run_rule(&timeline(true), "10:09:50", evaluate).unwrap();
        assert!(
            with.root_cause.contains("kernel's TCP MTU probing")
                && with.root_cause.contains("4 times"),
            "{}",
            with.root_cause
        );
        let without = run_rule(&timeline(false), "10:09:50", evaluate).unwrap();
        assert!(
            !without.root_cause.contains("clamped"),
            "{}",
            without.root_cause
        );
        assert!(
            without.root_cause.contains("cannot see"),
            "{}",
            without.root_cause
        );
    }

    #[test]
    fn icmp_allowed_variant_is_reduced_not_blackhole() {
        let tl = incident_2025_11_12(true);
        let f = run_rule(&tl, "08:15:13", evaluate).unwrap();
        assert_eq!(f.severity, Severity::Info);
        assert!(
            f.root_cause
                .starts_with("eno1 MTU changed 1500 → 9000 at 08:15:03")
        );
        assert!(f.root_cause.contains("PMTUD works"), "{}", f.root_cause);
        assert_eq!(f.fix[0], "ip link set eno1 mtu 1500");
    }

    #[test]
    fn blackhole_is_not_reduced() {
        let tl = incident_2025_11_12(false);
        assert!(run_rule(&tl, "08:20:00", evaluate).is_none());
    }

    #[test]
    fn smaller_upstream_path_mtu_is_reported() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", pmtu_result(Target::Endpoint, 1400));
        let f = run_rule(&tl.obs, "10:00:01", evaluate).unwrap();
        assert!(
            f.root_cause.ends_with("below the expected 1500"),
            "{}",
            f.root_cause
        );
        assert_eq!(
            f.fix[1],
            "to stop relying on ICMP: ip link set eno1 mtu 1400"
        );
    }
}
