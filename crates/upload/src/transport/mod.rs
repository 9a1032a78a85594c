//! Our HTTP transport: sockets we create (so per-socket options are ours to set), optional
//! TLS, HTTP/1.1 connections from hyper, a small idle pool, and a stall watchdog.
//!
//! Why not hyper-util's pooled client: we want each part upload to own its connection while it
//! runs, drop it on any error or stall (retries always use a fresh connection), and set
//! `TCP_NOTSENT_LOWAT` and `TCP_USER_TIMEOUT` before `connect()`, and read `TCP_INFO` of
//! every open connection ([`Transport::tcp_info`]) for the path monitor.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;

use crate::Error;
use crate::body::ReqBody;
use crate::progress::Deadline;

mod connect;
mod proxy;
mod url;

pub use connect::{ClientCert, DEFAULT_NOTSENT_LOWAT_BYTES, TransportConfig};
pub use proxy::{Proxies, Proxy, ProxyEnv, ProxySetting};
#[cfg(feature = "embedded-s3")]
pub(crate) use url::percent_decode;
pub use url::{RequestUrl, Target, parse_request_url, parse_url, redact};

/// How often the stall watchdog looks at progress.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// The kernel's accepted `TCP_MAXSEG` range (`TCP_MIN_MSS` .. `MAX_TCP_WINDOW`).
const MIN_MSS_BYTES: u32 = 88;
const MAX_MSS_BYTES: u32 = 32767;

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
    /// Numbers connections as they open (never reused): the keys of `live`.
    connections: AtomicU64,
    /// Each open connection's `TCP_INFO` descriptor and the generation it was opened in.
    live: Arc<Mutex<HashMap<u64, (OwnedFd, u64)>>>,
    /// Bumped by [`Transport::abandon_connections`]; every request in flight watches it.
    generation: tokio::sync::watch::Sender<u64>,
    /// `TCP_MAXSEG` for new connections, 0 for none ([`Transport::set_mss_clamp`]); shared
    /// with the transport's siblings.
    mss_clamp: Arc<std::sync::atomic::AtomicU32>,
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
            mss_clamp: Arc::new(std::sync::atomic::AtomicU32::new(0)),
        }
    }

    /// The settings this transport was made with.
    pub fn config(&self) -> &TransportConfig {
        &self.cfg
    }

    /// A transport with other settings (another receiver's TLS) that follows this one's MSS
    /// clamp, since its packets cross the same path, but keeps its own connections:
    /// [`Self::abandon_connections`] here does not cut a request in flight there.
    pub fn sibling(&self, cfg: TransportConfig) -> Self {
        Self {
            mss_clamp: self.mss_clamp.clone(),
            ..Self::new(cfg)
        }
    }

    /// Clamps the MSS of connections opened from now on (`TCP_MAXSEG` before `connect()`,
    /// advertised in the SYN); `None` lifts it. Connections already open keep theirs: a live
    /// connection's MSS cannot be lowered, so a caller that lowers the clamp because segments
    /// are lost also abandons the connections ([`Self::abandon_connections`]).
    pub fn set_mss_clamp(&self, mss_bytes: Option<u32>) {
        let v = mss_bytes.map_or(0, |m| m.clamp(MIN_MSS_BYTES, MAX_MSS_BYTES));
        self.mss_clamp.store(v, Ordering::Relaxed);
    }

    /// The clamp new connections get, if any.
    pub fn mss_clamp(&self) -> Option<u32> {
        Some(self.mss_clamp.load(Ordering::Relaxed)).filter(|m| *m > 0)
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
        if list.len() < self.cfg.max_idle_per_endpoint {
            list.push(sender);
        }
    }

    /// Sends one request and reads the whole response body. Any failure drops the connection,
    /// so a retry always starts on a fresh one.
    pub async fn send(
        &self,
        target: &Target,
        mut req: Request<ReqBody>,
        op: &'static str,
        key: &str,
        deadline: Deadline<'_>,
    ) -> Result<Response, Error> {
        let started = Instant::now();
        let endpoint = target.authority();
        if let Some(proxy) = self.cfg.proxies.for_target(target)
            && !target.https
        {
            // Plain HTTP through a proxy goes in absolute form, with the proxy's credentials;
            // HTTPS rides a CONNECT tunnel and stays as it is.
            let path = req
                .uri()
                .path_and_query()
                .map_or("/", http::uri::PathAndQuery::as_str);
            let absolute = format!("http://{endpoint}{path}");
            *req.uri_mut() =
                absolute
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| Error::Endpoint {
                        endpoint: endpoint.clone(),
                        reason: e.to_string(),
                    })?;
            if let Some(auth) = &proxy.authorization
                && let Ok(v) = http::HeaderValue::from_str(auth)
            {
                req.headers_mut()
                    .insert(http::header::PROXY_AUTHORIZATION, v);
            }
        }
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
        let url = parse_request_url(req.url)?;
        let mut builder = Request::builder()
            .method(req.method)
            .uri(&url.path_and_query)
            .header(http::header::HOST, url.target.authority())
            .header(http::header::CONTENT_LENGTH, req.body.len());
        let explicit = req
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(auth), false) = (&url.authorization, explicit) {
            builder = builder.header(http::header::AUTHORIZATION, auth);
        }
        for (k, v) in req.headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .body(ReqBody::bytes(Bytes::from(req.body)))
            .map_err(|e| Error::Endpoint {
                endpoint: url.shown.clone(),
                reason: e.to_string(),
            })?;
        let resp = self
            .send(
                &url.target,
                request,
                "request",
                &url.shown,
                Deadline::Total(req.timeout),
            )
            .await?;
        if !resp.status.is_success() {
            let (code, message) = crate::xml::error_code(&resp.body);
            return Err(Error::Status {
                op: "request",
                key: url.shown,
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
    use std::net::SocketAddr;

    use super::*;

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
        let body = post_200k(&transport, addr).await;
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

    /// POSTs 200 kB to `addr`; the response body.
    async fn post_200k(transport: &Transport, addr: SocketAddr) -> Bytes {
        let url = format!("http://{addr}/alerts");
        transport
            .simple(SimpleRequest {
                method: "POST",
                url: &url,
                headers: &[],
                body: vec![1u8; 200_000],
                timeout: Duration::from_secs(10),
            })
            .await
            .unwrap()
    }

    /// Loopback's MTU is 65536, so a connection's MSS is whatever the clamp allows: with the
    /// clamp set before connect, the kernel sends no segment above it; lifting it applies to
    /// the next connection, not to the one already open.
    #[tokio::test]
    async fn the_mss_clamp_caps_new_connections_and_lifting_it_does_too() {
        let transport = Transport::new(TransportConfig::default());
        transport.set_mss_clamp(Some(1360));
        assert_eq!(transport.mss_clamp(), Some(1360));
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let (addr, server) = one_shot_server(close_rx).await;
        post_200k(&transport, addr).await;
        let infos = transport.tcp_info();
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert!(infos[0].1.snd_mss <= 1360, "{:?}", infos[0].1);
        close_tx.send(()).unwrap();
        server.await.unwrap();

        transport.set_mss_clamp(None);
        assert_eq!(transport.mss_clamp(), None);
        transport.abandon_connections();
        let (close_tx, close_rx) = tokio::sync::oneshot::channel();
        let (addr, server) = one_shot_server(close_rx).await;
        post_200k(&transport, addr).await;
        let infos = transport.tcp_info();
        assert_eq!(infos.len(), 1, "{infos:?}");
        assert!(infos[0].1.snd_mss > 1360, "{:?}", infos[0].1);
        close_tx.send(()).unwrap();
        server.await.unwrap();
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
