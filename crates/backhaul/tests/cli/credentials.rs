//! The agent on short-lived credentials from a container credentials endpoint, as a site with
//! IAM Roles Anywhere's `serve` or Greengrass' Token Exchange Service runs it: uploads across
//! several rotations, the source and expiry in `status`, and no secret in a trace-level log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::embedded::StoreQuirks;
use backhaul_upload::test_creds::{Issuer, KeyRing, embedded_keys};
use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, KillOnDrop, agent, exe, http_get, metric, receiver, site_config};

/// A store whose keys live `lifetime`, an issuer of them that wants `token`, and a site on
/// `credentials = "container"` with a metrics listener and `extra` config: the store, the
/// ring, the issuer, the temporary directory, the config file, the spool and the metrics port.
struct ContainerSite {
    ring: std::sync::Arc<KeyRing>,
    /// Taken to stop it.
    issuer: Option<Issuer>,
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    spool: std::path::PathBuf,
    port: u16,
    _peer: S3Peer,
}

impl ContainerSite {
    async fn new(lifetime: Duration, token: &str, extra: &str) -> Self {
        let ring = KeyRing::new(lifetime);
        let quirks = StoreQuirks {
            clock_offset: None,
            one_principal: true,
        };
        let peer = S3Peer::embedded_with(BUCKET, ring.auth(), quirks).await;
        let issuer = Issuer::start(ring.clone(), token).await;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let port = free_port();
        let cfg = dir.path().join("site.toml");
        std::fs::write(
            &cfg,
            format!(
                "[site]\nname = \"SITE-TEST\"\n\n[spool]\ndir = \"{}\"\nsettle_seconds = 0\n\n\
                 [upload]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\ncredentials = \"container\"\n\
                 part_size_bytes = 5242880\nmultipart_threshold_bytes = 5242880\n\
                 {extra}\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
                spool.display(),
                peer.endpoint()
            ),
        )
        .unwrap();
        Self {
            ring,
            issuer: Some(issuer),
            dir,
            cfg,
            spool,
            port,
            _peer: peer,
        }
    }

    /// `backhaul run` of the site with `args` before `--config`, the endpoint in its
    /// environment and `token` as the token's value (`file`: in a file).
    fn agent(&self, args: &[&str], token: &str, file: bool, stderr: Stdio) -> KillOnDrop {
        let mut cmd = Command::new(exe());
        cmd.arg("run")
            .args(args)
            .arg("--config")
            .arg(&self.cfg)
            .env(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                format!(
                    "{}/container",
                    self.issuer.as_ref().map(Issuer::url).unwrap_or_default()
                ),
            )
            .stdout(Stdio::null())
            .stderr(stderr);
        if file {
            let path = self.dir.path().join("token");
            std::fs::write(&path, token).unwrap();
            cmd.env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", path);
        } else {
            cmd.env("AWS_CONTAINER_AUTHORIZATION_TOKEN", token);
        }
        KillOnDrop(cmd.spawn().unwrap())
    }
}

/// Waits until the agent on `port` has uploaded `n` chunks.
async fn uploaded(port: u16, n: f64, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while metric(port, "backhaul_uploaded_chunks_total") != Some(n) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_uploads_on_rotating_container_credentials_and_never_logs_them() {
    let site = ContainerSite::new(
        Duration::from_secs(8),
        "Bearer tes-token",
        "bandwidth_limit = \"1M\"",
    )
    .await;
    let (ring, spool, port) = (&site.ring, &site.spool, site.port);
    let log = site.dir.path().join("agent.log");
    let agent = site.agent(
        &["--log-level", "trace"],
        "Bearer tes-token",
        true,
        std::fs::File::create(&log).unwrap().into(),
    );
    // Three 6 MiB chunks at 1 MiB/s: about 18 s, over two lifetimes of the keys.
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| pattern_bytes(40 + i, 6 << 20)).collect();
    for (i, c) in chunks.iter().enumerate() {
        write_chunk(spool, &format!("cam1/c{i}.mp4"), c);
    }
    uploaded(
        port,
        3.0,
        Duration::from_secs(90),
        "the chunks were not uploaded",
    )
    .await;
    let status: serde_json::Value =
        serde_json::from_str(&http_get(port, "/status")).expect("/status is JSON");
    let creds = &status["upload"]["credentials"];
    assert_eq!(creds["setting"], "container", "{creds}");
    assert_eq!(creds["source"], "container credentials endpoint", "{creds}");
    let left = creds["expires_in_seconds"].as_i64().unwrap();
    assert!((0..=8).contains(&left), "{creds}");
    let text = Command::new(exe())
        .args(["status", "--url", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(
            "credentials: container credentials endpoint (upload.credentials = \"container\"), key ASIATEST"
        ),
        "{text}"
    );
    let refreshed = metric(port, "backhaul_credentials_refreshes_total{result=\"ok\"}");
    assert!(refreshed.is_some_and(|n| n >= 2.0), "{refreshed:?}");
    let expiry = metric(port, "backhaul_credentials_expiry_seconds").unwrap();
    assert!((0.0..=8.0).contains(&expiry), "{expiry}");
    assert_eq!(ring.expired_refusals(), 0);
    drop(agent);

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("new AWS credentials"),
        "trace level reached the log"
    );
    for key in ring.all_issued() {
        assert!(!log.contains(&key.secret), "a secret key is in the log");
        assert!(!log.contains(&key.token), "a session token is in the log");
    }
    assert!(
        !log.contains("tes-token"),
        "the endpoint's token is in the log"
    );
}

/// A store whose clock is 400 s ahead: uploads flow (S3 allows 900 s), and the agent warns
/// with `clock_skew` naming NTP, long before the store would refuse everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_clock_minutes_ahead_raises_clock_skew_while_uploads_flow() {
    let quirks = StoreQuirks {
        clock_offset: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(400))),
        one_principal: false,
    };
    let peer = S3Peer::embedded_with(BUCKET, embedded_keys(), quirks).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let (hook, port) = (free_port(), free_port());
    let hooks = receiver(hook);
    let cfg = site_config(
        dir.path(),
        &spool,
        &peer,
        &peer.endpoint(),
        "",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n[monitor]\nwebhook_url = \"http://127.0.0.1:{hook}/hook\"\n"
        ),
    );
    let _agent = agent(&cfg);
    write_chunk(&spool, "cam1/c0.mp4", &pattern_bytes(50, 1 << 20));
    let (_, alert, _) = hooks
        .recv_timeout(Duration::from_secs(30))
        .expect("an alert arrives");
    assert_eq!(alert["kind"], "clock_skew", "{alert}");
    assert_eq!(alert["status"], "firing", "{alert}");
    // The store's Date has whole seconds: 400 s reads as 399 to 401.
    let cause = alert["root_cause"].as_str().unwrap();
    assert!(
        ["399", "400", "401"]
            .iter()
            .any(|s| cause.starts_with(&format!("this host's clock is {s} s behind the store's"))),
        "{alert}"
    );
    assert_eq!(alert["fix"][0], "chronyc tracking", "{alert}");
    uploaded(
        port,
        1.0,
        Duration::from_secs(30),
        "the chunk was not uploaded",
    )
    .await;
    let skew = metric(port, "backhaul_clock_skew_seconds").unwrap();
    assert!(
        (399.0..=401.0).contains(&skew),
        "the store's Date is read: {skew}"
    );
}

/// The container endpoint stops answering: the agent keeps uploading on the credentials it
/// holds, and raises `credentials_expiring` (critical: they have under two minutes left)
/// before they expire, naming the endpoint's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_stops_answering_raises_credentials_expiring_before_expiry() {
    let hook = free_port();
    let hooks = receiver(hook);
    let site = ContainerSite::new(
        Duration::from_secs(40),
        "Bearer t",
        &format!("\n[monitor]\nwebhook_url = \"http://127.0.0.1:{hook}/hook\""),
    )
    .await;
    let mut site = site;
    let port = site.port;
    let _agent = site.agent(&[], "Bearer t", false, Stdio::null());
    write_chunk(&site.spool, "cam1/c0.mp4", &pattern_bytes(60, 1 << 20));
    uploaded(
        port,
        1.0,
        Duration::from_secs(30),
        "the first chunk was not uploaded",
    )
    .await;
    let expires = site
        .ring
        .all_issued()
        .iter()
        .map(|k| k.expires_at)
        .max()
        .unwrap();
    drop(site.issuer.take());
    let (_, alert, _) = hooks
        .recv_timeout(Duration::from_secs(40))
        .expect("credentials_expiring is raised");
    assert_eq!(alert["kind"], "credentials_expiring", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    let raised =
        std::time::UNIX_EPOCH + Duration::from_millis(alert["raised_at_unix_ms"].as_u64().unwrap());
    assert!(
        raised < expires,
        "raised after the credentials expired: {alert}"
    );
    assert!(
        alert["root_cause"]
            .as_str()
            .unwrap()
            .contains("container credentials endpoint"),
        "{alert}"
    );
    // Uploads go on meanwhile.
    write_chunk(&site.spool, "cam1/c1.mp4", &pattern_bytes(61, 1 << 20));
    uploaded(
        port,
        2.0,
        Duration::from_secs(15),
        "uploads stopped before the credentials expired",
    )
    .await;
    assert!(
        metric(
            port,
            "backhaul_credentials_refreshes_total{result=\"error\"}"
        )
        .is_some_and(|n| n >= 1.0)
    );
}
