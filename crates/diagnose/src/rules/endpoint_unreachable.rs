//! `endpoint_unreachable`: uploads fail with connection, timeout, TLS or 5xx errors while the
//! local path is fine — the gateway answers and large packets pass. This is the store's or the
//! internet's problem, not the site's; uploads resume by themselves and the spool keeps every
//! chunk meanwhile.

use std::collections::BTreeMap;

use super::{
    Context, attributed_fix, attribution_suffix, disk_escalation, large_failing_anywhere,
    last_flowing, small_failed, small_ok,
};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, Target, UploadErrorClass};

/// Finds an upload endpoint that fails while the local path is healthy.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    // Errors since uploads last flowed: a recovery in between ends the incident.
    let since = last_flowing(store).map_or(0, |at| at + 1);
    let errors: Vec<(u64, UploadErrorClass)> = store
        .since(since)
        .filter_map(|o| match o.signal {
            Signal::UploadError { class } if class.is_unreachable() => Some((o.at_ms, class)),
            _ => None,
        })
        .collect();
    let window = ctx.ago(ctx.settings.signal_window_seconds);
    let recent = errors.iter().filter(|(at, _)| *at >= window).count();
    if recent < ctx.settings.endpoint_errors as usize {
        return None;
    }
    if large_failing_anywhere(store, ctx) {
        // Large packets are lost on our side: a PMTU cause, not this one.
        return None;
    }
    let &(onset, _) = errors.first()?;
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, class) in &errors {
        *by_class.entry(class.as_str()).or_default() += 1;
    }
    let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{n} {c}")).collect();
    let host = ctx.inventory.endpoint_host();
    let gw = ctx.inventory.gateway();
    let mut evidence = vec![Evidence::new(
        onset,
        format!("upload to {host} failed ({})", errors[0].1.as_str()),
    )];
    let cut_beyond_gateway = small_failed(store, ctx, Target::Endpoint);
    let path = match small_ok(store, ctx, Target::Gateway) {
        Some(at) if cut_beyond_gateway => {
            evidence.push(Evidence::new(at, format!("gateway {gw} answers probes")));
            evidence.push(Evidence::new(
                ctx.now_ms,
                format!("{host} does not answer even small probes"),
            ));
            format!(
                "gateway {gw} answers but {host} does not answer even small probes: the path is \
                 cut beyond the gateway (ISP, VPN peer or the store's network)"
            )
        }
        Some(at) => {
            evidence.push(Evidence::new(at, format!("gateway {gw} answers probes")));
            format!("gateway {gw} answers, large packets pass")
        }
        None => "gateway not probed".into(),
    };
    let (severity, disk) = disk_escalation(store, ctx, Severity::Warning);
    evidence.extend(disk);
    evidence.sort();
    let mut fix = attributed_fix(store, ctx, onset);
    fix.push(format!(
        "check the store's status and DNS: curl -sS -o /dev/null -w '%{{http_code}}\\n' \
         https://{host}/"
    ));
    fix.push(
        "nothing to do locally if it is the store's outage: chunks stay in the spool and \
              upload once it recovers"
            .into(),
    );
    Some(Finding {
        kind: Kind::EndpointUnreachable,
        subject: "endpoint".into(),
        severity,
        started_at_ms: onset,
        root_cause: format!(
            "upload endpoint {host} failing since {}: {} errors ({}); {path}{}",
            ctx.hms(onset),
            errors.len(),
            classes.join(", "),
            attribution_suffix(store, ctx, onset)
        ),
        evidence,
        fix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Observation;
    use crate::test_util::*;

    #[test]
    fn server_outage_without_change_is_endpoint_unreachable() {
        let tl = server_outage();
        let f = run_rule(&tl, "10:12:00", evaluate).unwrap();
        assert!(
            f.root_cause
                .starts_with("upload endpoint s3.eu-west-1.amazonaws.com failing since 10:10:00"),
            "{}",
            f.root_cause
        );
        assert!(
            f.root_cause
                .ends_with("no interface change in the 10 min before")
        );
        assert!(f.fix[0].starts_with("check the store's status"));
    }

    #[test]
    fn recovery_ends_it() {
        let mut tl = server_outage();
        tl.push(Observation::new(t("10:12:05"), rate(40.0)));
        assert!(run_rule(&tl, "10:12:06", evaluate).is_none());
    }

    /// The gateway answers, the endpoint answers nothing (small probes included), uploads
    /// time out: the large probes that fail with everything else are no MTU problem.
    #[test]
    fn a_cut_beyond_the_gateway_is_named() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", link_mtu("eno1", 1500));
        healthy(&mut tl, "10:00:00", 10, |_| 42.0);
        for i in 0..12 {
            let at = t("10:10:00") + i * 10_000;
            tl.push_ms(at, probe(Target::Gateway, 84, true));
            tl.push_ms(at, probe(Target::Gateway, 1500, true));
            tl.push_ms(at, probe(Target::Endpoint, 84, false));
            tl.push_ms(at, probe(Target::Endpoint, 1500, false));
            tl.push_ms(at, upload_error("timeout"));
        }
        let obs = tl.sorted();
        let f = run_rule(&obs, "10:12:00", evaluate).expect("the cut opens an incident");
        assert!(
            f.root_cause.contains("cut beyond the gateway"),
            "{}",
            f.root_cause
        );
        let blackhole = run_rule(&obs, "10:12:00", crate::rules::pmtu_blackhole::evaluate);
        assert!(blackhole.is_none(), "{blackhole:?}");
    }

    #[test]
    fn a_single_error_is_nothing() {
        let mut tl = Timeline::new();
        healthy(&mut tl, "10:00:00", 5, |_| 42.0);
        tl.push("10:03:00", upload_error("timeout"));
        assert!(run_rule(&tl.obs, "10:03:30", evaluate).is_none());
    }
}
