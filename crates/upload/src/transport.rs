//! Our HTTP transport: sockets we create (so per-socket options are ours to set), optional
//! TLS, HTTP/1.1 connections from hyper, a small idle pool, and a stall watchdog.
//!
//! Why not hyper-util's pooled client: we want each part upload to own its connection while it
//! runs, drop it on any error or stall (retries always use a fresh connection), and set
//! `TCP_NOTSENT_LOWAT` and `TCP_USER_TIMEOUT` before `connect()`, and read `TCP_INFO` of
//! every open connection ([`Transport::tcp_info`]) for the path monitor.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backhaul_netprobe::TcpInfo;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::Error;
use crate::body::ReqBody;

/// Default for `tcp_notsent_lowat_bytes`: the socket accepts new data only when less than this
/// is unsent, so progress (and the stall watchdog) follows the wire, not the send buffer.
pub const DEFAULT_NOTSENT_LOWAT_BYTES: u32 = 128 * 1024;
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the stall watchdog looks at progress.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 16;

/// Socket and TLS settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// `TCP_NOTSENT_LOWAT` in bytes (0 leaves the kernel default).
    pub notsent_lowat_bytes: u32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `TCP_USER_TIMEOUT`: the kernel drops a connection whose sent data stays unacknowledged
    /// this long (a second, kernel-side stall guard).
    pub tcp_user_timeout: Option<Duration>,
    /// Extra PEM roots (`AWS_CA_BUNDLE`), only read for the first HTTPS connection.
    pub ca_bundle: Option<PathBuf>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            notsent_lowat_bytes: DEFAULT_NOTSENT_LOWAT_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tcp_user_timeout: None,
            ca_bundle: None,
        }
    }
}

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// HTTPS or plain HTTP.
    pub https: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// `host:port` as it goes into the `Host` header (default ports omitted).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Splits `scheme://host[:port][/path]` into a target and the base path (without trailing `/`).
pub fn parse_url(url: &str) -> Result<(Target, String), Error> {
    let bad = |reason: &str| Error::Endpoint {
        endpoint: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_owned()),
        None => (rest, String::new()),
    };
    if hostport.contains('@') || hostport.contains('?') || path.contains('?') {
        return Err(bad("must not contain credentials or a query"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed IPv6 literal"))?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        None if https => 443,
        None => 80,
    };
    Ok((Target { https, host, port }, path))
}

/// Upload progress shared between a request body and its watchdog.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    sent: AtomicU64,
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Records `n` more bytes taken by the socket.
    pub fn advance(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Records activity without bytes (the body finished; the response is awaited).
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Bytes taken so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How a request is watched.
#[derive(Debug, Clone, Copy)]
pub enum Deadline<'a> {
    /// The whole exchange must finish within this time.
    Total(Duration),
    /// Abandon when `progress` has not moved for `stall` (body uploads).
    Stall {
        /// The body's progress.
        progress: &'a Progress,
        /// Stall timeout.
        stall: Duration,
        /// Part number for the error message.
        part: u32,
    },
}

/// A response with its (small) body read.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A request for [`Transport::simple`] (IMDS, CloudWatch).
#[derive(Debug)]
pub struct SimpleRequest<'a> {
    /// Method.
    pub method: &'a str,
    /// Full URL.
    pub url: &'a str,
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Body.
    pub body: Vec<u8>,
    /// Total timeout.
    pub timeout: Duration,
}

/// The connection factory and idle pool.
#[derive(Debug)]
pub struct Transport {
    cfg: TransportConfig,
    tls: tokio::sync::OnceCell<Arc<rustls::ClientConfig>>,
    idle: Mutex<HashMap<Target, Vec<SendRequest<ReqBody>>>>,
    connections: AtomicU64,
    /// Each open connection's `TCP_INFO` descriptor and the generation it was opened in.
    live: Arc<Mutex<HashMap<u64, (OwnedFd, u64)>>>,
    /// Bumped by [`Transport::abandon_connections`]; every request in flight watches it.
    generation: tokio::sync::watch::Sender<u64>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

impl Transport {
    /// A transport with these settings.
    pub fn new(cfg: TransportConfig) -> Self {
        Self {
            cfg,
            tls: tokio::sync::OnceCell::new(),
            idle: Mutex::new(HashMap::new()),
            connections: AtomicU64::new(0),
            live: Arc::new(Mutex::new(HashMap::new())),
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    /// `TCP_INFO` of every open connection (in use or idle) opened since the last
    /// [`Self::abandon_connections`], keyed by a connection number that is never reused, so a
    /// caller can follow one connection's counters. Connections being abandoned say nothing
    /// about the path as it is now.
    pub fn tcp_info(&self) -> Vec<(u64, TcpInfo)> {
        let current = *self.generation.borrow();
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter()
            .filter(|(_, (_, generation))| *generation == current)
            .filter_map(|(id, (fd, _))| Some((*id, TcpInfo::of(fd.as_fd()).ok()?)))
            .collect()
    }

    /// Drops every connection at once: idle ones leave the pool, and every request in flight
    /// ends with [`Error::Abandoned`] (retried at once on a fresh connection) instead of
    /// waiting out its stall timeout. For when the path changed under them: a connection
    /// opened while an interface had the wrong MTU carries its segment size and its lost
    /// segments with it.
    pub fn abandon_connections(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.generation.send_modify(|g| *g += 1);
    }

    /// Connections opened so far (a fresh one per retry shows here).
    pub fn connections_opened(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    async fn tls_config(&self, endpoint: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        self.tls
            .get_or_try_init(|| async {
                let tls_err = |e: io::Error| Error::Tls {
                    endpoint: endpoint.to_owned(),
                    source: e,
                };
                let mut roots = rustls::RootCertStore::empty();
                let native = rustls_native_certs::load_native_certs();
                // A system store with a few unparsable certificates is still usable.
                let (_, skipped) = roots.add_parsable_certificates(native.certs);
                if skipped > 0 {
                    tracing::debug!(skipped, "system CA certificates that could not be parsed");
                }
                if let Some(bundle) = &self.cfg.ca_bundle {
                    use rustls::pki_types::pem::PemObject;
                    let certs =
                        rustls::pki_types::CertificateDer::pem_file_iter(bundle).map_err(|e| {
                            tls_err(io::Error::other(format!(
                                "AWS_CA_BUNDLE {}: {e}",
                                bundle.display()
                            )))
                        })?;
                    let (_, skipped) = roots.add_parsable_certificates(certs.flatten());
                    if skipped > 0 {
                        tracing::warn!(skipped, bundle = %bundle.display(), "AWS_CA_BUNDLE certificates that could not be parsed");
                    }
                }
                if roots.is_empty() {
                    return Err(tls_err(io::Error::other(
                        "no trusted root certificates found",
                    )));
                }
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let cfg = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_err(io::Error::other(e)))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Ok(Arc::new(cfg))
            })
            .await
            .cloned()
    }

    async fn connect_tcp(&self, target: &Target, op: &'static str) -> Result<TcpStream, Error> {
        let endpoint = format!("{}:{}", target.host, target.port);
        let conn_err = |e: io::Error| Error::Connect {
            op,
            endpoint: endpoint.clone(),
            source: e,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(conn_err)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
        for addr in addrs {
            match tokio::time::timeout(self.cfg.connect_timeout, self.connect_addr(addr)).await {
                Ok(Ok(s)) => return Ok(s),
                Ok(Err(e)) => last = e,
                Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            }
        }
        Err(conn_err(last))
    }

    async fn connect_addr(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        if self.cfg.notsent_lowat_bytes > 0 {
            sock.set_tcp_notsent_lowat(self.cfg.notsent_lowat_bytes)?;
        }
        if let Some(t) = self.cfg.tcp_user_timeout {
            sock.set_tcp_user_timeout(Some(t))?;
        }
        let std_stream: std::net::TcpStream = sock.into();
        let tokio_sock = tokio::net::TcpSocket::from_std_stream(std_stream);
        tokio_sock.connect(addr).await
    }

    async fn connect(
        &self,
        target: &Target,
        op: &'static str,
    ) -> Result<SendRequest<ReqBody>, Error> {
        let tcp = self.connect_tcp(target, op).await?;
        let id = self.connections.fetch_add(1, Ordering::Relaxed);
        // A second descriptor of the socket, for TCP_INFO while hyper owns the stream. It is
        // dropped right after the connection task ends, so it never holds a connection open,
        // and a descriptor number can never be reused under it.
        let info_fd = tcp.as_fd().try_clone_to_owned().ok();
        let endpoint = target.authority();
        let stream = if target.https {
            let cfg = self.tls_config(&endpoint).await?;
            let name =
                rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
                    Error::Tls {
                        endpoint: endpoint.clone(),
                        source: io::Error::other(e),
                    }
                })?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await
                .map_err(|e| Error::Tls {
                    endpoint: endpoint.clone(),
                    source: e,
                })?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Http {
                op,
                endpoint: endpoint.clone(),
                source: e,
            })?;
        let live = self.live.clone();
        if let Some(fd) = info_fd {
            let generation = *self.generation.borrow();
            live.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, (fd, generation));
        }
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upload connection closed with error");
            }
            live.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
        Ok(sender)
    }

    async fn checkout(
        &self,
        target: &Target,
        op: &'static str,
    ) -> Result<SendRequest<ReqBody>, Error> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(target).and_then(Vec::pop)
            };
            match candidate {
                Some(mut s) if !s.is_closed() => {
                    if tokio::time::timeout(Duration::from_millis(50), s.ready())
                        .await
                        .is_ok_and(|r| r.is_ok())
                    {
                        return Ok(s);
                    }
                }
                Some(_) => {}
                None => return self.connect(target, op).await,
            }
        }
    }

    fn checkin(&self, target: &Target, sender: SendRequest<ReqBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(target.clone()).or_default();
        if list.len() < MAX_IDLE_PER_ENDPOINT {
            list.push(sender);
        }
    }

    /// Sends one request and reads the whole response body. Any failure drops the connection,
    /// so a retry always starts on a fresh one.
    pub async fn send(
        &self,
        target: &Target,
        req: Request<ReqBody>,
        op: &'static str,
        key: &str,
        deadline: Deadline<'_>,
    ) -> Result<Response, Error> {
        let started = Instant::now();
        let endpoint = target.authority();
        // Subscribed before the connection is taken: an abandon from here on ends this request.
        let mut abandoned = self.generation.subscribe();
        abandoned.borrow_and_update();
        let total = match deadline {
            Deadline::Total(t) => t,
            Deadline::Stall { stall, .. } => stall,
        };
        let mut sender = match tokio::time::timeout(total, self.checkout(target, op)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    op,
                    key: key.to_owned(),
                    after: total,
                });
            }
        };
        let result = {
            let exchange = async {
                let resp = sender.send_request(req).await.map_err(|e| Error::Http {
                    op,
                    endpoint: endpoint.clone(),
                    source: e,
                })?;
                let (parts, body) = resp.into_parts();
                let body = body
                    .collect()
                    .await
                    .map_err(|e| Error::Http {
                        op,
                        endpoint: endpoint.clone(),
                        source: e,
                    })?
                    .to_bytes();
                Ok::<_, Error>(Response {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            };
            tokio::pin!(exchange);
            loop {
                tokio::select! {
                    r = &mut exchange => break r,
                    Ok(()) = abandoned.changed() => {
                        break Err(Error::Abandoned { op, key: key.to_owned() });
                    }
                    _ = tokio::time::sleep(WATCHDOG_TICK) => match deadline {
                        Deadline::Total(t) if started.elapsed() >= t => {
                            break Err(Error::Timeout { op, key: key.to_owned(), after: t });
                        }
                        Deadline::Stall { progress, stall, part } if progress.idle_for() >= stall => {
                            break Err(Error::Stall { op, key: key.to_owned(), part, after: stall });
                        }
                        _ => {}
                    },
                }
            }
        };
        if result.is_ok() {
            self.checkin(target, sender);
        }
        result
    }

    /// A one-off request by URL (instance metadata, CloudWatch); returns the body of a 2xx.
    pub async fn simple(&self, req: SimpleRequest<'_>) -> Result<Bytes, Error> {
        let (target, path) = parse_url(req.url)?;
        let path = if path.is_empty() {
            "/".to_owned()
        } else {
            path
        };
        let mut builder = Request::builder()
            .method(req.method)
            .uri(&path)
            .header(http::header::HOST, target.authority())
            .header(http::header::CONTENT_LENGTH, req.body.len());
        for (k, v) in req.headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(ReqBody::bytes(Bytes::from(req.body)))
            .map_err(|e| Error::Endpoint {
                endpoint: req.url.to_owned(),
                reason: e.to_string(),
            })?;
        let resp = self
            .send(
                &target,
                request,
                "request",
                req.url,
                Deadline::Total(req.timeout),
            )
            .await?;
        if !resp.status.is_success() {
            let (code, message) = crate::xml::error_code(&resp.body);
            return Err(Error::Status {
                op: "request",
                key: req.url.to_owned(),
                status: resp.status.as_u16(),
                code,
                message,
            });
        }
        Ok(resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let (t, p) = parse_url("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, p.as_str()),
            (false, "127.0.0.1", 9000, "")
        );
        assert_eq!(t.authority(), "127.0.0.1:9000");
        let (t, p) = parse_url("https://s3.eu-west-1.amazonaws.com/base/").unwrap();
        assert_eq!(
            (t.port, p.as_str(), t.authority().as_str()),
            (443, "/base", "s3.eu-west-1.amazonaws.com")
        );
        let (t, _) = parse_url("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority().as_str()),
            ("::1", "[::1]:8080")
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://user:pw@host").is_err());
        assert!(parse_url("http://host:port").is_err());
    }

    /// A one-connection HTTP peer: reads one request with its body, answers 200, then closes
    /// when told to.
    async fn one_shot_server(
        close: tokio::sync::oneshot::Receiver<()>,
    ) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 65536];
            let body_len = loop {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
                if let Some(end) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&req[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    break end + 4 + len;
                }
            };
            while req.len() < body_len {
                let n = sock.read(&mut buf).await.unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            close.await.ok();
        });
        (addr, task)
    }

    #[tokio::test]
    async fn reports_tcp_info_of_open_connections_until_they_close() {
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let (addr, server) = one_shot_server(close_rx).await;
        let transport = Transport::new(TransportConfig::default());
        assert!(transport.tcp_info().is_empty());
        let url = format!("http://{addr}/alerts");
        let body = transport
            .simple(SimpleRequest {
                method: "POST",
                url: &url,
                headers: &[],
                body: vec![1u8; 200_000],
                timeout: Duration::from_secs(10),
            })
            .await
            .unwrap();
        assert_eq!(&body[..], b"ok");
        // The connection idles in the pool: still open, everything sent acknowledged.
        let infos = transport.tcp_info();
        assert_eq!(infos.len(), 1, "{infos:?}");
        let (_, info) = infos[0];
        assert!(info.bytes_acked >= 200_000, "{info:?}");
        assert!(info.snd_mss > 0 && info.pmtu > 0, "{info:?}");
        close_tx.send(()).unwrap();
        server.await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !transport.tcp_info().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            transport.tcp_info().is_empty(),
            "a closed connection is no longer sampled"
        );
    }

    /// A server that accepts and never reads: the request stalls. Abandoning connections ends
    /// it at once instead of after the stall timeout.
    #[tokio::test]
    async fn abandoned_connections_end_requests_in_flight_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let transport = Arc::new(Transport::new(TransportConfig::default()));
        let url = format!("http://{addr}/stuck");
        let t = transport.clone();
        let request = tokio::spawn(async move {
            t.simple(SimpleRequest {
                method: "POST",
                url: &url,
                headers: &[],
                body: vec![7u8; 64 << 20],
                timeout: Duration::from_secs(600),
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(transport.tcp_info().len(), 1);
        let abandoned_at = Instant::now();
        transport.abandon_connections();
        assert!(
            transport.tcp_info().is_empty(),
            "old connections are not sampled"
        );
        let err = request.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Abandoned { .. }), "{err:?}");
        assert!(err.is_transient());
        assert!(abandoned_at.elapsed() < Duration::from_secs(2));
    }
}
