//! `pmtu_blackhole`: large packets vanish and no ICMP "fragmentation needed" says why, so TCP
//! never lowers its segment size and uploads stall while small packets (health checks) pass.
//!
//! Evidence, either suffices (both usually arrive together):
//! * probes: large DF probes toward a target fail (see [`super`]) while small probes toward
//!   the same target answer;
//! * TCP: an upload stalled and `TCP_INFO` shows retransmissions, nothing acknowledged and a
//!   segment size the path cannot carry.
//!
//! and, for a black hole rather than a reduced path MTU: no ICMP fragmentation-needed since
//! the onset, and uploads not demonstrably healthy.

use super::{
    Context, Flow, OwnClamp, ProbeRun, attribution, change_clause, change_for, clamp_stuck,
    disk_escalation, drifted_wan, evidence_epoch, goodput, icmp_explains, large_failing, mtu_fix,
    own_clamp, path_mtu, remediation, small_ok, stalls, upload_flow, uploads_healthy_since,
    vpn_one_way,
};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, Target};

/// TCP/IPv4 header bytes between the MSS and the packet size.
const TCP_IP_HEADER_BYTES: u32 = 40;

/// What the TCP signature looked like.
struct TcpSignature {
    first_stall_ms: u64,
    stalled_seconds: u64,
    info_at_ms: u64,
    snd_mss: u32,
    pmtu: u32,
    retransmits: u32,
}

fn tcp_signature(store: &Store, ctx: &Context<'_>, since_ms: u64) -> Option<TcpSignature> {
    let stalls = stalls(store, since_ms);
    let &(first_stall_ms, stalled_seconds) = stalls.first()?;
    let carried = [Target::Gateway, Target::Endpoint]
        .into_iter()
        .filter_map(|t| path_mtu(store, t, since_ms).map(|(_, b)| b))
        .min()
        .unwrap_or(ctx.inventory.path_mtu_bytes());
    store.since(since_ms).rev().find_map(|o| match o.signal {
        Signal::TcpInfo {
            snd_mss,
            pmtu,
            retransmits,
            bytes_acked_delta,
        } => (retransmits > 0 && bytes_acked_delta == 0 && snd_mss + TCP_IP_HEADER_BYTES > carried)
            .then_some(TcpSignature {
                first_stall_ms,
                stalled_seconds,
                info_at_ms: o.at_ms,
                snd_mss,
                pmtu,
                retransmits,
            }),
        _ => None,
    })
}

/// Finds a PMTUD black hole on the WAN path.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let epoch = evidence_epoch(store, ctx);
    let probes: Option<(Target, ProbeRun, u64)> = [Target::Gateway, Target::Endpoint]
        .into_iter()
        .find_map(|t| {
            let run = large_failing(store, ctx, t, epoch)?;
            Some((t, run, small_ok(store, ctx, t)?))
        });
    let recent = epoch.max(ctx.ago(ctx.settings.signal_window_seconds));
    let tcp = tcp_signature(store, ctx, recent);
    let onset = match (&probes, &tcp) {
        (None, None) => return None,
        (Some((_, run, _)), None) => run.first_fail_ms,
        (None, Some(sig)) => sig.first_stall_ms,
        (Some((_, run, _)), Some(sig)) => run.first_fail_ms.min(sig.first_stall_ms),
    };
    let clamp = own_clamp(store);
    if icmp_explains(
        store,
        ctx,
        (epoch, onset),
        probes.as_ref().map(|(t, ..)| *t),
    )
    .is_some()
        || (clamp.is_none() && uploads_healthy_since(store, ctx, onset))
    {
        // ICMP gets through or TCP copes by itself: `path_mtu_reduced`, not a black hole. Our
        // own clamp coping is no such news: the site's other traffic still loses large packets.
        return None;
    }

    let target = probes.as_ref().map_or(Target::Endpoint, |(t, ..)| *t);
    let pmtu = path_mtu(store, target, epoch);
    let wan = ctx.inventory.wan();
    let current = wan.and_then(|w| store.link(&w.name)?.mtu_bytes);
    let mut evidence = Vec::new();
    let mut clauses = Vec::new();
    if let Some(change) = attribution(store, ctx, onset) {
        clauses.push(change_clause(ctx, change));
        evidence.push(Evidence::new(
            change.at_ms,
            format!(
                "{} MTU changed {} → {}",
                change.ifname, change.old_bytes, change.new_bytes
            ),
        ));
    } else if let (Some(w), Some(mtu)) = (wan, current) {
        clauses.push(format!("{} MTU {}", w.name, mtu));
    }
    if let Some(w) = wan {
        clauses.push(format!("declared {}", w.mtu_bytes));
    }
    if let Some((at, bytes)) = pmtu {
        clauses.push(format!("path MTU to {target} {bytes}"));
        evidence.push(Evidence::new(
            at,
            format!("path MTU search toward {target}: largest packet that passes is {bytes} bytes"),
        ));
    }
    clauses.push("large packets dropped without ICMP".into());

    if let Some((t, run, small_at)) = &probes {
        evidence.push(Evidence::new(
            run.first_fail_ms,
            format!("large probe ({} bytes, DF) to {t} lost", run.size_bytes),
        ));
        if run.failures > 1 {
            evidence.push(Evidence::new(
                run.last_fail_ms,
                format!("{} large probes to {t} lost in a row", run.failures),
            ));
        }
        evidence.push(Evidence::new(
            *small_at,
            format!("small probe to {t} answered: the link itself is up"),
        ));
    }
    if let Some(sig) = &tcp {
        evidence.push(Evidence::new(
            sig.first_stall_ms,
            format!("upload stalled: no progress for {} s", sig.stalled_seconds),
        ));
        evidence.push(Evidence::new(
            sig.info_at_ms,
            format!(
                "upload connection: snd_mss {}, pmtu {}, {} retransmits, nothing acknowledged",
                sig.snd_mss, sig.pmtu, sig.retransmits
            ),
        ));
    }
    // The first sample that shows the drop, so the line stays put while the outage lasts.
    let samples = goodput(store, onset);
    let dropped = samples
        .iter()
        .find(|(_, mbps)| *mbps < 1.0)
        .or(samples.last());
    if let Some(&(at, mbps)) = dropped {
        let expected = super::expected_upload(store, ctx, onset)
            .map_or(String::new(), |e| format!(" (expected {:.1})", e.mbps()));
        evidence.push(Evidence::new(
            at,
            format!("upload goodput {mbps:.1} Mbit/s{expected}"),
        ));
    }
    evidence.push(Evidence::new(
        onset,
        "no ICMP fragmentation-needed received since",
    ));
    let remedied = wan.and_then(|w| remediation(store, &w.name, onset));
    if let Some(tunnel) = clamp.and_then(|c| c.tunnel) {
        clauses.push(format!("uploads ride a VPN tunnel ({tunnel})"));
    }
    if let Some((at, bytes_out, seconds)) = vpn_one_way(store, onset) {
        evidence.push(Evidence::new(
            at,
            format!(
                "VPN tunnel sent {} kB in {seconds} s and got nothing back",
                bytes_out / 1000
            ),
        ));
    }
    if let Some((at, stuck, next, measured)) = clamp_stuck(store, onset) {
        let disagrees = measured.map_or(String::new(), |m| {
            format!(" although probes measured a path MTU of {m}")
        });
        evidence.push(Evidence::new(
            at,
            format!(
                "upload connections stuck resending {stuck}-byte segments{disagrees}; clamp stepped to MSS {next}"
            ),
        ));
    }
    if let Some(OwnClamp {
        at_ms: at,
        mss_bytes: mss,
        ..
    }) = clamp
    {
        let others = if remedied.is_some_and(|(_, _, error)| error.is_none()) {
            ""
        } else {
            "; other traffic on the site still loses large packets"
        };
        // Said only from acknowledged bytes: a clamp that does not fit the path (a tunnel's
        // overhead missed) leaves uploads as stopped as no clamp at all.
        match upload_flow(store, ctx, at) {
            Flow::Continues => clauses.push(format!(
                "uploads continue on connections clamped to MSS {mss}{others}"
            )),
            Flow::NotYet => clauses.push(format!(
                "upload connections clamped to MSS {mss} at {}; none acknowledged yet{others}",
                ctx.hms(at)
            )),
            Flow::Stopped(since) => clauses.push(format!(
                "uploads stopped: nothing acknowledged since {} under the clamp to MSS {mss}, \
                 so the path carries less than the clamp allows{others}",
                ctx.hms(since)
            )),
        }
        evidence.push(Evidence::new(
            at,
            format!("upload connections clamped to MSS {mss}"),
        ));
    }
    if let Some((at, action, error)) = remedied {
        let (what, failure) = match error {
            None => ("remediated", String::new()),
            Some(e) => ("remediation failed", format!(": {e}")),
        };
        evidence.push(Evidence::new(at, format!("{what}: {action}{failure}")));
        clauses.push(format!("{what} at {}: {action}{failure}", ctx.hms(at)));
    }
    let (severity, disk) = disk_escalation(store, ctx, Severity::Warning);
    evidence.extend(disk);
    evidence.sort();

    let tunnel_mss = clamp.filter(|c| c.tunnel.is_some()).map(|c| c.mss_bytes);
    let fix = match (drifted_wan(store, ctx), wan, current, pmtu, tunnel_mss) {
        (Some((w, _)), ..) => mtu_fix(w),
        // Inside a tunnel the WAN's MTU is not what is too big: the tunnel's packets are. The
        // agent's clamp already took the tunnel's overhead off the path; traffic to the
        // endpoint needs the same.
        (None, .., Some(mss)) => {
            let host = ctx.inventory.endpoint_host();
            vec![
                format!(
                    "iptables -t mangle -A POSTROUTING -d {host} -p tcp --tcp-flags SYN,RST SYN \
                     -j TCPMSS --set-mss {mss}"
                ),
                format!(
                    "# clamps TCP into the tunnel to what the path carries; or set the tunnel \
                     interface's MTU to {}. The hop that shrank:",
                    mss + TCP_IP_HEADER_BYTES
                ),
                format!("tracepath -n {host}"),
            ]
        }
        (None, Some(w), Some(mtu), Some((_, bytes)), None) if bytes < mtu => vec![
            format!("ip link set {} mtu {bytes}", w.name),
            "# or clamp TCP MSS instead:".to_owned(),
            format!(
                "iptables -t mangle -A POSTROUTING -o {} -p tcp --tcp-flags SYN,RST SYN -j \
                 TCPMSS --set-mss {}",
                w.name,
                bytes.saturating_sub(TCP_IP_HEADER_BYTES)
            ),
        ],
        _ => vec![
            "# find the hop that drops large packets:".to_owned(),
            format!("tracepath -n {}", ctx.inventory.endpoint_host()),
        ],
    };
    Some(Finding {
        kind: Kind::PmtuBlackhole,
        subject: wan.map_or("uplink".into(), |w| w.name.clone()),
        severity,
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

    #[test]
    fn small_passes_large_fails_without_icmp_is_a_blackhole() {
        let tl = incident_2025_11_12(false);
        let f = run_rule(&tl, "08:15:13", evaluate).unwrap();
        assert_eq!(
            f.root_cause,
            "eno1 MTU changed 1500 → 9000 at 08:15:03; declared 1500; path MTU to gateway \
             1500; large packets dropped without ICMP"
        );
        assert_eq!(f.subject, "eno1");
        assert_eq!(f.fix[0], "ip link set eno1 mtu 1500");
        assert_eq!(
            f.fix[1],
            "# and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml"
        );
    }

    #[test]
    fn icmp_fragmentation_needed_means_no_blackhole() {
        let tl = incident_2025_11_12(true);
        assert!(run_rule(&tl, "08:20:00", evaluate).is_none());
    }

    #[test]
    fn tcp_signature_alone_finds_it() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 9000));
        tl.push("08:10:00", stall(30));
        tl.push("08:10:01", tcp(8948, 9000, 6, 0));
        let f = run_rule(&tl.obs, "08:10:02", evaluate).unwrap();
        assert!(
            f.root_cause.starts_with("eno1 MTU 9000; declared 1500"),
            "{}",
            f.root_cause
        );
        // A stall with a normal segment size is not a black hole (a dead server looks so).
        let mut tl = Timeline::new();
        tl.push("08:10:00", stall(30));
        tl.push("08:10:01", tcp(1448, 1500, 6, 0));
        assert!(run_rule(&tl.obs, "08:10:02", evaluate).is_none());
    }

    /// Between chunks the uploader is idle: no acknowledgements and nothing waiting is not a
    /// stop. Work that waits unacknowledged for 10 s is.
    #[test]
    fn uploads_under_the_clamp_are_judged_by_acknowledgements_not_by_silence() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 9000));
        tl.push(
            "08:00:00",
            Signal::UploadMssClamp {
                mss_bytes: Some(1398),
                tunnel: None,
            },
        );
        let mut at = t("08:00:01");
        while at < t("08:01:40") {
            tl.push_ms(at, probe(Target::Gateway, 84, true));
            tl.push_ms(at, probe(Target::Gateway, 9000, false));
            at += 5_000;
        }
        tl.push("08:00:14", tcp(1398, 1438, 0, 2_000_000));
        let text = |now| run_rule(&tl.obs, now, evaluate).unwrap().root_cause;
        assert!(
            text("08:00:12").contains("clamped to MSS 1398 at 08:00:00; none acknowledged yet"),
            "{}",
            text("08:00:12")
        );
        assert!(
            text("08:00:15").contains("uploads continue on connections clamped to MSS 1398"),
            "{}",
            text("08:00:15")
        );
        // Idle a minute later: still the last verdict, not "stopped".
        assert!(
            text("08:01:30").contains("uploads continue"),
            "{}",
            text("08:01:30")
        );
        let mut stuck = tl.obs.clone();
        for s in 0..6 {
            stuck.push(crate::Observation::new(
                t("08:01:00") + s * 2_000,
                tcp(1398, 1438, 3, 0),
            ));
        }
        stuck.sort_by_key(|o| o.at_ms);
        let text = run_rule(&stuck, "08:01:11", evaluate).unwrap().root_cause;
        assert!(
            text.contains("uploads stopped: nothing acknowledged since 08:00:14"),
            "{text}"
        );
    }

    #[test]
    fn revert_resolves_at_once() {
        let tl = incident_2025_11_12(false);
        assert!(run_rule(&tl, "08:59:59", evaluate).is_some());
        assert!(run_rule(&tl, "09:00:00", evaluate).is_none());
    }
}
