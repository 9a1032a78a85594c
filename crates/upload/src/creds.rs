//! The standard AWS credential chain: static config, environment, shared profile files, and
//! EC2 instance metadata (IMDSv2). Secrets never reach a log line: [`Credentials`]' `Debug`
//! redacts them and no error message includes them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::Error;
use crate::transport::{SimpleRequest, Transport};

/// Refresh temporary credentials this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);
/// IMDS must answer quickly; off EC2 it never answers at all.
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);

/// A set of AWS credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Access key id (not secret; it appears in signatures).
    pub access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expires_at: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Credentials {
    /// Long-lived or session credentials.
    pub fn new(access_key_id: &str, secret_access_key: &str, session_token: Option<&str>) -> Self {
        Self {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: session_token.map(str::to_owned),
            expires_at: None,
        }
    }

    /// The secret key (for signing only).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, sent as `x-amz-security-token`.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    fn fresh(&self, now: SystemTime) -> bool {
        self.expires_at
            .is_none_or(|exp| now + REFRESH_BEFORE_EXPIRY < exp)
    }
}

/// The AWS-related environment, read once by the binary and passed down (tests never touch the
/// process environment).
#[derive(Debug, Clone, Default)]
pub struct AwsEnv {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<String>,
    /// `AWS_PROFILE`.
    pub profile: Option<String>,
    /// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`.
    pub shared_credentials_file: Option<PathBuf>,
    /// `AWS_CONFIG_FILE`, else `~/.aws/config`.
    pub config_file: Option<PathBuf>,
    /// `AWS_EC2_METADATA_DISABLED=true` turns IMDS off.
    pub imds_disabled: bool,
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT`, default `http://169.254.169.254`.
    pub imds_endpoint: Option<String>,
    /// `AWS_CA_BUNDLE`: extra PEM roots for HTTPS endpoints (plain HTTP ignores it).
    pub ca_bundle: Option<PathBuf>,
}

impl AwsEnv {
    /// Reads the variables through `get` (the binary passes `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Self {
        let non_empty = |k: &str| get(k).filter(|v| !v.is_empty());
        Self {
            access_key_id: non_empty("AWS_ACCESS_KEY_ID"),
            secret_access_key: non_empty("AWS_SECRET_ACCESS_KEY"),
            session_token: non_empty("AWS_SESSION_TOKEN"),
            profile: non_empty("AWS_PROFILE"),
            shared_credentials_file: non_empty("AWS_SHARED_CREDENTIALS_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials"))),
            config_file: non_empty("AWS_CONFIG_FILE")
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws/config"))),
            imds_disabled: non_empty("AWS_EC2_METADATA_DISABLED")
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
            imds_endpoint: non_empty("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
            ca_bundle: non_empty("AWS_CA_BUNDLE").map(PathBuf::from),
        }
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSource {
    /// Environment, then shared profile, then instance metadata.
    #[default]
    Chain,
    /// Keys written in the config file (for labs and demos).
    Static,
    /// Environment only.
    Env,
    /// Shared profile only.
    Profile,
    /// Instance metadata only.
    Imds,
    /// No signing (public or anonymous endpoints).
    Anonymous,
}

/// Resolves and caches credentials.
#[derive(Debug)]
pub struct CredentialsProvider {
    source: CredentialSource,
    fixed: Option<Credentials>,
    profile: String,
    env: AwsEnv,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialsProvider {
    /// A provider for `source`. `fixed` is used by [`CredentialSource::Static`].
    pub fn new(
        source: CredentialSource,
        fixed: Option<Credentials>,
        profile: Option<String>,
        env: AwsEnv,
    ) -> Self {
        let profile = profile
            .or_else(|| env.profile.clone())
            .unwrap_or_else(|| "default".into());
        Self {
            source,
            fixed,
            profile,
            env,
            cached: Mutex::new(None),
        }
    }

    /// Fixed credentials.
    pub fn fixed(creds: Credentials) -> Self {
        Self::new(
            CredentialSource::Static,
            Some(creds),
            None,
            AwsEnv::default(),
        )
    }

    /// Current credentials, or `None` for anonymous requests.
    pub async fn get(&self, transport: &Arc<Transport>) -> Result<Option<Credentials>, Error> {
        if self.source == CredentialSource::Anonymous {
            return Ok(None);
        }
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fresh(SystemTime::now())) {
            return Ok(Some(c.clone()));
        }
        let c = self.resolve(transport).await?;
        *cached = Some(c.clone());
        Ok(Some(c))
    }

    async fn resolve(&self, transport: &Arc<Transport>) -> Result<Credentials, Error> {
        let mut tried = Vec::new();
        let chain = self.source == CredentialSource::Chain;
        if self.source == CredentialSource::Static {
            return self.fixed.clone().ok_or_else(|| Error::Credentials {
                detail: "credentials = \"static\" needs access_key_id and secret_access_key".into(),
            });
        }
        if chain || self.source == CredentialSource::Env {
            match (&self.env.access_key_id, &self.env.secret_access_key) {
                (Some(k), Some(s)) => {
                    return Ok(Credentials::new(k, s, self.env.session_token.as_deref()));
                }
                _ => tried
                    .push("environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset)".to_owned()),
            }
        }
        if chain || self.source == CredentialSource::Profile {
            match self.profile_credentials() {
                Some(c) => return Ok(c),
                None => tried.push(format!(
                    "profile `{}` in the shared credentials/config files",
                    self.profile
                )),
            }
        }
        if (chain && !self.env.imds_disabled) || self.source == CredentialSource::Imds {
            match self.imds_credentials(transport).await {
                Ok(c) => return Ok(c),
                Err(e) => tried.push(format!("instance metadata ({e})")),
            }
        }
        Err(Error::Credentials {
            detail: format!("tried {}", tried.join(", ")),
        })
    }

    fn profile_credentials(&self) -> Option<Credentials> {
        let files = [
            (
                self.env.shared_credentials_file.as_ref(),
                self.profile.clone(),
            ),
            (
                self.env.config_file.as_ref(),
                if self.profile == "default" {
                    "default".into()
                } else {
                    format!("profile {}", self.profile)
                },
            ),
        ];
        for (file, section) in files {
            let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) else {
                continue;
            };
            if let Some(c) = parse_profile(&text, &section) {
                return Some(c);
            }
        }
        None
    }

    async fn imds_credentials(&self, transport: &Arc<Transport>) -> Result<Credentials, Error> {
        let base = self
            .env
            .imds_endpoint
            .clone()
            .unwrap_or_else(|| "http://169.254.169.254".into());
        let token = transport
            .simple(SimpleRequest {
                method: "PUT",
                url: &format!("{base}/latest/api/token"),
                headers: &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
                body: Vec::new(),
                timeout: IMDS_TIMEOUT,
            })
            .await?;
        let token = String::from_utf8_lossy(&token).trim().to_owned();
        let auth = [("x-aws-ec2-metadata-token", token.as_str())];
        let get = |url: String| {
            let transport = transport.clone();
            async move {
                transport
                    .simple(SimpleRequest {
                        method: "GET",
                        url: &url,
                        headers: &auth,
                        body: Vec::new(),
                        timeout: IMDS_TIMEOUT,
                    })
                    .await
            }
        };
        let roles = get(format!("{base}/latest/meta-data/iam/security-credentials/")).await?;
        let role = String::from_utf8_lossy(&roles)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned();
        if role.is_empty() {
            return Err(Error::Credentials {
                detail: "instance has no IAM role".into(),
            });
        }
        let body = get(format!(
            "{base}/latest/meta-data/iam/security-credentials/{role}"
        ))
        .await?;
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Imds {
            access_key_id: String,
            secret_access_key: String,
            token: String,
            expiration: String,
        }
        let v: Imds = serde_json::from_slice(&body).map_err(|e| Error::Credentials {
            detail: format!("instance metadata answered unreadable JSON: {e}"),
        })?;
        let expires_at = time::OffsetDateTime::parse(
            &v.expiration,
            &time::format_description::well_known::Rfc3339,
        )
        .ok()
        .map(SystemTime::from);
        Ok(Credentials {
            access_key_id: v.access_key_id,
            secret_access_key: v.secret_access_key,
            session_token: Some(v.token),
            expires_at,
        })
    }
}

/// Reads `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of one section
/// of an INI-style AWS credentials or config file.
pub fn parse_profile(text: &str, section: &str) -> Option<Credentials> {
    let mut current = String::new();
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials::new(&key?, &secret?, token.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::new("AKIDEXAMPLE", "very-secret-key", Some("token-value"));
        let s = format!("{c:?}");
        assert!(s.contains("AKIDEXAMPLE"));
        assert!(!s.contains("very-secret-key"));
        assert!(!s.contains("token-value"));
    }

    #[test]
    fn reads_named_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    [site]\n# comment\naws_access_key_id=C\naws_secret_access_key = D\naws_session_token = E\n";
        assert_eq!(
            parse_profile(text, "default"),
            Some(Credentials::new("A", "B", None))
        );
        assert_eq!(
            parse_profile(text, "site"),
            Some(Credentials::new("C", "D", Some("E")))
        );
        assert_eq!(parse_profile(text, "missing"), None);
    }

    #[tokio::test]
    async fn chain_prefers_environment_then_profile() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "[ops]\naws_access_key_id=P\naws_secret_access_key=Q\n",
        )
        .unwrap();
        let transport = Arc::new(Transport::new(Default::default()));
        let env = AwsEnv {
            shared_credentials_file: Some(file),
            imds_disabled: true,
            ..Default::default()
        };
        let p = CredentialsProvider::new(
            CredentialSource::Chain,
            None,
            Some("ops".into()),
            env.clone(),
        );
        assert_eq!(p.get(&transport).await.unwrap().unwrap().access_key_id, "P");
        let env = AwsEnv {
            access_key_id: Some("E".into()),
            secret_access_key: Some("F".into()),
            ..env
        };
        let p = CredentialsProvider::new(CredentialSource::Chain, None, Some("ops".into()), env);
        assert_eq!(p.get(&transport).await.unwrap().unwrap().access_key_id, "E");
        let none = CredentialsProvider::new(
            CredentialSource::Chain,
            None,
            Some("nope".into()),
            AwsEnv {
                imds_disabled: true,
                ..Default::default()
            },
        );
        let err = none.get(&transport).await.unwrap_err().to_string();
        assert!(
            err.contains("environment") && err.contains("profile `nope`"),
            "{err}"
        );
    }

    /// IMDS does not run off EC2; a loopback stand-in answers the three IMDSv2 calls.
    #[tokio::test]
    async fn imds_v2_token_role_and_credentials() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("PUT /latest/api/token") {
                    "tok-123".to_owned()
                } else if !req
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: tok-123")
                {
                    String::new()
                } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                    "site-role\n".to_owned()
                } else {
                    r#"{"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"s","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#.to_owned()
                };
                let status = if body.is_empty() {
                    "401 Unauthorized"
                } else {
                    "200 OK"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let env = AwsEnv {
            imds_endpoint: Some(format!("http://{addr}")),
            ..Default::default()
        };
        let p = CredentialsProvider::new(CredentialSource::Imds, None, None, env);
        let transport = Arc::new(Transport::new(Default::default()));
        let c = p.get(&transport).await.unwrap().unwrap();
        assert_eq!(c.access_key_id, "ASIAIMDS");
        assert_eq!(c.session_token(), Some("t"));
        assert!(c.fresh(SystemTime::now()));
    }
}
