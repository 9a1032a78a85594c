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
    /// The agent dropped the connection under the request: the path changed (an interface MTU
    /// was restored) and a fresh connection is better than waiting out a stall.
    #[error(
        "{op} {key}: connection dropped by the agent after a path change; retrying on a fresh one"
    )]
    Abandoned {
        /// Operation.
        op: &'static str,
        /// Object key.
        key: String,
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
    /// The store refused the request because this host's clock and the store's differ by more
    /// than S3 allows (15 minutes): signatures carry the time. Credentials are not the problem.
    #[error(
        "{op} {key}: the store refused the request because this host's clock is off ({detail}); fix the system clock (chrony or systemd-timesyncd: `chronyc tracking`, `timedatectl status`), not the credentials; chunks stay in the spool meanwhile"
    )]
    ClockSkew {
        /// Operation.
        op: &'static str,
        /// Object key or bucket.
        key: String,
        /// The store's words, or the two clocks.
        detail: String,
    },
    /// The object in the bucket has the right size, but nothing the store returned proves its
    /// bytes and `upload.verify = "head"` forbids reading it back: the chunk is not marked
    /// verified and its file stays in the spool.
    #[error(
        "{key}: stored, but not proven: {why}; the file stays in the spool (set upload.verify = \"auto\" or \"read-back\" to prove it by reading the object back)"
    )]
    Unproven {
        /// Object key.
        key: String,
        /// Why HeadObject proves nothing on this store.
        why: String,
    },
    /// A different object already has the chunk's key; it is never overwritten.
    #[error("{key}: a different object already has this key in the bucket")]
    KeyTaken {
        /// Object key.
        key: String,
    },
    /// The store refused the request's signature for something the agent has now put right
    /// (new credentials in hand, or the store's clock learned): sent again, signed anew.
    #[error("{op} {key}: {why}; sending again")]
    Resign {
        /// Operation.
        op: &'static str,
        /// Object key or bucket.
        key: String,
        /// What was put right.
        why: Resign,
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

/// Why a refused request is signed again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resign {
    /// The credentials were refused (`ExpiredToken`, a rotated key) and others are in hand.
    Credentials {
        /// The store's error code.
        code: String,
    },
    /// The store refused this host's clock; requests are now signed at the store's time.
    Clock {
        /// The store's clock minus this host's.
        store_ahead_seconds: i64,
    },
}

impl std::fmt::Display for Resign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Credentials { code } => {
                write!(
                    f,
                    "the store refused the credentials ({code}); new ones are in hand"
                )
            }
            Self::Clock {
                store_ahead_seconds,
            } => write!(
                f,
                "the store refused this host's clock ({store_ahead_seconds:+} s from the store's); signing at the store's time"
            ),
        }
    }
}

/// Why a request or a chunk failed, as one closed set: callers decide by matching it, and
/// [`ErrorClass::as_str`] is the `class` label of `backhaul_upload_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// 503 SlowDown: throttled.
    SlowDown,
    /// The bucket does not exist.
    NoSuchBucket,
    /// The multipart upload id is unknown to the store.
    NoSuchUpload,
    /// 412: the key is taken (`If-None-Match: *`).
    Precondition,
    /// 501: the store does not implement the operation.
    NotImplemented,
    /// The store refused a checksum or digest.
    Checksum,
    /// 401/403: credentials rejected.
    Auth,
    /// The store refused a request for the host's clock (`RequestTimeTooSkewed`).
    ClockSkew,
    /// No response in time.
    Timeout,
    /// 5xx from the store.
    Server5xx,
    /// Any other 4xx.
    Client4xx,
    /// TCP connect failed or the connection broke.
    Connection,
    /// TLS setup or handshake failed.
    Tls,
    /// No body byte taken for the stall timeout.
    Stall,
    /// The agent dropped the connection after a path change.
    Abandoned,
    /// A response could not be understood.
    Protocol,
    /// The chunk file or the journal failed.
    LocalIo,
    /// The chunk changed or vanished while uploading.
    ChunkChanged,
    /// The object in the bucket does not match the chunk.
    Verify,
    /// The store's ETag is not the MD5 of what was sent.
    Corrupt,
    /// The object is stored but HeadObject proves nothing and reading back is not allowed.
    Unproven,
    /// A different object has the chunk's key.
    KeyTaken,
    /// No credentials could be found.
    Credentials,
    /// Refused for the signature's credentials or time, put right and sent again.
    Resigned,
    /// The endpoint or bucket is unusable as configured.
    Config,
}

impl ErrorClass {
    /// Every class, for iterating over the metric's series.
    pub const ALL: [ErrorClass; 25] = [
        Self::SlowDown,
        Self::NoSuchBucket,
        Self::NoSuchUpload,
        Self::Precondition,
        Self::NotImplemented,
        Self::Checksum,
        Self::Auth,
        Self::ClockSkew,
        Self::Timeout,
        Self::Server5xx,
        Self::Client4xx,
        Self::Connection,
        Self::Tls,
        Self::Stall,
        Self::Abandoned,
        Self::Protocol,
        Self::LocalIo,
        Self::ChunkChanged,
        Self::Verify,
        Self::Corrupt,
        Self::Unproven,
        Self::KeyTaken,
        Self::Credentials,
        Self::Resigned,
        Self::Config,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowDown => "slow_down",
            Self::NoSuchBucket => "no_such_bucket",
            Self::NoSuchUpload => "no_such_upload",
            Self::Precondition => "precondition",
            Self::NotImplemented => "not_implemented",
            Self::Checksum => "checksum",
            Self::Auth => "auth",
            Self::ClockSkew => "clock_skew",
            Self::Timeout => "timeout",
            Self::Server5xx => "server_5xx",
            Self::Client4xx => "client_4xx",
            Self::Connection => "connection",
            Self::Tls => "tls",
            Self::Stall => "stall",
            Self::Resigned => "resigned",
            Self::Abandoned => "abandoned",
            Self::Protocol => "protocol",
            Self::LocalIo => "local_io",
            Self::ChunkChanged => "chunk_changed",
            Self::Verify => "verify",
            Self::Corrupt => "corrupt",
            Self::Unproven => "unproven",
            Self::KeyTaken => "key_taken",
            Self::Credentials => "credentials",
            Self::Config => "config",
        }
    }

    /// The path's or a busy store's failure (connection, timeout, stall, throttling, 5xx), not
    /// an answer about the request itself.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Self::SlowDown
                | Self::Server5xx
                | Self::Timeout
                | Self::Stall
                | Self::Connection
                | Self::Protocol
                | Self::Abandoned
                | Self::Resigned
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The error class used in `backhaul_upload_errors_total{class}`.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Status {
                status: 503, code, ..
            } if code == "SlowDown" => ErrorClass::SlowDown,
            Error::Status { code, .. } if code == "NoSuchBucket" => ErrorClass::NoSuchBucket,
            Error::Status { code, .. } if code == "NoSuchUpload" => ErrorClass::NoSuchUpload,
            Error::Status { status: 412, .. } => ErrorClass::Precondition,
            Error::Status { status: 501, .. } => ErrorClass::NotImplemented,
            Error::Status { code, .. }
                if matches!(
                    code.as_str(),
                    "BadDigest"
                        | "InvalidDigest"
                        | "XAmzContentChecksumMismatch"
                        | "XAmzContentSHA256Mismatch"
                ) =>
            {
                ErrorClass::Checksum
            }
            Error::Status {
                status: 401 | 403, ..
            } => ErrorClass::Auth,
            Error::Status { status: 408, .. } => ErrorClass::Timeout,
            Error::Status {
                status: 500..=599, ..
            } => ErrorClass::Server5xx,
            Error::Status { .. } => ErrorClass::Client4xx,
            Error::Connect { .. } => ErrorClass::Connection,
            Error::Http { .. } => ErrorClass::Connection,
            Error::Tls { .. } => ErrorClass::Tls,
            Error::Timeout { .. } => ErrorClass::Timeout,
            Error::Stall { .. } => ErrorClass::Stall,
            Error::Abandoned { .. } => ErrorClass::Abandoned,
            Error::Protocol { .. } => ErrorClass::Protocol,
            Error::Read { .. } | Error::Spool(_) => ErrorClass::LocalIo,
            Error::Changed { .. } => ErrorClass::ChunkChanged,
            Error::Verify { .. } => ErrorClass::Verify,
            Error::Corrupt { .. } => ErrorClass::Corrupt,
            Error::ClockSkew { .. } => ErrorClass::ClockSkew,
            Error::Unproven { .. } => ErrorClass::Unproven,
            Error::KeyTaken { .. } => ErrorClass::KeyTaken,
            Error::Credentials { .. } => ErrorClass::Credentials,
            Error::Resign { .. } => ErrorClass::Resigned,
            Error::Endpoint { .. } => ErrorClass::Config,
        }
    }

    /// Whether retrying the same request soon may succeed.
    ///
    /// Auth and missing-bucket errors are not retried per request; the chunk is retried later
    /// with a long backoff, so an operator can fix credentials without losing anything.
    pub fn is_retryable(&self) -> bool {
        let c = self.class();
        // A wrong or missing object after a write was deleted (or never stored): sending the
        // chunk again soon may succeed.
        c.is_transient()
            || matches!(
                c,
                ErrorClass::Checksum | ErrorClass::Corrupt | ErrorClass::Verify
            )
    }

    /// Whether the failure is the path's or a busy store's, not an answer about the request.
    pub fn is_transient(&self) -> bool {
        self.class().is_transient()
    }

    /// Whether the multipart upload id is unknown to the server (start a new upload).
    pub fn is_no_such_upload(&self) -> bool {
        self.class() == ErrorClass::NoSuchUpload
    }
}
