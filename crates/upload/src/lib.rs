//! Uploads: turns ready chunks in the spool into verified objects in an S3-compatible bucket.
//!
//! Owns: the HTTP transport (our sockets, so per-socket options are ours, and
//! `Transport::tcp_info` reads `TCP_INFO` of every open connection through netprobe), TLS,
//! SigV4 signing, the S3 operations, resumable multipart uploads with per-part CRC32C,
//! verification of the finished object, retries with full-jitter backoff, the stall watchdog,
//! the bandwidth timetable, the AWS credential chain and keeping short-lived credentials fresh
//! (STS and the other credential endpoints go through the same transport), the store's clock
//! offset, the upload errors' typed feed, CloudWatch `PutMetricData`, and the embedded S3
//! server of `backhaul demo` (feature `embedded-s3`; with `test-util`, keys that rotate and
//! expire, and a store with another clock). This is the only crate that speaks HTTP or TLS.
//!
//! Does not own: which files are chunks, their lifecycle or when they may be deleted
//! (`backhaul-spool`: this crate claims chunks and reports on each claim through the spool's
//! claim/ack methods), metric definitions (`backhaul-telemetry`), or what an upload failure
//! means for the site (`backhaul-diagnose`).

mod body;
mod chunk;
pub mod cloudwatch;
mod config;
mod creds;
#[cfg(feature = "embedded-s3")]
pub mod embedded;
mod error;
mod feed;
pub mod health;
pub mod integrity;
mod pipeline;
mod progress;
mod query;
mod ratelimit;
mod retry;
mod s3;
pub mod sigv4;
#[cfg(feature = "test-util")]
pub mod test_creds;
#[cfg(feature = "test-util")]
pub mod test_util;
mod transport;
mod verify;
mod xml;

pub use chunk::{ChunkUploader, Verified, composite_crc32c, multipart_etag};
pub use config::{
    DEFAULT_CHUNKS_IN_FLIGHT, DEFAULT_IN_FLIGHT_BYTES, DEFAULT_MULTIPART_THRESHOLD_BYTES,
    DEFAULT_PART_SIZE_BYTES, DEFAULT_PARTS_IN_FLIGHT, DEFAULT_STALL_TIMEOUT_SECONDS,
    MIN_PART_SIZE_BYTES, UploadConfig, UploadSettings, UrlStyle, VerifyMode,
};
pub use creds::{
    AwsEnv, CredentialSource, Credentials, CredentialsProvider, CredentialsStatus, parse_profile,
};
pub use error::{Error, ErrorClass, Resign};
pub use feed::ErrorFeed;
pub use integrity::{HeadProof, Integrity, Proof, StoreProfile, Verification};
pub use pipeline::{RunMode, RunReport, Uploader};
pub use ratelimit::{BandwidthSchedule, RateLimiter, SiteZone, ZoneSource, parse_rate};
pub use retry::Backoff;
pub use s3::{Completed, ObjectHead, OpenUpload, PutAck, S3Client, ServerPart};
pub use transport::{
    ClientCert, DEFAULT_NOTSENT_LOWAT_BYTES, Proxies, ProxyEnv, ProxySetting, RequestUrl,
    SimpleRequest, Transport, TransportConfig, parse_request_url, redact,
};

use std::sync::Arc;

use backhaul_spool::Spool;
use backhaul_telemetry::Metrics;

/// Everything needed to build an [`Uploader`].
#[derive(Debug)]
pub struct UploaderParts {
    /// Validated settings.
    pub settings: UploadSettings,
    /// Credentials (shared with CloudWatch publishing).
    pub creds: Arc<CredentialsProvider>,
    /// `AWS_CA_BUNDLE`, for HTTPS endpoints (`upload.ca_file` wins).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// The process's proxy variables (`upload.proxy` and `upload.no_proxy` win).
    pub proxy_env: ProxyEnv,
    /// The time zone of the bandwidth timetable.
    pub zone: ZoneSource,
}

/// Wires transport, client, limiter and chunk uploader together.
pub fn build_uploader(
    parts: UploaderParts,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
) -> Result<(Uploader, Arc<ChunkUploader>), Error> {
    let proxies = Proxies::resolve(
        &parts.settings.proxy,
        parts.settings.no_proxy.as_deref(),
        &parts.proxy_env,
    )?;
    if let Some(line) = proxies.describe() {
        tracing::info!(proxies = %line, "requests go through a forward proxy");
    }
    let transport = Arc::new(Transport::new(TransportConfig {
        notsent_lowat_bytes: parts.settings.notsent_lowat_bytes,
        tcp_user_timeout: Some(parts.settings.stall_timeout * 2),
        ca_bundle: parts.settings.ca_file.clone().or(parts.ca_bundle),
        proxies,
        // The pool never holds more than were in use at once, so the most requests that can
        // be in flight costs nothing when fewer are.
        max_idle_per_endpoint: parts.settings.chunks_in_flight * parts.settings.parts_in_flight,
        ..TransportConfig::default()
    }));
    parts.creds.attach_metrics(metrics.clone());
    let client = Arc::new(S3Client::new(
        &parts.settings,
        transport,
        parts.creds,
        metrics.clone(),
    )?);
    let limiter = Arc::new(RateLimiter::new(
        parts.settings.bandwidth.clone(),
        SiteZone::new(parts.zone),
    ));
    let verify = parts.settings.verify;
    let chunks = Arc::new(ChunkUploader {
        errors: ErrorFeed::new(metrics.clone()),
        client,
        spool,
        settings: parts.settings,
        limiter,
        metrics,
        integrity: Arc::new(Integrity::new(verify)),
        health: Arc::new(health::StoreHealth::default()),
    });
    Ok((Uploader::new(chunks.clone()), chunks))
}
