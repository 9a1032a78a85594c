//! `endpoint_unreachable`: uploads fail with connection, timeout, TLS or 5xx errors while the
//! local path is fine — the gateway answers and large packets pass. This is the store's or the
//! internet's problem, not the site's; uploads resume by themselves and the spool keeps every
//! chunk meanwhile.

use std::collections::BTreeMap;

use super::{
    Context, attributed_fix, attribution_suffix, disk_escalation, large_failing_anywhere,
    last_flowing, small_ok,
};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, Target, UploadErrorClass};

/// Consecutive unanswered small probes after which an endpoint that used to answer is silent.
const SILENT_PROBES: usize = 3;

/// Whether `o` is a small probe toward `want`, and if so whether it was answered.
fn small_probe(o: &crate::Observation, ctx: &Context<'_>, want: Target) -> Option<bool> {
    match o.signal {
        Signal::Probe {
            target,
            size_bytes,
            ok,
            ..
        } if target == want && size_bytes <= ctx.settings.small_probe_max_bytes => Some(ok),
        _ => None,
    }
}

/// When `target` answered small probes again after its latest silence (at least
/// [`SILENT_PROBES`] unanswered in a row after it had answered; a single lost probe is no
/// silence): 0 when it never was silent, `None` while it still is. Probes lost and uploads
/// failed before that belong to that silence: a cut of the site's own link (the gateway) or
/// of the path beyond it (the endpoint), not to the store.
fn back_at(store: &Store, ctx: &Context<'_>, target: Target) -> Option<u64> {
    let (mut run, mut silent, mut back_at, mut answered) = (0usize, false, 0, false);
    for o in store.since(0) {
        match small_probe(o, ctx, target) {
            Some(false) => {
                run += 1;
                // A host that never answered (ICMP dropped by policy) is not judged.
                silent |= answered && run >= SILENT_PROBES;
            }
            Some(true) => {
                answered = true;
                if silent {
                    back_at = o.at_ms;
                    silent = false;
                }
                run = 0;
            }
            None => {}
        }
    }
    (!silent).then_some(back_at)
}

/// When the endpoint went silent: it answered small probes before, and the last
/// [`SILENT_PROBES`] small probes toward it went unanswered (the first of those) while the
/// gateway answered. Endpoint probes lost while the gateway was silent too belong to a cut of
/// the site's own link (`uplink_down`), not beyond it: without that, the first gateway answer
/// after such a cut read as "cut beyond the gateway" for a round. A store that never answers
/// ping (S3 does not) never goes silent.
fn went_silent(store: &Store, ctx: &Context<'_>) -> Option<u64> {
    let gateway_back_at = back_at(store, ctx, Target::Gateway)?;
    let mut failed = Vec::new();
    for o in store.since(0).rev() {
        match small_probe(o, ctx, Target::Endpoint) {
            Some(false) if o.at_ms > gateway_back_at => failed.push(o.at_ms),
            // Answered, or lost while the gateway was silent too: the silent run starts after.
            Some(_) => break,
            None => {}
        }
    }
    let first = *failed.last()?;
    let answered_before = store
        .since(0)
        .take_while(|o| o.at_ms < first)
        .any(|o| small_probe(o, ctx, Target::Endpoint) == Some(true));
    (failed.len() >= SILENT_PROBES && answered_before).then_some(first)
}

/// Whether the endpoint stopped answering even small probes while the gateway answers: the
/// path is cut beyond the gateway. No MTU fault explains that (a black hole passes small
/// packets), so an open black hole never hides it.
pub(crate) fn cut_beyond_gateway(store: &Store, ctx: &Context<'_>) -> bool {
    went_silent(store, ctx).is_some() && small_ok(store, ctx, Target::Gateway).is_some()
}

/// Finds an upload endpoint that fails while the local path is healthy.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    // Errors since uploads last flowed, and since the gateway came back from a silence of its
    // own: a recovery in between ends the incident, and a cut of the site's link explains
    // what failed during it.
    // A silent gateway is the site link's problem (`uplink_down`), even in the round where the
    // endpoint answers a moment before the gateway does after the link is back.
    let gateway_back = back_at(store, ctx, Target::Gateway)?;
    // Errors from before a cut beyond the gateway ended are that cut's: the endpoint answering
    // again ends the incident, not the first acknowledged 16 MiB part a few seconds later.
    let endpoint_back = back_at(store, ctx, Target::Endpoint).unwrap_or(0);
    // The store answering again ends it too: the parts in flight after the return share the
    // link, so the first is acknowledged about 10 s later, and "flowing" needs that.
    let answered = store.iter().rev().find_map(|o| match o.signal {
        Signal::StoreAnswered => Some(o.at_ms + 1),
        _ => None,
    });
    let since = last_flowing(store)
        .map_or(0, |at| at + 1)
        .max(answered.unwrap_or(0))
        .max(gateway_back)
        .max(endpoint_back);
    let errors: Vec<(u64, UploadErrorClass)> = store
        .since(since)
        .filter_map(|o| match o.signal {
            Signal::UploadError { class } if class.is_unreachable() => Some((o.at_ms, class)),
            _ => None,
        })
        .collect();
    let window = ctx.ago(ctx.settings.signal_window_seconds);
    let recent = errors.iter().filter(|(at, _)| *at >= window).count();
    // An endpoint that answered small probes and has stopped, while the gateway answers, is
    // cut off whatever the uploads have had time to report: their first connection error
    // takes 30 s (TCP_USER_TIMEOUT), the probes say so within three rounds.
    let silent_since = went_silent(store, ctx);
    let gateway_answers = small_ok(store, ctx, Target::Gateway).is_some();
    if recent < ctx.settings.endpoint_errors as usize
        && !(silent_since.is_some() && gateway_answers)
    {
        return None;
    }
    let cut_beyond_gateway = silent_since.is_some() && gateway_answers;
    if large_failing_anywhere(store, ctx) && !cut_beyond_gateway {
        // Large packets are lost on our side: a PMTU cause, not this one. Unless the endpoint
        // stopped answering even small probes: a black hole passes those, so that is an
        // outage of its own, inside the black hole or not.
        return None;
    }
    let onset = match (errors.first(), silent_since) {
        (Some(&(e, _)), Some(p)) => e.min(p),
        (Some(&(e, _)), None) => e,
        (None, Some(p)) => p,
        (None, None) => return None,
    };
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, class) in &errors {
        *by_class.entry(class.as_str()).or_default() += 1;
    }
    let classes: Vec<String> = by_class.iter().map(|(c, n)| format!("{n} {c}")).collect();
    let host = ctx.inventory.endpoint_host();
    // Only a declared gateway is probed, so the texts that name it are written only then.
    let gw = ctx
        .inventory
        .gateway()
        .map_or_else(|| "(not declared)".to_owned(), |g| g.to_string());
    let mut evidence: Vec<Evidence> = errors
        .first()
        .map(|(at, class)| {
            Evidence::new(*at, format!("upload to {host} failed ({})", class.as_str()))
        })
        .into_iter()
        .collect();
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
    fix.push("# check the store's status and DNS (any HTTP status means it answers):".into());
    fix.push(format!(
        "curl -sS -o /dev/null -w '%{{http_code}}\\n' {}/",
        ctx.inventory.endpoint_url()
    ));
    fix.push(
        "# nothing to do locally if it is the store's outage: chunks stay in the spool and \
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
        change: None,
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
        assert!(f.fix[0].starts_with("# check the store's status"));
        // Every line runs as printed or is a comment; the curl reaches the store as the
        // uploader does, scheme and port kept.
        assert_eq!(
            f.fix[1],
            "curl -sS -o /dev/null -w '%{http_code}\\n' https://s3.eu-west-1.amazonaws.com/"
        );
        let local = inventory().with_endpoint_url("http://127.0.0.1:19000");
        let f = run_rule_with(&local, &tl, "10:12:00", evaluate).unwrap();
        assert_eq!(
            f.fix[1],
            "curl -sS -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:19000/"
        );
    }

    #[test]
    fn recovery_ends_it() {
        let mut tl = server_outage();
        tl.push(Observation::new(t("10:12:05"), rate(40.0)));
        assert!(run_rule(&tl, "10:12:06", evaluate).is_none());
    }

    /// The store answers a request again: the outage is over before any part is acknowledged,
    /// and errors after that answer count afresh.
    #[test]
    fn the_store_answering_again_ends_it_and_new_errors_start_a_new_count() {
        let mut tl = server_outage();
        tl.push(Observation::new(t("10:12:05"), Signal::StoreAnswered));
        assert!(run_rule(&tl, "10:12:06", evaluate).is_none());
        for s in 0..10 {
            tl.push(Observation::new(
                t("10:12:10") + s * 1000,
                upload_error("connection"),
            ));
        }
        let f = run_rule(&tl, "10:12:30", evaluate).expect("a second outage");
        assert!(
            f.root_cause.contains("failing since 10:12:10"),
            "{}",
            f.root_cause
        );
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

    /// Uploads have reported nothing yet (their first timeout takes 30 s): three unanswered
    /// rounds toward an endpoint that answered before are enough; a store that never answers
    /// ping never goes silent.
    #[test]
    fn an_endpoint_that_stops_answering_probes_is_cut_off_before_uploads_time_out() {
        let silent = |answered_before: bool, rounds: u64| {
            let mut tl = Timeline::new();
            tl.push("10:00:00", link_mtu("eno1", 1500));
            for step in 0..60u64 {
                let at = t("10:00:00") + step * 10_000;
                tl.push_ms(at, probe(Target::Gateway, 84, true));
                tl.push_ms(at, probe(Target::Endpoint, 84, answered_before));
                tl.push_ms(at, rate(42.0));
            }
            for i in 0..rounds {
                let at = t("10:10:00") + i * 10_000;
                tl.push_ms(at, probe(Target::Gateway, 84, true));
                tl.push_ms(at, probe(Target::Endpoint, 84, false));
            }
            // Just after the last round.
            let now = t("10:10:00") + (rounds - 1) * 10_000 + 1_000;
            let at = format!(
                "{:02}:{:02}:{:02}",
                now / 3_600_000,
                now / 60_000 % 60,
                now / 1000 % 60
            );
            run_rule(&tl.sorted(), &at, evaluate).map(|f| f.root_cause)
        };
        assert!(silent(true, 2).is_none());
        let cause = silent(true, 3).expect("three silent rounds open it");
        assert!(cause.contains("cut beyond the gateway"), "{cause}");
        assert!(
            silent(false, 6).is_none(),
            "a store that never answers ping"
        );
    }

    /// The site-gateway link is cut: gateway and endpoint both silent. When it is back the
    /// gateway answers a round before the endpoint's next probe: that is not a cut beyond
    /// the gateway (it opened a false `endpoint_unreachable` in the lab, right after the fix).
    #[test]
    fn a_cut_of_the_sites_own_link_is_not_a_cut_beyond_the_gateway_once_it_is_back() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", link_mtu("eno1", 1500));
        for step in 0..24u64 {
            let at = t("10:00:00") + step * 10_000;
            let cut = step >= 12;
            tl.push_ms(at, probe(Target::Gateway, 84, !cut));
            tl.push_ms(at + 500, probe(Target::Endpoint, 84, !cut));
            if cut {
                // Uploads fail through the cut too; those are the cut's, not the endpoint's.
                tl.push_ms(at + 700, upload_error("connection"));
            }
        }
        // The link is back between the round's gateway and endpoint probes: the endpoint
        // answers while the gateway's latest probe is still the cut's.
        let mut racing = tl.obs.clone();
        racing.push(Observation::new(
            t("10:03:59"),
            probe(Target::Endpoint, 84, true),
        ));
        assert!(run_rule(&racing, "10:03:59", evaluate).is_none());
        // 10:04:00: the gateway answers again; the endpoint's last probes are the cut's.
        tl.push("10:04:00", probe(Target::Gateway, 84, true));
        assert!(run_rule(&tl.obs, "10:04:00", evaluate).is_none());
        // The endpoint staying silent for three rounds after that is a cut beyond.
        for step in 0..3u64 {
            let at = t("10:04:00") + step * 10_000;
            if step > 0 {
                tl.push_ms(at, probe(Target::Gateway, 84, true));
            }
            tl.push_ms(at + 500, probe(Target::Endpoint, 84, false));
            tl.push_ms(at + 700, upload_error("connection"));
            tl.push_ms(at + 800, upload_error("timeout"));
        }
        let obs = tl.sorted();
        let cause = run_rule(&obs, "10:04:21", evaluate).map(|f| f.root_cause);
        assert!(
            cause
                .as_deref()
                .is_some_and(|c| c.contains("cut beyond the gateway")),
            "{cause:?}"
        );
        // The cut beyond ends: the endpoint answers. Its six upload errors are the cut's; the
        // incident ends now, not when the first part is acknowledged seconds later.
        let mut back = obs;
        back.push(Observation::new(
            t("10:04:30"),
            probe(Target::Gateway, 84, true),
        ));
        back.push(Observation::new(
            t("10:04:31"),
            probe(Target::Endpoint, 84, true),
        ));
        assert!(run_rule(&back, "10:04:31", evaluate).is_none());
    }

    #[test]
    fn a_single_error_is_nothing() {
        let mut tl = Timeline::new();
        healthy(&mut tl, "10:00:00", 5, |_| 42.0);
        tl.push("10:03:00", upload_error("timeout"));
        assert!(run_rule(&tl.obs, "10:03:30", evaluate).is_none());
    }
}
