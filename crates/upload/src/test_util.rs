//! Test helpers: the embedded S3 server, moto's server, and an agent wired to either.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backhaul_spool::test_util::TempSpool;

use crate::embedded::{EmbeddedS3, EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY};
use crate::{
    build_uploader, ChunkUploader, CredentialsProvider, Credentials, UploadConfig, Uploader,
    UploaderParts,
};

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running S3 peer: embedded s3s-fs or moto.
#[derive(Debug)]
pub enum S3Peer {
    /// In-process s3s-fs.
    Embedded(EmbeddedS3, tempfile::TempDir),
    /// `moto_server` child process.
    Moto(Child, String),
}

impl S3Peer {
    /// Starts the embedded server on a free port with bucket `bucket` created.
    pub async fn embedded(bucket: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let s = EmbeddedS3::start(dir.path(), "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")))
            .await
            .unwrap_or_else(|e| panic!("embedded s3: {e}"));
        s.create_bucket(bucket).unwrap_or_else(|e| panic!("bucket: {e}"));
        S3Peer::Embedded(s, dir)
    }

    /// Starts `moto_server` on a free port (it must be installed: `pip install 'moto[server]'`).
    pub async fn moto() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("moto_server not runnable ({e}); pip install 'moto[server]'"));
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return S3Peer::Moto(child, endpoint);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not listen on {endpoint} within 20 s");
    }

    /// Endpoint URL.
    pub fn endpoint(&self) -> String {
        match self {
            S3Peer::Embedded(s, _) => s.endpoint(),
            S3Peer::Moto(_, e) => e.clone(),
        }
    }

    /// Credentials the peer accepts.
    pub fn credentials(&self) -> Credentials {
        match self {
            S3Peer::Embedded(..) => Credentials::new(EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, None),
            S3Peer::Moto(..) => Credentials::new("testing", "testing", None),
        }
    }

    /// Whether the bucket must be created through the API.
    pub fn needs_create_bucket(&self) -> bool {
        matches!(self, S3Peer::Moto(..))
    }

    /// Peer name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            S3Peer::Embedded(..) => "s3s-fs",
            S3Peer::Moto(..) => "moto",
        }
    }
}

impl Drop for S3Peer {
    fn drop(&mut self) {
        if let S3Peer::Moto(child, _) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A config for `endpoint` with test-friendly timings: 5 MiB parts, quick retries.
pub fn test_config(endpoint: &str, bucket: &str) -> UploadConfig {
    let mut c = UploadConfig::new(endpoint, bucket);
    c.part_size_bytes = crate::MIN_PART_SIZE_BYTES;
    c.retry_base_milliseconds = 20;
    c.retry_max_seconds = 1;
    c.stall_timeout_seconds = 3;
    c.request_timeout_seconds = 10;
    c
}

/// An uploader over `spool` against `endpoint` with `creds`.
pub fn uploader(
    spool: &TempSpool,
    cfg: &UploadConfig,
    creds: Credentials,
) -> (Uploader, Arc<ChunkUploader>) {
    let settings = cfg.validate().unwrap_or_else(|e| panic!("config: {e:?}"));
    let spool_arc = Arc::new(
        backhaul_spool::Spool::open(spool.spool.settings().clone(), spool.metrics.clone())
            .unwrap_or_else(|e| panic!("spool: {e}")),
    );
    build_uploader(
        UploaderParts {
            settings,
            creds: CredentialsProvider::fixed(creds),
            ca_bundle: None,
            utc_offset: time::UtcOffset::UTC,
        },
        spool_arc,
        spool.metrics.clone(),
    )
    .unwrap_or_else(|e| panic!("uploader: {e}"))
}

/// Reads a whole file (panics with the path on error).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}
