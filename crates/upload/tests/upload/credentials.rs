//! Short-lived credentials against a store that accepts only keys that have not expired:
//! refreshed ahead of expiry during a long upload, refreshed and re-signed after a refusal,
//! and a store whose clock is 20 minutes ahead.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::embedded::StoreQuirks;
use backhaul_upload::test_creds::{Issuer, KeyRing, embedded_keys};
use backhaul_upload::test_util::{S3Peer, uploader, uploader_with};
use backhaul_upload::{
    AwsEnv, CredentialSource, CredentialsProvider, RunMode, RunReport, UploadConfig,
};
use tokio::sync::watch;

use super::support::{BUCKET, config, key_of};

const MIB: usize = 1024 * 1024;

fn one_principal() -> StoreQuirks {
    StoreQuirks {
        clock_offset: None,
        one_principal: true,
    }
}

/// The bytes the embedded store holds under `key`.
fn stored(peer: &S3Peer, key: &str) -> Vec<u8> {
    let S3Peer::Embedded(s, _) = peer else {
        panic!("the embedded store only")
    };
    std::fs::read(s.root().join(BUCKET).join(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

async fn drain_with(
    spool: &TempSpool,
    cfg: &UploadConfig,
    creds: Arc<CredentialsProvider>,
) -> RunReport {
    let (up, _) = uploader_with(spool, cfg, creds);
    let (_tx, rx) = watch::channel(false);
    up.run(RunMode::Drain, rx).await.unwrap()
}

/// A throttled multipart upload that lasts several lifetimes of its credentials (6 s each,
/// from a container credentials endpoint that wants its token): every request is signed with
/// credentials the store still accepts, and the chunk arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_outlives_several_credentials_without_one_refusal() {
    let ring = KeyRing::new(Duration::from_secs(6));
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), one_principal()).await;
    let issuer = Issuer::start(ring.clone(), "Bearer site-token").await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "Bearer site-token\n").unwrap();
    let creds = Arc::new(CredentialsProvider::new(
        CredentialSource::Container,
        None,
        None,
        AwsEnv {
            container_full_uri: Some(format!("{}/container", issuer.url())),
            container_token_file: Some(token_file),
            ..AwsEnv::default()
        },
    ));
    let spool = TempSpool::new();
    let body = pattern_bytes(7, 12 * MIB);
    spool.write_chunk("cam1/long.mp4", &body);
    let mut cfg = config(&peer, &peer.endpoint());
    // 12 MiB at 640 KiB/s: about 19 s, three lifetimes.
    cfg.bandwidth_limit = "640k".into();
    let report = drain_with(&spool, &cfg, creds.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        report.elapsed >= Duration::from_secs(15),
        "{:?}",
        report.elapsed
    );
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/long.mp4")), body);
    assert_eq!(
        ring.expired_refusals(),
        0,
        "a request was signed with expired credentials"
    );
    assert!(
        ring.issued() >= 3,
        "refreshed ahead: {} keys",
        ring.issued()
    );
    let m = &spool.metrics;
    assert_eq!(m.errors.total(), 0, "{:?}", m.errors.series());
    assert!(m.credentials_refreshes.value("ok") >= 3);
    let status = creds.status();
    assert_eq!(
        status.source.as_deref(),
        Some("container credentials endpoint")
    );
    assert!(status.expires_at.is_some());
}

/// Keys revoked under a running upload (`ExpiredToken`): the agent takes new ones from its
/// `credential_process` and sends the refused request again; no chunk is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_replaced_from_credential_process_and_the_request_sent_again() {
    let ring = KeyRing::new(Duration::from_secs(3600));
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), one_principal()).await;
    let issuer = Issuer::start(ring.clone(), "unused").await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config");
    std::fs::write(
        &config_file,
        format!(
            "[profile site]\ncredential_process = {}\n",
            issuer.process_command()
        ),
    )
    .unwrap();
    let creds = Arc::new(CredentialsProvider::new(
        CredentialSource::Process,
        None,
        Some("site".into()),
        AwsEnv {
            config_file: Some(config_file),
            ..AwsEnv::default()
        },
    ));
    let spool = TempSpool::new();
    let body = pattern_bytes(8, 12 * MIB);
    spool.write_chunk("cam1/revoked.mp4", &body);
    let mut cfg = config(&peer, &peer.endpoint());
    cfg.bandwidth_limit = "2M".into();
    let (up, _) = uploader_with(&spool, &cfg, creds.clone());
    let (_tx, rx) = watch::channel(false);
    let run = tokio::spawn(async move { up.run(RunMode::Drain, rx).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(2)).await;
    ring.expire_all();
    let report = run.await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/revoked.mp4")), body);
    assert!(ring.expired_refusals() >= 1, "the revocation was never met");
    let m = &spool.metrics;
    assert!(m.errors.value("resigned") >= 1, "{:?}", m.errors.series());
    assert_eq!(m.errors.value("auth"), 0, "{:?}", m.errors.series());
    assert!(ring.issued() >= 2);
    assert_eq!(
        creds.status().source.as_deref(),
        Some("credential_process of profile site")
    );
}

/// The store's clock is 20 minutes ahead: the first refusal teaches the agent the store's time,
/// every later request is signed at it, and the skew is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_twenty_minutes_ahead_is_uploaded_to_after_one_re_sign() {
    let offset = Arc::new(AtomicI64::new(20 * 60));
    let quirks = StoreQuirks {
        clock_offset: Some(offset),
        one_principal: false,
    };
    let peer = S3Peer::embedded_with(BUCKET, embedded_keys(), quirks).await;
    let spool = TempSpool::new();
    let body = pattern_bytes(9, 6 * MIB);
    spool.write_chunk("cam1/skew.mp4", &body);
    let cfg = config(&peer, &peer.endpoint());
    let (up, _) = uploader(&spool, &cfg, peer.credentials());
    let (_tx, rx) = watch::channel(false);
    let report = up.run(RunMode::Drain, rx).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/skew.mp4")), body);
    let m = &spool.metrics;
    assert_eq!(m.errors.value("resigned"), 1, "{:?}", m.errors.series());
    assert_eq!(m.errors.value("clock_skew"), 0, "{:?}", m.errors.series());
    let skew = m.clock_skew_seconds.value();
    assert!((1195.0..=1205.0).contains(&skew), "{skew}");
}
