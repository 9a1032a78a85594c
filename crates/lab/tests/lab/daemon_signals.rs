//! The daemon's signals end to end in the lab's site, read back through `backhaul status`:
//! the rtnetlink watcher turns `ip link set eno1 mtu 9000` into an `mtu_drift` incident well
//! inside issue #5's 2 s target, the host-wide listener counts the gateway's frag-needed with
//! its next-hop MTU, so with ICMP allowed the verdict is `path_mtu_reduced` and never a black
//! hole, and the revert resolves the drift. (The drift lasts seconds, which the default flap
//! hold-down would hold open for 120 s in case it flaps: a short hold-down keeps this test on
//! the signals; damping has its own tests.)

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backhaul_lab::{IcmpPolicy, Lab, Node};

use super::support::backhaul;
use super::support::{Guard, lab, start_transfer};

fn config(dir: &Path) -> std::path::PathBuf {
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        format!(
            "[site]\nname = \"SITE-2847\"\n[spool]\ndir = \"{}\"\n\
             [upload]\nendpoint = \"http://203.0.113.10:9000\"\nbucket = \"video\"\n\
             credentials = \"anonymous\"\n\
             [metrics]\nlisten = \"127.0.0.1:9464\"\n\
             [monitor]\nprobe_timeout_milliseconds = 300\n\
             [diagnose]\nflap_hold_down_seconds = 8\n\
             [inventory]\ngateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\ninterfaces = [\n\
             {{ name = \"eno1\", role = \"wan\", mtu_bytes = 1500 }},\n]\n",
            spool.display()
        ),
    )
    .unwrap();
    path
}

/// The daemon's `/status` document, asked from inside the site (`None` while not answering).
fn status(lab: &Lab) -> Option<serde_json::Value> {
    let out = lab
        .command(Node::Site, backhaul().to_str().unwrap())
        .args(["status", "--url", "http://127.0.0.1:9464", "--json"])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn open_kinds(doc: &serde_json::Value) -> Vec<String> {
    doc["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls the status every 50 ms until `check` holds; returns the document and the wait.
fn wait_for(
    lab: &Lab,
    what: &str,
    patience: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < patience {
        if let Some(doc) = status(lab) {
            if check(&doc) {
                return (doc, started.elapsed());
            }
            last = Some(doc);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not true after {patience:?}; last status: {last:#?}");
}

pub fn daemon_reports_drift_at_once_and_counts_frag_needed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let lab = lab(9000, IcmpPolicy::Allow);
    let _daemon = Guard(
        lab.command(Node::Site, backhaul().to_str().unwrap())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (doc, _) = wait_for(&lab, "daemon sees eno1", Duration::from_secs(10), |d| {
        d["interfaces"][0]["mtu_bytes"] == 1500
    });
    assert_eq!(doc["link_watch"], "rtnetlink");
    assert!(
        !open_kinds(&doc).contains(&"mtu_drift".to_owned()),
        "{doc:#}"
    );

    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let (doc, drift_after) = wait_for(&lab, "mtu_drift opens", Duration::from_secs(2), |d| {
        open_kinds(d).contains(&"mtu_drift".to_owned())
    });
    // Includes starting `backhaul status` each round; issue #5's target is 2 s.
    println!("mtu_drift in /status {drift_after:?} after ip link set eno1 mtu 9000");
    let drift = doc["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "mtu_drift")
        .unwrap();
    assert!(
        drift["root_cause"]
            .as_str()
            .unwrap()
            .contains("eno1 MTU changed 1500 → 9000"),
        "{doc:#}"
    );

    // Somebody's bulk TCP meets the gateway's 1500-byte uplink; PMTUD works here.
    let _t = start_transfer(&lab, 1024 * 1024, Duration::from_secs(30));
    let (doc, _) = wait_for(
        &lab,
        "frag-needed counted and path_mtu_reduced",
        Duration::from_secs(15),
        |d| {
            d["frag_needed_total"].as_u64().unwrap() > 0
                && open_kinds(d).contains(&"path_mtu_reduced".to_owned())
        },
    );
    assert_eq!(doc["frag_needed_last_mtu_bytes"], 1500, "{doc:#}");
    assert!(
        !open_kinds(&doc).contains(&"pmtu_blackhole".to_owned()),
        "frag-needed arrives, so no black hole: {doc:#}"
    );

    lab.set_mtu(Node::Site, "eno1", 1500).unwrap();
    let (_, resolved_after) = wait_for(&lab, "revert resolves", Duration::from_secs(10), |d| {
        !open_kinds(d).contains(&"mtu_drift".to_owned())
    });
    println!("mtu_drift resolved {resolved_after:?} after the revert");
    lab.down().unwrap();
}
