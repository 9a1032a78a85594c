//! Connection set-up: socket options (before connect, where they must be), TLS, and the
//! registry of open connections whose `TCP_INFO` the monitor reads.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use backhaul_netprobe::TcpInfo;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::{Proxies, Target, Transport};
use crate::Error;
use crate::body::ReqBody;

/// Default for `tcp_notsent_lowat_bytes`: the socket accepts new data only when less than this
/// is unsent, so progress (and the stall watchdog) follows the wire, not the send buffer.
pub const DEFAULT_NOTSENT_LOWAT_BYTES: u32 = 128 * 1024;
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// Extra PEM roots (`upload.ca_file`, `AWS_CA_BUNDLE`), only read for the first HTTPS
    /// connection.
    pub ca_bundle: Option<PathBuf>,
    /// A certificate and key presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<ClientCert>,
    /// The name the server's certificate must carry (and the SNI sent) instead of the URL's
    /// host: for a server reached by address whose certificate names it.
    pub server_name: Option<String>,
    /// Forward proxies by scheme, and the hosts reached directly.
    pub proxies: Proxies,
    /// Most idle connections kept per endpoint. Below the requests that run at once, every
    /// burst closes connections the next one opens again (a TCP, and over HTTPS a TLS,
    /// handshake each).
    pub max_idle_per_endpoint: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            notsent_lowat_bytes: DEFAULT_NOTSENT_LOWAT_BYTES,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            tcp_user_timeout: None,
            ca_bundle: None,
            client_cert: None,
            server_name: None,
            proxies: Proxies::none(),
            max_idle_per_endpoint: 16,
        }
    }
}

/// PEM files of a TLS client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl TransportConfig {
    /// Reads every file the TLS settings name and builds the client configuration, as the
    /// first HTTPS connection will: `config check` calls it to refuse what would fail later.
    pub fn tls_client_config(&self) -> Result<rustls::ClientConfig, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        // A system store with a few unparsable certificates is still usable.
        let (_, skipped) = roots.add_parsable_certificates(native.certs);
        if skipped > 0 {
            tracing::debug!(skipped, "system CA certificates that could not be parsed");
        }
        if let Some(bundle) = &self.ca_bundle {
            let certs: Vec<_> = CertificateDer::pem_file_iter(bundle)
                .map_err(|e| format!("CA file {}: {e}", bundle.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("CA file {}: {e}", bundle.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "CA file {}: no PEM certificate in it",
                    bundle.display()
                ));
            }
            let (_, skipped) = roots.add_parsable_certificates(certs);
            if skipped > 0 {
                tracing::warn!(skipped, bundle = %bundle.display(), "CA certificates that could not be parsed");
            }
        }
        if roots.is_empty() {
            return Err("no trusted root certificates found".into());
        }
        if let Some(name) = &self.server_name {
            rustls::pki_types::ServerName::try_from(name.as_str())
                .map_err(|e| format!("server name {name:?}: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some(c) => {
                let chain: Vec<_> = CertificateDer::pem_file_iter(&c.cert_file)
                    .map_err(|e| format!("client certificate {}: {e}", c.cert_file.display()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("client certificate {}: {e}", c.cert_file.display()))?;
                if chain.is_empty() {
                    return Err(format!(
                        "client certificate {}: no PEM certificate in it",
                        c.cert_file.display()
                    ));
                }
                let key = PrivateKeyDer::from_pem_file(&c.key_file)
                    .map_err(|e| format!("client key {}: {e}", c.key_file.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate {}: {e}", c.cert_file.display()))
            }
        }
    }
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

    async fn tls_config(&self, endpoint: &str) -> Result<Arc<rustls::ClientConfig>, Error> {
        self.tls
            .get_or_try_init(|| async {
                self.cfg
                    .tls_client_config()
                    .map(Arc::new)
                    .map_err(|e| Error::Tls {
                        endpoint: endpoint.to_owned(),
                        source: io::Error::other(e),
                    })
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
        // Before connect, or it does not reach the SYN and cannot cap this connection's MSS.
        if let Some(mss) = self.mss_clamp() {
            sock.set_tcp_mss(mss)?;
        }
        let std_stream: std::net::TcpStream = sock.into();
        let tokio_sock = tokio::net::TcpSocket::from_std_stream(std_stream);
        tokio_sock.connect(addr).await
    }

    pub(super) async fn connect(
        &self,
        target: &Target,
        op: &'static str,
    ) -> Result<SendRequest<ReqBody>, Error> {
        let proxy = self.cfg.proxies.for_target(target);
        let mut tcp = match proxy {
            Some(p) => self.connect_tcp(&p.target, op).await?,
            None => self.connect_tcp(target, op).await?,
        };
        if let Some(p) = proxy
            && target.https
        {
            p.connect_tunnel(&mut tcp, target, op).await?;
        }
        let id = self.connections.fetch_add(1, Ordering::Relaxed);
        // A second descriptor of the socket, for TCP_INFO while hyper owns the stream. It is
        // dropped right after the connection task ends, so it never holds a connection open,
        // and a descriptor number can never be reused under it.
        let info_fd = tcp.as_fd().try_clone_to_owned().ok();
        let endpoint = target.authority();
        let stream = if target.https {
            let cfg = self.tls_config(&endpoint).await?;
            let host = self.cfg.server_name.as_ref().unwrap_or(&target.host);
            let name =
                rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| Error::Tls {
                    endpoint: endpoint.clone(),
                    source: io::Error::other(e),
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
}
