use super::*;
use crate::{Evidence, Status};

fn incident(severity: Severity) -> Incident {
    Incident {
        id: "pmtu_blackhole:eno1:29710000".into(),
        kind: Kind::PmtuBlackhole,
        subject: "eno1".into(),
        severity,
        started_at_ms: 29_710_000,
        updated_at_ms: 29_712_000,
        resolved_at_ms: None,
        root_cause: "eno1 MTU changed 1500 → 9000 at 08:15:03; declared 1500; path MTU to \
                     gateway 1500; large packets dropped without ICMP"
            .into(),
        evidence: vec![
            Evidence::new(29_703_000, "eno1 MTU changed 1500 → 9000"),
            Evidence::new(29_710_000, "large probe (9000 bytes, DF) to gateway lost"),
        ],
        fix: vec![
            "ip link set eno1 mtu 1500".into(),
            "# and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml".into(),
        ],
        runbook: Kind::PmtuBlackhole.runbook().to_owned(),
        flapping: None,
        held_since_ms: None,
        change: None,
    }
}

fn policy() -> AlertPolicy {
    // 2025-11-12T00:00:00Z at timestamp 0.
    AlertPolicy::new("SITE-2847", 600, TimeBase::new(1_762_905_600_000))
}

#[test]
fn opens_once_and_dedups_same_severity() {
    let mut p = policy();
    let open = Transition::Opened(incident(Severity::Warning));
    let a = p.on_transition(&open, 1_000).unwrap();
    assert_eq!(a.reason, AlertReason::Opened);
    assert_eq!(a.started_at, "2025-11-12T08:15:10Z");
    assert_eq!(a.evidence[0], "08:15:03 eno1 MTU changed 1500 → 9000");
    let same = Transition::Updated {
        incident: incident(Severity::Warning),
        previous: Severity::Warning,
    };
    assert!(p.on_transition(&same, 2_000).is_none());
    assert!(
        p.on_transition(&open, 3_000).is_none(),
        "duplicate open is deduplicated"
    );
}

#[test]
fn escalation_alerts_and_de_escalation_does_not() {
    let mut p = policy();
    p.on_transition(&Transition::Opened(incident(Severity::Warning)), 0);
    let up = Transition::Updated {
        incident: incident(Severity::Critical),
        previous: Severity::Warning,
    };
    let a = p.on_transition(&up, 60_000).unwrap();
    assert_eq!(
        (a.reason, a.severity),
        (AlertReason::Escalated, Severity::Critical)
    );
    let down = Transition::Updated {
        incident: incident(Severity::Warning),
        previous: Severity::Critical,
    };
    assert!(p.on_transition(&down, 120_000).is_none());
    assert!(
        p.on_transition(&up, 180_000).is_some(),
        "rising again alerts again"
    );
}

#[test]
fn reminds_after_the_renotify_interval() {
    let mut p = policy();
    let i = incident(Severity::Warning);
    p.on_transition(&Transition::Opened(i.clone()), 0);
    assert!(p.renotify([&i], 599_999).is_empty());
    let r = p.renotify([&i], 600_000);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reason, AlertReason::Reminder);
    assert!(p.renotify([&i], 700_000).is_empty());
}

#[test]
fn resolve_message_only_for_alerted_incidents() {
    let mut p = policy();
    let mut i = incident(Severity::Warning);
    p.on_transition(&Transition::Opened(i.clone()), 0);
    i.resolved_at_ms = Some(32_400_000);
    let a = p
        .on_transition(&Transition::Resolved(i.clone()), 1)
        .unwrap();
    assert_eq!(
        (a.status, a.reason),
        (Status::Resolved, AlertReason::Resolved)
    );
    assert_eq!(a.resolved_at.as_deref(), Some("2025-11-12T09:00:00Z"));
    assert!(
        a.summary()
            .starts_with("[RESOLVED] pmtu_blackhole at SITE-2847: eno1 MTU")
    );
    assert!(p.on_transition(&Transition::Resolved(i), 2).is_none());
}

#[test]
fn min_severity_filters_until_escalation() {
    let mut p = policy().with_min_severity(Severity::Critical);
    assert!(
        p.on_transition(&Transition::Opened(incident(Severity::Warning)), 0)
            .is_none()
    );
    let up = Transition::Updated {
        incident: incident(Severity::Critical),
        previous: Severity::Warning,
    };
    assert_eq!(p.on_transition(&up, 1).unwrap().reason, AlertReason::Opened);
}

#[test]
fn native_and_slack_json_shapes() {
    let mut p = policy();
    let a = p
        .on_transition(&Transition::Opened(incident(Severity::Critical)), 0)
        .unwrap();
    let native = serde_json::to_value(&a).unwrap();
    for key in [
        "kind",
        "severity",
        "site",
        "started_at",
        "root_cause",
        "evidence",
        "fix",
        "runbook",
        "status",
    ] {
        assert!(native.get(key).is_some(), "missing {key}");
    }
    assert_eq!(native["kind"], "pmtu_blackhole");
    assert_eq!(native["severity"], "critical");
    assert_eq!(native["status"], "firing");
    assert_eq!(native["runbook"], "docs/runbook-pmtud.md#pmtu-blackhole");
    assert!(native.get("resolved_at").is_none());

    let slack = serde_json::to_value(a.slack()).unwrap();
    let text = slack["text"].as_str().unwrap();
    assert!(text.starts_with("[CRITICAL] pmtu_blackhole at SITE-2847: eno1 MTU changed"));
    let blocks = slack["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "section");
    assert!(blocks.iter().any(|b| {
        b["text"]["text"]
            .as_str()
            .is_some_and(|s| s.contains("ip link set eno1 mtu 1500"))
    }));
    assert_eq!(blocks.last().unwrap()["type"], "context");
}

#[test]
fn a_remediation_alerts_at_once_but_never_before_the_first_page() {
    let mut p = policy();
    let i = incident(Severity::Critical);
    assert!(p.remediated(&i, 500).is_none(), "not alerted on yet");
    p.on_transition(&Transition::Opened(i.clone()), 1_000)
        .unwrap();
    let a = p.remediated(&i, 2_000).unwrap();
    assert_eq!(a.reason, AlertReason::Remediated);
    assert_eq!(a.status, Status::Firing);
    // It counts as the latest page: no reminder right after it.
    assert!(p.renotify([&i], 2_000 + 599_000).is_empty());
    let mut over = i.clone();
    over.resolved_at_ms = Some(3_000);
    assert!(p.remediated(&over, 3_000).is_none(), "resolved");
}
