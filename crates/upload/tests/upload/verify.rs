//! Verification never takes a weaker proof: against both servers, behind a proxy that hides
//! corruption from the store, rewrites ETags, acknowledges PutObjects it drops, or makes the
//! store assemble a wrong multipart object. No corrupt object is ever accepted, no file is
//! deleted whose bytes are not in the bucket, and the mode in effect is reported.

use std::sync::atomic::Ordering::Relaxed;

use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::test_util::{EtagRewrite, FaultProxy, Faults, put_bytes, uploader};
use backhaul_upload::{Proof, RunMode, VerifyMode};
use tokio::sync::watch;

use super::support::{config, drain, drain_ok, files_left, get, head, key_of, peers};

const MIB: usize = 1024 * 1024;

/// One PutObject and one multipart chunk.
const CHUNKS: [(&str, usize); 2] = [("put.mp4", MIB), ("multi.mp4", 11 * MIB)];

/// The chunks under camera directory `cam` (each round of a test its own, so the keys of one
/// round are not taken by the objects of another).
fn write_chunks(spool: &TempSpool, cam: &str, seed: u64) {
    for (i, (name, size)) in CHUNKS.iter().enumerate() {
        spool.write_chunk(
            &format!("{cam}/{name}"),
            &pattern_bytes(seed + i as u64, *size),
        );
    }
}

/// Every chunk whose file is gone is in the bucket byte for byte under its key, and no
/// disambiguated copy was made.
async fn deleted_files_are_in_the_bucket(
    peer: &backhaul_upload::test_util::S3Peer,
    spool: &TempSpool,
    cam: &str,
    seed: u64,
) -> usize {
    let left = files_left(spool);
    let mut deleted = 0;
    for (i, (name, size)) in CHUNKS.iter().enumerate() {
        let name = &format!("{cam}/{name}");
        let key = key_of(spool, name);
        assert!(
            head(peer, &backhaul_spool::disambiguate(&key, 1))
                .await
                .is_none(),
            "{}: {name} was disambiguated",
            peer.name()
        );
        if left.iter().any(|f| f == name) {
            continue;
        }
        deleted += 1;
        assert!(
            get(peer, &key).await == pattern_bytes(seed + i as u64, *size),
            "{}: {name} was deleted, but the bucket holds other bytes",
            peer.name()
        );
    }
    deleted
}

/// The bug: behind ETags that are not MD5s, with the CRC32C header stripped on the way, a
/// flipped bit was verified by size and the file deleted. Every way the ETags can look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_bit_flip_behind_non_md5_etags_is_read_back_and_sent_again() {
    for peer in peers().await {
        for (round, (etags, from_start)) in [
            (EtagRewrite::Opaque, true),
            (EtagRewrite::Truncated, true),
            // The probe sees MD5 ETags, the uploads do not: the proof downgrades at run time.
            (EtagRewrite::Opaque, false),
        ]
        .into_iter()
        .enumerate()
        {
            let cam = format!("cam{round}");
            let what = format!("{}, {etags:?}, from start {from_start}", peer.name());
            let proxy = FaultProxy::start(
                peer.socket_addr(),
                Faults {
                    corrupt_first_bodies: 2,
                    hide_corruption: true,
                    etags,
                    etags_after_first_large_body: !from_start,
                    ..Faults::default()
                },
            )
            .await;
            let spool = TempSpool::new();
            write_chunks(&spool, &cam, 60);
            let mut cfg = config(&peer, &proxy.endpoint());
            cfg.chunks_in_flight = 1;
            let (up, chunks) = uploader(&spool, &cfg, peer.credentials());
            let (_tx, rx) = watch::channel(false);
            let report = up.run(RunMode::Drain, rx).await.unwrap();
            assert!(report.failed.is_empty(), "{what}: {:?}", report.failed);
            assert_eq!(
                proxy.stats.large_bodies.load(Relaxed).min(2),
                2,
                "{what}: nothing corrupted"
            );
            assert!(
                proxy.stats.rewritten_etags.load(Relaxed) > 0,
                "{what}: no ETag rewritten"
            );
            assert_eq!(
                deleted_files_are_in_the_bucket(&peer, &spool, &cam, 60).await,
                2,
                "{what}"
            );
            let profile = chunks.integrity.profile();
            assert!(!profile.md5_etags, "{what}: ETags still taken for MD5s");
            let m = &spool.metrics;
            assert!(
                m.upload_read_backs.value() > 0,
                "{what}: nothing was read back"
            );
            assert!(proxy.stats.ranged_gets.load(Relaxed) > 0, "{what}");
            // What proved each kind is reported; multipart objects have no HeadObject proof on
            // either store once ETags are not MD5s.
            let v = chunks.integrity.verification().unwrap();
            assert_eq!(v.multipart, Proof::ReadBack, "{what}");
            let snap = m.snapshot(std::time::Instant::now());
            assert_eq!(
                snap.value(
                    "backhaul_upload_verify_mode",
                    &[("request", "multipart"), ("mode", "read-back")]
                ),
                Some(1.0),
                "{what}"
            );
        }
    }
}

/// `verify = "head"` on a store whose HeadObject proves nothing: the corrupted chunk (and
/// on moto every chunk) stays in the spool, counted, and nothing is deleted on size alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_only_verification_keeps_what_it_cannot_prove() {
    for peer in peers().await {
        let proxy = FaultProxy::start(
            peer.socket_addr(),
            Faults {
                corrupt_first_bodies: 1,
                hide_corruption: true,
                etags: EtagRewrite::Opaque,
                ..Faults::default()
            },
        )
        .await;
        let spool = TempSpool::new();
        write_chunks(&spool, "cam1", 70);
        let mut cfg = config(&peer, &proxy.endpoint());
        cfg.chunks_in_flight = 1;
        cfg.verify = VerifyMode::Head;
        let (up, chunks) = uploader(&spool, &cfg, peer.credentials());
        let (_tx, rx) = watch::channel(false);
        let report = up.run(RunMode::Drain, rx).await.unwrap();
        let deleted = deleted_files_are_in_the_bucket(&peer, &spool, "cam1", 70).await;
        assert!(deleted < 2, "{}: a chunk was deleted unproven", peer.name());
        assert_eq!(report.failed.len(), 2 - deleted, "{}", peer.name());
        let m = &spool.metrics;
        assert!(m.upload_unproven.value() > 0, "{}", peer.name());
        assert!(m.errors.value("unproven") > 0, "{}", peer.name());
        assert_eq!(
            m.upload_read_backs.value(),
            0,
            "{}: read back under head",
            peer.name()
        );
        assert_eq!(proxy.stats.ranged_gets.load(Relaxed), 0, "{}", peer.name());
        let v = chunks.integrity.verification().unwrap();
        assert_eq!(v.multipart, Proof::Unproven, "{}", peer.name());
        let snap = m.snapshot(std::time::Instant::now());
        assert_eq!(
            snap.value(
                "backhaul_upload_verify_mode",
                &[("request", "multipart"), ("mode", "none")]
            ),
            Some(1.0)
        );
    }
}

/// A store that answers PutObject 200 (with the right MD5 ETag) and stores nothing: every
/// chunk is checked by HeadObject, found missing and sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_acknowledged_but_never_stored_is_sent_again() {
    for peer in peers().await {
        for mode in [VerifyMode::Auto, VerifyMode::Head] {
            let proxy = FaultProxy::start(
                peer.socket_addr(),
                Faults {
                    drop_first_puts: 6,
                    ..Faults::default()
                },
            )
            .await;
            let spool = TempSpool::new();
            let names: Vec<String> = (0..10).map(|i| format!("cam1/{i}.mp4")).collect();
            for (i, n) in names.iter().enumerate() {
                spool.write_chunk(n, &pattern_bytes(80 + i as u64, 300 * 1024));
            }
            let mut cfg = config(&peer, &proxy.endpoint());
            cfg.verify = mode;
            drain_ok(&spool, &peer, &cfg).await;
            assert_eq!(
                proxy.stats.dropped_puts.load(Relaxed).min(6),
                6,
                "{}",
                peer.name()
            );
            for (i, n) in names.iter().enumerate() {
                assert!(
                    get(&peer, &key_of(&spool, n)).await
                        == pattern_bytes(80 + i as u64, 300 * 1024),
                    "{} {mode:?}: {n} deleted but not stored",
                    peer.name()
                );
            }
            assert!(files_left(&spool).is_empty());
        }
    }
}

/// The store assembles a multipart object that is not the file (twice): it is deleted and the
/// chunk uploaded afresh under its own key, never moved to `~1` (nor `~1~1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_multipart_object_is_replaced_under_its_own_key() {
    for peer in peers().await {
        let proxy = FaultProxy::start(
            peer.socket_addr(),
            Faults {
                truncate_first_completes: 2,
                ..Faults::default()
            },
        )
        .await;
        let spool = TempSpool::new();
        let name = "cam1/multi.mp4";
        spool.write_chunk(name, &pattern_bytes(90, 11 * MIB));
        let cfg = config(&peer, &proxy.endpoint());
        drain_ok(&spool, &peer, &cfg).await;
        assert_eq!(proxy.stats.truncated_completes.load(Relaxed).min(2), 2);
        let key = key_of(&spool, name);
        assert!(!key.contains('~'), "{}: moved to {key}", peer.name());
        assert!(
            get(&peer, &key).await == pattern_bytes(90, 11 * MIB),
            "{}",
            peer.name()
        );
        assert!(
            head(&peer, &backhaul_spool::disambiguate(&key, 1))
                .await
                .is_none()
        );
        assert_eq!(spool.metrics.key_collisions.value(), 0, "{}", peer.name());
        assert!(files_left(&spool).is_empty());
    }
}

/// Scratch objects of a probe killed before it cleaned up are deleted at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_objects_of_a_killed_probe_are_deleted_at_start() {
    for peer in peers().await {
        let spool = TempSpool::new();
        let cfg = config(&peer, &peer.endpoint());
        let (_, chunks) = uploader(&spool, &cfg, peer.credentials());
        if peer.needs_create_bucket() {
            chunks.client.create_bucket().await.unwrap();
        }
        let left = "SITE-TEST/.backhaul-probe/00ffee-conditional";
        let recording = "SITE-TEST/cam1/2025-11-12/keep.mp4";
        put_bytes(&chunks.client, left, b"left by a killed probe")
            .await
            .unwrap();
        put_bytes(&chunks.client, recording, b"not the probe's")
            .await
            .unwrap();
        let report = drain(&spool, &peer, &cfg).await;
        assert!(report.failed.is_empty());
        assert!(
            head(&peer, left).await.is_none(),
            "{}: scratch object left",
            peer.name()
        );
        assert!(
            chunks
                .client
                .list_objects("SITE-TEST/.backhaul-probe/")
                .await
                .unwrap()
                .is_empty(),
            "{}",
            peer.name()
        );
        assert!(
            head(&peer, recording).await.is_some(),
            "{}: deleted a recording",
            peer.name()
        );
    }
}

/// What each mode costs, counted at the proxy against a run without chunks (the start-up
/// requests): a PutObject chunk is PutObject + HeadObject, plus one ranged GET per part size
/// read back; a 3-part multipart chunk is HeadObject (is the key free?) + Create + 3 parts +
/// Complete + HeadObject, plus a GET per part. On s3s-fs `auto` proves by HeadObject (validated CRC32C for PutObject, the
/// multipart ETag of MD5 parts), so it costs what `head` costs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mode_costs_the_requests_it_documents() {
    let peer = backhaul_upload::test_util::S3Peer::embedded(super::support::BUCKET).await;
    for (round, (mode, per_put, per_multipart)) in [
        (VerifyMode::Head, 2, 7),
        (VerifyMode::ReadBack, 3, 10),
        (VerifyMode::Auto, 2, 7),
    ]
    .into_iter()
    .enumerate()
    {
        let mut requests = Vec::new();
        for with_chunks in [false, true] {
            let proxy = FaultProxy::start(peer.socket_addr(), Faults::default()).await;
            let spool = TempSpool::new();
            if with_chunks {
                write_chunks(&spool, &format!("cost{round}"), 100);
            }
            let mut cfg = config(&peer, &proxy.endpoint());
            cfg.verify = mode;
            drain_ok(&spool, &peer, &cfg).await;
            requests.push(proxy.stats.requests.load(Relaxed));
        }
        assert_eq!(
            requests[1] - requests[0],
            per_put + per_multipart,
            "{mode:?}: {requests:?}"
        );
    }
}

/// A store that refuses this host's clock (S3's `RequestTimeTooSkewed`, here from a proxy in
/// front of each store, since neither checks the time of header-signed requests): the drain
/// names the clock and its fix, not the credentials, counts `clock_skew`, and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_refusing_the_clock_is_named_as_a_clock_problem_and_nothing_is_deleted() {
    for peer in peers().await {
        let proxy = FaultProxy::start(
            peer.socket_addr(),
            Faults {
                clock_skewed: true,
                ..Faults::default()
            },
        )
        .await;
        let spool = TempSpool::new();
        spool.write_chunk("cam1/a.mp4", &pattern_bytes(41, 300 * 1024));
        let report = drain(&spool, &peer, &config(&peer, &proxy.endpoint())).await;
        let text = format!("{:?}", report.failed);
        assert!(!report.failed.is_empty(), "{}: {text}", peer.name());
        assert!(text.contains("clock"), "{}: {text}", peer.name());
        assert!(text.contains("chrony"), "{}: {text}", peer.name());
        assert!(
            !text.contains("check the credentials"),
            "{}: {text}",
            peer.name()
        );
        assert!(
            spool.metrics.errors.value("clock_skew") > 0,
            "{}: counted as clock_skew",
            peer.name()
        );
        assert_eq!(files_left(&spool), ["cam1/a.mp4"], "{}", peer.name());
    }
}
