use std::time::Duration;

use backhaul_spool::ChunkState;
use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::test_util::{S3Peer, uploader};
use backhaul_upload::{Credentials, RunMode};
use tokio::sync::watch;

use super::support::{BUCKET, config, drain, drain_ok, files_left, get, key_of, peers};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_fail_clearly_and_delete_nothing() {
    let embedded = S3Peer::embedded(BUCKET).await;
    let moto_auth = S3Peer::moto_with_auth().await;
    for peer in [embedded, moto_auth] {
        let spool = TempSpool::new();
        spool.write_chunk("cam1/a.mp4", &pattern_bytes(1, 6 * MIB));
        let mut cfg = config(&peer, &peer.endpoint());
        cfg.create_bucket = false;
        let (up, _) = uploader(
            &spool,
            &cfg,
            Credentials::new("AKIDWRONG", "wrong-secret", None),
        );
        let (_tx, rx) = watch::channel(false);
        let report = up.run(RunMode::Drain, rx).await.unwrap();
        assert_eq!(
            report.failed.len(),
            1,
            "{}: {:?}",
            peer.name(),
            report.failed
        );
        let msg = &report.failed[0].1;
        assert!(
            msg.contains("HTTP 403") && msg.contains("check the credentials"),
            "{}: {msg}",
            peer.name()
        );
        assert_eq!(files_left(&spool), ["cam1/a.mp4"], "{}", peer.name());
        assert!(
            spool.metrics.errors.value("auth") >= 2,
            "{}: retried",
            peer.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_fails_clearly_and_deletes_nothing() {
    for peer in peers().await {
        let spool = TempSpool::new();
        spool.write_chunk("a.mp4", &pattern_bytes(2, 1000));
        let mut cfg = config(&peer, &peer.endpoint());
        cfg.bucket = "no-such-bucket".into();
        cfg.create_bucket = false;
        let report = drain(&spool, &peer, &cfg).await;
        assert_eq!(report.failed.len(), 1, "{}", peer.name());
        assert!(
            report.failed[0].1.contains("create the bucket"),
            "{}: {:?}",
            peer.name(),
            report.failed
        );
        assert_eq!(files_left(&spool), ["a.mp4"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_are_never_followed_or_deleted_through() {
    let peer = S3Peer::embedded(BUCKET).await;
    let spool = TempSpool::new();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.mp4");
    std::fs::write(&secret, b"not for upload").unwrap();
    std::os::unix::fs::symlink(&secret, spool.path().join("link.mp4")).unwrap();
    std::os::unix::fs::symlink(outside.path(), spool.path().join("cam9")).unwrap();
    spool.write_chunk("real.mp4", b"real");
    let report = drain(&spool, &peer, &config(&peer, &peer.endpoint())).await;
    assert_eq!(report.chunks, 1);
    assert!(
        secret.exists(),
        "a symlink target outside the spool must never be deleted"
    );
    assert!(spool.spool.chunk_by_name("link.mp4").unwrap().is_none());
}

/// Starts a slow upload, lets `mutate` change the file mid-upload, and drains to the end.
async fn mutate_while_uploading(peer: &S3Peer, mutate: impl FnOnce(&std::path::Path)) -> TempSpool {
    let spool = TempSpool::new();
    let path = spool.write_chunk("cam1/moving.mp4", &pattern_bytes(7, 20 * MIB));
    let mut cfg = config(peer, &peer.endpoint());
    cfg.bandwidth_limit = "10M".into();
    cfg.parts_in_flight = 1;
    let (up, _) = uploader(&spool, &cfg, peer.credentials());
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { up.run(RunMode::Daemon, rx).await });
    loop {
        if let Some(c) = spool.spool.chunk_by_name("cam1/moving.mp4").unwrap()
            && !spool.spool.parts(&c).unwrap().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    mutate(&path);
    cfg.bandwidth_limit = "off".into();
    // Let the daemon notice, then finish with an unthrottled drain.
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    drain_ok(&spool, peer, &cfg).await;
    spool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_rewritten_or_truncated_while_uploading_is_never_verified_stale() {
    for peer in peers().await {
        // Rewritten with new content (same name, new inode via rename).
        let spool = mutate_while_uploading(&peer, |p| {
            let tmp = p.with_extension("new");
            std::fs::write(&tmp, pattern_bytes(8, 7 * MIB)).unwrap();
            std::fs::rename(&tmp, p).unwrap();
        })
        .await;
        let key = key_of(&spool, "cam1/moving.mp4");
        assert!(
            get(&peer, &key).await == pattern_bytes(8, 7 * MIB),
            "{}: rewritten",
            peer.name()
        );
        assert!(spool.metrics.changed_chunks.value() >= 1);

        // Truncated in place.
        let spool = mutate_while_uploading(&peer, |p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(3 * MIB as u64).unwrap();
        })
        .await;
        let key = key_of(&spool, "cam1/moving.mp4");
        let got = get(&peer, &key).await;
        assert!(
            got == pattern_bytes(7, 3 * MIB),
            "{}: truncated ({} bytes)",
            peer.name(),
            got.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_deleted_while_uploading_is_reported_gone_and_its_upload_aborted() {
    for peer in peers().await {
        let spool = mutate_while_uploading(&peer, |p| {
            #[allow(clippy::disallowed_methods)] // the test plays a camera deleting its own file
            std::fs::remove_file(p).unwrap();
        })
        .await;
        let c = spool
            .spool
            .chunk_by_name("cam1/moving.mp4")
            .unwrap()
            .unwrap();
        assert_eq!(c.state, ChunkState::Gone, "{}", peer.name());
        assert!(
            spool.spool.pending_aborts().unwrap().is_empty(),
            "{}: abort sent",
            peer.name()
        );
    }
}

/// A recorder that patches a finished chunk's header in place while it uploads and puts the
/// mtime back (`touch -r`, `rsync --inplace -t`): size, mtime and inode are unchanged, the
/// ctime is not. The patched version is what ends up in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_patched_in_place_with_the_mtime_put_back_is_uploaded_patched() {
    for peer in peers().await {
        let header = b"PATCHED-HEADER";
        let spool = mutate_while_uploading(&peer, |p| {
            use std::os::unix::fs::FileExt as _;
            let mtime = std::fs::metadata(p).unwrap().modified().unwrap();
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all_at(header, 0).unwrap();
            f.set_modified(mtime).unwrap();
            assert_eq!(std::fs::metadata(p).unwrap().modified().unwrap(), mtime);
        })
        .await;
        let mut expected = pattern_bytes(7, 20 * MIB);
        expected[..header.len()].copy_from_slice(header);
        let key = key_of(&spool, "cam1/moving.mp4");
        assert!(
            get(&peer, &key).await == expected,
            "{}: the bucket holds the unpatched bytes",
            peer.name()
        );
        assert!(files_left(&spool).is_empty(), "{}", peer.name());
    }
}

/// A file dated past 2262 (beyond 64-bit nanoseconds; ext4 stores it) is uploaded once, and
/// `--drain` returns: it must not look changed against its own journal row on every look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_dated_after_2262_is_uploaded_once_and_the_drain_returns() {
    for peer in peers().await {
        let spool = TempSpool::new();
        let path = spool.write_chunk("cam1/far.mp4", &pattern_bytes(3, 300 * 1024));
        let year_2300 = std::time::UNIX_EPOCH + Duration::from_secs(10_413_792_000);
        let dated = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(year_2300));
        if dated.is_err() || std::fs::metadata(&path).unwrap().modified().unwrap() != year_2300 {
            eprintln!("SKIP: this filesystem cannot store an mtime in 2300");
            return;
        }
        let cfg = config(&peer, &peer.endpoint());
        tokio::time::timeout(Duration::from_secs(60), drain_ok(&spool, &peer, &cfg))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: the drain does not return: {:?}",
                    peer.name(),
                    spool.spool.chunk_by_name("cam1/far.mp4")
                )
            });
        let key = key_of(&spool, "cam1/far.mp4");
        assert!(
            get(&peer, &key).await == pattern_bytes(3, 300 * 1024),
            "{}",
            peer.name()
        );
        assert!(files_left(&spool).is_empty(), "{}", peer.name());
        assert_eq!(spool.metrics.changed_chunks.value(), 0, "{}", peer.name());
    }
}
