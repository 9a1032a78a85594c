use backhaul_spool::test_util::TempSpool;
use backhaul_upload::test_util::{S3Peer, test_config, uploader};
use backhaul_upload::{RunMode, RunReport, UploadConfig};
use tokio::sync::watch;

pub const BUCKET: &str = "site-video";

/// Both peers, started fresh.
pub async fn peers() -> Vec<S3Peer> {
    vec![S3Peer::embedded(BUCKET).await, S3Peer::moto().await]
}

/// A config for `peer` (through `endpoint`, which may be a proxy in front of it).
pub fn config(peer: &S3Peer, endpoint: &str) -> UploadConfig {
    let mut c = test_config(endpoint, BUCKET);
    c.create_bucket = peer.needs_create_bucket();
    c
}

/// Drains `spool` once through a fresh uploader.
pub async fn drain(spool: &TempSpool, peer: &S3Peer, cfg: &UploadConfig) -> RunReport {
    let (up, _) = uploader(spool, cfg, peer.credentials());
    let (_tx, rx) = watch::channel(false);
    up.run(RunMode::Drain, rx)
        .await
        .unwrap_or_else(|e| panic!("{}: run: {e}", peer.name()))
}

/// [`drain`], failing the test if any chunk failed.
pub async fn drain_ok(spool: &TempSpool, peer: &S3Peer, cfg: &UploadConfig) -> RunReport {
    let report = drain(spool, peer, cfg).await;
    assert!(
        report.failed.is_empty(),
        "{}: {:?}",
        peer.name(),
        report.failed
    );
    report
}

/// Reads an object back through the S3 API of `peer` (not through any proxy).
pub async fn get(peer: &S3Peer, key: &str) -> Vec<u8> {
    let spool = TempSpool::new();
    let cfg = config(peer, &peer.endpoint());
    let (_, chunks) = uploader(&spool, &cfg, peer.credentials());
    chunks
        .client
        .get_object(key)
        .await
        .unwrap_or_else(|e| panic!("{}: get {key}: {e}", peer.name()))
        .to_vec()
}

/// HeadObject through the S3 API of `peer`: `None` when no object has `key`.
pub async fn head(peer: &S3Peer, key: &str) -> Option<backhaul_upload::ObjectHead> {
    let spool = TempSpool::new();
    let cfg = config(peer, &peer.endpoint());
    let (_, chunks) = uploader(&spool, &cfg, peer.credentials());
    chunks
        .client
        .head_object(key)
        .await
        .unwrap_or_else(|e| panic!("{}: head {key}: {e}", peer.name()))
}

/// Regular files left in the spool (journal excluded).
pub fn files_left(spool: &TempSpool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![spool.path().to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if e.file_name() != ".backhaul" {
                    stack.push(p);
                }
            } else {
                out.push(
                    p.strip_prefix(spool.path())
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// The object key the default template gives a chunk (site SITE-TEST).
pub fn key_of(spool: &TempSpool, name: &str) -> String {
    spool
        .spool
        .chunk_by_name(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} not journaled"))
        .key
}
