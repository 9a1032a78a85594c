//! Test helpers: the embedded S3 server, moto's server, and an agent wired to either.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use backhaul_spool::test_util::TempSpool;

use crate::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, EmbeddedS3};
use crate::{
    ChunkUploader, Credentials, CredentialsProvider, UploadConfig, Uploader, UploaderParts,
    build_uploader,
};

/// A free loopback TCP port (bound then released) for a server a test starts later.
///
/// Ports are handed out in turn from below the kernel's ephemeral range (32768 and up on
/// Linux), where neither `bind(:0)` nor outgoing connections land: a port released here is not
/// given to another socket of the same run before its user binds it. Each process starts at a
/// random point so that test binaries running side by side do not walk the same ports.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU16> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU16::new(fastrand::u16(..SPAN)));
    for _ in 0..SPAN {
        let port = FIRST + next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + SPAN)
}

/// A loopback TCP port held by a bound socket that does not listen: a connection to it is
/// refused (a receiver that is down), and no other test can take it until the hold is dropped.
/// A port from [`free_port`] left unbound for seconds can be handed to someone else meanwhile.
#[derive(Debug)]
pub struct PortHold(socket2::Socket);

impl PortHold {
    /// Reserves a free loopback port.
    pub fn new() -> Self {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap_or_else(|e| panic!("no socket: {e}"));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        s.bind(&addr.into())
            .unwrap_or_else(|e| panic!("no free port: {e}"));
        Self(s)
    }

    /// The port held.
    pub fn port(&self) -> u16 {
        self.0
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map(|a| a.port())
            .unwrap_or_else(|| panic!("a bound socket has a port"))
    }

    /// Listens on the held port from now on.
    pub fn listen(self) -> TcpListener {
        self.0
            .listen(128)
            .unwrap_or_else(|e| panic!("cannot listen on a held port: {e}"));
        self.0.into()
    }
}

impl Default for PortHold {
    fn default() -> Self {
        Self::new()
    }
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
        let s = EmbeddedS3::start(
            dir.path(),
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("embedded s3: {e}"));
        s.create_bucket(bucket)
            .unwrap_or_else(|e| panic!("bucket: {e}"));
        S3Peer::Embedded(s, dir)
    }

    /// The embedded server with another key store and quirks ([`EmbeddedS3::start_with`]).
    pub async fn embedded_with(
        bucket: &str,
        auth: impl s3s::auth::S3Auth,
        quirks: crate::embedded::StoreQuirks,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let s = EmbeddedS3::start_with(
            dir.path(),
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
            auth,
            quirks,
        )
        .await
        .unwrap_or_else(|e| panic!("embedded s3: {e}"));
        s.create_bucket(bucket)
            .unwrap_or_else(|e| panic!("bucket: {e}"));
        S3Peer::Embedded(s, dir)
    }

    /// Starts `moto_server` on a free port (it must be installed: `pip install 'moto[server]'`).
    pub async fn moto() -> Self {
        Self::moto_env(&[]).await
    }

    /// Starts `moto_server` that checks credentials (IAM auth on from the first request), so
    /// only keys of IAM users it knows are accepted — none, here.
    pub async fn moto_with_auth() -> Self {
        Self::moto_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).await
    }

    async fn moto_env(env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("moto_server not runnable ({e}); pip install 'moto[server]'")
            });
        let endpoint = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return S3Peer::Moto(child, endpoint);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        child.kill().ok();
        child.wait().ok();
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
            S3Peer::Embedded(..) => {
                Credentials::new(EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, None)
            }
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
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// A config for `endpoint` with test-friendly timings: 5 MiB parts, quick retries.
pub fn test_config(endpoint: &str, bucket: &str) -> UploadConfig {
    let mut c = UploadConfig::new(endpoint, bucket);
    c.part_size_bytes = crate::MIN_PART_SIZE_BYTES;
    // Chunks above one 5 MiB part go as multipart uploads, so tests reach both paths with
    // small files.
    c.multipart_threshold_bytes = Some(crate::MIN_PART_SIZE_BYTES);
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
    uploader_with(spool, cfg, Arc::new(CredentialsProvider::fixed(creds)))
}

/// [`uploader`] with a credentials provider of the test's making.
pub fn uploader_with(
    spool: &TempSpool,
    cfg: &UploadConfig,
    creds: Arc<CredentialsProvider>,
) -> (Uploader, Arc<ChunkUploader>) {
    let settings = cfg.validate().unwrap_or_else(|e| panic!("config: {e:?}"));
    build_uploader(
        UploaderParts {
            settings,
            creds,
            ca_bundle: None,
            proxy_env: crate::ProxyEnv::default(),
            zone: crate::ZoneSource::Named("UTC".into()),
        },
        spool.spool.clone(),
        spool.metrics.clone(),
    )
    .unwrap_or_else(|e| panic!("uploader: {e}"))
}

/// Stores `data` under `key` with a plain PutObject (a stand-in for objects others left).
pub async fn put_bytes(
    client: &crate::S3Client,
    key: &str,
    data: &[u8],
) -> Result<(), crate::Error> {
    let crc = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        crc32c::crc32c(data).to_be_bytes(),
    );
    client
        .put_object(
            key,
            crate::body::ReqBody::bytes(bytes::Bytes::copy_from_slice(data)),
            &crc,
            None,
            crate::progress::Deadline::Total(Duration::from_secs(10)),
        )
        .await
        .map(|_| ())
}

/// Reads a whole file (panics with the path on error).
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// How a [`FaultProxy`] rewrites the ETags the store returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EtagRewrite {
    /// As the store sent them.
    #[default]
    Kept,
    /// 40 hex digits instead of the 32 of an MD5, as SSE-KMS-style gateways return: the
    /// original followed by 8 more.
    Opaque,
    /// The first 16 hex digits only (gateways that shorten ETags).
    Truncated,
}

/// Faults a [`FaultProxy`] injects, as probabilities per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Answer 500 InternalError.
    pub server_error: f64,
    /// Answer 503 SlowDown.
    pub slow_down: f64,
    /// Read part of the body, then reset the connection.
    pub reset: f64,
    /// Stop reading the body and never answer (until the client gives up).
    pub stall: f64,
    /// Flip one bit in the body of each of the first this many requests that carry at least
    /// [`CORRUPT_MIN_BODY`] bytes, headers (checksums included) left intact: corruption in
    /// transit that only a store validating checksums, or the uploader, can notice.
    pub corrupt_first_bodies: u64,
    /// Also strip `x-amz-checksum-crc32c` and `Content-MD5` from the corrupted requests (and
    /// sign them again), so not even a store that validates checksums can notice.
    pub hide_corruption: bool,
    /// Rewrite the ETags of every answer (headers and XML bodies); the part ETags of a
    /// CompleteMultipartUpload are mapped back to the store's own on the way in.
    pub etags: EtagRewrite,
    /// Rewrite ETags only from the first body of at least [`CORRUPT_MIN_BODY`] bytes on, so
    /// the start-up probe sees the store's ETags and the uploads see others.
    pub etags_after_first_large_body: bool,
    /// Answer the first this many PutObjects of at least [`CORRUPT_MIN_BODY`] bytes 200, with
    /// the body's MD5 as ETag and the request's CRC32C echoed, without forwarding them: a
    /// store that acknowledges and drops.
    pub drop_first_puts: u64,
    /// Remove the last part from the first this many CompleteMultipartUpload requests: the
    /// store assembles an object that is not the file.
    pub truncate_first_completes: u64,
    /// Answer every request 403 `RequestTimeTooSkewed`, as S3 does when the host's clock is
    /// more than 15 minutes off.
    pub clock_skewed: bool,
}

/// Bodies smaller than this (the integrity probe's) are never corrupted.
pub const CORRUPT_MIN_BODY: u64 = 64 * 1024;

/// What a [`FaultProxy`] saw.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Requests received.
    pub requests: std::sync::atomic::AtomicU64,
    /// Request body bytes forwarded to the server.
    pub forwarded_body_bytes: std::sync::atomic::AtomicU64,
    /// Faults injected.
    pub faults: std::sync::atomic::AtomicU64,
    /// Bodies of at least [`CORRUPT_MIN_BODY`] bytes seen (the first
    /// `Faults::corrupt_first_bodies` of them were corrupted).
    pub large_bodies: std::sync::atomic::AtomicU64,
    /// PutObjects answered without being forwarded (`Faults::drop_first_puts`).
    pub dropped_puts: std::sync::atomic::AtomicU64,
    /// CompleteMultipartUploads whose last part was removed.
    pub truncated_completes: std::sync::atomic::AtomicU64,
    /// ETags rewritten in answers.
    pub rewritten_etags: std::sync::atomic::AtomicU64,
    /// Ranged GetObject requests forwarded (the uploader's read-backs).
    pub ranged_gets: std::sync::atomic::AtomicU64,
    /// Rewritten ETag → the store's own.
    etags: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl ProxyStats {
    fn rewrite_etag(&self, how: EtagRewrite, etag: &str) -> String {
        let (hex, suffix) = match etag.split_once('-') {
            Some((h, n)) => (h, format!("-{n}")),
            None => (etag, String::new()),
        };
        let hex = match how {
            EtagRewrite::Kept => return etag.to_owned(),
            EtagRewrite::Opaque => format!("{hex}{:08x}", crc32c::crc32c(hex.as_bytes())),
            EtagRewrite::Truncated => hex.chars().take(16).collect(),
        };
        let new = format!("{hex}{suffix}");
        self.rewritten_etags
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.etags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(new.clone(), etag.to_owned());
        new
    }

    fn original_etag(&self, etag: &str) -> Option<String> {
        self.etags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(etag)
            .cloned()
    }
}

/// Replaces the text of every `<ETag>` element of an XML body through `f` (quotes, raw or as
/// `&quot;`, kept around the new value).
fn map_xml_etags(xml: &str, mut f: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<ETag>") {
        let Some(len) = rest[start..].find("</ETag>") else {
            break;
        };
        let inner = &rest[start + 6..start + len];
        let bare = inner.trim_matches('"').replace("&quot;", "");
        out.push_str(&rest[..start + 6]);
        out.push_str(&format!("&quot;{}&quot;", f(&bare)));
        out.push_str("</ETag>");
        rest = &rest[start + len + 7..];
    }
    out.push_str(rest);
    out
}

/// Signs a request the proxy changed again, as the uploader would have, with the headers it
/// signed originally less those the proxy removed (s3s-fs checks signatures).
fn sign_again(parts: &mut http::request::Parts) {
    let auth = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let field = |name: &str| {
        auth.split([',', ' '])
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_default()
            .to_owned()
    };
    let region = field("Credential=")
        .split('/')
        .nth(2)
        .unwrap_or("us-east-1")
        .to_owned();
    let now = time::OffsetDateTime::now_utc();
    parts.headers.insert(
        "x-amz-date",
        http::HeaderValue::from_str(&crate::sigv4::amz_date(now)).unwrap_or_else(|e| panic!("{e}")),
    );
    let headers: Vec<(String, String)> = field("SignedHeaders=")
        .split(';')
        .filter_map(|h| {
            let v = parts.headers.get(h)?.to_str().ok()?;
            Some((h.to_owned(), v.to_owned()))
        })
        .collect();
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match (b[i], b.get(i + 1..i + 3)) {
                (b'%', Some(h)) => {
                    out.push(
                        u8::from_str_radix(std::str::from_utf8(h).unwrap_or("00"), 16).unwrap_or(0),
                    );
                    i += 3;
                }
                (c, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let auth = crate::sigv4::authorization(
        &crate::sigv4::SignRequest {
            method: parts.method.as_str(),
            canonical_uri: parts.uri.path(),
            query: &query,
            headers: &headers,
            payload_hash: crate::sigv4::UNSIGNED_PAYLOAD,
            region: &region,
            service: "s3",
        },
        &Credentials::new(EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, None),
        now,
    );
    parts.headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&auth).unwrap_or_else(|e| panic!("{e}")),
    );
}

/// An HTTP proxy on loopback in front of an S3 server that injects faults and counts the body
/// bytes it forwards (the ground truth for "bytes re-sent").
#[derive(Debug)]
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    /// Counters.
    pub stats: Arc<ProxyStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (`host:port`) injecting `faults`.
    pub async fn start(upstream: std::net::SocketAddr, faults: Faults) -> Self {
        Self::start_at(([127, 0, 0, 1], 0).into(), upstream, faults).await
    }

    /// Like [`FaultProxy::start`], listening on `listen` (a store that comes up at an address
    /// the uploader already uses).
    pub async fn start_at(
        listen: std::net::SocketAddr,
        upstream: std::net::SocketAddr,
        faults: Faults,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("proxy bind {listen}: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let stats = Arc::new(ProxyStats::default());
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let st = stats.clone();
        tokio::spawn(async move {
            loop {
                let sock = tokio::select! {
                    _ = &mut stop_rx => break,
                    r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { proxy_one(req, upstream, faults, st).await }
                    });
                    // Injected resets end connections with errors by design.
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(sock), svc)
                        .await
                        .ok();
                });
            }
        });
        Self {
            addr,
            stats,
            stop: Some(stop),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            s.send(()).ok();
        }
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn s3_error(status: u16, code: &str) -> http::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let body = format!(
        "<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>injected</Message></Error>"
    );
    let mut r = http::Response::new(
        http_body_util::Full::new(bytes::Bytes::from(body))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn proxy_one(
    req: http::Request<hyper::body::Incoming>,
    upstream: std::net::SocketAddr,
    faults: Faults,
    stats: Arc<ProxyStats>,
) -> Result<http::Response<ProxyBody>, std::io::Error> {
    use http_body_util::BodyExt;
    use std::sync::atomic::Ordering::Relaxed;
    stats.requests.fetch_add(1, Relaxed);
    if faults.clock_skewed {
        stats.faults.fetch_add(1, Relaxed);
        // The store's clock, 20 minutes ahead of ours: what a HEAD's bodiless 403 carries.
        let theirs = (time::OffsetDateTime::now_utc() + Duration::from_secs(1200))
            .format(crate::s3::HTTP_DATE)
            .unwrap_or_default();
        let mut r = s3_error(403, "RequestTimeTooSkewed");
        if let Ok(v) = http::HeaderValue::from_str(&theirs) {
            r.headers_mut().insert(http::header::DATE, v);
        }
        return Ok(r);
    }
    let roll = fastrand::f64();
    let mut edge = faults.server_error;
    if roll < edge {
        stats.faults.fetch_add(1, Relaxed);
        return Ok(s3_error(500, "InternalError"));
    }
    edge += faults.slow_down;
    if roll < edge {
        stats.faults.fetch_add(1, Relaxed);
        return Ok(s3_error(503, "SlowDown"));
    }
    edge += faults.reset;
    if roll < edge {
        stats.faults.fetch_add(1, Relaxed);
        let mut body = req.into_body();
        // Take a little of the body so the reset lands mid-upload.
        let _ = body.frame().await;
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ));
    }
    edge += faults.stall;
    if roll < edge {
        stats.faults.fetch_add(1, Relaxed);
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Err(std::io::Error::other("stall ended"));
    }
    let counter = stats.clone();
    let (mut parts, body) = req.into_parts();
    let length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let large = length >= CORRUPT_MIN_BODY;
    let put_object = parts.method == http::Method::PUT && !query.contains("uploadId");
    if large && put_object && stats.dropped_puts.fetch_add(1, Relaxed) < faults.drop_first_puts {
        stats.faults.fetch_add(1, Relaxed);
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        use md5::Digest as _;
        let mut r =
            http::Response::new(http_body_util::Empty::new().map_err(|e| match e {}).boxed());
        let etag = format!("\"{}\"", crate::sigv4::hex(&md5::Md5::digest(&bytes)));
        r.headers_mut().insert(
            http::header::ETAG,
            http::HeaderValue::from_str(&etag).map_err(std::io::Error::other)?,
        );
        if let Some(crc) = parts.headers.get("x-amz-checksum-crc32c") {
            r.headers_mut().insert("x-amz-checksum-crc32c", crc.clone());
        }
        return Ok(r);
    }
    let rewrite = faults.etags != EtagRewrite::Kept
        && (!faults.etags_after_first_large_body || large || stats.large_bodies.load(Relaxed) > 0);
    let mut corrupt =
        large && stats.large_bodies.fetch_add(1, Relaxed) < faults.corrupt_first_bodies;
    if corrupt && faults.hide_corruption {
        parts.headers.remove("x-amz-checksum-crc32c");
        parts.headers.remove("content-md5");
        sign_again(&mut parts);
    }
    let complete = parts.method == http::Method::POST && query.contains("uploadId");
    let body = if complete {
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let mut xml = map_xml_etags(&String::from_utf8_lossy(&bytes), |e| {
            stats.original_etag(e).unwrap_or_else(|| e.to_owned())
        });
        if stats.truncated_completes.fetch_add(1, Relaxed) < faults.truncate_first_completes
            && let Some(last) = xml.rfind("<Part>")
            && let Some(end) = xml[last..].find("</Part>")
        {
            stats.faults.fetch_add(1, Relaxed);
            xml.replace_range(last..last + end + 7, "");
        }
        parts.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(xml.len()),
        );
        http_body_util::Full::new(bytes::Bytes::from(xml))
            .map_err(|e| match e {})
            .boxed()
    } else {
        body.map_err(std::io::Error::other).boxed()
    };
    if parts.method == http::Method::GET && parts.headers.contains_key(http::header::RANGE) {
        stats.ranged_gets.fetch_add(1, Relaxed);
    }
    let body = body
        .map_frame(move |f| match f.into_data() {
            Ok(d) => {
                counter
                    .forwarded_body_bytes
                    .fetch_add(d.len() as u64, Relaxed);
                if corrupt && !d.is_empty() {
                    corrupt = false;
                    let mut v = d.to_vec();
                    v[d.len() / 2] ^= 0x10;
                    hyper::body::Frame::data(bytes::Bytes::from(v))
                } else {
                    hyper::body::Frame::data(d)
                }
            }
            Err(f) => f,
        })
        .boxed();
    let up = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, ProxyBody>(hyper_util::rt::TokioIo::new(up))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        conn.await.ok();
    });
    let resp = sender
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(std::io::Error::other)?;
    if !rewrite {
        return Ok(resp.map(|b| b.map_err(std::io::Error::other).boxed()));
    }
    let (mut head, body) = resp.into_parts();
    if let Some(e) = head
        .headers
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
    {
        let new = format!(
            "\"{}\"",
            stats.rewrite_etag(faults.etags, e.trim_matches('"'))
        );
        head.headers.insert(
            http::header::ETAG,
            http::HeaderValue::from_str(&new).map_err(std::io::Error::other)?,
        );
    }
    // XML answers (CompleteMultipartUpload, ListParts) carry ETags in the body.
    if query.contains("uploadId") && head.status.is_success() {
        let bytes = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        let xml = map_xml_etags(&String::from_utf8_lossy(&bytes), |e| {
            stats.rewrite_etag(faults.etags, e)
        });
        head.headers.remove(http::header::CONTENT_LENGTH);
        return Ok(http::Response::from_parts(
            head,
            http_body_util::Full::new(bytes::Bytes::from(xml))
                .map_err(|e| match e {})
                .boxed(),
        ));
    }
    Ok(http::Response::from_parts(
        head,
        body.map_err(std::io::Error::other).boxed(),
    ))
}

impl S3Peer {
    /// The `host:port` the peer listens on.
    pub fn socket_addr(&self) -> std::net::SocketAddr {
        let e = self.endpoint();
        e.trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|err| panic!("{e}: {err}"))
    }
}
