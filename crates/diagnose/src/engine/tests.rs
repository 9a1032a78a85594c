use super::*;
use crate::test_util::*;
use crate::{Severity, Signal, Target, VpnState};

fn engine() -> Engine {
    Engine::new(inventory(), Settings::default(), TimeBase::UNIX)
}

/// Feeds the timeline one observation at a time; returns every transition with its time.
fn replay(engine: &mut Engine, obs: Vec<Observation>) -> Vec<(u64, Transition)> {
    let mut out = Vec::new();
    for o in obs {
        let at = o.at_ms;
        out.extend(engine.observe(o).into_iter().map(|t| (at, t)));
    }
    out
}

fn opened(log: &[(u64, Transition)], kind: Kind) -> Option<(u64, &Incident)> {
    log.iter().find_map(|(at, t)| match t {
        Transition::Opened(i) if i.kind == kind => Some((*at, i)),
        _ => None,
    })
}

fn resolved_at(log: &[(u64, Transition)], kind: Kind) -> Option<u64> {
    log.iter().find_map(|(at, t)| match t {
        Transition::Resolved(i) if i.kind == kind => Some(*at),
        _ => None,
    })
}

#[test]
fn incident_2025_11_12_wan_mtu_9000() {
    let mut engine = engine();
    let log = replay(&mut engine, incident_2025_11_12(false));

    // One page for one change: the drift waits for its probe round, which finds the black
    // hole, and the black hole's alert names the change.
    assert!(opened(&log, Kind::MtuDrift).is_none());

    // pmtu_blackhole: within one probe cycle and its search (target: 30 s).
    let (at, hole) = opened(&log, Kind::PmtuBlackhole).unwrap();
    assert!(
        at - t("08:15:10") <= 30_000,
        "opened at {}",
        TimeBase::UNIX.hms(at)
    );
    assert_eq!(
        hole.root_cause,
        "eno1 MTU changed 1500 → 9000 at 08:15:03; declared 1500; path MTU to gateway 1500; \
         large packets dropped without ICMP"
    );
    assert_eq!(
        hole.fix,
        [
            "ip link set eno1 mtu 1500",
            "# and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml"
        ]
    );
    assert_eq!(hole.runbook, "docs/runbook-pmtud.md#pmtu-blackhole");
    // What a fleet groups by: the same link change on every site.
    assert_eq!(
        hole.change,
        Some(crate::Change {
            id: "eno1 mtu 1500→9000".into(),
            at_ms: Some(t("08:15:03")),
            link: "eno1 mtu 1500→9000".into(),
        })
    );
    assert_eq!(hole.started_at_ms, t("08:15:10"));
    assert!(
        hole.evidence
            .iter()
            .any(|e| e.text.contains("small probe to gateway answered"))
    );
    assert_eq!(hole.severity, Severity::Warning);

    // Severity escalates once the disk, filling at 2.5 %/min, is under 30 min from full.
    let escalation = log.iter().find_map(|(at, t)| match t {
        Transition::Updated { incident, previous }
            if incident.kind == Kind::PmtuBlackhole && t.escalated() =>
        {
            Some((*at, *previous, incident.severity))
        }
        _ => None,
    });
    assert_eq!(
        escalation,
        Some((t("08:16:00"), Severity::Warning, Severity::Critical))
    );

    // Symptoms are not separate outages; the VPN flaps (attributed to the change) are in the
    // black hole's evidence, not a second page.
    assert!(opened(&log, Kind::EndpointUnreachable).is_none());
    assert!(opened(&log, Kind::UplinkDegraded).is_none());
    assert!(opened(&log, Kind::PathMtuReduced).is_none());
    assert!(opened(&log, Kind::UplinkDown).is_none());
    assert!(opened(&log, Kind::VpnFlapping).is_none(), "{log:?}");
    let mut live = self::engine();
    replay(
        &mut live,
        incident_2025_11_12(false)
            .into_iter()
            .filter(|o| o.at_ms <= t("08:26:00"))
            .collect(),
    );
    let incidents = live.incidents();
    let hole = incidents
        .iter()
        .find(|i| i.kind == Kind::PmtuBlackhole)
        .unwrap();
    assert!(
        hole.evidence
            .iter()
            .any(|e| e.text.starts_with("VPN tunnel flapped")
                && e.text
                    .contains("follows eno1 MTU change 1500 → 9000 at 08:15:03")),
        "{:?}",
        hole.evidence
    );
    // The filling disk is the black hole's backlog: its line is in the black hole's evidence
    // (which escalated on it above), not a second page. Only once the black hole is over is a
    // disk that really is full (99 % here, past the 95 % critical mark) news of its own.
    let (at, pressure) = opened(&log, Kind::DiskPressure).unwrap();
    assert_eq!(
        (at, pressure.root_cause.as_str()),
        (
            t("09:00:00"),
            "spool disk 99% used, full in 24 s at the current fill rate"
        )
    );
    let escalated = log.iter().find_map(|(_, t)| match t {
        Transition::Updated { incident, .. } if incident.kind == Kind::PmtuBlackhole => {
            Some(incident)
        }
        _ => None,
    });
    assert!(
        escalated
            .unwrap()
            .evidence
            .iter()
            .any(|e| e.text.starts_with("spool disk")),
        "{escalated:?}"
    );

    // The revert resolves the black hole at once (target: 10 s).
    assert_eq!(resolved_at(&log, Kind::PmtuBlackhole), Some(t("09:00:00")));
    // Opened once, not flapping open/closed during the outage.
    let opens = log
        .iter()
        .filter(|(_, t)| matches!(t, Transition::Opened(i) if i.kind == Kind::PmtuBlackhole))
        .count();
    assert_eq!(opens, 1);
    // VPN flaps age out of their window later; everything else is over.
    let left: Vec<Kind> = engine.incidents().iter().map(|i| i.kind).collect();
    assert!(left.iter().all(|k| *k == Kind::VpnFlapping), "{left:?}");
}

#[test]
fn incident_2025_11_12_icmp_allowed_is_path_mtu_reduced() {
    let mut engine = engine();
    let log = replay(&mut engine, incident_2025_11_12(true));
    assert!(opened(&log, Kind::PmtuBlackhole).is_none());
    let (at, reduced) = opened(&log, Kind::PathMtuReduced).unwrap();
    assert!(at - t("08:15:10") <= 30_000);
    // It stands for the WAN drift it names, so it carries the drift's urgency.
    assert_eq!(reduced.severity, Severity::Warning);
    assert!(
        reduced.root_cause.contains("PMTUD works"),
        "{}",
        reduced.root_cause
    );
    assert!(
        reduced.root_cause.contains("eno1 MTU changed 1500 → 9000"),
        "{}",
        reduced.root_cause
    );
    assert!(opened(&log, Kind::MtuDrift).is_none());
    assert_eq!(resolved_at(&log, Kind::PathMtuReduced), Some(t("09:00:00")));
    assert!(engine.incidents().is_empty());
}

#[test]
fn camera_mtu_change_to_declared_value_opens_nothing() {
    let mut tl = Timeline::new();
    tl.push("08:00:00", link_mtu("eno1", 1500));
    tl.push("08:00:00", link_mtu("eno2", 1500));
    healthy(&mut tl, "08:00:00", 20, |_| 42.0);
    // The camera interface starts wrong (info drift), then gets its jumbo frames.
    let mut engine = engine();
    let mut log = replay(&mut engine, tl.sorted());
    let (_, drift) = opened(&log, Kind::MtuDrift).unwrap();
    assert_eq!(
        (drift.subject.as_str(), drift.severity),
        ("eno2", Severity::Info)
    );
    log.extend(
        engine
            .observe(Observation::new(
                t("08:20:05"),
                mtu_changed("eno2", 1500, 9000),
            ))
            .into_iter()
            .map(|x| (0, x)),
    );
    assert!(resolved_at(&log, Kind::MtuDrift).is_some());
    let mut tl = Timeline::new();
    healthy(&mut tl, "08:20:10", 10, |_| 42.0);
    assert!(replay(&mut engine, tl.sorted()).is_empty());
    assert!(engine.incidents().is_empty());
}

#[test]
fn slow_but_healthy_link_opens_nothing() {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    // 40-70 % of the expected 45 Mbit/s for half an hour.
    healthy(&mut tl, "10:00:00", 30, |step| {
        18.0 + (step % 7) as f64 * 2.0
    });
    let mut engine = engine();
    assert!(replay(&mut engine, tl.sorted()).is_empty());
}

#[test]
fn server_outage_is_endpoint_unreachable_not_blackhole() {
    let mut engine = engine();
    let log = replay(&mut engine, server_outage());
    let kinds: Vec<Kind> = log.iter().map(|(_, t)| t.incident().kind).collect();
    assert_eq!(kinds, [Kind::EndpointUnreachable]);
    let (_, i) = opened(&log, Kind::EndpointUnreachable).unwrap();
    assert!(i.root_cause.contains("5xx") || i.root_cause.contains("server_5xx"));
    assert!(
        i.root_cause
            .ends_with("no interface change in the 10 min before")
    );
}

#[test]
fn one_percent_loss_with_jitter_opens_nothing() {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    tl.push("10:00:00", link_mtu("eno2", 9000));
    tl.push("10:00:00", vpn(VpnState::Absent, 0));
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut lost = 0;
    for step in 0..60 {
        let at = t("10:00:00") + step * 10_000;
        for target in [Target::Gateway, Target::Endpoint] {
            for size in [84, 1500] {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // 1 % loss, plus one forced loss of each kind so the test is never vacuous.
                let random_loss = (seed >> 33).is_multiple_of(100);
                let forced_loss = step == 17 && target == Target::Gateway;
                let ok = !(random_loss || forced_loss);
                lost += u32::from(!ok);
                tl.push_ms(at + (seed >> 40) % 400, probe(target, size, ok));
                if !ok && size > 576 {
                    // The prober's search finds the full size passes: random loss, not a limit.
                    tl.push_ms(at + 2_000, pmtu_result(target, 1500));
                }
            }
        }
        let jitter = ((seed >> 20) % 9) as f64;
        tl.push_ms(at + 5_000, rate(38.0 + jitter));
        if step == 33 {
            tl.push_ms(at + 6_000, upload_error("timeout"));
        }
        tl.push_ms(at, disk(40.0, None));
    }
    assert!(lost >= 2);
    let mut engine = engine();
    let log = replay(&mut engine, tl.sorted());
    assert!(log.is_empty(), "{log:#?}");
}

#[test]
fn tick_resolves_when_windows_expire() {
    let mut engine = engine();
    for (at, flaps) in [("08:00:00", 0), ("08:01:00", 1), ("08:02:00", 2)] {
        engine.observe(Observation::new(t(at), vpn(VpnState::Up, flaps)));
    }
    assert_eq!(engine.incidents().len(), 1);
    assert!(engine.tick(t("08:05:00")).is_empty());
    let resolved = engine.tick(t("08:12:01"));
    assert!(matches!(&resolved[..], [Transition::Resolved(i)] if i.kind == Kind::VpnFlapping));
}

#[test]
fn evidence_keeps_the_opening_and_does_not_pile_up() {
    let mut engine = engine();
    replay(
        &mut engine,
        incident_2025_11_12(false)
            .into_iter()
            .filter(|o| o.at_ms < t("08:59:00"))
            .collect(),
    );
    let hole = engine
        .incidents()
        .into_iter()
        .find(|i| i.kind == Kind::PmtuBlackhole)
        .unwrap()
        .clone();
    assert!(hole.evidence.len() <= MAX_EVIDENCE);
    assert_eq!(hole.evidence[0].text, "eno1 MTU changed 1500 → 9000");
    assert_eq!(hole.evidence[0].at_ms, t("08:15:03"));
}

/// The store is down 10:10–10:15 while the camera keeps recording: the disk projection says
/// "full in 40 min" from the outage on, and keeps saying so for its 5-minute window after the
/// store is back, while the backlog drains. That is the outage's backlog, not a second fault.
/// A projection that still reads filling once its window no longer reaches into the outage is.
#[test]
fn a_disk_filling_with_an_outages_backlog_is_part_of_that_outage() {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    healthy(&mut tl, "10:00:00", 10, |_| 42.0);
    for i in 0..15 {
        tl.push_ms(t("10:10:00") + i * 20_000, upload_error("server_5xx"));
    }
    healthy(&mut tl, "10:15:05", 15, |_| 45.0);
    for i in 0..40 {
        let at = t("10:11:00") + i * 30_000;
        tl.push_ms(at, disk(60.0 + i as f64 * 0.1, Some(40 * 60)));
    }
    let mut engine = engine();
    let log = replay(&mut engine, tl.sorted());
    let (_, outage) = opened(&log, Kind::EndpointUnreachable).unwrap();
    assert_eq!(outage.severity, Severity::Warning);
    let ended = resolved_at(&log, Kind::EndpointUnreachable).unwrap();
    assert!(ended >= t("10:15:05"), "{}", TimeBase::UNIX.hms(ended));
    let (at, _) = opened(&log, Kind::DiskPressure).unwrap();
    assert!(
        at >= ended + 300_000,
        "disk_pressure opened at {} while the fill window still covered the outage",
        TimeBase::UNIX.hms(at)
    );
}

/// A cause found after another incident opened does not resolve that incident: a resolve is a
/// promise that the fault is over, and this one is not.
#[test]
fn an_open_incident_is_not_explained_away_by_a_later_cause() {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    tl.push("10:00:00", disk(90.0, None));
    let mut engine = engine();
    let log = replay(&mut engine, tl.sorted());
    assert!(opened(&log, Kind::DiskPressure).is_some());
    let mut tl = Timeline::new();
    tl.push("10:00:05", link_state("eno1", false));
    tl.push("10:00:05", disk(90.0, None));
    let log = replay(&mut engine, tl.sorted());
    assert!(opened(&log, Kind::UplinkDown).is_some(), "{log:?}");
    assert_eq!(resolved_at(&log, Kind::DiskPressure), None);
}

/// The path beyond the gateway shrinks to 1400 with no local change and ICMP blocked, then is
/// whole again. Stalls from connections that lost segments during the fault arrive after the
/// restore; the first full-size probe that passes again ends the incident, and those late
/// stalls cannot reopen it.
#[test]
fn a_path_that_shrank_and_recovered_resolves_at_the_first_full_size_pass() {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    healthy(&mut tl, "10:00:00", 5, |_| 42.0);
    let mut at = t("10:05:00");
    while at < t("10:09:00") {
        tl.push_ms(at, probe(Target::Gateway, 84, true));
        tl.push_ms(at, probe(Target::Gateway, 1500, true));
        tl.push_ms(at, probe(Target::Endpoint, 84, true));
        tl.push_ms(at, probe(Target::Endpoint, 1500, false));
        tl.push_ms(at + 2_000, pmtu_result(Target::Endpoint, 1400));
        tl.push_ms(at + 5_000, rate(0.0));
        tl.push_ms(at + 5_000, tcp(1448, 1500, 3, 0));
        at += 10_000;
    }
    healthy(&mut tl, "10:09:00", 1, |_| 0.5);
    // Connections from the fault report their stalls late.
    tl.push("10:09:03", stall(15));
    tl.push("10:09:05", tcp(1448, 1500, 4, 0));
    healthy(&mut tl, "10:10:00", 10, |_| 44.0);
    let mut engine = engine();
    let log = replay(&mut engine, tl.sorted());
    let (_, hole) = opened(&log, Kind::PmtuBlackhole).unwrap();
    assert!(
        hole.root_cause.contains("path MTU to endpoint 1400"),
        "{}",
        hole.root_cause
    );
    assert_eq!(resolved_at(&log, Kind::PmtuBlackhole), Some(t("10:09:00")));
    let opens = log
        .iter()
        .filter(|(_, t)| matches!(t, Transition::Opened(_)))
        .count();
    assert_eq!(opens, 1, "{log:?}");
}

/// Healthy until eno1 goes 1500 → 9000 at 08:05:00 and the agent clamps to MSS 1460 (inside
/// `tunnel`, if any).
fn clamped_at_08_05(tunnel: Option<&str>) -> Timeline {
    let mut tl = Timeline::new();
    tl.push("08:00:00", link_mtu("eno1", 1500));
    healthy(&mut tl, "08:00:00", 5, |_| 42.0);
    tl.push("08:05:00", mtu_changed("eno1", 1500, 9000));
    tl.push(
        "08:05:00",
        Signal::UploadMssClamp {
            mss_bytes: Some(1460),
            tunnel: tunnel.map(str::to_owned),
        },
    );
    tl
}

/// The incident's change with the agent's own clamp in force: uploads flow at line rate on
/// clamped connections while large packets are still dropped. That is still a black hole for
/// the site (its VPN and every other application), not a path that copes: one
/// `pmtu_blackhole` that says uploads continue, never a downgrade to `path_mtu_reduced`.
#[test]
fn uploads_flowing_under_our_own_clamp_do_not_end_the_black_hole() {
    let mut tl = clamped_at_08_05(None);
    let mut at = t("08:05:01");
    while at < t("08:15:00") {
        for target in [Target::Gateway, Target::Endpoint] {
            tl.push_ms(at, probe(target, 84, true));
            tl.push_ms(at, probe(target, 9000, false));
        }
        tl.push_ms(at + 2_000, pmtu_result(Target::Gateway, 1500));
        tl.push_ms(at + 5_000, rate(44.0));
        at += 10_000;
    }
    tl.push("08:15:00", mtu_changed("eno1", 9000, 1500));
    tl.push(
        "08:15:00",
        Signal::UploadMssClamp {
            mss_bytes: None,
            tunnel: None,
        },
    );
    healthy(&mut tl, "08:15:01", 5, |_| 44.0);
    let all = tl.sorted();
    let mut engine = engine();
    let log = replay(&mut engine, all.clone());
    let (at, hole) = opened(&log, Kind::PmtuBlackhole).unwrap();
    assert!(at <= t("08:05:05"), "{}", TimeBase::UNIX.hms(at));
    // Nothing acknowledged yet when it opens: the clamp is no proof that uploads flow.
    assert!(
        hole.root_cause
            .contains("upload connections clamped to MSS 1460 at 08:05:00; none acknowledged yet"),
        "{}",
        hole.root_cause
    );
    // Once bytes are acknowledged under the clamp, the live text says uploads continue.
    let mut live = self::engine();
    replay(
        &mut live,
        all.into_iter()
            .filter(|o| o.at_ms < t("08:14:00"))
            .collect(),
    );
    let text = live
        .incidents()
        .into_iter()
        .find(|i| i.kind == Kind::PmtuBlackhole)
        .map(|i| i.root_cause.clone())
        .unwrap();
    assert!(
        text.contains("uploads continue on connections clamped to MSS 1460"),
        "{text}"
    );
    assert!(opened(&log, Kind::PathMtuReduced).is_none(), "{log:?}");
    assert_eq!(resolved_at(&log, Kind::PmtuBlackhole), Some(t("08:15:00")));
    let opens = log
        .iter()
        .filter(|(_, t)| matches!(t, Transition::Opened(_)))
        .count();
    assert_eq!(opens, 1, "{log:?}");
}

/// A clamp that does not fit the path (a tunnel's overhead missed) leaves uploads stopped:
/// the alert must say so, from the connections, not from the clamp being set.
#[test]
fn a_clamp_with_nothing_acknowledged_says_uploads_stopped() {
    let mut tl = clamped_at_08_05(Some("ESP AES_GCM_16 over UDP: 62 B"));
    let mut at = t("08:05:01");
    while at < t("08:06:00") {
        for target in [Target::Gateway, Target::Endpoint] {
            tl.push_ms(at, probe(target, 84, true));
            tl.push_ms(at, probe(target, 9000, false));
        }
        tl.push_ms(at + 1_000, tcp(1460, 1500, 4, 0));
        tl.push_ms(at + 5_000, rate(0.0));
        at += 2_000;
    }
    let mut engine = engine();
    replay(&mut engine, tl.sorted());
    let incidents = engine.incidents();
    let last = incidents
        .iter()
        .find(|i| i.kind == Kind::PmtuBlackhole)
        .unwrap();
    assert!(
        last.root_cause.contains(
            "uploads stopped: nothing acknowledged since 08:05:00 under the clamp to MSS 1460"
        ),
        "{}",
        last.root_cause
    );
    assert!(
        last.root_cause
            .contains("uploads ride a VPN tunnel (ESP AES_GCM_16 over UDP: 62 B)"),
        "{}",
        last.root_cause
    );
    assert!(!last.root_cause.contains("continue"), "{}", last.root_cause);
}

/// The incident with the agent's own remediation (`[remediation] mode = "route-mtu"`): the
/// black hole stays open (the interface is still wrong, full-size probes still vanish), but
/// its text says what the agent did and no longer that the site's other traffic loses large
/// packets; a failed remediation says why and keeps that warning.
#[test]
fn a_remediation_is_named_in_the_black_hole_it_mitigates() {
    let run = |error: Option<&str>| {
        let mut tl = Timeline::new();
        tl.push("08:00:00", link_mtu("eno1", 1500));
        healthy(&mut tl, "08:00:00", 5, |_| 42.0);
        tl.push("08:05:00", mtu_changed("eno1", 1500, 9000));
        tl.push(
            "08:05:00",
            Signal::UploadMssClamp {
                mss_bytes: Some(1460),
                tunnel: None,
            },
        );
        let mut at = t("08:05:01");
        while at < t("08:08:00") {
            for target in [Target::Gateway, Target::Endpoint] {
                tl.push_ms(at, probe(target, 84, true));
                tl.push_ms(at, probe(target, 9000, false));
            }
            tl.push_ms(at + 2_000, pmtu_result(Target::Gateway, 1500));
            tl.push_ms(at + 5_000, rate(44.0));
            at += 10_000;
        }
        tl.push(
            "08:05:04",
            Signal::Remediation {
                ifname: "eno1".into(),
                action: "route MTU 1500 on 2 route(s) of eno1 (table main)".into(),
                error: error.map(str::to_owned),
                undo: false,
            },
        );
        let mut engine = engine();
        replay(&mut engine, tl.sorted());
        let open: Vec<_> = engine
            .incidents()
            .into_iter()
            .filter(|i| i.resolved_at_ms.is_none())
            .cloned()
            .collect();
        assert_eq!(open.len(), 1, "{open:?}");
        assert_eq!(open[0].kind, Kind::PmtuBlackhole);
        open[0].clone()
    };
    let ok = run(None);
    assert!(
        ok.root_cause.ends_with(
            "uploads continue on connections clamped to MSS 1460; remediated at 08:05:04: \
             route MTU 1500 on 2 route(s) of eno1 (table main)"
        ),
        "{}",
        ok.root_cause
    );
    assert!(
        ok.evidence
            .iter()
            .any(|e| e.at_ms == t("08:05:04") && e.text.starts_with("remediated: route MTU")),
        "{:?}",
        ok.evidence
    );
    let failed = run(Some("RTNETLINK answers: Operation not permitted"));
    assert!(
        failed.root_cause.contains(
            "other traffic on the site still loses large packets; remediation failed at \
             08:05:04: route MTU 1500 on 2 route(s) of eno1 (table main): RTNETLINK answers: \
             Operation not permitted"
        ),
        "{}",
        failed.root_cause
    );
}

/// Healthy until 08:05:00, then eno1 to 9000 (a black hole behind the 1500-byte hop) for each
/// `(from, to)` second offset, healthy between and after, until 08:14:00. Probes every 2 s
/// while broken (the agent probes at once after a link change), every 10 s otherwise.
fn flapping_wan(flips: &[(u64, u64)]) -> Vec<Observation> {
    let mut tl = Timeline::new();
    tl.push("08:00:00", link_mtu("eno1", 1500));
    tl.push("08:00:00", link_mtu("eno2", 9000));
    tl.push("08:00:00", link_state("eno1", true));
    healthy(&mut tl, "08:00:00", 14, |_| 42.0);
    let base = t("08:05:00");
    for &(from, to) in flips {
        tl.push_ms(base + from * 1000, mtu_changed("eno1", 1500, 9000));
        let mut at = base + from * 1000 + 500;
        while at < base + to * 1000 {
            for target in [Target::Gateway, Target::Endpoint] {
                tl.push_ms(at, probe(target, 84, true));
                tl.push_ms(at, probe(target, 9000, false));
            }
            tl.push_ms(at + 300, pmtu_result(Target::Gateway, 1500));
            at += 2_000;
        }
        tl.push_ms(base + to * 1000, mtu_changed("eno1", 9000, 1500));
    }
    // While eno1 is at 9000 the probes are 9000 bytes (no 1500-byte probe passes) and the
    // uploads stall (no goodput).
    let broken = |at: u64| {
        flips
            .iter()
            .any(|&(from, to)| at >= base + from * 1000 && at < base + to * 1000)
    };
    tl.obs.retain(|o| {
        !(broken(o.at_ms)
            && matches!(
                o.signal,
                Signal::Probe {
                    size_bytes: 1500,
                    ..
                } | Signal::UploadGoodput { .. }
            ))
    });
    tl.sorted()
}

type Log = Vec<(u64, Transition)>;

/// Feeds the timeline with a tick every second between observations, as the monitor does, and
/// the alert policy after the engine; returns the transitions and the alerts with their times.
fn replay_with_alerts(
    engine: &mut Engine,
    obs: Vec<Observation>,
) -> (Log, Vec<(u64, crate::Alert)>) {
    let mut policy = crate::AlertPolicy::new("SITE-TEST", 3600, TimeBase::UNIX);
    let (mut log, mut alerts) = (Vec::new(), Vec::new());
    let mut clock = obs.first().map_or(0, |o| o.at_ms);
    let end = obs.last().map_or(0, |o| o.at_ms);
    let mut obs = obs.into_iter().peekable();
    while clock <= end {
        let mut batch = Vec::new();
        while let Some(o) = obs.next_if(|o| o.at_ms <= clock) {
            batch.push(o);
        }
        let mut ts = engine.observe_all(batch);
        ts.extend(engine.tick(clock));
        alerts.extend(
            policy
                .on_transitions(&ts, clock)
                .into_iter()
                .map(|a| (clock, a)),
        );
        alerts.extend(
            policy
                .renotify(engine.incidents(), clock)
                .into_iter()
                .map(|a| (clock, a)),
        );
        log.extend(ts.into_iter().map(|t| (clock, t)));
        clock += 1000;
    }
    (log, alerts)
}

fn count(alerts: &[(u64, crate::Alert)], status: crate::Status) -> usize {
    alerts.iter().filter(|(_, a)| a.status == status).count()
}

#[test]
fn a_link_flapping_three_times_in_a_minute_pages_once_and_resolves_once_when_stable() {
    let mut engine = engine();
    let (log, alerts) =
        replay_with_alerts(&mut engine, flapping_wan(&[(0, 12), (24, 36), (48, 60)]));
    let kinds: Vec<_> = alerts
        .iter()
        .map(|(at, a)| (TimeBase::UNIX.hms(*at), a.kind, a.status, a.reason))
        .collect();
    assert_eq!(count(&alerts, crate::Status::Firing), 1, "{kinds:#?}");
    assert_eq!(count(&alerts, crate::Status::Resolved), 1, "{kinds:#?}");
    let (opened_at, _) = opened(&log, Kind::PmtuBlackhole).unwrap();
    assert!(opened_at - t("08:05:00") <= 5_000, "{kinds:#?}");
    // One incident, held open between the flips and resolved once the link has been stable
    // for the hold-down (120 s after the last flip back).
    let resolved = resolved_at(&log, Kind::PmtuBlackhole).unwrap();
    assert_eq!(resolved, t("08:08:00"), "{kinds:#?}");
    let (_, resolve) = alerts
        .iter()
        .find(|(_, a)| a.status == crate::Status::Resolved)
        .unwrap();
    assert_eq!(resolve.kind, Kind::PmtuBlackhole);
    assert!(
        resolve
            .root_cause
            .ends_with("(flapped for 59 s: 6 changes)"),
        "{}",
        resolve.root_cause
    );
    assert!(
        resolve
            .evidence
            .iter()
            .any(|e| e.ends_with("back 12 s after it cleared: flapping: 3 changes in 24 s")),
        "{:#?}",
        resolve.evidence
    );
}

#[test]
fn a_fault_that_lasted_resolves_at_once_and_a_return_pages_only_if_it_stays() {
    let mut engine = engine();
    // 60 s of black hole: resolved at the revert. Back 20 s later for 10 s: the same
    // incident re-opens, pages nobody and resolves after the hold-down. Back again for good:
    // it pages once it has stayed a quarter of the hold-down and the hold-down has passed
    // since the first page, and its resolve waits for the hold-down of stability.
    let (log, alerts) =
        replay_with_alerts(&mut engine, flapping_wan(&[(0, 60), (80, 90), (250, 300)]));
    let kinds: Vec<_> = alerts
        .iter()
        .map(|(at, a)| (TimeBase::UNIX.hms(*at), a.kind, a.status, a.reason))
        .collect();
    let resolves: Vec<u64> = log
        .iter()
        .filter_map(|(at, tr)| {
            matches!(tr, Transition::Resolved(i) if i.kind == Kind::PmtuBlackhole).then_some(*at)
        })
        .collect();
    assert_eq!(
        resolves[0],
        t("08:06:00"),
        "resolved at the revert: {kinds:#?}"
    );
    let reopened = log.iter().find_map(|(at, tr)| {
        matches!(tr, Transition::Reopened(i) if i.kind == Kind::PmtuBlackhole).then_some(*at)
    });
    assert_eq!(reopened, Some(t("08:06:21")), "{kinds:#?}");
    // The short return is held open and resolves the hold-down after it went away, unseen.
    assert_eq!(resolves[1], t("08:08:30"), "{kinds:#?}");
    let firing: Vec<_> = alerts
        .iter()
        .filter(|(_, a)| a.status == crate::Status::Firing)
        .map(|(at, a)| (*at, a.reason))
        .collect();
    assert_eq!(
        firing,
        [
            (t("08:05:01"), crate::AlertReason::Opened),
            (t("08:09:41"), crate::AlertReason::Flapping)
        ],
        "{kinds:#?}"
    );
    assert_eq!(count(&alerts, crate::Status::Resolved), 2, "{kinds:#?}");
    assert_eq!(resolves[2], t("08:12:00"), "{kinds:#?}");
}

#[test]
fn a_change_made_through_the_netplan_guard_carries_its_ticket() {
    let mut obs = incident_2025_11_12(false);
    obs.push(Observation::new(
        t("08:15:03"),
        Signal::GuardedApply {
            ticket: Some("NET-4521".into()),
            run_id: "20251112T081500Z-4242".into(),
        },
    ));
    obs.sort_by_key(|o| o.at_ms);
    let mut engine = engine();
    let log = replay(&mut engine, obs);
    let (_, hole) = opened(&log, Kind::PmtuBlackhole).unwrap();
    let change = hole.change.clone().unwrap();
    assert_eq!(change.id, "NET-4521");
    assert_eq!(change.link, "eno1 mtu 1500→9000");
}

#[test]
fn a_cut_beyond_the_gateway_inside_a_black_hole_opens_its_own_incident() {
    // 45 s from 08:30:00 the endpoint answers nothing, not even small probes, while the
    // gateway still does: the path is cut beyond it. A black hole passes small packets, so
    // the open black hole does not explain that away.
    let cut = (t("08:30:00"), t("08:30:45"));
    let obs: Vec<Observation> = incident_2025_11_12(false)
        .into_iter()
        .map(|mut o| {
            if (cut.0..cut.1).contains(&o.at_ms)
                && let Signal::Probe {
                    target: Target::Endpoint,
                    size_bytes: 84,
                    ok,
                    rtt_ms,
                    ..
                } = &mut o.signal
            {
                *ok = false;
                *rtt_ms = None;
            }
            o
        })
        .collect();
    let mut engine = engine();
    let log = replay(&mut engine, obs);
    let (opened_at, outage) = opened(&log, Kind::EndpointUnreachable)
        .unwrap_or_else(|| panic!("no outage incident: {:#?}", kinds(&log)));
    assert!(
        opened_at >= cut.0 && opened_at - cut.0 <= 30_000,
        "opened at {}",
        TimeBase::UNIX.hms(opened_at)
    );
    assert!(
        outage.root_cause.contains("cut beyond the gateway"),
        "{}",
        outage.root_cause
    );
    let resolved = resolved_at(&log, Kind::EndpointUnreachable).unwrap();
    assert!(resolved > cut.1 && resolved - cut.1 <= 15_000);
    // The black hole stays one incident through the cut, resolved at its own revert.
    assert_eq!(resolved_at(&log, Kind::PmtuBlackhole), Some(t("09:00:00")));
    assert_eq!(
        log.iter()
            .filter(|(_, tr)| matches!(tr, Transition::Opened(i) if i.kind == Kind::PmtuBlackhole))
            .count(),
        1
    );
}

fn kinds(log: &[(u64, Transition)]) -> Vec<(String, Kind, &'static str)> {
    log.iter()
        .map(|(at, tr)| {
            let what = match tr {
                Transition::Opened(_) => "opened",
                Transition::Reopened(_) => "reopened",
                Transition::Updated { .. } => "updated",
                Transition::Resolved(_) => "resolved",
            };
            (TimeBase::UNIX.hms(*at), tr.incident().kind, what)
        })
        .collect()
}

#[test]
fn icmp_that_stops_mid_fault_turns_a_reduced_path_into_a_black_hole() {
    // The ICMP-allowed 2025-11-12 change, the uploads clamped to the path the frag-needed
    // reported; at 08:30:00 the gateway starts dropping its ICMP while full-size probes go on
    // failing. PMTUD works no longer: within a probe round it is a black hole.
    let stop = t("08:30:00");
    let mut obs: Vec<Observation> = incident_2025_11_12(true)
        .into_iter()
        .filter(|o| !(o.at_ms >= stop && matches!(o.signal, Signal::FragNeeded { .. })))
        .collect();
    obs.push(Observation::new(
        t("08:15:11"),
        Signal::UploadMssClamp {
            mss_bytes: Some(1460),
            tunnel: None,
        },
    ));
    obs.sort_by_key(|o| o.at_ms);
    let mut engine = engine();
    let log = replay(&mut engine, obs);
    let (reduced_at, _) = opened(&log, Kind::PathMtuReduced).unwrap();
    assert!(reduced_at < stop, "{:#?}", kinds(&log));
    let (hole_at, _) = opened(&log, Kind::PmtuBlackhole)
        .unwrap_or_else(|| panic!("never a black hole: {:#?}", kinds(&log)));
    assert!(
        hole_at >= stop && hole_at - stop <= 10_000,
        "black hole at {}: {:#?}",
        TimeBase::UNIX.hms(hole_at),
        kinds(&log)
    );
}

#[test]
fn a_short_fault_is_held_for_the_whole_hold_down() {
    // 10 s of black hole: shorter than a quarter of the hold-down, so it may be the start of a
    // flap. Held open from the moment it clears until it has stayed away 120 s, however long
    // the incident has existed by then.
    let mut engine = engine();
    let (log, _) = replay_with_alerts(&mut engine, flapping_wan(&[(0, 10)]));
    let resolved = resolved_at(&log, Kind::PmtuBlackhole).unwrap();
    assert_eq!(resolved, t("08:07:10"), "{:#?}", kinds(&log));
}

#[test]
fn large_probes_lost_in_a_queue_are_no_black_hole_when_the_search_carries_their_size() {
    // The store returns after an outage and the uploads fill the uplink's queue: three 1500-byte
    // probes are lost in one round, but the path-MTU search right after carries 1500.
    let mut tl = Timeline::new();
    tl.push("08:00:00", link_mtu("eno1", 1500));
    tl.push("08:00:00", link_mtu("eno2", 9000));
    tl.push("08:00:00", link_state("eno1", true));
    healthy(&mut tl, "08:00:00", 5, |_| 42.0);
    let mut engine = engine();
    let mut log = replay(&mut engine, tl.sorted());
    // One probe round, as the monitor hands it over: the probes and the search together.
    let mut round = Vec::new();
    for ms in [0, 100, 200] {
        round.push(Observation::new(
            t("08:05:01") + ms,
            probe(Target::Endpoint, 84, true),
        ));
        round.push(Observation::new(
            t("08:05:01") + ms,
            probe(Target::Endpoint, 1500, false),
        ));
    }
    round.push(Observation::new(
        t("08:05:02"),
        pmtu_result(Target::Endpoint, 1500),
    ));
    log.extend(
        engine
            .observe_all(round)
            .into_iter()
            .map(|tr| (t("08:05:02"), tr)),
    );
    log.extend(
        engine
            .observe(Observation::new(t("08:05:03"), rate(0.0)))
            .into_iter()
            .map(|tr| (t("08:05:03"), tr)),
    );
    assert!(
        opened(&log, Kind::PmtuBlackhole).is_none(),
        "{:#?}",
        kinds(&log)
    );
}
