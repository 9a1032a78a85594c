//! `backhaul diagnose` and `backhaul check` run inside the lab's site: the one-shot runbook must
//! name the black hole, its interface and the fix, tell PMTUD-working apart from it, and say
//! healthy after the revert.

use std::path::PathBuf;
use std::process::{Command, Output};

use backhaul_lab::{IcmpPolicy, Lab, Node};

use super::support::{backhaul, lab};

fn site_config(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("site.toml");
    std::fs::write(
        &path,
        "[site]\nname = \"SITE-2847\"\n[spool]\ndir = \"/tmp\"\n\
         [upload]\nendpoint = \"http://203.0.113.10:9000\"\nbucket = \"video\"\n\
         [metrics]\nlisten = \"off\"\n\
         [inventory]\ngateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\ninterfaces = [\n\
         { name = \"eno1\", role = \"wan\", mtu_bytes = 1500, netplan_file = \"/etc/netplan/01-wan.yaml\" },\n\
         { name = \"eno2\", role = \"camera\", mtu_bytes = 1500 },\n]\n",
    )
    .unwrap();
    path
}

fn run_in_site(lab: &Lab, args: &[&str], config: &std::path::Path) -> (Output, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("{}-site", lab.prefix())])
        .arg(backhaul())
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--probe-timeout-ms", "300"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, stdout)
}

pub fn diagnose_names_the_black_hole_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = site_config(&dir);
    let lab = lab(1500, IcmpPolicy::Block);
    let (out, text) = run_in_site(&lab, &["check"], &config);
    assert_eq!(out.status.code(), Some(0), "healthy site: {text}");
    assert!(text.starts_with("BACKHAUL OK - "), "{text}");

    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let (out, text) = run_in_site(&lab, &["diagnose"], &config);
    assert!(out.status.code().is_some_and(|c| c >= 1), "{text}");
    assert!(
        text.contains("verdict: pmtu_blackhole")
            && text.contains("eno1 MTU 9000; declared 1500; path MTU to gateway 1500; large packets dropped without ICMP"),
        "{text}"
    );
    assert!(text.contains("fix: ip link set eno1 mtu 1500"), "{text}");
    // The runbook as the alerts give it: a link under monitor.runbook_base_url.
    assert!(
        text.lines().any(|l| l.starts_with("  runbook: https://")
            && l.ends_with("/blob/main/docs/runbook-pmtud.md#pmtu-blackhole")),
        "{text}"
    );
    assert!(
        text.contains(
            "fix: # and across reboots: set mtu: 1500 for eno1 in /etc/netplan/01-wan.yaml"
        ),
        "{text}"
    );
    let (out, text) = run_in_site(&lab, &["check"], &config);
    assert!(out.status.code().is_some_and(|c| c >= 1), "{text}");
    assert!(
        text.contains("pmtu_blackhole") && text.contains("large_probe_gateway_ok=0"),
        "{text}"
    );

    lab.set_mtu(Node::Site, "eno1", 1500).unwrap();
    let (out, text) = run_in_site(&lab, &["diagnose"], &config);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("verdict: healthy"), "{text}");
    lab.down().unwrap();
}

pub fn diagnose_tells_pmtud_working_from_a_black_hole() {
    let dir = tempfile::tempdir().unwrap();
    let config = site_config(&dir);
    let lab = lab(9000, IcmpPolicy::Allow);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let (_, text) = run_in_site(&lab, &["diagnose"], &config);
    assert!(!text.contains("verdict: pmtu_blackhole"), "{text}");
    assert!(text.contains("next-hop MTU 1500 (PMTUD works)"), "{text}");
    lab.down().unwrap();
}

/// An unprivileged monitoring user (nobody, without CAP_NET_RAW) probes over ICMP ping sockets
/// where `net.ipv4.ping_group_range` lets its group: `check` passes on a healthy path and
/// `diagnose` reads the gateway's frag-needed from the socket's error queue. Where the range
/// leaves the group out, `check` is UNKNOWN and names the sysctl and the group.
pub fn check_and_diagnose_probe_over_ping_sockets_as_an_unprivileged_user() {
    let dir = tempfile::tempdir().unwrap();
    let config = site_config(&dir);
    let open = |p: &std::path::Path, mode| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir.path(), 0o755);
    open(&config, 0o644);
    let lab = lab(9000, IcmpPolicy::Allow);
    let as_nobody = |range: &str, args: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{}-site", lab.prefix())])
            .args(["sh", "-c"])
            .arg(format!(
                "sysctl -qw net.ipv4.ping_group_range='{range}' && \
                 exec setpriv --reuid 65534 --regid 65534 --clear-groups -- {} {args} \
                 --config {} --probe-timeout-ms 300",
                backhaul().display(),
                config.display()
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), text)
    };
    let (code, text) = as_nobody("65534 65534", "check");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("full-size probes pass toward gateway and endpoint"),
        "{text}"
    );

    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let (_, text) = as_nobody("65534 65534", "diagnose");
    assert!(
        text.contains("from 192.0.2.1, next-hop MTU 1500 (PMTUD works)"),
        "{text}"
    );
    assert!(!text.contains("verdict: pmtu_blackhole"), "{text}");

    lab.set_mtu(Node::Site, "eno1", 1500).unwrap();
    let (code, text) = as_nobody("1 0", "check");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("net.ipv4.ping_group_range \"1 0\" refuses to group 65534")
            && text.contains("sysctl -w net.ipv4.ping_group_range=\"65534 65534\""),
        "{text}"
    );
    lab.down().unwrap();
}

/// Runs `scenarios/<name>.toml` with backhaul as the uploader at `time_scale`, asserts that
/// `lab run` passed the scenario's own assertions, and returns its `summary.json` with each
/// alert body parsed.
pub fn run_scenario(name: &str, time_scale: &str) -> (serde_json::Value, Vec<serde_json::Value>) {
    let out_dir = tempfile::tempdir().unwrap();
    let (summary, alerts, _) = run_scenario_in(name, time_scale, out_dir.path());
    (summary, alerts)
}

/// [`run_scenario`] with its reports in `out_dir`; also returns the run's directory.
pub fn run_scenario_in(
    name: &str,
    time_scale: &str,
    out_dir: &std::path::Path,
) -> (serde_json::Value, Vec<serde_json::Value>, PathBuf) {
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{name}.toml"));
    let out = Command::new(backhaul())
        .args(["lab", "run"])
        .arg(&scenario)
        .args([
            "--uploader",
            "backhaul",
            "--time-scale",
            time_scale,
            "--out-dir",
        ])
        .arg(out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run_dir = std::fs::read_dir(out_dir)
        .unwrap()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}-backhaul"))
        })
        .unwrap()
        .path();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    let alerts = summary["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| serde_json::from_str(a["body"].as_str().unwrap()).unwrap())
        .collect();
    (summary, alerts, run_dir)
}

/// The daemon end to end: during a short black hole the agent loses nothing, POSTs a
/// `pmtu_blackhole` alert naming eno1 and the fix, resolves it after the revert, and keeps
/// uploading through the fault on clamped connections (the scenario bounds the longest stretch
/// with a backlog and nothing on the WAN; without the clamp it is the whole 480 s fault).
pub fn daemon_alerts_on_the_black_hole_and_resolves_after_the_revert() {
    let (summary, alerts) = run_scenario("blackhole-short", "0.02");
    assert!(
        alerts.iter().any(|a| a["kind"] == "pmtu_blackhole"
            && a["status"] == "firing"
            && a["root_cause"]
                .as_str()
                .unwrap()
                .contains("clamped to MSS 1460")),
        "{alerts:#?}"
    );
    let (before, during) = (
        summary["busy_wire_mbps"][0].as_f64().unwrap(),
        summary["busy_wire_mbps"][1].as_f64().unwrap(),
    );
    println!(
        "blackhole-short: WAN while busy {before:.1} Mbit/s before, {during:.1} during the black hole"
    );
    let blackhole: Vec<&serde_json::Value> = alerts
        .iter()
        .filter(|a| a["kind"] == "pmtu_blackhole")
        .collect();
    assert!(
        blackhole.iter().any(|a| a["status"] == "firing"
            && a["root_cause"]
                .as_str()
                .unwrap()
                .starts_with("eno1 MTU changed 1500 → 9000")
            && a["fix"][0] == "ip link set eno1 mtu 1500"),
        "{alerts:#?}"
    );
    assert!(
        blackhole.iter().any(|a| a["status"] == "resolved"),
        "{alerts:#?}"
    );
}

/// Issue #12's opt-in remediation end to end: with another application's bulk TCP on the site,
/// the agent acts once the black hole is named, says so in a `remediated` alert, and the other
/// application's longest stall stays far below the fault (the scenario bounds it). Returns the
/// `remediated` alert's root cause.
fn remediated(name: &str) -> String {
    let (summary, alerts) = run_scenario(name, "0.05");
    println!(
        "{name}: bystander's longest stall {} scenario s",
        summary["bystander_gap_seconds"]
    );
    let kinds: Vec<(&str, &str)> = alerts
        .iter()
        .filter(|a| a["kind"] == "pmtu_blackhole")
        .map(|a| (a["reason"].as_str().unwrap(), a["status"].as_str().unwrap()))
        .collect();
    let (opened, acted) = (
        kinds.iter().position(|k| *k == ("opened", "firing")),
        kinds.iter().position(|k| *k == ("remediated", "firing")),
    );
    assert!(opened.zip(acted).is_some_and(|(o, a)| o < a), "{alerts:#?}");
    assert_eq!(kinds.last(), Some(&("resolved", "resolved")), "{alerts:#?}");
    alerts
        .iter()
        .find(|a| a["reason"] == "remediated")
        .and_then(|a| a["root_cause"].as_str())
        .unwrap()
        .to_owned()
}

pub fn daemon_remediates_the_black_hole_with_a_route_mtu() {
    let cause = remediated("remediate-route-short");
    assert!(
        cause.contains("remediated at ") && cause.contains(": route MTU 1500 on "),
        "{cause}"
    );
}

pub fn daemon_remediates_the_black_hole_by_restoring_the_declared_mtu() {
    let cause = remediated("remediate-restore-short");
    assert!(
        cause.contains("remediated at ") && cause.contains(": ip link set dev eno1 mtu 1500"),
        "{cause}"
    );
}

/// The same change where ICMP "fragmentation needed" gets back: the daemon says
/// `path_mtu_reduced` (and `mtu_drift`), never `pmtu_blackhole`; the scenario asserts the
/// timing and that no wrong-cause alert fired.
pub fn daemon_classifies_pmtud_working_as_path_mtu_reduced() {
    let (summary, alerts) = run_scenario("pmtud-working", "0.05");
    assert_eq!(summary["wrong_cause_alerts"], 0, "{alerts:#?}");
    let reduced = alerts
        .iter()
        .find(|a| a["kind"] == "path_mtu_reduced" && a["status"] == "firing")
        .unwrap_or_else(|| panic!("no path_mtu_reduced alert: {alerts:#?}"));
    assert!(
        reduced["root_cause"].as_str().unwrap().contains("eno1"),
        "{reduced:#}"
    );
    assert!(
        alerts.iter().all(|a| a["kind"] != "pmtu_blackhole"),
        "{alerts:#?}"
    );
}

/// Ten scenario minutes of 1 % loss and jitter with no fault: not one alert (the scenario
/// asserts `alerts_fired` = 0 and nothing lost).
pub fn daemon_stays_quiet_on_a_healthy_lossy_uplink() {
    let (summary, alerts) = run_scenario("healthy-loss", "0.1");
    assert_eq!(summary["alerts_fired"], 0, "{alerts:#?}");
    assert_eq!(summary["chunks_lost"], 0);
    // The wire really was lossy: the run tested what it claims to.
    let dropped: u64 = summary["wire"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|link| link.as_object().unwrap().values())
        .map(|direction| direction["dropped_loss"].as_u64().unwrap())
        .sum();
    assert!(dropped > 0, "{:#}", summary["wire"]);
}

/// A gateway that answers no ping at all (ICMP echo dropped by policy) is not judged: the
/// check stays OK on the endpoint's probes and says so, and the black hole is still found
/// through the endpoint.
pub fn diagnose_copes_with_a_gateway_that_answers_no_ping() {
    let dir = tempfile::tempdir().unwrap();
    let config = site_config(&dir);
    let lab = lab(1500, IcmpPolicy::Block);
    lab.exec(
        Node::Gw,
        "nft",
        &["add table inet bhtest; \
           add chain inet bhtest in { type filter hook input priority 0; }; \
           add rule inet bhtest in icmp type echo-request drop"],
    )
    .unwrap();
    let (out, text) = run_in_site(&lab, &["check"], &config);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("full-size probes pass toward endpoint")
            && text.contains("gateway 192.0.2.1 answers no ping"),
        "{text}"
    );

    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let (out, text) = run_in_site(&lab, &["diagnose"], &config);
    assert!(out.status.code().is_some_and(|c| c >= 1), "{text}");
    assert!(
        text.contains("verdict: pmtu_blackhole") && text.contains("path MTU to endpoint 1500"),
        "{text}"
    );
    lab.down().unwrap();
}
