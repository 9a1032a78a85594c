//! `uplink_degraded`: uploads work, but for a sustained period far below the expected rate,
//! with no stalls and no large-packet loss (those are other causes). A link that is merely
//! slower than hoped, or one that dips for a minute, is not an incident.

use super::{
    Context, Expected, attributed_fix, attribution_suffix, expected_upload, goodput,
    large_failing_anywhere, stalls,
};
use crate::settings::Settings;
use crate::{Evidence, Finding, Kind, Severity, Store};

/// Samples needed before a mean means anything.
const MIN_SAMPLES: usize = 3;

/// Finds sustained low goodput on an otherwise healthy path.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let sustain = Settings::ms(ctx.settings.degraded_sustain_seconds);
    let from = ctx.now_ms.checked_sub(sustain)?;
    let yardstick = expected_upload(store, ctx, from)?;
    let expected = yardstick.mbps();
    // The window must be covered from its start, or a fresh dip would count as sustained.
    let covered = goodput(
        store,
        from.saturating_sub(Settings::ms(ctx.settings.probe_stale_seconds)),
    )
    .first()
    .is_some_and(|&(at, _)| at <= from + 15_000);
    let samples = goodput(store, from);
    if !covered || samples.len() < MIN_SAMPLES {
        return None;
    }
    let mean = samples.iter().map(|(_, m)| m).sum::<f64>() / samples.len() as f64;
    let threshold = expected * ctx.settings.degraded_fraction;
    // Busy and below expectation for the whole window, every sample: a zero is an outage (the
    // outage rules own it), and a window that holds an outage and then the backlog draining at
    // line rate has a low mean but no slow link in it.
    if !samples.iter().all(|&(_, m)| m > 0.0 && m < threshold) || !stalls(store, from).is_empty() {
        return None;
    }
    if large_failing_anywhere(store, ctx) {
        // Large packets are lost on our side: a PMTU cause, not this one.
        return None;
    }
    let subject = ctx.wan_name().to_string();
    let mut fix = attributed_fix(store, ctx, from);
    fix.push(format!(
        "# check the line rate and competing traffic on {subject}; if the contract changed, \
         update inventory.expected_upload_mbps. Its counters:"
    ));
    fix.push(format!("ip -s link show {subject}"));
    Some(Finding {
        kind: Kind::UplinkDegraded,
        subject,
        severity: Severity::Warning,
        started_at_ms: from,
        root_cause: format!(
            "upload goodput {mean:.1} Mbit/s over the last {} min, {:.0}% of the {}; no \
             stalls, probes pass{}",
            sustain / 60_000,
            mean / expected * 100.0,
            match yardstick {
                Expected::Configured(m) => format!("expected {m} Mbit/s"),
                Expected::Learned(m) => format!("{m:.1} Mbit/s learned while healthy"),
            },
            attribution_suffix(store, ctx, from)
        ),
        evidence: samples
            .iter()
            .step_by((samples.len() / 5).max(1))
            .map(|&(at, m)| Evidence::new(at, format!("upload goodput {m:.1} Mbit/s")))
            .collect(),
        fix,
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn steady(mbps: f64, minutes: u64) -> Vec<crate::Observation> {
        let mut tl = Timeline::new();
        healthy(&mut tl, "10:00:00", minutes, |_| mbps);
        tl.obs
    }

    #[test]
    fn slow_but_healthy_link_is_nothing() {
        // 60 % of the expected 45 Mbit/s for 20 minutes, probes fine, no stalls.
        assert!(run_rule(&steady(27.0, 20), "10:20:00", evaluate).is_none());
    }

    #[test]
    fn far_below_expected_for_long_is_degraded() {
        let f = run_rule(&steady(4.0, 20), "10:20:00", evaluate).unwrap();
        assert!(
            f.root_cause
                .starts_with("upload goodput 4.0 Mbit/s over the last 5 min, 9%")
        );
        // But not before it has lasted the sustain period.
        assert!(run_rule(&steady(4.0, 20), "10:04:00", evaluate).is_none());
    }

    /// An S3 outage, then the backlog draining at line rate: the 5-minute mean is low, but the
    /// link was never slow, only stopped and then full.
    #[test]
    fn an_outage_followed_by_a_fast_drain_is_not_degraded() {
        let mut tl = Timeline::new();
        healthy(&mut tl, "10:00:00", 10, |_| 42.0);
        healthy(&mut tl, "10:10:00", 4, |_| 0.0);
        healthy(&mut tl, "10:14:00", 2, |_| 44.0);
        for at in ["10:15:00", "10:16:00"] {
            assert!(run_rule(&tl.obs, at, evaluate).is_none(), "{at}");
        }
        // A window that is slow throughout still is.
        let mut slow = Timeline::new();
        healthy(&mut slow, "10:00:00", 10, |_| 42.0);
        healthy(&mut slow, "10:10:00", 4, |_| 0.0);
        healthy(&mut slow, "10:14:00", 7, |_| 3.0);
        assert!(run_rule(&slow.obs, "10:21:00", evaluate).is_some());
    }

    /// Without a configured rate the yardstick is what the link did before: an hour at about
    /// 40 Mbit/s, then 4 Mbit/s for ten minutes, is degraded against the learned rate.
    #[test]
    fn learns_the_expected_rate_from_healthy_uploads() {
        let inv = inventory_expecting(None);
        let mut tl = Timeline::new();
        healthy(&mut tl, "09:00:00", 60, |step| 38.0 + (step % 5) as f64);
        healthy(&mut tl, "10:00:00", 10, |_| 4.0);
        let f = run_rule_with(&inv, &tl.obs, "10:10:00", evaluate).unwrap();
        assert!(
            f.root_cause
                .contains("of the 42.0 Mbit/s learned while healthy"),
            "{}",
            f.root_cause
        );
        // A steady 4 Mbit/s from the start is the link's normal: nothing to compare against
        // but itself, so nothing is degraded.
        assert!(run_rule_with(&inv, &steady(4.0, 70), "10:10:00", evaluate).is_none());
        // Too little history: no yardstick, no verdict.
        let mut short = Timeline::new();
        healthy(&mut short, "09:58:00", 1, |_| 40.0);
        healthy(&mut short, "09:59:00", 11, |_| 4.0);
        assert!(run_rule_with(&inv, &short.obs, "10:10:00", evaluate).is_none());
    }
}
