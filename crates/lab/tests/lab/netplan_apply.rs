//! `backhaul netplan apply --verify` inside the lab's site (issue 6 part 2): a bad change that
//! slips past the check is rolled back within the verify window and the rollback is proven in
//! the kernel and on the wire; the intended change is kept; killing the operator's whole
//! foreground job does not stop the rollback, and a second apply meanwhile is refused. Inside
//! a strongSwan tunnel whose MTU follows eno1 (as xfrm's does), the same change is rolled back
//! by the endpoint's probe at the tunnel's full inner size.
//!
//! The site's netplan root is a temp directory describing the lab (eno1 WAN with its address
//! and default route, eno2 camera). eno1 has no `mtu:` at all, as on many hosts: re-applying
//! the old file cannot bring 1500 back, only the explicit kernel restore can.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use backhaul_lab::scenario::{InnerMtu, VpnConfig, VpnKind};
use backhaul_lab::vpn::{CLOUD_INNER_ADDR, SITE_INNER_ADDR, Tunnel};
use backhaul_lab::{IcmpPolicy, Lab, Node};

use super::support::{assert_eventually, backhaul, lab};

const SITE_YAML: &str = "network:\n  version: 2\n  renderer: networkd\n  ethernets:\n    eno1:\n      addresses: [192.0.2.2/24]\n      routes:\n        - to: default\n          via: 192.0.2.1\n    eno2:\n      addresses: [198.51.100.1/24]\n";

/// The 2025-11-12 change, and an inventory that wrongly claims the upstream carries 9000: the
/// check has no reason to block it, so only the post-change test can catch it.
const WRONG_INVENTORY: &str = "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\npath_mtu_bytes = 9000\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 9000\n[[interfaces]]\nname = \"eno2\"\nrole = \"camera\"\nmtu_bytes = 9000\n";
/// The same wrong claim for a site whose uploads ride the tunnel to the cloud's inner address.
const WRONG_TUNNEL_INVENTORY: &str = "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.129\"\npath_mtu_bytes = 9000\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 9000\n[[interfaces]]\nname = \"eno2\"\nrole = \"camera\"\nmtu_bytes = 9000\n";
const INVENTORY: &str = "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\npath_mtu_bytes = 1500\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 1500\n[[interfaces]]\nname = \"eno2\"\nrole = \"camera\"\nmtu_bytes = 9000\n";

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("root/etc/netplan");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("50-site.yaml"), SITE_YAML).unwrap();
        std::fs::write(dir.path().join("wrong-inventory.toml"), WRONG_INVENTORY).unwrap();
        std::fs::write(dir.path().join("inventory.toml"), INVENTORY).unwrap();
        std::fs::write(
            dir.path().join("wrong-tunnel-inventory.toml"),
            WRONG_TUNNEL_INVENTORY,
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn propose(&self, iface: &str) -> PathBuf {
        let anchor = match iface {
            "eno1" => "      addresses: [192.0.2.2/24]\n",
            _ => "      addresses: [198.51.100.1/24]\n",
        };
        let text = SITE_YAML.replace(anchor, &format!("{anchor}      mtu: 9000\n"));
        let p = self.path("change/50-site.yaml");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn installed(&self) -> String {
        std::fs::read_to_string(self.path("root/etc/netplan/50-site.yaml")).unwrap()
    }

    /// `backhaul netplan apply` inside the site, not yet started.
    fn apply(
        &self,
        lab: &Lab,
        proposed: &Path,
        intent: &str,
        inventory: &str,
        verify: &str,
    ) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}-site", lab.prefix())])
            .arg(backhaul())
            .args(["netplan", "apply"])
            .arg(proposed)
            .arg("--root")
            .arg(self.path("root"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--inventory")
            .arg(self.path(inventory))
            .args([
                "--intent",
                intent,
                "--applier",
                "ip-link",
                "--verify",
                verify,
            ])
            .args([
                "--verify-interval",
                "1s",
                "--settle",
                "1s",
                "--fail-after",
                "3",
            ])
            .args(["--probe-timeout-ms", "300"]);
        c
    }

    fn report(&self) -> serde_json::Value {
        let run = std::fs::read_dir(self.path("state"))
            .unwrap()
            .flatten()
            .find(|e| e.path().is_dir())
            .unwrap()
            .path();
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap()
    }
}

fn mtu(lab: &Lab, iface: &str) -> u32 {
    lab.exec(Node::Site, "cat", &[&format!("/sys/class/net/{iface}/mtu")])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A full-size inner packet with DF through the tunnel (ipsec0 at `inner_mtu` bytes) gets an
/// answer from the cloud's inner address.
fn large_ping_through_the_tunnel(lab: &Lab, inner_mtu: u32) -> bool {
    let payload = (inner_mtu - 28).to_string();
    let args = [
        "-c",
        "2",
        "-W",
        "1",
        "-i",
        "0.2",
        "-M",
        "do",
        "-s",
        &payload,
        "-I",
        SITE_INNER_ADDR,
        CLOUD_INNER_ADDR,
    ];
    lab.command(Node::Site, "ping")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A full-size packet with DF from the site to the cloud gets an answer.
fn large_ping(lab: &Lab) -> bool {
    super::support::ping(lab, &["-M", "do", "-s", "1472"])
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn bad_change_that_slips_past_the_check_is_rolled_back_and_proven() {
    let site = Site::new();
    let lab = lab(1500, IcmpPolicy::Block);
    assert!(large_ping(&lab));
    let proposed = site.propose("eno1");
    let started = Instant::now();
    let out = site
        .apply(
            &lab,
            &proposed,
            "eno1.mtu=9000",
            "wrong-inventory.toml",
            "20s",
        )
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(
        text.contains("eno1 (wan): mtu unset → 9000\nverdict: pass"),
        "{text}"
    );
    assert!(text.contains("ROLLED BACK"), "{text}");
    assert!(
        text.contains("reason: 3 verify rounds in a row worse than the baseline: large 9000 B to gateway 192.0.2.1: FAILED (lost) (passed at 1500 B before the change)"),
        "{text}"
    );
    // Proven independently of the report: the kernel, the wire and the file.
    assert_eq!(mtu(&lab, "eno1"), 1500);
    assert!(large_ping(&lab), "large DF ping after the rollback");
    assert_eq!(site.installed(), SITE_YAML);
    let report = site.report();
    assert_eq!(report["outcome"], "rolled-back");
    assert_eq!(report["kernel_after_apply"][0]["mtu_bytes"], 9000);
    assert_eq!(report["kernel_after_rollback"], report["kernel_before"]);
    let applied = report["applied_at_ms"].as_u64().unwrap();
    let failed = report["failed_at_ms"].as_u64().unwrap();
    let rolled_back = report["rolled_back_at_ms"].as_u64().unwrap();
    assert!(
        failed - applied < 20_000,
        "failed {failed} ms, applied {applied} ms"
    );
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    println!(
        "    netplan apply (bad change): failure decided {} ms after apply, rollback proven {} ms after apply, whole run {} ms",
        failed - applied,
        rolled_back - applied,
        elapsed.as_millis()
    );
    assert!(!site.path("state/pending.json").exists());
    lab.down().unwrap();
}

pub fn bad_change_is_rolled_back_by_the_probe_through_a_follow_wan_tunnel() {
    if let Err(e) = backhaul_lab::vpn::patched_plugin() {
        println!(
            "SKIP netplan apply in a follow-wan tunnel: the kernel-libipsec plugin cannot be built here: {e}"
        );
        return;
    }
    let site = Site::new();
    let mut lab = lab(1500, IcmpPolicy::Block);
    let cfg = VpnConfig {
        kind: VpnKind::Strongswan,
        inner_mtu: InnerMtu::FollowWan,
        dpd_seconds: 10,
    };
    let tunnel_dir = site.path("tunnel");
    let _tunnel = Tunnel::start(&mut lab, &cfg, &tunnel_dir).expect("tunnel up");
    assert_eq!(mtu(&lab, "ipsec0"), 1438);
    assert!(large_ping_through_the_tunnel(&lab, 1438));
    let proposed = site.propose("eno1");
    let out = site
        .apply(
            &lab,
            &proposed,
            "eno1.mtu=9000",
            "wrong-tunnel-inventory.toml",
            "20s",
        )
        .output()
        .unwrap();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("ROLLED BACK"), "{text}");
    // The tunnel followed the change, and the endpoint's probe at its full inner size is what
    // the black hole dropped (the ESP packet around it is 9000 bytes on a 1500 path).
    assert!(
        text.contains("large 8938 B to endpoint 203.0.113.129: FAILED (lost) (passed at 1438 B before the change)"),
        "{text}"
    );
    let report = site.report();
    assert_eq!(report["kernel_after_apply"][0]["mtu_bytes"], 9000);
    let applied = report["applied_at_ms"].as_u64().unwrap();
    println!(
        "    netplan apply in a follow-wan tunnel: failure decided {} ms after apply, rollback proven {} ms after apply",
        report["failed_at_ms"].as_u64().unwrap() - applied,
        report["rolled_back_at_ms"].as_u64().unwrap() - applied,
    );
    assert_eq!(mtu(&lab, "eno1"), 1500);
    assert_eventually(
        "ipsec0 follows eno1 back to 1500",
        Duration::from_secs(2),
        || mtu(&lab, "ipsec0") == 1438,
    );
    assert!(
        large_ping_through_the_tunnel(&lab, 1438),
        "full-size DF ping through the tunnel after the rollback"
    );
    assert_eq!(site.installed(), SITE_YAML);
    lab.down().unwrap();
}

pub fn intended_camera_jumbo_change_is_verified_and_kept() {
    let site = Site::new();
    let lab = lab(1500, IcmpPolicy::Block);
    let proposed = site.propose("eno2");
    let out = site
        .apply(&lab, &proposed, "eno2.mtu=9000", "inventory.toml", "6s")
        .output()
        .unwrap();
    let text = text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("APPLIED and verified; the change is kept"),
        "{text}"
    );
    assert_eq!(mtu(&lab, "eno2"), 9000);
    assert_eq!(mtu(&lab, "eno1"), 1500);
    assert!(large_ping(&lab));
    assert_eq!(
        site.installed(),
        std::fs::read_to_string(&proposed).unwrap()
    );
    assert_eq!(site.report()["outcome"], "kept");
    // The same change to the WAN link with the right inventory never gets that far.
    let bad = site.propose("eno1");
    let out = site
        .apply(&lab, &bad, "eno2.mtu=9000", "inventory.toml", "6s")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", self::text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not applied: the check blocks this change")
    );
    assert_eq!(mtu(&lab, "eno1"), 1500);
    lab.down().unwrap();
}

pub fn killed_session_does_not_stop_the_rollback_and_blocks_a_second_apply() {
    use std::os::unix::process::CommandExt as _;
    let site = Site::new();
    let lab = lab(1500, IcmpPolicy::Block);
    let proposed = site.propose("eno1");
    // The operator's job in its own process group, so the whole group can be killed the way a
    // dropped SSH session hangs it up.
    let mut fg = site
        .apply(
            &lab,
            &proposed,
            "eno1.mtu=9000",
            "wrong-inventory.toml",
            "20s",
        )
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progress = || {
        std::fs::read_dir(site.path("state"))
            .ok()
            .and_then(|mut d| d.find_map(|e| e.ok().filter(|e| e.path().is_dir())))
            .and_then(|e| std::fs::read_to_string(e.path().join("progress.log")).ok())
            .unwrap_or_default()
    };
    assert_eventually("the change is applied", Duration::from_secs(15), || {
        progress().contains("kernel after apply")
    });
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", fg.id())])
        .status()
        .unwrap();
    assert!(status.success());
    fg.wait().unwrap();
    assert_eq!(mtu(&lab, "eno1"), 9000, "killed before the rollback");

    let second = site
        .apply(
            &lab,
            &proposed,
            "eno1.mtu=9000",
            "wrong-inventory.toml",
            "20s",
        )
        .output()
        .unwrap();
    let text = text(&second);
    assert_eq!(second.status.code(), Some(75), "{text}");
    assert!(
        text.contains("is pending (pid") && text.contains("progress.log"),
        "{text}"
    );

    assert_eventually(
        "the detached rollback finishes",
        Duration::from_secs(30),
        || progress().contains("rollback proven"),
    );
    assert_eventually("the lock is released", Duration::from_secs(5), || {
        !site.path("state/pending.json").exists()
    });
    assert_eq!(site.report()["outcome"], "rolled-back");
    assert_eq!(mtu(&lab, "eno1"), 1500);
    assert!(large_ping(&lab));
    lab.down().unwrap();
}
