//! The agent on short-lived credentials from a container credentials endpoint, as a site with
//! IAM Roles Anywhere's `serve` or Greengrass' Token Exchange Service runs it: uploads across
//! several rotations, the source and expiry in `status`, and no secret in a trace-level log.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::embedded::StoreQuirks;
use backhaul_upload::test_creds::{Issuer, KeyRing};
use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, exe, http_get, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_uploads_on_rotating_container_credentials_and_never_logs_them() {
    let ring = KeyRing::new(Duration::from_secs(8));
    let quirks = StoreQuirks {
        clock_offset: None,
        one_principal: true,
    };
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), quirks).await;
    let issuer = Issuer::start(ring.clone(), "Bearer tes-token").await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "Bearer tes-token").unwrap();
    let port = free_port();
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            "[site]\nname = \"SITE-TEST\"\n\n[spool]\ndir = \"{}\"\nsettle_seconds = 0\n\n\
             [upload]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\ncredentials = \"container\"\n\
             part_size_bytes = 5242880\nmultipart_threshold_bytes = 5242880\n\
             bandwidth_limit = \"1M\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            spool.display(),
            peer.endpoint()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(exe())
        .args([
            "run",
            "--log-level",
            "trace",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/container", issuer.url()),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token_file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Three 6 MiB chunks at 1 MiB/s: about 18 s, over two lifetimes of the keys.
    let chunks: Vec<Vec<u8>> = (0..3).map(|i| pattern_bytes(40 + i, 6 << 20)).collect();
    for (i, c) in chunks.iter().enumerate() {
        write_chunk(&spool, &format!("cam1/c{i}.mp4"), c);
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while metric(port, "backhaul_uploaded_chunks_total") != Some(3.0) {
        assert!(Instant::now() < deadline, "the chunks were not uploaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    child.kill().ok();
    child.wait().ok();

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
