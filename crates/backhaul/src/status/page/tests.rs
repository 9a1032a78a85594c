use std::time::{Duration, Instant};

use super::*;
use crate::status::{IncidentStatus, InterfaceStatus, ProbeStatus, UploadStatus};

const HOSTILE: &str = "<script>alert('x')</script>\"&amp;<img src=x onerror=alert(1)>";

fn status() -> Status {
    Status {
        site: "SITE-7".into(),
        uptime_seconds: 4000,
        monitoring: true,
        link_watch: "rtnetlink".into(),
        incidents: vec![IncidentStatus {
            kind: "mtu_drift".into(),
            severity: "warning".into(),
            subject: "eno1".into(),
            started_at_ms: 1_762_935_303_000,
            root_cause: "eno1 MTU is 9000, declared 1500".into(),
            fix: vec![
                "ip link set eno1 mtu 1500".into(),
                "# and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml".into(),
            ],
            runbook: "https://docs.example.net/backhaul/docs/runbook-pmtud.md#mtu-drift".into(),
            evidence: vec![
                "08:15:03 eno1 MTU 1500 → 9000".into(),
                "no time here".into(),
            ],
        }],
        interfaces: vec![
            InterfaceStatus {
                name: "eno1".into(),
                role: "wan".into(),
                declared_mtu_bytes: 1500,
                mtu_bytes: Some(9000),
                up: Some(true),
            },
            InterfaceStatus {
                name: "eno2".into(),
                role: "camera".into(),
                declared_mtu_bytes: 9000,
                mtu_bytes: Some(9000),
                up: Some(true),
            },
        ],
        probes: vec![ProbeStatus {
            target: "gateway".into(),
            address: Some("192.0.2.1".into()),
            at_ms: 1_762_935_310_000,
            small_ok: Some(true),
            large_size_bytes: 1500,
            large_ok: Some(false),
            path_mtu_bytes: Some(1400),
            note: None,
        }],
        upload: UploadStatus {
            goodput_mbps_10s: 43.2,
            goodput_mbps_60s: 40.0,
            uploaded_chunks_total: 12,
            backlog_chunks: 14,
            backlog_bytes: 1_100_000_000,
            oldest_chunk_age_seconds: 300.0,
            bandwidth_limit_bytes_per_second: Some(2_500_000),
            disk_used_percent: 61.0,
            disk_full_projected_seconds: None,
            store_integrity: None,
            verification: None,
            credentials: Some(crate::status::CredentialsView {
                setting: "chain".into(),
                source: Some("credential_process of profile site".into()),
                access_key_id: Some("ASIAEXAMPLE".into()),
                expires_in_seconds: Some(2400),
                last_error: None,
            }),
            clock_skew_seconds: 0.0,
        },
        frag_needed_total: 0,
        frag_needed_last_mtu_bytes: None,
        alerts_undelivered: 0,
        vpn_children: vec![crate::status::VpnChildStatus {
            ike: "site-to-dc".into(),
            name: "net".into(),
            state: "INSTALLED".into(),
            proposal: "ESP AES_GCM_16 over UDP: 62 B".into(),
            remote_ts: vec!["203.0.113.128/26".into()],
            bytes_in: 1200,
            bytes_out: 98000,
            packets_in: 10,
            packets_out: 70,
            use_in_seconds: Some(3),
            use_out_seconds: None,
        }],
        vpn: "up: site-to-dc (0 flaps)".into(),
        mss_clamp: None,
        remediation: None,
    }
}

fn samples(now: Instant, n: u64) -> Vec<Sample> {
    (0..n)
        .map(|i| Sample {
            at: now - Duration::from_secs((n - 1 - i) * 10),
            goodput_mbps: 40.0 + i as f64,
            backlog_chunks: 14.0,
            backlog_bytes: 1.1e9,
            disk_used_percent: 61.0,
        })
        .collect()
}

const NOW_MS: u64 = 1_762_935_320_000;

#[test]
fn the_page_shows_incident_fix_evidence_interfaces_probes_vpn_and_four_charts() {
    let now = Instant::now();
    let page = render(&status(), &samples(now, 5), now, NOW_MS);
    assert!(
        page.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{page}"
    );
    assert!(page.contains("<meta name=\"viewport\" content=\"width=device-width"));
    assert!(page.contains("<noscript><meta http-equiv=\"refresh\" content=\"10\"></noscript>"));
    assert!(page.contains("<title>backhaul · SITE-7 · WARNING mtu_drift on eno1</title>"));
    assert!(
        page.contains("<span class=\"kind\">mtu_drift</span>"),
        "{page}"
    );
    assert!(page.contains("<p class=\"cause\">eno1 MTU is 9000, declared 1500</p>"));
    assert!(page.contains("since 08:15:03 UTC (17 s ago)"), "{page}");
    assert!(
        page.contains("<pre><code id=\"fix-0-0\">ip link set eno1 mtu 1500</code></pre>"),
        "{page}"
    );
    assert!(page.contains("data-copy=\"fix-0-0\""));
    // Prose is prose: no box to copy, and the runbook is a link.
    assert!(page.contains(
        "<p class=\"note\">and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml</p>"
    ));
    assert!(!page.contains("data-copy=\"fix-0-1\""));
    assert!(page.contains(
        "runbook: <a href=\"https://docs.example.net/backhaul/docs/runbook-pmtud.md#mtu-drift\">"
    ));
    assert!(page.contains("<li><time>08:15:03</time> eno1 MTU 1500 → 9000</li>"));
    assert!(page.contains("<li>no time here</li>"));
    assert!(page.contains("<tr class=\"drift\"><td data-label=\"interface\">eno1</td>"));
    assert!(page.contains("<td data-label=\"interface\">eno2</td>"));
    assert_eq!(page.matches("differs from declared").count(), 1);
    assert!(
        page.contains("<td data-label=\"path MTU\">1400 bytes</td>"),
        "{page}"
    );
    assert!(page.contains("1500 bytes lost"));
    assert!(page.contains("<p>up: site-to-dc (0 flaps)</p>"));
    assert!(
        page.contains(
            "<li>site-to-dc/net INSTALLED (ESP AES_GCM_16 over UDP: 62 B) → 203.0.113.128/26: \
             in 1200 B/10 pkts, last 3 s ago; out 98000 B/70 pkts, never</li>"
        ),
        "{page}"
    );
    assert!(page.contains("14 chunks") && page.contains("1.1 GB, oldest 5 min"));
    assert!(page.contains("44 Mbit/s now"), "the latest sample: {page}");
    assert!(
        page.contains(
            "<p>credentials: credential_process of profile site (upload.credentials = &quot;chain&quot;), key ASIAEXAMPLE, expire in 40 min</p>"
        ),
        "{page}"
    );
    for id in ["goodput", "backlog-chunks", "backlog-bytes", "disk"] {
        let at = page
            .find(&format!("<svg class=\"chart chart-{id}\""))
            .unwrap_or_else(|| panic!("chart {id}: {page}"));
        let svg = &page[at..at + page[at..].find("</svg>").unwrap()];
        assert!(svg.contains("<polyline class=\"line\" points=\""), "{svg}");
    }
    assert!(page.ends_with("</html>\n"));
}

#[test]
fn nothing_is_loaded_from_elsewhere() {
    let now = Instant::now();
    let page = render(&status(), &samples(now, 3), now, NOW_MS);
    assert!(!page.contains(" src="), "no external scripts or images");
    assert!(
        !page.contains("@import") && !page.contains("url("),
        "no external CSS"
    );
    assert!(!page.contains("<link rel=\"stylesheet\""));
    for (at, _) in page.match_indices("href=\"") {
        let target = &page[at + 6..at + 6 + page[at + 6..].find('"').unwrap()];
        // A link the operator follows (the runbook) loads nothing by itself.
        let element = &page[page[..at].rfind('<').unwrap()..at];
        assert!(
            target.starts_with('/') || target == "data:," || element.starts_with("<a "),
            "only this agent's own paths: {target}"
        );
    }
}

#[test]
fn strings_from_config_and_incidents_are_escaped() {
    let mut s = status();
    s.site = HOSTILE.into();
    s.vpn = HOSTILE.into();
    s.vpn_children[0].name = HOSTILE.into();
    s.link_watch = HOSTILE.into();
    let i = &mut s.incidents[0];
    i.kind = HOSTILE.into();
    i.severity = HOSTILE.into();
    i.subject = HOSTILE.into();
    i.root_cause = HOSTILE.into();
    i.fix = vec![HOSTILE.into()];
    i.runbook = HOSTILE.into();
    i.evidence = vec![format!("08:15:03 {HOSTILE}"), HOSTILE.into()];
    s.interfaces[0].name = HOSTILE.into();
    s.interfaces[0].role = HOSTILE.into();
    s.probes[0].target = HOSTILE.into();
    s.probes[0].address = Some(HOSTILE.into());
    s.probes[0].note = Some(HOSTILE.into());
    let now = Instant::now();
    let page = render(&s, &samples(now, 2), now, NOW_MS);
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(!page.contains("<img"), "{page}");
    assert!(!page.contains("'x'"), "{page}");
    let escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;amp;&lt;img src=x \
                   onerror=alert(1)&gt;";
    // The site and the verdict's kind and subject in the title and the header (6); the
    // incident's kind, severity, subject, cause, fix, runbook and two evidence lines (8); the
    // interface's name and role, the link watch, the probe's target, address and note, the
    // VPN and its CHILD_SA (8). (The verdict's upper-cased severity is escaped too, but reads
    // differently.)
    assert_eq!(page.matches(escaped).count(), 22, "{page}");
    // The only script is the page's own, and it is the last thing in the body.
    assert_eq!(page.matches("<script>").count(), 1);
    assert!(page.contains("</script>\n</body>"));
    // An unknown severity never becomes a class name.
    assert!(
        page.contains("<article class=\"incident unknown\">"),
        "{page}"
    );
}

#[test]
fn escape_covers_the_five_characters() {
    assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    assert_eq!(
        escape("ip link set eno1 mtu 1500"),
        "ip link set eno1 mtu 1500"
    );
    assert_eq!(escape("→ ü"), "→ ü");
}

#[test]
fn a_fresh_agent_without_inventory_says_what_it_does_not_watch() {
    let mut s = status();
    s.monitoring = false;
    s.incidents.clear();
    s.interfaces.clear();
    s.probes.clear();
    let now = Instant::now();
    let page = render(&s, &[], now, NOW_MS);
    assert!(page.contains(
        "<p class=\"verdict unknown\" id=\"verdict\">uploading (path monitoring off: no [inventory])</p>"
    ));
    assert!(page.contains("Open incidents (0)"));
    assert!(page.contains("The path rules are off (no <code>[inventory]</code> in the config)"));
    assert!(page.contains("No interfaces declared"));
    assert!(page.contains("Not probed: the path rules are off"));
    assert_eq!(page.matches("no samples yet").count(), 4);
    assert_eq!(page.matches("– now").count(), 4, "{page}");
    assert!(!page.contains("<polyline"));
}

#[test]
fn a_healthy_agent_says_healthy() {
    let mut s = status();
    s.incidents.clear();
    let now = Instant::now();
    let page = render(&s, &samples(now, 1), now, NOW_MS);
    assert!(page.contains("<p class=\"verdict ok\" id=\"verdict\">healthy</p>"));
    assert!(page.contains("None: the path monitor sees nothing wrong."));
}

#[test]
fn the_script_reloads_at_the_sampling_interval() {
    assert!(SCRIPT.contains(&format!("}},{});", SAMPLE_EVERY.as_millis())));
}

#[test]
fn figures_are_compact() {
    assert_eq!(number(0.0), "0");
    assert_eq!(number(2.5), "2.5");
    assert_eq!(number(0.25), "0.25");
    assert_eq!(number(43.21), "43");
    assert_eq!(number(f64::NAN), "0");
    assert_eq!(human_bytes(0.0), "0 B");
    assert_eq!(human_bytes(999.0), "999 B");
    assert_eq!(human_bytes(1e6), "1 MB");
    assert_eq!(human_bytes(1.1e9), "1.1 GB");
    assert_eq!(human_bytes(5e12), "5 TB");
    assert_eq!(split_time("08:15:03 x y"), Some(("08:15:03", "x y")));
    assert_eq!(split_time("8:15:03 x"), None);
    assert_eq!(split_time("ab:cd:ef x"), None);
}

/// `backhaul status` in units a person reads, with when the backlog drains and the limit in
/// force: 1.1 GB at 40 Mbit/s is 220 s.
#[test]
fn the_human_summary_has_units_a_drain_time_and_the_limit() {
    let text = status().human();
    assert!(
        text.contains("backlog: 14 chunks (1.1 GB), oldest 5 min, about 3 min to drain at the last minute's goodput"),
        "{text}"
    );
    assert!(
        text.contains("12 chunks uploaded, limited to 20.0 Mbit/s now (upload.bandwidth_limit)"),
        "{text}"
    );
    let mut one = status();
    one.upload.uploaded_chunks_total = 1;
    one.upload.goodput_mbps_60s = 0.0;
    one.upload.bandwidth_limit_bytes_per_second = None;
    let text = one.human();
    assert!(text.contains("1 chunk uploaded\n"), "{text}");
    assert!(
        text.contains("not draining (nothing acknowledged in the last minute)"),
        "{text}"
    );
}
