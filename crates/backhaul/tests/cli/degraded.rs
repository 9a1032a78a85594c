//! Bad input for the path monitor: interface names the host does not have, and no permission
//! for raw sockets. The agent must say what it cannot see — once, clearly — and keep uploading
//! (the daemon without CAP_NET_RAW is in `daemon.rs`); `check` must never call unmeasured
//! things OK.

use std::process::{Command, Output};

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::S3Peer;

use super::support::{BUCKET, exe, is_root, site_config, without_net_raw};

/// Loopback as gateway and endpoint: probes stay on this machine.
const INVENTORY: &str = "[inventory]\ngateway = \"127.0.0.1\"\nendpoint_host = \"127.0.0.1\"\n\
     interfaces = [\n  { name = \"lo\", role = \"mgmt\", mtu_bytes = 65536 },\n";

fn probe_config(dir: &tempfile::TempDir, extra_interfaces: &str) -> String {
    let path = dir.path().join("site.toml");
    std::fs::write(
        &path,
        format!(
            "[site]\nname = \"SITE-TEST\"\n[spool]\ndir = \"{}\"\n\
             [upload]\nendpoint = \"http://127.0.0.1:9\"\nbucket = \"video\"\n\
             [metrics]\nlisten = \"off\"\n{INVENTORY}{extra_interfaces}]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The binary with neither a raw nor a ping ICMP socket. As root: in a network namespace of
/// its own (loopback up) whose `net.ipv4.ping_group_range` admits no group, without
/// CAP_NET_RAW, so the host's own range (systemd sets a wide one) cannot open a ping socket
/// behind the test's back.
fn without_icmp_sockets() -> Command {
    if !is_root() {
        return without_net_raw();
    }
    let mut c = Command::new("unshare");
    c.args(["--net", "--", "sh", "-c"])
        .arg(
            "ip link set lo up && sysctl -qw net.ipv4.ping_group_range='1 0' && \
             exec setpriv --bounding-set -net_raw --inh-caps -net_raw -- \"$0\" \"$@\"",
        )
        .arg(exe());
    c
}

#[test]
fn check_without_icmp_sockets_is_unknown_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_config(&dir, "");
    let out = without_icmp_sockets()
        .args(["check", "--config", &cfg, "--probe-timeout-ms", "200"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.starts_with("BACKHAUL UNKNOWN - "), "{text}");
    assert!(text.contains("probes not run"), "{text}");
    assert!(text.contains("CAP_NET_RAW"), "{text}");
    // The MTU half of the check still ran and reports its perfdata, in the monitoring-plugins
    // range syntax: fine only at exactly the declared MTU.
    assert!(
        text.contains("lo_mtu_bytes=65536;65536:65536;65536:65536;;"),
        "{text}"
    );

    let out = without_icmp_sockets()
        .args(["diagnose", "--config", &cfg, "--probe-timeout-ms", "200"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("verdict: unknown"), "{text}");
    assert!(!text.contains("verdict: healthy"), "{text}");
    // It could not listen for frag-needed, so it does not say none arrived.
    assert!(!text.contains("none received"), "{text}");
    assert!(
        text.contains("not listened for: the probes could not open an ICMP socket"),
        "{text}"
    );
}

#[test]
fn check_names_inventory_interfaces_this_host_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = probe_config(
        &dir,
        "  { name = \"bhx-nosuch0\", role = \"camera\", mtu_bytes = 9000 },\n",
    );
    let out = Command::new(exe())
        .args(["check", "--config", &cfg, "--probe-timeout-ms", "200"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.starts_with("BACKHAUL WARNING - "), "{text}");
    assert!(text.contains("bhx-nosuch0"), "{text}");

    let out = Command::new(exe())
        .args(["diagnose", "--config", &cfg, "--probe-timeout-ms", "200"])
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("bhx-nosuch0 (camera): not found on this host"),
        "{text}"
    );
}

/// The daemon with a misnamed interface: one line naming it at start, and every chunk still
/// uploaded and verified. (Without CAP_NET_RAW: `daemon.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_names_inventory_interfaces_this_host_lacks_and_still_uploads() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    for i in 0..3u64 {
        write_chunk(
            &spool,
            &format!("cam1/c{i}.mp4"),
            &pattern_bytes(i, 300_000),
        );
    }
    let inventory = format!(
        "{INVENTORY}  {{ name = \"bhx-nosuch0\", role = \"camera\", mtu_bytes = 9000 }},\n]\n\
         [monitor]\nprobe_interval_seconds = 1\n"
    );
    let cfg = site_config(dir.path(), &spool, &peer, &peer.endpoint(), "", &inventory);
    let out = Command::new(exe())
        .args(["run", "--drain", "--log-format", "json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let missing: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inventory interface not found"))
        .collect();
    assert_eq!(missing.len(), 1, "{log}");
    assert!(missing[0].contains("bhx-nosuch0"), "{log}");
    // `--drain` exits 0 only when every chunk was uploaded and verified.
    let verified = log
        .lines()
        .filter(|l| l.contains("chunk uploaded and verified"))
        .count();
    assert_eq!(verified, 3, "{log}");
}
