use std::path::PathBuf;
use std::time::Duration;

/// Why an upload request or chunk failed. Callers decide retry or give-up by
/// [`Error::is_retryable`] and count failures by [`Error::class`], never by message text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store answered with an error status.
    #[error("{op} {key}: HTTP {status} {code}: {message}")]
    Status {
        /// Operation (`UploadPart`, …).
        op: &'static str,
        /// Object key or bucket.
        key: String,
        /// HTTP status.
        status: u16,
        /// S3 error code (`SlowDown`, `NoSuchBucket`, …), or empty.
        code: String,
        /// S3 error message.
        message: String,
    },
    /// The connection could not be made or broke.
    #[error("{op} to {endpoint}: connection failed")]
    Connect {
        /// Operation.
        op: &'static str,
        /// host:port.
        endpoint: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP protocol failure (reset, closed early).
    #[error("{op} to {endpoint}: HTTP exchange failed")]
    Http {
        /// Operation.
        op: &'static str,
        /// host:port.
        endpoint: String,
        /// Cause.
        #[source]
        source: hyper::Error,
    },
    /// TLS setup or handshake failed.
    #[error("TLS to {endpoint} failed; check the CA bundle (AWS_CA_BUNDLE) and the endpoint name")]
    Tls {
        /// host:port.
        endpoint: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No response within the request timeout.
    #[error("{op} {key}: no response within {after:?}")]
    Timeout {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// How long was waited.
        after: Duration,
    },
    /// No body byte was taken by the socket for the stall timeout: the path is eating packets.
    #[error(
        "{op} {key} part {part}: stalled, no upload progress for {after:?} (large packets dropped on the path?)"
    )]
    Stall {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Part number (0 for single-request uploads).
        part: u32,
        /// The stall timeout.
        after: Duration,
    },
    /// A response body could not be understood.
    #[error("{op} {key}: unexpected response: {detail}")]
    Protocol {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// What was wrong.
        detail: String,
    },
    /// The chunk file could not be read.
    #[error("reading chunk {path} failed")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The chunk file changed or vanished during upload; it is never marked verified.
    #[error("chunk {path} changed or vanished while uploading")]
    Changed {
        /// File.
        path: PathBuf,
    },
    /// The object in the bucket does not match the chunk.
    #[error("verification of {key} failed: {detail}")]
    Verify {
        /// Object key.
        key: String,
        /// What did not match.
        detail: String,
    },
    /// The store acknowledged bytes whose MD5 is not what was sent: corrupted in transit, on a
    /// store that does not validate checksums. Nothing is marked verified; the bytes are sent
    /// again.
    #[error(
        "{op} {key} part {part}: the store's ETag {got} is not the MD5 {sent} of the bytes sent (corrupted in transit); sending again"
    )]
    Corrupt {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
        /// Part number (0 for single-request uploads).
        part: u32,
        /// MD5 (hex) of what was read from the file.
        sent: String,
        /// ETag the store returned.
        got: String,
    },
    /// A different object already has the chunk's key; it is never overwritten.
    #[error("{key}: a different object already has this key in the bucket")]
    KeyTaken {
        /// Object key.
        key: String,
    },
    /// No credentials could be found.
    #[error("no AWS credentials: {detail}")]
    Credentials {
        /// What was tried.
        detail: String,
    },
    /// The journal failed.
    #[error("spool journal failed")]
    Spool(#[from] backhaul_spool::Error),
    /// The endpoint or bucket is unusable as configured.
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// The error class used in `backhaul_upload_errors_total{class}`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Status {
                status: 503, code, ..
            } if code == "SlowDown" => "slow_down",
            Error::Status { code, .. } if code == "NoSuchBucket" => "no_such_bucket",
            Error::Status { code, .. } if code == "NoSuchUpload" => "no_such_upload",
            Error::Status { status: 412, .. } => "precondition",
            Error::Status { status: 501, .. } => "not_implemented",
            Error::Status { code, .. }
                if matches!(
                    code.as_str(),
                    "BadDigest"
                        | "InvalidDigest"
                        | "XAmzContentChecksumMismatch"
                        | "XAmzContentSHA256Mismatch"
                ) =>
            {
                "checksum"
            }
            Error::Status {
                status: 401 | 403, ..
            } => "auth",
            Error::Status { status: 408, .. } => "timeout",
            Error::Status {
                status: 500..=599, ..
            } => "server_5xx",
            Error::Status { .. } => "client_4xx",
            Error::Connect { .. } => "connection",
            Error::Http { .. } => "connection",
            Error::Tls { .. } => "tls",
            Error::Timeout { .. } => "timeout",
            Error::Stall { .. } => "stall",
            Error::Protocol { .. } => "protocol",
            Error::Read { .. } | Error::Spool(_) => "local_io",
            Error::Changed { .. } => "chunk_changed",
            Error::Verify { .. } => "verify",
            Error::Corrupt { .. } => "corrupt",
            Error::KeyTaken { .. } => "key_taken",
            Error::Credentials { .. } => "credentials",
            Error::Endpoint { .. } => "config",
        }
    }

    /// Whether retrying the same request soon may succeed.
    ///
    /// Auth and missing-bucket errors are not retried per request; the chunk is retried later
    /// with a long backoff, so an operator can fix credentials without losing anything.
    pub fn is_retryable(&self) -> bool {
        self.is_transient() || matches!(self.class(), "checksum" | "corrupt")
    }

    /// Whether the failure is the path's or a busy store's (connection, timeout, stall,
    /// throttling, 5xx), not an answer about the request itself.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.class(),
            "slow_down" | "server_5xx" | "timeout" | "stall" | "connection" | "protocol"
        )
    }

    /// Whether the multipart upload id is unknown to the server (start a new upload).
    pub fn is_no_such_upload(&self) -> bool {
        self.class() == "no_such_upload"
    }
}
