use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::creds::CredentialSource;
use crate::ratelimit::BandwidthSchedule;
use crate::transport::{DEFAULT_NOTSENT_LOWAT_BYTES, ProxySetting};

/// Default multipart part size: 8 MiB.
pub const DEFAULT_PART_SIZE_BYTES: u64 = 8 * 1024 * 1024;
/// S3's smallest allowed non-final part.
pub const MIN_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024;
/// S3's largest part.
pub const MAX_PART_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's largest PutObject.
pub const MAX_PUT_OBJECT_BYTES: u64 = 5 * 1024 * 1024 * 1024;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// Default parts uploaded at once per chunk.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;
/// Default most chunks uploaded at once. Small chunks need many in flight to keep a long
/// link busy (one request each, a round trip apart); [`DEFAULT_IN_FLIGHT_BYTES`] keeps large
/// ones to a few.
pub const DEFAULT_CHUNKS_IN_FLIGHT: usize = 32;
/// Default byte budget of the chunks in flight: each reserves its size, at most
/// `part_size_bytes × parts_in_flight`. 64 MiB is two large chunks at the default part size
/// and parallelism, 256 chunks of 256 KiB.
pub const DEFAULT_IN_FLIGHT_BYTES: u64 = 64 * 1024 * 1024;
/// Default multipart threshold. Below it a chunk goes as one PutObject: one request, and on
/// stores that check PutObject checksums (s3s-fs) no MD5 to compute. 64 MiB is what a retry
/// re-sends at most (about 11 s at 50 Mbit/s); s5cmd sends up to 50 MiB and rclone up to
/// 200 MiB as one request.
pub const DEFAULT_MULTIPART_THRESHOLD_BYTES: u64 = 64 * 1024 * 1024;
/// Default stall timeout: no upload progress for this long abandons the attempt.
pub const DEFAULT_STALL_TIMEOUT_SECONDS: u64 = 15;
/// Default timeout of requests without a body.
pub const DEFAULT_REQUEST_TIMEOUT_SECONDS: u64 = 60;
/// Default attempts per part before the chunk backs off as a whole.
pub const DEFAULT_PART_ATTEMPTS: u32 = 5;
/// Default first retry pause.
pub const DEFAULT_RETRY_BASE_MILLISECONDS: u64 = 500;
/// Default longest retry pause.
pub const DEFAULT_RETRY_MAX_SECONDS: u64 = 60;
/// Default age after which a multipart upload under the site prefix that no journal row knows
/// is aborted: far longer than the instant between CreateMultipartUpload and its journal write.
pub const DEFAULT_ORPHAN_UPLOAD_AGE_SECONDS: u64 = 3600;

/// How the bucket appears in request URLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UrlStyle {
    /// Virtual-hosted for `*.amazonaws.com`, path-style otherwise (IPs, MinIO, labs).
    #[default]
    Auto,
    /// `https://endpoint/bucket/key`.
    Path,
    /// `https://bucket.endpoint/key`.
    VirtualHosted,
}

/// How an uploaded object is proven to hold the file's bytes before the file may be deleted.
/// Every PutObject and CompleteMultipartUpload is followed by a HeadObject (size, and any
/// checksum the store reports); the modes differ in what counts as proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// HeadObject where it proves the bytes (a CRC32C the store validated, or an MD5 ETag),
    /// otherwise read the object back.
    #[default]
    Auto,
    /// HeadObject only (one small request per chunk). Where it proves nothing, the chunk is
    /// kept in the spool, counted in `backhaul_upload_unproven_total` and logged.
    Head,
    /// Always read the object back and compare its CRC32C with the file's: one GET of the
    /// whole object per chunk, downloaded bytes equal to uploaded ones.
    ReadBack,
}

impl VerifyMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Head => "head",
            Self::ReadBack => "read-back",
        }
    }
}

/// The `[upload]` table as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadConfig {
    /// Endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Signing region.
    #[serde(default = "default_region")]
    pub region: String,
    /// `auto`, `path` or `virtual-hosted`.
    #[serde(default)]
    pub url_style: UrlStyle,
    /// `chain` (env → profile → instance metadata), `static`, `env`, `profile`, `imds`, `anonymous`.
    #[serde(default)]
    pub credentials: CredentialSource,
    /// Access key id for `credentials = "static"`.
    pub access_key_id: Option<String>,
    /// Secret key for `credentials = "static"`.
    pub secret_access_key: Option<String>,
    /// Shared-file profile (default `AWS_PROFILE`, else `default`).
    pub profile: Option<String>,
    /// Multipart part size in bytes.
    #[serde(default = "default_part_size")]
    pub part_size_bytes: u64,
    /// Chunks up to this size go as one PutObject, larger ones as multipart uploads (default
    /// [`DEFAULT_MULTIPART_THRESHOLD_BYTES`], or the part size if that is larger). One request
    /// per chunk costs fewer round trips and, on a store that checks PutObject checksums but
    /// not UploadPart's, no MD5; but an interrupted PutObject starts again from its first
    /// byte, where a multipart upload keeps its finished parts.
    pub multipart_threshold_bytes: Option<u64>,
    /// Parts uploaded at once per chunk.
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: usize,
    /// Most chunks uploaded at once.
    #[serde(default = "default_chunks_in_flight")]
    pub chunks_in_flight: usize,
    /// Byte budget of the chunks in flight (each reserves its size, at most
    /// `part_size_bytes × parts_in_flight`); one chunk always fits.
    #[serde(default = "default_in_flight_bytes")]
    pub in_flight_bytes: u64,
    /// Seconds without upload progress before an attempt is abandoned.
    #[serde(default = "default_stall")]
    pub stall_timeout_seconds: u64,
    /// Timeout of requests without a body.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// Attempts per part before the chunk backs off as a whole.
    #[serde(default = "default_part_attempts")]
    pub part_attempts: u32,
    /// First retry pause (full jitter, doubling).
    #[serde(default = "default_retry_base")]
    pub retry_base_milliseconds: u64,
    /// Longest retry pause.
    #[serde(default = "default_retry_max")]
    pub retry_max_seconds: u64,
    /// Bandwidth cap: `off`, a rate (`40Mbit`, `5M`) or a timetable (`08:00,20Mbit 18:00,off`).
    #[serde(default = "default_bwlimit")]
    pub bandwidth_limit: String,
    /// Create the bucket at start if it is missing (labs, demos).
    #[serde(default)]
    pub create_bucket: bool,
    /// `TCP_NOTSENT_LOWAT` of upload sockets.
    #[serde(default = "default_lowat")]
    pub tcp_notsent_lowat_bytes: u32,
    /// Abort multipart uploads under the site prefix that no journal row knows once they are
    /// this old.
    #[serde(default = "default_orphan_age")]
    pub orphan_upload_age_seconds: u64,
    /// `auto`, `head` or `read-back`: what proves an object before its file is deleted.
    #[serde(default)]
    pub verify: VerifyMode,
    /// A forward proxy for every request (`http://[user:password@]host:port`), or `"off"`;
    /// unset: `https_proxy`/`http_proxy` from the environment, as curl reads them.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Hosts, domains and networks reached without the proxy (curl's `no_proxy` syntax);
    /// unset: `no_proxy`/`NO_PROXY` from the environment.
    #[serde(default)]
    pub no_proxy: Option<String>,
    /// Extra PEM roots for HTTPS (a private CA); unset: `AWS_CA_BUNDLE`.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_part_size() -> u64 {
    DEFAULT_PART_SIZE_BYTES
}
fn default_parts_in_flight() -> usize {
    DEFAULT_PARTS_IN_FLIGHT
}
fn default_chunks_in_flight() -> usize {
    DEFAULT_CHUNKS_IN_FLIGHT
}
fn default_in_flight_bytes() -> u64 {
    DEFAULT_IN_FLIGHT_BYTES
}
fn default_stall() -> u64 {
    DEFAULT_STALL_TIMEOUT_SECONDS
}
fn default_request_timeout() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_SECONDS
}
fn default_part_attempts() -> u32 {
    DEFAULT_PART_ATTEMPTS
}
fn default_retry_base() -> u64 {
    DEFAULT_RETRY_BASE_MILLISECONDS
}
fn default_retry_max() -> u64 {
    DEFAULT_RETRY_MAX_SECONDS
}
fn default_bwlimit() -> String {
    "off".into()
}
fn default_lowat() -> u32 {
    DEFAULT_NOTSENT_LOWAT_BYTES
}
fn default_orphan_age() -> u64 {
    DEFAULT_ORPHAN_UPLOAD_AGE_SECONDS
}

/// Validated upload settings.
#[derive(Debug, Clone)]
pub struct UploadSettings {
    /// Endpoint URL.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region.
    pub region: String,
    /// URL style (never `Auto` once validated).
    pub url_style: UrlStyle,
    /// Part size.
    pub part_size: u64,
    /// Largest chunk sent as one PutObject.
    pub multipart_threshold: u64,
    /// Parts in flight per chunk.
    pub parts_in_flight: usize,
    /// Most chunks in flight.
    pub chunks_in_flight: usize,
    /// Byte budget of the chunks in flight.
    pub in_flight_bytes: u64,
    /// Stall timeout.
    pub stall_timeout: Duration,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Attempts per part.
    pub part_attempts: u32,
    /// Retry base pause.
    pub retry_base: Duration,
    /// Retry max pause.
    pub retry_max: Duration,
    /// Bandwidth timetable (`None` = unlimited).
    pub bandwidth: Option<BandwidthSchedule>,
    /// Create the bucket at start.
    pub create_bucket: bool,
    /// `TCP_NOTSENT_LOWAT`.
    pub notsent_lowat_bytes: u32,
    /// Age after which an unknown multipart upload is aborted.
    pub orphan_upload_age: Duration,
    /// What proves an object.
    pub verify: VerifyMode,
    /// `upload.proxy`.
    pub proxy: ProxySetting,
    /// `upload.no_proxy`.
    pub no_proxy: Option<String>,
    /// `upload.ca_file`.
    pub ca_file: Option<std::path::PathBuf>,
}

impl UploadConfig {
    /// A config with defaults for `endpoint` and `bucket`.
    pub fn new(endpoint: &str, bucket: &str) -> Self {
        Self {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: default_region(),
            url_style: UrlStyle::Auto,
            credentials: CredentialSource::Chain,
            access_key_id: None,
            secret_access_key: None,
            profile: None,
            part_size_bytes: DEFAULT_PART_SIZE_BYTES,
            multipart_threshold_bytes: None,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            chunks_in_flight: DEFAULT_CHUNKS_IN_FLIGHT,
            in_flight_bytes: DEFAULT_IN_FLIGHT_BYTES,
            stall_timeout_seconds: DEFAULT_STALL_TIMEOUT_SECONDS,
            request_timeout_seconds: DEFAULT_REQUEST_TIMEOUT_SECONDS,
            part_attempts: DEFAULT_PART_ATTEMPTS,
            retry_base_milliseconds: DEFAULT_RETRY_BASE_MILLISECONDS,
            retry_max_seconds: DEFAULT_RETRY_MAX_SECONDS,
            bandwidth_limit: default_bwlimit(),
            create_bucket: false,
            tcp_notsent_lowat_bytes: DEFAULT_NOTSENT_LOWAT_BYTES,
            orphan_upload_age_seconds: DEFAULT_ORPHAN_UPLOAD_AGE_SECONDS,
            verify: VerifyMode::Auto,
            proxy: None,
            no_proxy: None,
            ca_file: None,
        }
    }

    /// Checks values; errors name the key (the caller adds file and line).
    pub fn validate(&self) -> Result<UploadSettings, (&'static str, String)> {
        let (target, _) =
            crate::transport::parse_url(&self.endpoint).map_err(|e| ("endpoint", e.to_string()))?;
        let proxy = match self.proxy.as_deref().map(str::trim) {
            None => ProxySetting::Environment,
            Some("" | "off") => ProxySetting::Off,
            Some(url) => {
                crate::transport::Proxy::parse(url).map_err(|e| ("proxy", e.to_string()))?;
                ProxySetting::Url(url.to_owned())
            }
        };
        if let Some(f) = &self.ca_file
            && !f.is_file()
        {
            return Err((
                "ca_file",
                format!(
                    "{} is not a readable file; give the PEM file of the store's CA",
                    f.display()
                ),
            ));
        }
        if !valid_bucket(&self.bucket) {
            return Err((
                "bucket",
                format!(
                    "`{}` is not a valid S3 bucket name (3-63 of a-z 0-9 . -)",
                    self.bucket
                ),
            ));
        }
        if !(MIN_PART_SIZE_BYTES..=MAX_PART_SIZE_BYTES).contains(&self.part_size_bytes) {
            return Err((
                "part_size_bytes",
                format!(
                    "must be between {MIN_PART_SIZE_BYTES} (5 MiB, the S3 minimum) and {MAX_PART_SIZE_BYTES}"
                ),
            ));
        }
        let multipart_threshold = self
            .multipart_threshold_bytes
            .unwrap_or(DEFAULT_MULTIPART_THRESHOLD_BYTES.max(self.part_size_bytes));
        if !(self.part_size_bytes..=MAX_PUT_OBJECT_BYTES).contains(&multipart_threshold) {
            return Err((
                "multipart_threshold_bytes",
                format!(
                    "{multipart_threshold} must be between part_size_bytes ({}) and {MAX_PUT_OBJECT_BYTES} (5 GiB, the largest PutObject); chunks up to one part always go as one PutObject",
                    self.part_size_bytes
                ),
            ));
        }
        if !(1..=64).contains(&self.parts_in_flight) {
            return Err(("parts_in_flight", "must be between 1 and 64".into()));
        }
        if !(1..=256).contains(&self.chunks_in_flight) {
            return Err(("chunks_in_flight", "must be between 1 and 256".into()));
        }
        if self.in_flight_bytes < MIN_PART_SIZE_BYTES {
            return Err((
                "in_flight_bytes",
                format!(
                    "{} is below one part ({MIN_PART_SIZE_BYTES}); the default {DEFAULT_IN_FLIGHT_BYTES} keeps two large chunks in flight",
                    self.in_flight_bytes
                ),
            ));
        }
        if self.stall_timeout_seconds == 0 {
            return Err(("stall_timeout_seconds", "must be at least 1".into()));
        }
        if self.request_timeout_seconds == 0 {
            return Err(("request_timeout_seconds", "must be at least 1".into()));
        }
        if self.part_attempts == 0 {
            return Err(("part_attempts", "must be at least 1".into()));
        }
        if self.retry_max_seconds.saturating_mul(1000) < self.retry_base_milliseconds {
            return Err((
                "retry_max_seconds",
                format!(
                    "{} s is below retry_base_milliseconds ({} ms); the longest backoff must be at least the first",
                    self.retry_max_seconds, self.retry_base_milliseconds
                ),
            ));
        }
        if self.orphan_upload_age_seconds < 60 {
            return Err((
                "orphan_upload_age_seconds",
                "must be at least 60, or an upload being started could be taken for an orphan"
                    .into(),
            ));
        }
        if self.credentials == CredentialSource::Static
            && (self.access_key_id.is_none() || self.secret_access_key.is_none())
        {
            return Err((
                "credentials",
                "\"static\" needs access_key_id and secret_access_key".into(),
            ));
        }
        let bandwidth = match self.bandwidth_limit.parse::<BandwidthSchedule>() {
            Ok(s) if s.is_unlimited() => None,
            Ok(s) => Some(s),
            Err(e) => return Err(("bandwidth_limit", e)),
        };
        let url_style = match self.url_style {
            UrlStyle::Auto
                if target.host.ends_with(".amazonaws.com") && !self.bucket.contains('.') =>
            {
                UrlStyle::VirtualHosted
            }
            UrlStyle::Auto => UrlStyle::Path,
            s => s,
        };
        Ok(UploadSettings {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            url_style,
            part_size: self.part_size_bytes,
            multipart_threshold,
            parts_in_flight: self.parts_in_flight,
            chunks_in_flight: self.chunks_in_flight,
            in_flight_bytes: self.in_flight_bytes,
            stall_timeout: Duration::from_secs(self.stall_timeout_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            part_attempts: self.part_attempts,
            retry_base: Duration::from_millis(self.retry_base_milliseconds),
            retry_max: Duration::from_secs(self.retry_max_seconds),
            bandwidth,
            create_bucket: self.create_bucket,
            notsent_lowat_bytes: self.tcp_notsent_lowat_bytes,
            orphan_upload_age: Duration::from_secs(self.orphan_upload_age_seconds),
            verify: self.verify,
            proxy,
            no_proxy: self.no_proxy.clone(),
            ca_file: self.ca_file.clone(),
        })
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_auto_style_follows_host() {
        let s = UploadConfig::new("http://127.0.0.1:9000", "video")
            .validate()
            .unwrap();
        assert_eq!(s.url_style, UrlStyle::Path);
        assert_eq!(s.part_size, DEFAULT_PART_SIZE_BYTES);
        assert_eq!(s.multipart_threshold, DEFAULT_MULTIPART_THRESHOLD_BYTES);
        let mut big_parts = UploadConfig::new("http://127.0.0.1:9000", "video");
        big_parts.part_size_bytes = 128 << 20;
        // The default threshold follows a part size above it.
        assert_eq!(big_parts.validate().unwrap().multipart_threshold, 128 << 20);
        let s = UploadConfig::new("https://s3.eu-west-1.amazonaws.com", "video")
            .validate()
            .unwrap();
        assert_eq!(s.url_style, UrlStyle::VirtualHosted);
    }

    #[test]
    fn rejects_bad_values_by_key() {
        let mut c = UploadConfig::new("http://127.0.0.1:9000", "Video_Bucket");
        assert_eq!(c.validate().unwrap_err().0, "bucket");
        c.bucket = "video".into();
        c.part_size_bytes = 1024;
        assert_eq!(c.validate().unwrap_err().0, "part_size_bytes");
        c.part_size_bytes = DEFAULT_PART_SIZE_BYTES;
        c.bandwidth_limit = "fast".into();
        assert_eq!(c.validate().unwrap_err().0, "bandwidth_limit");
        c.bandwidth_limit = "off".into();
        c.credentials = CredentialSource::Static;
        assert_eq!(c.validate().unwrap_err().0, "credentials");
        c.endpoint = "s3.amazonaws.com".into();
        assert_eq!(c.validate().unwrap_err().0, "endpoint");
    }
}
