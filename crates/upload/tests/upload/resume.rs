use std::time::Duration;

use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::RunMode;
use backhaul_upload::test_util::uploader;
use tokio::sync::watch;

use super::support::{config, drain_ok, get, key_of, peers};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_multipart_from_last_completed_part_after_crash() {
    for peer in peers().await {
        let spool = TempSpool::new();
        let size = 30 * MIB;
        spool.write_chunk("cam1/long.mp4", &pattern_bytes(9, size));
        let mut cfg = config(&peer, &peer.endpoint());
        cfg.parts_in_flight = 1;
        // Slow enough to crash mid-upload: 6 parts of 5 MiB at 20 MiB/s.
        cfg.bandwidth_limit = "20M".into();
        let (up, _) = uploader(&spool, &cfg, peer.credentials());
        let (_tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { up.run(RunMode::Drain, rx).await });
        let id = loop {
            if let Some(c) = spool.spool.chunk_by_name("cam1/long.mp4").unwrap()
                && spool.spool.parts(&c).unwrap().len() >= 3
            {
                break c;
            }
            assert!(
                !task.is_finished(),
                "{}: finished before the crash point",
                peer.name()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        // The crash: the task stops wherever it is; only what the journal committed survives.
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        let journaled = spool.spool.parts(&id).unwrap().len() as u64;
        assert!(journaled >= 3);

        cfg.bandwidth_limit = "off".into();
        // Restarted with a threshold that would send the chunk as one PutObject: the upload
        // already journaled goes on, keeping its finished parts.
        cfg.multipart_threshold_bytes = Some(64 * MIB as u64);
        let report = drain_ok(&spool, &peer, &cfg).await;
        assert_eq!(report.parts_resumed, journaled, "{}", peer.name());
        let part = 5 * MIB as u64;
        assert_eq!(
            report.bytes_sent,
            size as u64 - journaled * part,
            "{}: re-sent bytes",
            peer.name()
        );
        let key = key_of(&spool, "cam1/long.mp4");
        assert!(
            get(&peer, &key).await == pattern_bytes(9, size),
            "{}: object differs",
            peer.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_server_upload_restarts_cleanly() {
    // The journal names an upload the server never heard of (restored backup, wiped store).
    for peer in peers().await {
        let spool = TempSpool::new();
        spool.write_chunk("a.mp4", &pattern_bytes(3, 11 * MIB));
        spool.spool.scan_once().unwrap();
        let c = spool.spool.chunk_by_name("a.mp4").unwrap().unwrap();
        spool
            .spool
            .begin_multipart(&c, "00000000-0000-0000-0000-000000000000")
            .unwrap();
        drain_ok(&spool, &peer, &config(&peer, &peer.endpoint())).await;
        assert!(
            get(&peer, &c.key).await == pattern_bytes(3, 11 * MIB),
            "{}",
            peer.name()
        );
    }
}
