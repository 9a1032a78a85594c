//! Alerts that survive the outage they report, and the push to a real Alertmanager. The
//! incident is real: loopback declared as a 1500-byte WAN is MTU drift (`mtu_drift`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_upload::test_util::{PortHold, S3Peer, free_port};

use super::support::{
    BUCKET, KillOnDrop, LOOPBACK_WAN_INVENTORY, alertmanager, exe, http_get, metric, receiver,
    receiver_on, site_config,
};

fn daemon(cfg: &std::path::Path) -> KillOnDrop {
    daemon_logging_to(cfg, Stdio::null())
}

fn daemon_logging_to(cfg: &std::path::Path, stderr: Stdio) -> KillOnDrop {
    KillOnDrop(
        Command::new(exe())
            .args(["run", "--log-format", "json", "--config"])
            .arg(cfg)
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

fn stop(mut d: KillOnDrop) {
    Command::new("kill")
        .args(["-TERM", &d.0.id().to_string()])
        .status()
        .unwrap();
    let status = d.0.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
}

fn drift_config(
    dir: &std::path::Path,
    peer: &S3Peer,
    site: &str,
    metrics_port: u16,
    monitor: &str,
) -> std::path::PathBuf {
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let extra = format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[monitor]\n{monitor}\n\
         {LOOPBACK_WAN_INVENTORY}"
    );
    let cfg = site_config(dir, &spool, peer, &peer.endpoint(), "", &extra);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"SITE-TEST\"", &format!("name = \"{site}\""));
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The webhook is down when the incident opens, and the agent restarts before it is back:
/// the alert waits in the journal and arrives afterwards, with the incident's original start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_raised_while_the_receiver_is_down_arrives_later_even_across_a_restart() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    // Held from the start: the receiver is down (refused) and no other test can take its port.
    let (hook, metrics) = (PortHold::new(), free_port());
    let cfg = drift_config(
        dir.path(),
        &peer,
        "SITE-TEST",
        metrics,
        &format!("webhook_url = \"http://127.0.0.1:{}/hook\"", hook.port()),
    );
    let first = daemon(&cfg);
    let opened = std::time::SystemTime::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(metrics, "backhaul_alerts_undelivered").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "no alert was queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(first);
    // Long enough that an incident the second agent opens itself starts visibly later.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let got = receiver_on(hook.listen());
    let second = daemon(&cfg);
    let (_, alert, _) = got
        .recv_timeout(Duration::from_secs(30))
        .expect("the queued alert is delivered after the restart");
    assert_eq!(alert["kind"], "mtu_drift", "{alert}");
    assert_eq!(alert["status"], "firing", "{alert}");
    let started = time::OffsetDateTime::parse(
        alert["started_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let opened = time::OffsetDateTime::from(opened);
    assert!(
        started <= opened + Duration::from_secs(3),
        "the alert keeps its original time: started {started}, first agent up at {opened}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(metrics, "backhaul_alerts_undelivered") != Some(0.0) {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(second);
}

/// Credentials for alert receivers: `user:password@` (basic auth) and a query token in the
/// webhook's URL, a bearer token file for Alertmanager, the site's status page as
/// `generatorURL`. The receivers get them; `config check`, `/status` and the log never show a
/// password, a token or a query value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_receivers_get_their_credentials_and_no_secret_is_shown() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (hook, am, metrics) = (free_port(), free_port(), free_port());
    let token = dir.path().join("am-token");
    std::fs::write(&token, "t0ken-am\n").unwrap();
    let cfg = drift_config(
        dir.path(),
        &peer,
        "SITE-TEST",
        metrics,
        &format!(
            "webhook_url = \"http://hookuser:hookpw@127.0.0.1:{hook}/hook?token=hooktoken\"\n\
             alertmanager_url = \"http://127.0.0.1:{am}\"\n\
             alertmanager_bearer_token_file = \"{}\"\n\
             status_page_url = \"http://site-test.example:9464/\"\n\
             runbook_base_url = \"https://docs.example.net/backhaul/\"",
            token.display()
        ),
    );
    let secrets = ["hookpw", "hooktoken", "t0ken-am"];
    let check = Command::new(exe())
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(check.status.success(), "{shown}");
    let (hooks, ams) = (receiver(hook), receiver(am));
    let log = dir.path().join("agent.log");
    let agent = daemon_logging_to(&cfg, Stdio::from(std::fs::File::create(&log).unwrap()));

    let (_, alert, head) = hooks
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook gets the alert");
    assert_eq!(alert["kind"], "mtu_drift", "{alert}");
    assert_eq!(
        alert["runbook"],
        "https://docs.example.net/backhaul/docs/runbook-pmtud.md#mtu-drift"
    );
    assert!(head.starts_with("post /hook?token=hooktoken "), "{head}");
    // base64("hookuser:hookpw"), lowercased as the receiver keeps headers.
    assert!(
        head.contains("authorization: basic ag9va3vzzxi6ag9va3b3"),
        "{head}"
    );
    let (_, alerts, head) = ams
        .recv_timeout(Duration::from_secs(30))
        .expect("Alertmanager gets the alert");
    assert!(head.starts_with("post /api/v2/alerts "), "{head}");
    assert!(head.contains("authorization: bearer t0ken-am"), "{head}");
    assert_eq!(
        alerts[0]["generatorURL"], "http://site-test.example:9464/",
        "{alerts}"
    );
    let status = http_get(metrics, "/status");
    stop(agent);
    let logged = std::fs::read_to_string(&log).unwrap();
    for s in secrets {
        assert!(!shown.contains(s), "config check shows {s}:\n{shown}");
        assert!(!status.contains(s), "/status shows {s}");
        assert!(!logged.contains(s), "the log shows {s}:\n{logged}");
    }
}

/// Two sites push to a real Alertmanager (Debian `prometheus-alertmanager`): the alerts read
/// back through its API carry the labels and annotations, and a route grouping by
/// `alertname` (not `site`) sends both in one notification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sites_push_to_alertmanager_and_are_grouped_into_one_notification() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (am_port, hook) = (free_port(), free_port());
    let notifications = receiver(hook);
    let _am = KillOnDrop(alertmanager(
        dir.path(),
        am_port,
        hook,
        ("['alertname']", 2, 2),
    ));
    let mut agents = Vec::new();
    for site in ["SITE-0001", "SITE-0002"] {
        let d = dir.path().join(site);
        let cfg = drift_config(
            &d,
            &peer,
            site,
            free_port(),
            &format!(
                "alertmanager_url = \"http://127.0.0.1:{am_port}\"\n\
                 status_page_url = \"http://{site}.example:9464/\""
            ),
        );
        agents.push(daemon(&cfg));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let body = http_get(am_port, "/api/v2/alerts");
        if let Ok(serde_json::Value::Array(v)) = serde_json::from_str(&body)
            && v.len() >= 2
        {
            break v;
        }
        assert!(Instant::now() < deadline, "Alertmanager holds: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut sites: Vec<&str> = alerts
        .iter()
        .map(|a| a["labels"]["site"].as_str().unwrap())
        .collect();
    sites.sort();
    assert_eq!(sites, ["SITE-0001", "SITE-0002"]);
    for a in &alerts {
        assert_eq!(a["labels"]["alertname"], "BackhaulMtuDrift", "{a}");
        assert_eq!(a["labels"]["kind"], "mtu_drift", "{a}");
        assert_eq!(a["labels"]["interface"], "lo", "{a}");
        assert_eq!(a["labels"]["severity"], "warning", "{a}");
        // An absolute link (the project's published docs by default), not a repository path.
        let runbook = a["annotations"]["runbook_url"].as_str().unwrap();
        assert!(
            runbook.starts_with("https://") && runbook.ends_with("docs/runbook-pmtud.md#mtu-drift"),
            "{a}"
        );
        assert!(
            a["annotations"]["description"]
                .as_str()
                .unwrap()
                .contains("lo"),
            "{a}"
        );
        assert!(!a["annotations"]["fix"].as_str().unwrap().is_empty(), "{a}");
        assert_eq!(a["status"]["state"], "active", "{a}");
        assert_eq!(
            a["generatorURL"],
            format!(
                "http://{}.example:9464/",
                a["labels"]["site"].as_str().unwrap()
            ),
            "{a}"
        );
    }
    // One notification with both sites (a first one may hold only the faster site).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (_, n, _) = notifications
            .recv_timeout(left)
            .expect("Alertmanager sent no notification holding both sites");
        let in_it: Vec<&str> = n["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["labels"]["site"].as_str())
            .collect();
        if in_it.len() == 2 {
            assert_eq!(n["groupLabels"]["alertname"], "BackhaulMtuDrift", "{n}");
            break;
        }
    }
    for a in agents {
        stop(a);
    }
}

/// A newcomer's first day: the README's minimal config (no `[inventory]`), a webhook, and a
/// secret key that is wrong. The store refuses every request, and `auth_failure` reaches the
/// webhook within 30 s; `config check` says which rules are off and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_config_with_a_bad_credential_alerts_auth_failure_within_30_s() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(spool.join("cam1")).unwrap();
    std::fs::write(spool.join("cam1/a.mp4"), vec![7u8; 4096]).unwrap();
    let hook = free_port();
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            "[site]\nname = \"SITE-NEW\"\n[spool]\ndir = \"{}\"\n[upload]\nendpoint = \"{}\"\n\
             bucket = \"{BUCKET}\"\n[metrics]\nlisten = \"off\"\n[monitor]\n\
             webhook_url = \"http://127.0.0.1:{hook}/hook\"\n",
            spool.display(),
            peer.endpoint()
        ),
    )
    .unwrap();
    let check = Command::new(exe())
        .args(["config", "check"])
        .arg(&cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}");
    assert!(
        said.contains("note: no [inventory]: the path rules")
            && said.contains("auth_failure")
            && said.contains("to the configured receivers"),
        "{said}"
    );
    let hooks = receiver(hook);
    let started = Instant::now();
    let mut agent = KillOnDrop(
        Command::new(exe())
            .args(["run", "--config"])
            .arg(&cfg)
            .env("AWS_ACCESS_KEY_ID", peer.credentials().access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", "not-the-secret-key")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alert = loop {
        let left = Duration::from_secs(30).saturating_sub(started.elapsed());
        let (_, a, _) = hooks
            .recv_timeout(left)
            .expect("auth_failure reaches the webhook within 30 s");
        if a["kind"] == "auth_failure" {
            break a;
        }
    };
    println!(
        "    minimal config, bad secret key: auth_failure at the webhook {:.1} s after start",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(alert["status"], "firing", "{alert}");
    assert_eq!(alert["site"], "SITE-NEW", "{alert}");
    assert!(spool.join("cam1/a.mp4").exists(), "nothing is deleted");
    agent.0.kill().ok();
}
