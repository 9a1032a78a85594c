use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::test_util::{FaultProxy, Faults};

use super::support::{config, drain, drain_ok, files_left, get, key_of, peers};

const MIB: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_arrives_intact_through_a_faulty_proxy() {
    let faults = Faults {
        server_error: 0.08,
        slow_down: 0.08,
        reset: 0.06,
        stall: 0.04,
        ..Faults::default()
    };
    let chunks: &[(&str, usize)] = &[
        ("cam1/a.mp4", 17 * MIB),
        ("cam1/b.mp4", 6 * MIB),
        ("cam2/c.mp4", 300 * 1024),
        ("d.mp4", 1),
    ];
    for peer in peers().await {
        let proxy = FaultProxy::start(peer.socket_addr(), faults).await;
        let spool = TempSpool::new();
        for (i, (name, size)) in chunks.iter().enumerate() {
            spool.write_chunk(name, &pattern_bytes(100 + i as u64, *size));
        }
        let mut cfg = config(&peer, &proxy.endpoint());
        cfg.stall_timeout_seconds = 2;
        cfg.request_timeout_seconds = 2;
        cfg.part_attempts = 8;
        drain_ok(&spool, &peer, &cfg).await;
        for (i, (name, size)) in chunks.iter().enumerate() {
            let got = get(&peer, &key_of(&spool, name)).await;
            assert!(
                got == pattern_bytes(100 + i as u64, *size),
                "{}: {name} differs",
                peer.name()
            );
        }
        assert!(files_left(&spool).is_empty());
        let injected = proxy
            .stats
            .faults
            .load(std::sync::atomic::Ordering::Relaxed);
        let m = &spool.metrics;
        println!(
            "{}: {} requests, {injected} faults injected, retries {}, stalls {}, errors {}",
            peer.name(),
            proxy
                .stats
                .requests
                .load(std::sync::atomic::Ordering::Relaxed),
            m.retries.value(),
            m.stalls.value(),
            m.errors.total()
        );
        assert!(
            injected > 0,
            "the proxy injected nothing; the test proves nothing"
        );
        assert!(
            m.errors.total() >= injected,
            "every injected fault is counted by class"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_part_is_abandoned_and_retried_on_a_fresh_connection() {
    let peer = backhaul_upload::test_util::S3Peer::embedded(super::support::BUCKET).await;
    // Every request stalls with probability 0.5: some part attempts must hit the watchdog.
    let proxy = FaultProxy::start(
        peer.socket_addr(),
        Faults {
            stall: 0.5,
            ..Faults::default()
        },
    )
    .await;
    let spool = TempSpool::new();
    spool.write_chunk("cam1/x.mp4", &pattern_bytes(5, 11 * MIB));
    let mut cfg = config(&peer, &proxy.endpoint());
    cfg.stall_timeout_seconds = 1;
    cfg.request_timeout_seconds = 1;
    cfg.part_attempts = 20;
    let report = drain(&spool, &peer, &cfg).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(spool.metrics.stalls.value() + spool.metrics.errors.value("timeout") > 0);
    assert_eq!(
        spool.metrics.errors.value("stall"),
        spool.metrics.stalls.value()
    );
}

/// The store is unreachable when the drain starts and comes up 2 s later. With a 60 s backoff
/// base the bucket check alone would next run a minute later; the store recheck notices the
/// answer within seconds and the waiting chunks go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_resume_when_the_store_answers_not_after_the_backoff() {
    let peer = backhaul_upload::test_util::S3Peer::embedded(super::support::BUCKET).await;
    let port = backhaul_upload::test_util::free_port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let spool = TempSpool::new();
    spool.write_chunk("cam1/late.mp4", &pattern_bytes(9, 6 * MIB));
    let mut cfg = config(&peer, &format!("http://{listen}"));
    cfg.retry_base_milliseconds = 60_000;
    cfg.retry_max_seconds = 600;
    let upstream = peer.socket_addr();
    let started = std::time::Instant::now();
    let comes_up = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        FaultProxy::start_at(listen, upstream, Faults::default()).await
    });
    let report = drain(&spool, &peer, &cfg).await;
    let took = started.elapsed();
    let _proxy = comes_up.await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(files_left(&spool).is_empty());
    assert!(
        spool.metrics.errors.value("connection") > 0,
        "the store was never down"
    );
    // The monitor ends an outage incident on this, before the first part is acknowledged.
    assert!(
        spool.metrics.store_recoveries.value() >= 1,
        "the store answering again was not counted as a recovery"
    );
    assert!(
        took < std::time::Duration::from_secs(30),
        "drained {took:?} after start: it waited for the 60 s backoff, not for the store"
    );
}
