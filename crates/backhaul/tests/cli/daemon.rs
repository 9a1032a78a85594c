use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, KillOnDrop, agent, drift_site, exe, site_config, without_net_raw};

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
    // Which build runs, and the process metrics every exporter has.
    assert!(
        text.contains(&format!(
            "backhaul_build_info{{revision=\"{}\",version=\"{}\"}} 1\n",
            env!("BACKHAUL_REVISION"),
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    assert!(
        value(&text, "process_resident_memory_bytes") > 1e6,
        "{text}"
    );
    assert!(value(&text, "process_open_fds") > 3.0, "{text}");
    assert!(value(&text, "process_start_time_seconds") > 1.7e9, "{text}");
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

/// `backhaul status` against a real daemon: the summary names the open incident, its cause and
/// fix, the interface against its declared MTU, how links are watched and the upload figures;
/// `--json` is the same document; and once the daemon is gone it fails with a clear message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_summarises_the_running_agent_and_fails_clearly_when_it_is_gone() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    // Loopback declared as a 1500-byte WAN: its real 65536 is MTU drift the agent must report.
    let (cfg, port) = drift_site(dir.path(), &peer, "");
    let spool = dir.path().join("spool");
    let mut child = agent(&cfg);
    write_chunk(&spool, "cam1/c0.mp4", &pattern_bytes(0, 1024 * 1024));
    let status = |args: &[&str]| {
        Command::new(exe())
            .arg("status")
            .args(args)
            .output()
            .unwrap()
    };
    let mut text = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let out = status(&["--config", cfg.to_str().unwrap()]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success()
            && text.contains("incident mtu_drift")
            && text.contains("1 chunk uploaded")
            && text.contains("backlog: 0 chunks")
        {
            break;
        }
    }
    assert!(
        text.starts_with("backhaul on SITE-TEST: WARNING mtu_drift, up "),
        "{text}"
    );
    assert!(text.contains("  fix: ip link set lo mtu 1500\n"), "{text}");
    assert!(
        text.contains(
            "interface lo (wan): MTU 65536, declared 1500, up  <- differs from declared\n"
        ),
        "{text}"
    );
    assert!(text.contains("link watch: rtnetlink\n"), "{text}");
    assert!(text.contains("1 chunk uploaded"), "{text}");
    assert!(text.contains("backlog: 0 chunks"), "{text}");
    assert!(text.contains("vpn: not monitored: "), "{text}");

    let out = status(&["--url", &format!("http://127.0.0.1:{port}"), "--json"]);
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["site"], "SITE-TEST");
    assert_eq!(doc["incidents"][0]["kind"], "mtu_drift");
    assert_eq!(doc["interfaces"][0]["mtu_bytes"], 65536);
    assert_eq!(doc["upload"]["uploaded_chunks_total"], 1);
    assert!(
        !doc["incidents"][0]["evidence"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{doc:#}"
    );

    // `diagnose` adds what the running agent has seen to its one-shot survey.
    let diagnose = || {
        let out = Command::new(exe())
            .args(["diagnose", "--probe-timeout-ms", "200", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = diagnose();
    assert!(text.contains("4. the running agent"), "{text}");
    assert!(text.contains("link watch rtnetlink"), "{text}");
    assert!(text.contains("  open: mtu_drift (warning) — "), "{text}");
    assert!(text.contains("  uploads: "), "{text}");
    assert!(
        text.contains("kernel, since boot: InDestUnreachs "),
        "{text}"
    );

    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
    let text = diagnose();
    assert!(
        text.contains(&format!(
            "not answering at http://127.0.0.1:{port}/status (is `backhaul run` running?)"
        )),
        "{text}"
    );
    let out = status(&["--config", cfg.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!(
            "error: the agent is not answering at http://127.0.0.1:{port}/status"
        )) && err.contains("help: is `backhaul run` running?"),
        "{err}"
    );
}

/// Without CAP_NET_RAW (dropped from the bounding set when the test runs as root) the daemon
/// says once that probes and the frag-needed listener are off, and still uploads and watches
/// links (rtnetlink needs no privilege).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_without_cap_net_raw_says_so_once_and_keeps_uploading() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = drift_site(dir.path(), &peer, "[monitor]\nprobe_interval_seconds = 1");
    let spool = dir.path().join("spool");
    let mut cmd = without_net_raw();
    let mut child = KillOnDrop(
        cmd.args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    write_chunk(&spool, "cam1/c0.mp4", &pattern_bytes(0, 1024 * 1024));
    let mut text = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(t) = std::panic::catch_unwind(|| scrape(port)) {
            text = t;
            if value(&text, "backhaul_uploaded_chunks_total") >= 1.0 {
                break;
            }
        }
    }
    assert_eq!(
        value(&text, "backhaul_uploaded_chunks_total"),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, "backhaul_icmp_frag_needed_total"), 0.0);
    // Several probe cycles (one per second) must not repeat the warning.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(child.0.wait().unwrap().success());
    let mut logs = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let listener_off = "cannot open an ICMP socket for the fragmentation-needed listener: \
                        needs root or CAP_NET_RAW";
    let probes_off = "cannot open an ICMP socket for path-MTU probes: needs root or CAP_NET_RAW";
    assert_eq!(logs.matches(listener_off).count(), 1, "{logs}");
    assert_eq!(logs.matches(probes_off).count(), 1, "{logs}");
    assert!(
        !logs.contains("polling /sys/class/net"),
        "rtnetlink works unprivileged: {logs}"
    );
}

/// One agent per spool: a second one (its own metrics port, so only the spool is shared)
/// exits 75 naming the first one's pid, and `journal recover` refuses to run under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_one_spool_exits_75_naming_the_first() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let metrics = |port: u16| format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&first_dir).unwrap();
    std::fs::create_dir_all(&second_dir).unwrap();
    let port = free_port();
    let first_cfg = site_config(
        &first_dir,
        &spool,
        &peer,
        &peer.endpoint(),
        "",
        &metrics(port),
    );
    let second_cfg = site_config(
        &second_dir,
        &spool,
        &peer,
        &peer.endpoint(),
        "",
        &metrics(free_port()),
    );
    let first = KillOnDrop(
        Command::new(exe())
            .args(["run", "--config", first_cfg.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let owner = format!("another backhaul (pid {}) owns the spool", first.0.id());
    let second = Command::new(exe())
        .args(["run", "--config", second_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{err}");
    assert!(err.contains(&owner), "{err}");
    let recover = Command::new(exe())
        .args([
            "journal",
            "recover",
            "--force",
            "--config",
            second_cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&recover.stderr);
    assert_eq!(recover.status.code(), Some(75), "{err}");
    assert!(err.contains(&owner), "{err}");
    assert!(
        spool.join(".backhaul/journal.sqlite").exists(),
        "the running agent's journal was not moved aside"
    );
}

/// Logs for journald and log shippers: no colour when stderr is not a terminal, and under
/// systemd's journal (`JOURNAL_STREAM` naming stderr) every line starts with its syslog
/// priority and carries no timestamp of its own, so `journalctl -p err` finds the errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_have_no_colour_on_a_pipe_and_syslog_priorities_under_the_journal() {
    use std::os::unix::fs::MetadataExt as _;
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    write_chunk(&spool, "cam1/a.mp4", &pattern_bytes(1, 1000));
    // Nothing listens there: the drain logs errors and gives up.
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let cfg = site_config(
        dir.path(),
        &spool,
        &peer,
        &nobody,
        "",
        "[metrics]\nlisten = \"off\"\n",
    );
    let drain = |stderr: Stdio, journal: Option<String>| {
        let mut cmd = Command::new(exe());
        cmd.args(["run", "--drain", "--config", cfg.to_str().unwrap()])
            .env_remove("NO_COLOR")
            .env_remove("JOURNAL_STREAM")
            .stderr(stderr);
        if let Some(j) = journal {
            cmd.env("JOURNAL_STREAM", j);
        }
        cmd.output().unwrap()
    };

    let piped = drain(Stdio::piped(), None);
    let text = String::from_utf8_lossy(&piped.stderr);
    assert!(text.contains("ERROR"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour on a pipe:\n{text}");

    let log = dir.path().join("journal-stream");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    drain(
        Stdio::from(file),
        Some(format!("{}:{}", meta.dev(), meta.ino())),
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('<')).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("<3>")),
        "errors at <3>:\n{text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<6>")),
        "info at <6>:\n{text}"
    );
    for l in &lines {
        assert!(
            !l[3..].trim_start().starts_with("20"),
            "no timestamp under the journal: {l}"
        );
        assert!(!l.contains('\u{1b}'), "{l}");
    }
}

/// An outage writes a bounded log: the store goes away under a running agent that keeps
/// retrying (fast, for the test), and each cause (the retry warning, the chunk error, per error
/// class) is written at most five times in its minute; what was held back is counted in one
/// line per cause when the agent stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_writes_a_bounded_log_and_counts_what_it_held_back() {
    use backhaul_upload::test_util::{FaultProxy, Faults};
    let peer = S3Peer::embedded(BUCKET).await;
    let proxy = FaultProxy::start(peer.socket_addr(), Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let cfg = site_config(
        dir.path(),
        &spool,
        &peer,
        &proxy.endpoint(),
        "",
        "[metrics]\nlisten = \"off\"\n",
    );
    let log = dir.path().join("agent.log");
    let agent = KillOnDrop(
        Command::new(exe())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    write_chunk(&spool, "cam1/a.mp4", &pattern_bytes(1, 1000));
    let uploaded = spool.join("cam1/a.mp4");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while uploaded.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!uploaded.exists(), "the first chunk was not uploaded");

    // The store goes away; two cameras keep recording.
    drop(proxy);
    for i in 0..8 {
        write_chunk(&spool, &format!("cam1/b{i}.mp4"), &pattern_bytes(2, 1000));
        write_chunk(&spool, &format!("cam2/b{i}.mp4"), &pattern_bytes(3, 1000));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let term = Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let mut agent = agent;
    assert!(agent.0.wait().unwrap().success());

    let text = std::fs::read_to_string(&log).unwrap();
    let retries = text
        .lines()
        .filter(|l| l.contains("upload request failed; retrying") && !l.contains(" more "))
        .count();
    let failures = text
        .lines()
        .filter(|l| l.contains("chunk upload failed; nothing deleted") && !l.contains(" more "))
        .count();
    // One error class (connection refused) for the whole outage.
    assert!(retries <= 5, "{retries} retry lines:\n{text}");
    assert!(failures <= 5, "{failures} chunk failure lines:\n{text}");
    assert!(
        text.lines()
            .any(|l| l.contains(" more \"upload request failed; retrying\" (class=")),
        "no count of the held-back retries:\n{text}"
    );
}

/// `check` as a monitoring plugin sees the agent, with or without an `[inventory]`: CRITICAL
/// while it does not answer, OK while it uploads, WARNING once the oldest chunk waiting is older
/// than `--backlog-age-warning`; perfdata for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_the_agent_and_the_age_of_its_backlog() {
    use backhaul_upload::test_util::{FaultProxy, Faults};
    let peer = S3Peer::embedded(BUCKET).await;
    let proxy = FaultProxy::start(peer.socket_addr(), Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let port = free_port();
    let cfg = site_config(
        dir.path(),
        &spool,
        &peer,
        &proxy.endpoint(),
        "",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let check = |extra: &[&str]| {
        let out = Command::new(exe())
            .args(["check", "--config", cfg.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = check(&[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.starts_with("BACKHAUL CRITICAL - the agent does not answer at http://127.0.0.1:")
            && text.contains("path not checked (no [inventory])")
            && text.contains("| agent_answering=0;;1:;;"),
        "{text}"
    );

    let start = || agent(&cfg);
    let agent = start();
    write_chunk(&spool, "cam1/a.mp4", &pattern_bytes(1, 1000));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (code, text) = check(&[]);
        if code == Some(0)
            && !spool.join("cam1/a.mp4").exists()
            && text.contains("agent uploading: 0 chunks waiting")
        {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        text.starts_with(
            "BACKHAUL OK - path not checked (no [inventory]); agent uploading: 0 chunks waiting"
        ) && text.contains(
            "agent_answering=1;;1:;; backlog_age_seconds=0;900;3600;0; backlog_chunks=0;;;0;"
        ),
        "{text}"
    );

    // The store is gone (the agent restarted toward an address nothing answers): the next
    // chunk waits, and ages past the threshold.
    drop(agent);
    let gone = format!("http://127.0.0.1:{}", free_port());
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(&proxy.endpoint(), &gone);
    std::fs::write(&cfg, text).unwrap();
    let _agent = start();
    write_chunk(&spool, "cam1/b.mp4", &pattern_bytes(2, 1000));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let (code, text) = check(&["--backlog-age-warning", "2"]);
        if code == Some(1) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        text.starts_with("BACKHAUL WARNING - ") && text.contains("backlog_chunks=1;;;0;"),
        "{text}"
    );
}
