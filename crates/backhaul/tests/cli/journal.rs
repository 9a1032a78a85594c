//! Losses that used to be silent at the command line: a chunk skipped for want of a safe key
//! ended `--drain` with 0, and a corrupt journal blamed the directory's permissions.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::S3Peer;

use super::support::{BUCKET, exe, site_config};

/// Tests run at once; none may take the default metrics port.
const NO_METRICS: &str = "[metrics]\nlisten = \"off\"\n";

fn drain(cfg: &std::path::Path) -> std::process::Output {
    Command::new(exe())
        .args(["run", "--drain", "--config"])
        .arg(cfg)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_exits_non_zero_when_a_chunk_is_skipped() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    write_chunk(&spool, "cam1/fine.mp4", &pattern_bytes(1, 1000));
    // Four 250-byte directories: the key would pass S3's 1024-byte limit.
    let deep = format!("cam1/{}/x.mp4", vec!["d".repeat(250); 4].join("/"));
    write_chunk(&spool, &deep, &pattern_bytes(2, 1000));
    let cfg = site_config(dir.path(), &spool, &peer, &peer.endpoint(), "", NO_METRICS);
    let out = drain(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("x.mp4 not uploaded"), "{err}");
    assert!(err.contains("no safe object key"), "{err}");
    assert!(spool.join(&deep).exists(), "the skipped file stays");
    assert!(
        !spool.join("cam1/fine.mp4").exists(),
        "the good one was uploaded"
    );

    // A name that is not UTF-8 cannot become a key either: it stays and the drain says so.
    use std::os::unix::ffi::OsStrExt as _;
    std::fs::remove_dir_all(spool.join("cam1").join("d".repeat(250))).unwrap();
    let latin1 = spool
        .join("cam1")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.mp4"));
    std::fs::write(&latin1, pattern_bytes(5, 1000)).unwrap();
    let out = drain(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not UTF-8"), "{err}");
    assert!(latin1.exists(), "the file with the Latin-1 name stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_journal_is_named_and_recover_rebuilds_it_from_the_spool() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    write_chunk(&spool, "cam1/a.mp4", &pattern_bytes(3, 1000));
    let cfg = site_config(dir.path(), &spool, &peer, &peer.endpoint(), "", NO_METRICS);
    let out = drain(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = spool.join(".backhaul/journal.sqlite");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&journal), 0o600);
    assert_eq!(mode(journal.parent().unwrap()), 0o700);

    write_chunk(&spool, "cam1/b.mp4", &pattern_bytes(4, 1000));
    std::fs::write(&journal, vec![0u8; 4096]).unwrap();
    let out = drain(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is corrupt"), "{err}");
    assert!(err.contains("backhaul journal recover"), "{err}");
    assert!(
        !err.contains("writable"),
        "not a permissions problem: {err}"
    );
    assert!(spool.join("cam1/b.mp4").exists());

    let out = Command::new(exe())
        .args(["journal", "recover", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nothing deleted"), "{text}");
    assert!(text.contains("journaled 1 chunks"), "{text}");
    let aside: Vec<_> = std::fs::read_dir(journal.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .collect();
    assert!(!aside.is_empty(), "the corrupt journal is kept");

    let out = drain(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!spool.join("cam1/b.mp4").exists());
}

/// File names no key can carry are named once, not on every rescan, and a name with a line
/// break cannot forge or split a human log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_names_warn_once_and_log_fields_are_escaped() {
    use std::os::unix::ffi::OsStrExt as _;
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(spool.join("cam1")).unwrap();
    std::fs::write(
        spool
            .join("cam1")
            .join(std::ffi::OsStr::from_bytes(b"bad-\xff.mp4")),
        b"x",
    )
    .unwrap();
    write_chunk(&spool, "cam1/two\nlines.mp4", &pattern_bytes(5, 1000));
    let cfg = site_config(dir.path(), &spool, &peer, &peer.endpoint(), "", NO_METRICS);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "settle_seconds = 0",
        "settle_seconds = 0\nrescan_interval_seconds = 1",
    );
    std::fs::write(&cfg, text).unwrap();
    let child = Command::new(exe())
        .args(["run", "--log-format", "human", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Several rescans.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let not_utf8 = log.lines().filter(|l| l.contains("not UTF-8")).count();
    assert_eq!(not_utf8, 1, "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("lines.mp4")),
        "a file name split a log line: {log}"
    );
    assert!(log.contains(r"two\nlines.mp4"), "{log}");
    assert!(
        !spool.join("cam1/two\nlines.mp4").exists(),
        "it was uploaded"
    );
}
