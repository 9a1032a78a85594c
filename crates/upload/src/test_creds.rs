//! Test helpers for short-lived credentials: a key ring whose keys expire (the embedded
//! server's key store in tests: a key past its expiry is answered `ExpiredToken`, an unknown
//! one `InvalidAccessKeyId`), and an issuer of its keys over the container credentials protocol
//! and in `credential_process` form, on loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One issued key.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    /// Access key id.
    pub access_key_id: String,
    /// Secret.
    pub secret: String,
    /// Session token (empty: a long-lived key, which has none).
    pub token: String,
    /// When it was issued: the previous key's expiry minus this is how far ahead of expiry
    /// the client fetched it (the rotation benchmark's refresh lead).
    pub issued_at: SystemTime,
    /// Expiry.
    pub expires_at: SystemTime,
}

/// Keys issued with a fixed lifetime; each is accepted until it expires.
#[derive(Debug)]
pub struct KeyRing {
    lifetime: Duration,
    keys: Mutex<HashMap<String, IssuedKey>>,
    issued: AtomicU64,
    accepted: AtomicU64,
    expired_refusals: AtomicU64,
}

impl KeyRing {
    /// A ring issuing keys valid for `lifetime`.
    pub fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(Self {
            lifetime,
            keys: Mutex::new(HashMap::new()),
            issued: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            expired_refusals: AtomicU64::new(0),
        })
    }

    /// Issues a fresh key.
    pub fn issue(&self) -> IssuedKey {
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        let tag = fastrand::u64(..);
        let now = SystemTime::now();
        let key = IssuedKey {
            access_key_id: format!("ASIATEST{n:06}"),
            secret: format!("secret-{tag:016x}"),
            token: format!("token-{n}-{tag:x}"),
            issued_at: now,
            expires_at: now + self.lifetime,
        };
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.access_key_id.clone(), key.clone());
        key
    }

    /// Ends every key issued so far now, as a revocation or a clock jump would.
    pub fn expire_all(&self) {
        let now = SystemTime::now();
        for k in self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            k.expires_at = k.expires_at.min(now);
        }
    }

    /// Every key issued, expired or not.
    pub fn all_issued(&self) -> Vec<IssuedKey> {
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many keys were issued.
    pub fn issued(&self) -> u64 {
        self.issued.load(Ordering::Relaxed)
    }

    /// How many requests came signed with a key that was still valid (what the refusals are
    /// out of).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// How many requests came signed with an expired key.
    pub fn expired_refusals(&self) -> u64 {
        self.expired_refusals.load(Ordering::Relaxed)
    }

    /// The ring as the embedded server's key store.
    pub fn auth(self: &Arc<Self>) -> RingAuth {
        RingAuth(self.clone())
    }
}

/// [`KeyRing`] as an s3s key store.
#[derive(Debug, Clone)]
pub struct RingAuth(Arc<KeyRing>);

#[async_trait::async_trait]
impl S3Auth for RingAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let key = self
            .0
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(access_key)
            .cloned();
        match key {
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS access key Id you provided does not exist in our records.",
            )),
            Some(k) if k.expires_at <= SystemTime::now() => {
                self.0.expired_refusals.fetch_add(1, Ordering::Relaxed);
                Err(S3Error::with_message(
                    S3ErrorCode::ExpiredToken,
                    "The provided token has expired.",
                ))
            }
            Some(k) => {
                self.0.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(SecretKey::from(k.secret))
            }
        }
    }
}

/// The embedded server's own single key pair, as a key store for
/// [`crate::embedded::EmbeddedS3::start_with`].
pub fn embedded_keys() -> s3s::auth::SimpleAuth {
    s3s::auth::SimpleAuth::from_single(
        crate::embedded::EMBEDDED_ACCESS_KEY,
        crate::embedded::EMBEDDED_SECRET_KEY,
    )
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The instance metadata session token the issuer hands out and wants.
const IMDS_SESSION: &str = "imds-session-token";
/// Where instance metadata lists the instance's role, and that role.
const IMDS_ROLES: &str = "/latest/meta-data/iam/security-credentials/";
const IMDS_ROLE: &str = "site-role";

/// A loopback issuer of the ring's keys: `GET /container` answers the container protocol's
/// JSON to a request carrying `token` in `Authorization` (401 otherwise), `GET /process` the
/// `credential_process` output (Version 1) to anyone, and instance metadata's IMDSv2 (a session
/// token, then the role's credentials to a request carrying it), as IAM Roles Anywhere's
/// `aws_signing_helper serve` answers. Stops when dropped.
#[derive(Debug)]
pub struct Issuer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    served: Arc<AtomicU64>,
}

/// What an [`Issuer`] hands out.
#[derive(Debug)]
enum Keys {
    Ring(Arc<KeyRing>),
    Fixed {
        access_key_id: String,
        secret: String,
    },
}

impl Keys {
    fn issue(&self) -> IssuedKey {
        match self {
            Self::Ring(ring) => ring.issue(),
            Self::Fixed {
                access_key_id,
                secret,
            } => {
                let now = SystemTime::now();
                IssuedKey {
                    access_key_id: access_key_id.clone(),
                    secret: secret.clone(),
                    token: String::new(),
                    issued_at: now,
                    expires_at: now + Duration::from_secs(3600),
                }
            }
        }
    }
}

impl Issuer {
    /// Starts an issuer of `ring`'s keys that wants `token`.
    pub async fn start(ring: Arc<KeyRing>, token: &str) -> Self {
        Self::serve(Keys::Ring(ring), token).await
    }

    /// Starts an issuer that hands out one long-lived key (an IAM user's) for an hour at each
    /// call, as the source of a role that is assumed with it.
    pub async fn fixed(access_key_id: &str, secret: &str, token: &str) -> Self {
        let keys = Keys::Fixed {
            access_key_id: access_key_id.to_owned(),
            secret: secret.to_owned(),
        };
        Self::serve(keys, token).await
    }

    async fn serve(keys: Keys, token: &str) -> Self {
        let keys = Arc::new(keys);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("issuer: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("issuer: {e}"));
        let served = Arc::new(AtomicU64::new(0));
        let (token, count) = (token.to_owned(), served.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (keys, token, count) = (keys.clone(), token.clone(), count.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let Ok(n) = s.read(&mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let has = |name: &str, value: &str| {
                        head.lines().any(|l| {
                            l.split_once(':').is_some_and(|(k, v)| {
                                k.eq_ignore_ascii_case(name) && v.trim() == value
                            })
                        })
                    };
                    let authorised = has("authorization", &token);
                    let imds_session = has("x-aws-ec2-metadata-token", IMDS_SESSION);
                    let issued = |k: IssuedKey, token_field: &str| {
                        let mut v = serde_json::json!({"AccessKeyId": k.access_key_id,
                            "SecretAccessKey": k.secret, "Expiration": rfc3339(k.expires_at)});
                        if !k.token.is_empty() {
                            v[token_field] = k.token.into();
                        }
                        v
                    };
                    let (status, body) = if head.starts_with("GET /process ") {
                        let mut v = issued(keys.issue(), "SessionToken");
                        v["Version"] = 1.into();
                        ("200 OK", v.to_string())
                    } else if head.starts_with("GET /container ") && authorised {
                        ("200 OK", issued(keys.issue(), "Token").to_string())
                    } else if head.starts_with("PUT /latest/api/token ") {
                        ("200 OK", IMDS_SESSION.to_owned())
                    } else if head.starts_with(&format!("GET {IMDS_ROLES} ")) && imds_session {
                        ("200 OK", IMDS_ROLE.to_owned())
                    } else if head.starts_with(&format!("GET {IMDS_ROLES}{IMDS_ROLE} "))
                        && imds_session
                    {
                        let mut v = issued(keys.issue(), "Token");
                        v["Code"] = "Success".into();
                        ("200 OK", v.to_string())
                    } else {
                        ("401 Unauthorized", "{}".to_owned())
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    s.write_all(resp.as_bytes()).await.ok();
                });
            }
        });
        Self { addr, task, served }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// A `credential_process` command line that fetches from this issuer.
    pub fn process_command(&self) -> String {
        format!(
            "python3 -c \"import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('{}/process').read().decode())\"",
            self.url()
        )
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
