//! An S3-compatible server in-process: `s3s` with the `s3s-fs` filesystem backend, on a free
//! loopback port. Used by `backhaul demo` (no cloud account needed) and by the tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

use crate::transport::percent_decode;

/// Access key of the embedded server.
pub const EMBEDDED_ACCESS_KEY: &str = "BACKHAULDEMOKEY";
/// Secret key of the embedded server (a throwaway; the server only listens on loopback).
pub const EMBEDDED_SECRET_KEY: &str = "backhaul-demo-secret-key";

/// A running embedded S3 server; stops on drop.
#[derive(Debug)]
pub struct EmbeddedS3 {
    addr: SocketAddr,
    root: PathBuf,
    stop: Option<oneshot::Sender<()>>,
}

/// Why the embedded server could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// Directory or socket failure.
    #[error("embedded S3 server: {what}")]
    Io {
        /// What failed.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// s3s-fs refused the root.
    #[error("embedded S3 server: cannot use {root} as storage: {detail}")]
    Backend {
        /// Root directory.
        root: PathBuf,
        /// s3s-fs's message (its error type is not `std::error::Error`).
        detail: String,
    },
}

impl EmbeddedS3 {
    /// Starts a server storing objects under `root`, listening on `listen` (use port 0 for a
    /// free one). Buckets are directories under `root`.
    pub async fn start(root: &Path, listen: SocketAddr) -> Result<Self, EmbeddedError> {
        Self::start_with(
            root,
            listen,
            SimpleAuth::from_single(EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY),
            StoreQuirks::default(),
        )
        .await
    }

    /// [`EmbeddedS3::start`] with another key store (tests: keys that rotate and expire) and
    /// the `quirks` of a store in the field.
    pub async fn start_with(
        root: &Path,
        listen: SocketAddr,
        auth: impl s3s::auth::S3Auth,
        quirks: StoreQuirks,
    ) -> Result<Self, EmbeddedError> {
        let StoreQuirks {
            clock_offset,
            one_principal,
        } = quirks;
        std::fs::create_dir_all(root).map_err(|e| EmbeddedError::Io {
            what: format!("create {}", root.display()),
            source: e,
        })?;
        let fs = s3s_fs::FileSystem::new(root).map_err(|e| EmbeddedError::Backend {
            root: root.to_owned(),
            detail: format!("{e:?}"),
        })?;
        let mut builder = S3ServiceBuilder::new(fs);
        builder.set_auth(auth);
        if clock_offset.is_some() {
            // The wrapper judges the time against the shifted clock; s3s would use ours.
            let mut config = s3s::config::S3Config::default();
            config.presigned_url_max_skew_time_secs = u32::MAX;
            builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
                config,
            ))));
        }
        let service = builder.build();
        let listener =
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| EmbeddedError::Io {
                    what: format!("bind {listen}"),
                    source: e,
                })?;
        let addr = listener.local_addr().map_err(|e| EmbeddedError::Io {
            what: "local_addr".into(),
            source: e,
        })?;
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        let storage = root.to_owned();
        tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            let graceful = GracefulShutdown::new();
            loop {
                tokio::select! {
                    res = listener.accept() => {
                        let Ok((sock, _)) = res else { continue };
                        let (service, storage, clock) =
                            (service.clone(), storage.clone(), clock_offset.clone());
                        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let service = service.clone();
                            if one_principal {
                                hand_upload_to_signer(&storage, &req);
                            }
                            let directory = req.method() == http::Method::HEAD
                                && names_a_directory(&storage, req.uri().path());
                            let store_now = clock.as_ref().map(|c| {
                                time::OffsetDateTime::now_utc()
                                    + time::Duration::seconds(c.load(Ordering::Relaxed))
                            });
                            let skewed = store_now.is_some_and(|t| too_skewed(&req, t));
                            async move {
                                let mut resp = if directory {
                                    no_such_key()
                                } else if skewed {
                                    request_time_too_skewed()
                                } else {
                                    hyper::service::Service::call(&service, req).await?
                                };
                                if let Some(t) = store_now
                                    && let Ok(v) = http::HeaderValue::from_str(&http_date(t))
                                {
                                    resp.headers_mut().insert(http::header::DATE, v);
                                }
                                Ok::<_, s3s::HttpError>(resp)
                            }
                        });
                        let conn = http.serve_connection(TokioIo::new(sock), svc);
                        let conn = graceful.watch(conn.into_owned());
                        tokio::spawn(async move {
                            if let Err(e) = conn.await {
                                // Clients dropping connections mid-request is normal (stalls).
                                tracing::debug!(error = %e, "embedded S3 connection ended with error");
                            }
                        });
                    }
                    _ = &mut stop_rx => break,
                }
            }
            if tokio::time::timeout(std::time::Duration::from_secs(2), graceful.shutdown())
                .await
                .is_err()
            {
                tracing::debug!("embedded S3: connections still open at shutdown");
            }
        });
        Ok(Self {
            addr,
            root: root.to_owned(),
            stop: Some(stop),
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Storage root (a bucket `b` is the directory `root/b`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a bucket directory directly.
    pub fn create_bucket(&self, bucket: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join(bucket))
    }
}

/// s3s-fs answers HeadObject of a key that is a directory on its disk ("SITE" when
/// "SITE/cam1/x.mp4" exists) with 500 InternalError; S3 answers 404. rclone HEADs its
/// destination prefix before every run and retries a 500 for a long time, so the lab would
/// measure the server's quirk instead of rclone. Path-style `/bucket/key` only, as served here.
fn names_a_directory(root: &Path, uri_path: &str) -> bool {
    let mut path = root.to_owned();
    let mut segments = 0;
    for seg in uri_path.split('/').filter(|s| !s.is_empty()) {
        let Some(seg) = percent_decode(seg) else {
            return false;
        };
        if seg == "." || seg == ".." || seg.contains('\0') {
            return false;
        }
        path.push(seg);
        segments += 1;
    }
    segments >= 2 && path.is_dir()
}

/// What sets a store apart from the embedded default (tests).
#[derive(Debug, Clone, Default)]
pub struct StoreQuirks {
    /// A clock this many seconds from this host's: requests more than 15 minutes from it are
    /// refused with `RequestTimeTooSkewed`, and every answer's `Date` is its time.
    pub clock_offset: Option<Arc<AtomicI64>>,
    /// Every key belongs to one principal, as the session keys of one role do on S3: a
    /// multipart upload begun with one key is continued and completed with the next (s3s-fs
    /// ties an upload to the key that began it).
    pub one_principal: bool,
}

/// Makes the key that signed `req` the owner of the multipart upload it names, in s3s-fs'
/// record (`.upload-{id}.json` under the root holds the owner's access key id).
fn hand_upload_to_signer<B>(root: &Path, req: &http::Request<B>) {
    let Some(id) = req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("uploadId="))
            .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
    }) else {
        return;
    };
    let Some(key) = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split("Credential=").nth(1))
        .and_then(|c| c.split('/').next())
    else {
        return;
    };
    let record = root.join(format!(".upload-{id}.json"));
    let owner = format!("\"{key}\"");
    let Ok(held) = std::fs::read(&record) else {
        return;
    };
    if held == owner.as_bytes() {
        return;
    }
    // Replaced whole by a rename: s3s-fs reads the record while the parts of the same upload
    // arrive side by side, and a record truncated for rewriting reads as InternalError.
    let fresh = root.join(format!(".upload-{id}.json.{:016x}", fastrand::u64(..)));
    if let Err(e) = std::fs::write(&fresh, owner).and_then(|()| std::fs::rename(&fresh, &record)) {
        tracing::debug!(error = %e, "embedded S3: cannot hand an upload to its new key");
    }
}

/// Whether the request's `x-amz-date` is further than S3 allows (15 minutes) from `store_now`.
fn too_skewed<B>(req: &http::Request<B>, store_now: time::OffsetDateTime) -> bool {
    let signed = req
        .headers()
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            time::PrimitiveDateTime::parse(
                v,
                time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"),
            )
            .ok()
        })
        .map(time::PrimitiveDateTime::assume_utc);
    signed.is_some_and(|t| (t - store_now).abs() > time::Duration::minutes(15))
}

fn request_time_too_skewed() -> s3s::HttpResponse {
    let mut resp = http::Response::new(s3s::Body::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>RequestTimeTooSkewed</Code>\
         <Message>The difference between the request time and the current time is too large.</Message></Error>"
            .to_owned(),
    ));
    *resp.status_mut() = http::StatusCode::FORBIDDEN;
    resp
}

/// An HTTP `Date` value.
fn http_date(t: time::OffsetDateTime) -> String {
    t.format(crate::s3::HTTP_DATE).unwrap_or_default()
}

fn no_such_key() -> s3s::HttpResponse {
    let mut resp = http::Response::new(s3s::Body::from(String::new()));
    *resp.status_mut() = http::StatusCode::NOT_FOUND;
    resp
}

impl Drop for EmbeddedS3 {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).ok();
        }
    }
}
