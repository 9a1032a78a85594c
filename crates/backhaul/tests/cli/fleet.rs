//! A fleet on one machine: 50 real agents, each with its own spool and config, push to one
//! real Alertmanager whose route groups by `[alertname, change]`. One change seen by every
//! site (their WAN interface goes from its declared 1500 to 9000 and back) must reach the
//! receiver as one notification listing all sites, and one resolved notification. Root only:
//! the sites' WAN is a VXLAN device with no remote (no address, no traffic) the test creates and removes;
//! without root the test says SKIP in one line.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, alertmanager, exe, is_root, receiver, site_config};

const SITES: usize = 50;
/// Alertmanager's wait before a new group's first notification, and between its updates.
const GROUP_WAIT: Duration = Duration::from_secs(10);
const GROUP_INTERVAL: Duration = Duration::from_secs(15);

/// Children killed, and the VXLAN device removed, if the test stops early.
struct Fleet {
    agents: Vec<Child>,
    alertmanager: Option<Child>,
    link: String,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for c in self.agents.iter_mut().chain(self.alertmanager.as_mut()) {
            c.kill().ok();
            c.wait().ok();
        }
        Command::new("ip")
            .args(["link", "del", &self.link])
            .status()
            .ok();
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (resident kB, CPU clock ticks) summed over the agents, from `/proc`.
fn usage(agents: &[Child]) -> (u64, u64) {
    agents.iter().fold((0, 0), |(rss, cpu), a| {
        let status = std::fs::read_to_string(format!("/proc/{}/status", a.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", a.id())).unwrap();
        // utime and stime are fields 14 and 15; the command name before them may hold spaces.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = after
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        (rss + kb, cpu + f[11] + f[12])
    })
}

/// Notifications (firing or resolved) that reach the receiver until `until`.
fn notifications_until(
    rx: &std::sync::mpsc::Receiver<super::support::Received>,
    until: Instant,
) -> Vec<(Instant, serde_json::Value)> {
    let mut got = Vec::new();
    while let Ok((at, n, _)) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        got.push((at, n));
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_sites_one_change_one_notification_and_one_resolve() {
    if !is_root() {
        eprintln!(
            "SKIP fifty_sites_one_change_one_notification_and_one_resolve: needs root for the \
             sites' WAN interface"
        );
        return;
    }
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet {
        agents: Vec::new(),
        alertmanager: None,
        link: format!("bhfleet{}", std::process::id() % 100_000),
    };
    // A VXLAN device with no remote, no address and no IPv6 link-local: up (a TAP nobody
    // opens has no carrier), carrying nothing, its MTU the sites' WAN MTU.
    ip(&[
        "link",
        "add",
        &fleet.link,
        "type",
        "vxlan",
        "id",
        "4242",
        "dstport",
        "4789",
        "local",
        "127.0.0.1",
    ]);
    ip(&["link", "set", "dev", &fleet.link, "addrgenmode", "none"]);
    ip(&["link", "set", "dev", &fleet.link, "mtu", "1500", "up"]);
    let (am_port, hook) = (free_port(), free_port());
    let notifications = receiver(hook);
    fleet.alertmanager = Some(alertmanager(
        dir.path(),
        am_port,
        hook,
        (
            "['alertname', 'change']",
            GROUP_WAIT.as_secs(),
            GROUP_INTERVAL.as_secs(),
        ),
    ));
    for n in 1..=SITES {
        let site = format!("SITE-{n:04}");
        let d = dir.path().join(&site);
        let spool = d.join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let extra = format!(
            "[metrics]\nlisten = \"off\"\n[monitor]\nalertmanager_url = \"http://127.0.0.1:{am_port}\"\n\
             [inventory]\ngateway = \"127.0.0.1\"\nendpoint_host = \"127.0.0.1\"\n\
             interfaces = [{{ name = \"{}\", role = \"wan\", mtu_bytes = 1500 }}]\n",
            fleet.link
        );
        let cfg = site_config(&d, &spool, &peer, &peer.endpoint(), "", &extra);
        let text = std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("name = \"SITE-TEST\"", &format!("name = \"{site}\""));
        std::fs::write(&cfg, text).unwrap();
        fleet.agents.push(
            Command::new(exe())
                .args(["run", "--log-format", "json", "--config"])
                .arg(&cfg)
                .stderr(std::fs::File::create(d.join("agent.log")).unwrap())
                .spawn()
                .unwrap(),
        );
    }

    // Idle: every agent started, nothing wrong. What a site's agent costs while it waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, cpu_before) = usage(&fleet.agents);
    let idle = Duration::from_secs(10);
    tokio::time::sleep(idle).await;
    let (rss_kb, cpu_after) = usage(&fleet.agents);
    let ticks = 100.0; // USER_HZ on Linux
    eprintln!(
        "fleet idle: {SITES} agents, RSS {:.1} MiB in all, {:.1} MiB per site; CPU {:.2} % of one core per site",
        rss_kb as f64 / 1024.0,
        rss_kb as f64 / 1024.0 / SITES as f64,
        (cpu_after - cpu_before) as f64 / ticks / idle.as_secs_f64() * 100.0 / SITES as f64
    );
    assert!(
        notifications.try_recv().is_err(),
        "a notification before any change"
    );

    // The change, on every site at once.
    ip(&["link", "set", "dev", &fleet.link, "mtu", "9000"]);
    let changed = Instant::now();
    let change_id = format!("{} mtu 1500→9000", fleet.link);
    let firing = notifications_until(
        &notifications,
        changed + GROUP_WAIT + Duration::from_secs(10) + GROUP_INTERVAL,
    );
    let summary: Vec<_> = firing
        .iter()
        .map(|(at, n)| {
            (
                at.duration_since(changed).as_secs_f64(),
                n["status"].clone(),
                n["alerts"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        firing.len(),
        1,
        "one notification for one change: {summary:?}"
    );
    let (at, n) = &firing[0];
    assert!(
        *at <= changed + GROUP_WAIT + Duration::from_secs(10),
        "{summary:?}"
    );
    assert_eq!(n["status"], "firing", "{n}");
    assert_eq!(n["groupLabels"]["change"], change_id.as_str(), "{n}");
    assert_eq!(n["groupLabels"]["alertname"], "BackhaulMtuDrift", "{n}");
    let mut sites: Vec<&str> = n["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["site"].as_str().unwrap())
        .collect();
    sites.sort_unstable();
    sites.dedup();
    assert_eq!(sites.len(), SITES, "{n}");
    eprintln!(
        "fleet change: 1 notification with {SITES} sites, {:.1} s after the change",
        at.duration_since(changed).as_secs_f64()
    );

    // The change undone: one resolved notification.
    ip(&["link", "set", "dev", &fleet.link, "mtu", "1500"]);
    let reverted = Instant::now();
    let resolved = notifications_until(
        &notifications,
        reverted + GROUP_INTERVAL * 2 + Duration::from_secs(10),
    );
    let summary: Vec<_> = resolved
        .iter()
        .map(|(at, n)| {
            (
                at.duration_since(reverted).as_secs_f64(),
                n["status"].clone(),
                n["alerts"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(resolved.len(), 1, "one resolve for one change: {summary:?}");
    let (_, n) = &resolved[0];
    assert_eq!(n["status"], "resolved", "{n}");
    assert_eq!(n["alerts"].as_array().unwrap().len(), SITES, "{n}");
    for a in fleet.agents.drain(..) {
        Command::new("kill")
            .args(["-TERM", &a.id().to_string()])
            .status()
            .unwrap();
        let mut a = a;
        assert!(a.wait().unwrap().success());
    }
}
