//! The ways a recording could still be lost, each against both servers: two chunks that
//! render to one key, a name recorded again after the first was uploaded, a file still being
//! written, one bit flipped in transit, and a multipart upload orphaned by a crash.

use std::io::Write as _;
use std::time::Duration;

use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::test_util::{FaultProxy, Faults, uploader};
use backhaul_upload::{RunMode, StoreProfile};
use tokio::sync::watch;

use super::support::{config, drain, drain_ok, files_left, get, head, key_of, peers};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_collision_of_subdirectories_keeps_both_recordings() {
    for peer in peers().await {
        // The default template keeps the path below the camera; a template with only
        // `{name}` flattens it, and the journal gives the second chunk its own key.
        for template in [None, Some("{site}/{camera}/{date}/{name}")] {
            let spool = TempSpool::with(|c| {
                if let Some(t) = template {
                    c.key_template = t.into();
                }
            });
            spool.write_chunk("cam5/a/same.mp4", &pattern_bytes(1, 300 * 1024));
            spool.write_chunk("cam5/b/same.mp4", &pattern_bytes(2, 300 * 1024));
            drain_ok(&spool, &peer, &config(&peer, &peer.endpoint())).await;
            let (ka, kb) = (
                key_of(&spool, "cam5/a/same.mp4"),
                key_of(&spool, "cam5/b/same.mp4"),
            );
            assert_ne!(ka, kb, "{}: {template:?}", peer.name());
            assert!(get(&peer, &ka).await == pattern_bytes(1, 300 * 1024));
            assert!(get(&peer, &kb).await == pattern_bytes(2, 300 * 1024));
            assert!(files_left(&spool).is_empty());
            let expected_collisions = u64::from(template.is_some());
            assert_eq!(spool.metrics.key_collisions.value(), expected_collisions);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_reuse_never_overwrites_the_earlier_recording() {
    for peer in peers().await {
        // One size below the part size (PutObject), one above (multipart).
        for (seed, size) in [(10, MIB), (20, 11 * MIB)] {
            let name = format!("cam1/0815-{size}.mp4");
            let name = name.as_str();
            let spool = TempSpool::new();
            let cfg = config(&peer, &peer.endpoint());
            spool.write_chunk(name, &pattern_bytes(seed, size));
            assert!(drain(&spool, &peer, &cfg).await.failed.is_empty());
            let first_key = key_of(&spool, name);
            // The camera's counter reset: the same name again, the same day, other bytes.
            spool.write_chunk(name, &pattern_bytes(seed + 1, size));
            drain_ok(&spool, &peer, &cfg).await;
            let second_key = key_of(&spool, name);
            assert_ne!(first_key, second_key, "{}", peer.name());
            assert_eq!(second_key, backhaul_spool::disambiguate(&first_key, 1));
            assert!(
                get(&peer, &first_key).await == pattern_bytes(seed, size),
                "{}: the first recording was overwritten",
                peer.name()
            );
            assert!(get(&peer, &second_key).await == pattern_bytes(seed + 1, size));
            assert_eq!(spool.metrics.key_collisions.value(), 1);
            assert!(files_left(&spool).is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_recording_seen_again_is_recognised_not_stored_twice() {
    for peer in peers().await {
        for size in [MIB, 11 * MIB] {
            let name = format!("cam1/again-{size}.mp4");
            let name = name.as_str();
            let spool = TempSpool::new();
            let cfg = config(&peer, &peer.endpoint());
            spool.write_chunk(name, &pattern_bytes(30, size));
            assert!(drain(&spool, &peer, &cfg).await.failed.is_empty());
            let key = key_of(&spool, name);
            // Restored from a backup, byte for byte.
            spool.write_chunk(name, &pattern_bytes(30, size));
            let report = drain_ok(&spool, &peer, &cfg).await;
            assert_eq!(key_of(&spool, name), key);
            if size > cfg.part_size_bytes as usize {
                // Seen by HeadObject before any part was sent.
                assert_eq!(
                    report.bytes_sent,
                    0,
                    "{}: nothing needs sending",
                    peer.name()
                );
            }
            assert!(
                head(&peer, &backhaul_spool::disambiguate(&key, 1))
                    .await
                    .is_none()
            );
            assert_eq!(spool.metrics.key_collisions.value(), 0);
            assert!(files_left(&spool).is_empty());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_writer_file_is_uploaded_whole_only_after_it_is_closed() {
    for peer in peers().await {
        // settle_seconds = 0 and an old mtime: the settle timer alone would take the file at
        // once. Only the kernel's "open for writing" keeps it back.
        let spool = TempSpool::new();
        let path = spool.path().join("cam1/slow.mp4");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut writer = std::fs::File::create(&path).unwrap();
        let mut whole = Vec::new();
        let piece = pattern_bytes(40, 200 * 1024);
        writer.write_all(&piece).unwrap();
        whole.extend_from_slice(&piece);
        let cfg = config(&peer, &peer.endpoint());
        let (up, _) = uploader(&spool, &cfg, peer.credentials());
        let (_tx, rx) = watch::channel(false);
        let task = tokio::spawn(async move { up.run(RunMode::Drain, rx).await });
        for i in 0..4u64 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            assert!(
                !task.is_finished(),
                "{}: drained while the writer held the file",
                peer.name()
            );
            let piece = pattern_bytes(41 + i, 100 * 1024);
            writer.write_all(&piece).unwrap();
            whole.extend_from_slice(&piece);
        }
        assert!(
            spool
                .spool
                .chunk_by_name("cam1/slow.mp4")
                .unwrap()
                .is_none(),
            "{}: journaled while still open for writing",
            peer.name()
        );
        drop(writer);
        let report = task.await.unwrap().unwrap();
        assert!(
            report.failed.is_empty(),
            "{}: {:?}",
            peer.name(),
            report.failed
        );
        assert!(
            get(&peer, &key_of(&spool, "cam1/slow.mp4")).await == whole,
            "{}: the object is not the whole file",
            peer.name()
        );
        assert!(files_left(&spool).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corruption_in_transit_is_caught_and_the_chunk_sent_again() {
    for peer in peers().await {
        let proxy = FaultProxy::start(
            peer.socket_addr(),
            Faults {
                corrupt_first_bodies: 3,
                ..Faults::default()
            },
        )
        .await;
        let spool = TempSpool::new();
        let chunks = [("cam1/put.mp4", MIB), ("cam1/multi.mp4", 11 * MIB)];
        for (i, (name, size)) in chunks.iter().enumerate() {
            spool.write_chunk(name, &pattern_bytes(50 + i as u64, *size));
        }
        let mut cfg = config(&peer, &proxy.endpoint());
        cfg.chunks_in_flight = 1;
        let (up, chunks_up) = uploader(&spool, &cfg, peer.credentials());
        let (_tx, rx) = watch::channel(false);
        let report = up.run(RunMode::Drain, rx).await.unwrap();
        assert!(
            report.failed.is_empty(),
            "{}: {:?}",
            peer.name(),
            report.failed
        );
        let profile = chunks_up.integrity.profile();
        assert!(
            profile.md5_checked(),
            "{}: neither server validates part checksums: {profile:?}",
            peer.name()
        );
        let corrupted = proxy
            .stats
            .large_bodies
            .load(std::sync::atomic::Ordering::Relaxed)
            .min(3);
        assert_eq!(corrupted, 3, "{}: the proxy corrupted nothing", peer.name());
        let m = &spool.metrics;
        // Each corrupted body is caught: by the store (refused checksum) or by the ETag check.
        assert_eq!(
            m.corrupt_in_transit.value() + m.errors.value("checksum"),
            corrupted,
            "{}",
            peer.name()
        );
        for (i, (name, size)) in chunks.iter().enumerate() {
            let key = key_of(&spool, name);
            assert!(
                get(&peer, &key).await == pattern_bytes(50 + i as u64, *size),
                "{}: {name} stored corrupt",
                peer.name()
            );
            assert!(
                head(&peer, &backhaul_spool::disambiguate(&key, 1))
                    .await
                    .is_none()
            );
        }
        assert!(files_left(&spool).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn integrity_probe_reads_each_store_right() {
    for peer in peers().await {
        let spool = TempSpool::new();
        spool.write_chunk("cam1/a.mp4", b"x");
        let cfg = config(&peer, &peer.endpoint());
        let (up, chunks) = uploader(&spool, &cfg, peer.credentials());
        let (_tx, rx) = watch::channel(false);
        up.run(RunMode::Drain, rx).await.unwrap();
        let expected = match peer.name() {
            // s3s-fs refuses a wrong CRC32C on PutObject only; moto validates none.
            "s3s-fs" => StoreProfile {
                conditional_writes: true,
                put_checksum_validated: true,
                part_checksum_validated: false,
                md5_etags: true,
            },
            _ => StoreProfile {
                conditional_writes: true,
                put_checksum_validated: false,
                part_checksum_validated: false,
                md5_etags: true,
            },
        };
        assert_eq!(chunks.integrity.probed(), Some(expected), "{}", peer.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_orphaned_by_a_crash_before_its_journal_write_is_aborted() {
    // s3s-fs cannot list multipart uploads (501); the sweep says so and the drain succeeds.
    for peer in peers().await {
        let spool = TempSpool::new();
        let cfg = config(&peer, &peer.endpoint());
        let (_, chunks) = uploader(&spool, &cfg, peer.credentials());
        if peer.needs_create_bucket() {
            chunks.client.create_bucket().await.unwrap();
        }
        let key = "SITE-TEST/cam1/2025-11-12/crashed.mp4";
        let uid = chunks.client.create_multipart(key).await.unwrap();
        drain_ok(&spool, &peer, &cfg).await;
        let open = chunks.client.list_multipart_uploads("SITE-TEST/").await;
        eprintln!("{}: open after drain: {open:?}", peer.name());
        match peer.name() {
            "s3s-fs" => assert!(open.is_err()),
            _ => {
                // moto dates every upload 2010, so the age threshold has passed.
                assert!(
                    !open.unwrap().iter().any(|u| u.upload_id == uid),
                    "the orphan is still open"
                );
                assert_eq!(spool.metrics.orphan_uploads_aborted.value(), 1);
            }
        }
    }
}
