//! The standard AWS credential chain: static config, environment, shared profile files, and
//! EC2 instance metadata (IMDSv2). Secrets never reach a log line: [`Credentials`]' `Debug`
//! redacts them and no error message includes them.

mod imds;
mod profile;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::Mutex;

use crate::Error;
use crate::transport::Transport;

pub use profile::parse_profile;

/// Refresh temporary credentials this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

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
            match imds::credentials(self.env.imds_endpoint.as_deref(), transport).await {
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
}
