use backhaul_spool::ChunkState;
use backhaul_spool::test_util::{TempSpool, pattern_bytes};

use super::support::{config, drain, drain_ok, files_left, get, head, key_of, peers};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_uploads_every_size_intact_to_both_servers() {
    // Sizes around the single-request / multipart boundary (5 MiB parts in tests).
    let chunks: &[(&str, usize)] = &[
        ("cam1/empty.mp4", 0),
        ("cam1/one byte.mp4", 1),
        ("cam2/Kamera-Tür ü.mp4", 100 * 1024),
        ("exact-part.mp4", 5 * MIB),
        ("part-plus-one.mp4", 5 * MIB + 1),
        ("cam2/three-parts.mp4", 12 * MIB + 7),
    ];
    for peer in peers().await {
        let spool = TempSpool::new();
        for (i, (name, size)) in chunks.iter().enumerate() {
            spool.write_chunk(name, &pattern_bytes(i as u64, *size));
        }
        let cfg = config(&peer, &peer.endpoint());
        let report = drain_ok(&spool, &peer, &cfg).await;
        assert_eq!(report.chunks, chunks.len() as u64, "{}", peer.name());
        for (i, (name, size)) in chunks.iter().enumerate() {
            let key = key_of(&spool, name);
            assert!(key.starts_with("SITE-TEST/"), "{key}");
            let got = get(&peer, &key).await;
            assert_eq!(got.len(), *size, "{}: {name}", peer.name());
            assert!(
                got == pattern_bytes(i as u64, *size),
                "{}: {name} differs",
                peer.name()
            );
            let c = spool.spool.chunk_by_name(name).unwrap().unwrap();
            assert_eq!(c.state, ChunkState::Removed, "{}: {name}", peer.name());
            assert!(c.checksum.unwrap().starts_with("crc32c:"));
        }
        assert!(
            files_left(&spool).is_empty(),
            "{}: {:?}",
            peer.name(),
            files_left(&spool)
        );
        assert_eq!(spool.metrics.uploaded_chunks.value(), chunks.len() as u64);
    }
}

/// With `multipart_threshold_bytes` above the part size, a chunk up to it goes as one
/// PutObject (an ETag without a part count), a larger one as a multipart upload; both arrive
/// intact and verified on both servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_up_to_the_multipart_threshold_go_as_one_put_object() {
    let chunks: &[(&str, usize, bool)] = &[
        ("cam1/two-parts-worth.mp4", 10 * MIB + 3, false),
        ("cam1/at-threshold.mp4", 12 * MIB, false),
        ("cam1/above.mp4", 12 * MIB + 1, true),
    ];
    for peer in peers().await {
        let spool = TempSpool::new();
        for (i, (name, size, _)) in chunks.iter().enumerate() {
            spool.write_chunk(name, &pattern_bytes(i as u64, *size));
        }
        let mut cfg = config(&peer, &peer.endpoint());
        cfg.multipart_threshold_bytes = Some(12 * MIB as u64);
        drain_ok(&spool, &peer, &cfg).await;
        for (i, (name, size, multipart)) in chunks.iter().enumerate() {
            let key = key_of(&spool, name);
            assert!(
                get(&peer, &key).await == pattern_bytes(i as u64, *size),
                "{name} differs"
            );
            let etag = head(&peer, &key).await.expect("uploaded").etag;
            assert_eq!(
                etag.contains('-'),
                *multipart,
                "{}: {name}: ETag {etag}",
                peer.name()
            );
            let c = spool.spool.chunk_by_name(name).unwrap().unwrap();
            assert_eq!(c.state, ChunkState::Removed, "{}: {name}", peer.name());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_mode_moves_files_only_after_verification() {
    let peer = backhaul_upload::test_util::S3Peer::embedded(super::support::BUCKET).await;
    let keep = tempfile::tempdir().unwrap();
    let kept = keep.path().join("kept");
    let spool = TempSpool::with(|c| {
        c.after_upload = backhaul_spool::AfterUpload::Retain;
        c.retain_dir = Some(kept.clone());
    });
    spool.write_chunk("cam1/a.mp4", &pattern_bytes(1, 6 * MIB));
    let report = drain(&spool, &peer, &config(&peer, &peer.endpoint())).await;
    assert_eq!(report.chunks, 1);
    assert_eq!(
        std::fs::read(kept.join("cam1/a.mp4")).unwrap(),
        pattern_bytes(1, 6 * MIB)
    );
    let c = spool.spool.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
    assert_eq!(c.state, ChunkState::Retained);
}
