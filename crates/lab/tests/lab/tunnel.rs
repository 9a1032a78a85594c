//! The incident's real path: uploads inside a strongSwan IPsec tunnel (kernel-libipsec, ESP in
//! UDP 4500) between the lab's site and cloud, S3 and the webhook on the cloud's inner address.
//! Both models of the tunnel MTU, time-scaled: the 2025-11-12 change with the tunnel following
//! eno1 as xfrm does, and libipsec's stock device behind a hop that shrinks under it. The agent
//! must keep uploading (the scenarios bound the longest stretch with nothing on the WAN), name
//! the black hole with the tunnel in its cause, and resolve it after the revert.

use super::diagnose::{run_scenario, run_scenario_in};

fn firing_blackhole(alerts: &[serde_json::Value]) -> Vec<String> {
    alerts
        .iter()
        .filter(|a| a["kind"] == "pmtu_blackhole" && a["status"] == "firing")
        .map(|a| a["root_cause"].as_str().unwrap().to_owned())
        .collect()
}

fn resolved(alerts: &[serde_json::Value]) -> bool {
    alerts
        .iter()
        .any(|a| a["kind"] == "pmtu_blackhole" && a["status"] == "resolved")
}

pub fn follow_wan_black_hole_is_clamped_inside_the_tunnel_and_named() {
    if let Err(e) = backhaul_lab::vpn::patched_plugin() {
        println!("SKIP vpn follow-wan: the kernel-libipsec plugin cannot be built here: {e}");
        return;
    }
    let (summary, alerts) = run_scenario("vpn-follow-wan-short", "0.02");
    let causes = firing_blackhole(&alerts);
    assert!(
        causes
            .iter()
            .any(|c| c.starts_with("eno1 MTU changed 1500 → 9000")
                && c.contains("ESP AES_GCM_16 over UDP: 62 B")
                && c.contains("clamped to MSS 1398")),
        "{alerts:#?}"
    );
    assert!(resolved(&alerts), "{alerts:#?}");
    println!(
        "vpn-follow-wan-short: WAN while busy {} Mbit/s before, {} during the fault",
        summary["busy_wire_mbps"][0], summary["busy_wire_mbps"][1]
    );
}

pub fn esp_larger_than_the_path_is_found_by_probes_through_the_tunnel() {
    let (summary, alerts) = run_scenario("vpn-stock-path-shrink-short", "0.02");
    let causes = firing_blackhole(&alerts);
    // Whichever target's search reported first (the gateway's outer 1450 or the endpoint's
    // inner 1386), the cause names the tunnel and no interface change.
    assert!(
        causes
            .iter()
            .any(|c| c.contains("ESP AES_GCM_16 over UDP: 62 B") && !c.contains("MTU changed")),
        "{alerts:#?}"
    );
    assert!(
        alerts.iter().any(|a| a["kind"] == "pmtu_blackhole"
            && a["status"] == "firing"
            && a["fix"][0].as_str().unwrap().ends_with("--set-mss 1346")),
        "{alerts:#?}"
    );
    assert!(resolved(&alerts), "{alerts:#?}");
    let esp = summary["wire"]["lan"]["a_to_b"]["dropped_oversize_esp"]
        .as_u64()
        .unwrap();
    assert!(esp > 0, "the wire dropped no ESP: {summary:#}");
}

/// Every drop of the tunnel counts, the quick ones too: charon's log says how many times the
/// site's IKE SA was established; every establishment after the first follows a drop, and the
/// agent's count of drops (its "VPN state" lines) must be exactly that.
pub fn every_tunnel_drop_is_counted_from_charons_events() {
    let out = tempfile::tempdir().unwrap();
    let (_, _, run) = run_scenario_in("vpn-flaps-short", "0.02", out.path());
    let charon = std::fs::read_to_string(run.join("vpn/site/charon.log")).unwrap();
    let established = charon
        .lines()
        .filter(|l| l.contains("IKE_SA") && l.contains("established between"))
        .count();
    let log = std::fs::read_to_string(run.join("uploader.log")).unwrap();
    let flaps = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "VPN state")
        .filter_map(|v| v["flaps"].as_u64())
        .max()
        .unwrap_or(0);
    println!(
        "vpn-flaps-short: charon established the IKE SA {established} times, the agent counted {flaps} drops"
    );
    assert!(established >= 3, "down/up and a killed charon: {charon}");
    assert_eq!(flaps as usize, established - 1, "{log}");
}

/// `route-mtu` inside the tunnel: the inner path MTU goes on the tunnel device's route in
/// strongSwan's table 220 (eno1's routes carry ESP, which is not what is too big), and comes off
/// once eno1 is back at its declared MTU.
pub fn route_mtu_remediation_goes_on_the_tunnels_routes() {
    if let Err(e) = backhaul_lab::vpn::patched_plugin() {
        println!("SKIP vpn route-mtu: the kernel-libipsec plugin cannot be built here: {e}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let (_, alerts, run) = run_scenario_in("vpn-remediate-route-short", "0.05", out.path());
    let remediated: Vec<&str> = alerts
        .iter()
        .filter(|a| a["reason"] == "remediated")
        .filter_map(|a| a["root_cause"].as_str())
        .collect();
    assert!(
        remediated
            .iter()
            .any(|c| c.contains("route MTU 1438 on 1 route(s) of ipsec0 (table 220)")),
        "{alerts:#?}"
    );
    let log = std::fs::read_to_string(run.join("uploader.log")).unwrap();
    assert!(
        log.contains("route MTU 1438 on 1 route(s) of ipsec0 (table 220) taken off"),
        "{log}"
    );
}
