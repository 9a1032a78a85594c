use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, exe, site_config};

fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(
        &mut s,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in:\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_uploads_serves_metrics_writes_emf_and_stops_on_sigterm() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let port = free_port();
    let emf = dir.path().join("metrics.emf");
    let metrics = format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\nemf_path = \"{}\"\npublish_interval_seconds = 1\n",
        emf.display()
    );
    let cfg = site_config(dir.path(), &spool, &peer, &peer.endpoint(), "", &metrics);
    let mut child = Command::new(exe())
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Chunks arrive while the daemon runs (inotify path), in a camera subdirectory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3u64 {
        write_chunk(
            &spool,
            &format!("cam1/c{i}.mp4"),
            &pattern_bytes(i, 6 * 1024 * 1024),
        );
    }
    let mut text = String::new();
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(t) = std::panic::catch_unwind(|| scrape(port)) {
            text = t;
            if value(&text, "backhaul_uploaded_chunks_total") >= 3.0
                && value(&text, "backhaul_backlog_chunks") == 0.0
                && emf.exists()
            {
                break;
            }
        }
    }
    assert_eq!(
        value(&text, "backhaul_uploaded_chunks_total"),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "backhaul_uploaded_bytes_total"),
        3.0 * 6.0 * 1024.0 * 1024.0
    );
    assert!(
        value(&text, "backhaul_upload_goodput_mbps{window=\"60s\"}") > 0.0,
        "{text}"
    );
    assert_eq!(value(&text, "backhaul_backlog_chunks"), 0.0);
    assert!(value(&text, "backhaul_spool_disk_used_percent") > 0.0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let line = std::fs::read_to_string(&emf).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(first["site"], "SITE-TEST");
    assert_eq!(
        first["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Backhaul"
    );

    // The journal is readable with the sqlite3 CLI while the agent runs (WAL mode).
    let journal = spool.join(".backhaul/journal.sqlite");
    let out = Command::new("sqlite3")
        .arg(&journal)
        .arg("SELECT state, count(*) FROM chunks GROUP BY state")
        .output()
        .expect("sqlite3 CLI (apt-get install sqlite3)");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "removed|3",
        "{out:?}"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM must exit 0, got {status}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("\"message\":\"chunk uploaded and verified\""),
        "{logs}"
    );
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(
        !logs.contains("backhaul-demo-secret-key"),
        "secrets must never be logged"
    );
}
