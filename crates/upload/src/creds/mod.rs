//! The AWS credential chain: static config, environment, web identity (STS), the shared
//! profile files (static keys, `credential_process`, `role_arn` through STS `AssumeRole`), the
//! container credentials endpoint, and EC2 instance metadata (IMDSv2); and the cache that
//! keeps expiring credentials fresh ahead of their expiry.
//!
//! Secrets never reach a log line: [`Credentials`]' `Debug` redacts them, no error message
//! includes them, and a `credential_process` is named by its program only.

mod chain;
mod container;
mod imds;
mod process;
mod profile;
mod sts;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use backhaul_telemetry::Metrics;
use serde::Deserialize;
use tokio::sync::{Mutex, watch};

use crate::Error;
use crate::transport::Transport;

pub use profile::parse_profile;

/// Expiring credentials are refreshed this long before they expire, or at half their
/// lifetime when that is shorter: a part on a slow uplink can take minutes.
const REFRESH_LEAD: Duration = Duration::from_secs(300);
/// A failed refresh is tried again after 2 s, doubling up to a minute.
const REFRESH_RETRY: crate::Backoff = crate::Backoff {
    base: Duration::from_secs(2),
    max: Duration::from_secs(60),
};
/// Credentials brought by a refusal and refused again within this are not replaced again.
const REFUSED_AGAIN_WITHIN: Duration = Duration::from_secs(60);
/// How deep `source_profile` chains may go (the SDKs refuse loops; this refuses depth).
const MAX_ROLE_CHAIN: usize = 4;

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

    /// The same credentials, expiring at `at`.
    pub fn expiring(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The secret key (for signing only).
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, sent as `x-amz-security-token`.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// When they expire (`None`: long-lived).
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Whether they are still valid `need` from `now`.
    fn valid_for(&self, now: SystemTime, need: Duration) -> bool {
        self.expires_at.is_none_or(|exp| now + need < exp)
    }
}

/// An RFC 3339 time as the credential sources write `Expiration`.
fn parse_expiration(s: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
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
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`.
    pub web_identity_token_file: Option<PathBuf>,
    /// `AWS_ROLE_ARN` (with the web identity token).
    pub role_arn: Option<String>,
    /// `AWS_ROLE_SESSION_NAME`.
    pub role_session_name: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
    pub container_full_uri: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`.
    pub container_relative_uri: Option<String>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
    pub container_token: Option<String>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (wins over the token).
    pub container_token_file: Option<PathBuf>,
    /// `AWS_ENDPOINT_URL_STS`.
    pub sts_endpoint: Option<String>,
    /// `AWS_REGION`, else `AWS_DEFAULT_REGION`: STS' region when the profile names none.
    pub region: Option<String>,
}

impl AwsEnv {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (with `AWS_SESSION_TOKEN`), when both
    /// are set.
    fn keys(&self) -> Option<Credentials> {
        Some(Credentials::new(
            self.access_key_id.as_deref()?,
            self.secret_access_key.as_deref()?,
            self.session_token.as_deref(),
        ))
    }

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
            web_identity_token_file: non_empty("AWS_WEB_IDENTITY_TOKEN_FILE").map(PathBuf::from),
            role_arn: non_empty("AWS_ROLE_ARN"),
            role_session_name: non_empty("AWS_ROLE_SESSION_NAME"),
            container_full_uri: non_empty("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
            container_relative_uri: non_empty("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
            container_token: non_empty("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
            container_token_file: non_empty("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
                .map(PathBuf::from),
            sts_endpoint: non_empty("AWS_ENDPOINT_URL_STS"),
            region: non_empty("AWS_REGION").or_else(|| non_empty("AWS_DEFAULT_REGION")),
        }
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSource {
    /// Environment, web identity, shared profile, container endpoint, instance metadata.
    #[default]
    Chain,
    /// Keys written in the config file (for labs and demos).
    Static,
    /// Environment only.
    Env,
    /// The shared profile, whatever it holds (keys, `credential_process`, `role_arn`).
    Profile,
    /// The profile's `credential_process` only.
    Process,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN` (or the profile's
    /// `web_identity_token_file` and `role_arn`) through STS only.
    WebIdentity,
    /// The profile's `role_arn` through STS `AssumeRole` only.
    AssumeRole,
    /// The container credentials endpoint only.
    Container,
    /// Instance metadata only.
    Imds,
    /// No signing (public or anonymous endpoints).
    Anonymous,
}

impl CredentialSource {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chain => "chain",
            Self::Static => "static",
            Self::Env => "env",
            Self::Profile => "profile",
            Self::Process => "process",
            Self::WebIdentity => "web-identity",
            Self::AssumeRole => "assume-role",
            Self::Container => "container",
            Self::Imds => "imds",
            Self::Anonymous => "anonymous",
        }
    }
}

/// Credentials in hand and where they came from.
#[derive(Debug, Clone)]
struct Held {
    creds: Credentials,
    /// How long they were valid for when they arrived.
    life: Option<Duration>,
    /// When the background refresh replaces them.
    refresh_at: Option<SystemTime>,
    /// When a refusal of their predecessor brought them: refused in turn soon after, the
    /// refusal is about something else (a policy, a proxy that alters requests), and asking
    /// the source again would only hammer it.
    after_refusal: Option<std::time::Instant>,
}

impl Held {
    fn new(creds: Credentials, now: SystemTime) -> Self {
        let life = creds
            .expires_at
            .map(|exp| exp.duration_since(now).unwrap_or_default());
        let refresh_at = creds.expires_at.zip(life).map(|(exp, life)| {
            let lead = REFRESH_LEAD.min(life / 2);
            // Spread a fleet's refreshes: up to a fifth of the lead earlier.
            exp - lead - lead.mul_f64(fastrand::f64() / 5.0)
        });
        Self {
            creds,
            life,
            refresh_at,
            after_refusal: None,
        }
    }

    /// Whether they serve a request that needs them for `need`: before their refresh time
    /// and valid that long. No source gives more than their lifetime, so a need beyond half
    /// of it asks only for credentials fresh from a refresh.
    fn serves(&self, now: SystemTime, need: Duration) -> bool {
        let need = self.life.map_or(need, |life| need.min(life / 2));
        self.refresh_at.is_none_or(|at| now < at) && self.creds.valid_for(now, need)
    }
}

/// What `/status` shows about credentials (never a secret).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialsStatus {
    /// The setting (`chain`, `process`, …).
    pub setting: &'static str,
    /// The source of the credentials in use; `None` until resolved.
    pub source: Option<String>,
    /// The access key id in use (not secret).
    pub access_key_id: Option<String>,
    /// When they expire (`None`: long-lived or not resolved).
    pub expires_at: Option<SystemTime>,
    /// The last refresh's error, until one succeeds.
    pub last_error: Option<String>,
}

impl CredentialsStatus {
    /// Seconds from `now` until they expire, negative once they have (`None`: long-lived or
    /// not resolved).
    pub fn expires_in_seconds(&self, now: SystemTime) -> Option<i64> {
        self.expires_at.map(|t| match t.duration_since(now) {
            Ok(left) => left.as_secs() as i64,
            Err(past) => -(past.duration().as_secs() as i64),
        })
    }
}

/// Resolves, caches and refreshes credentials.
#[derive(Debug)]
pub struct CredentialsProvider {
    source: CredentialSource,
    fixed: Option<Credentials>,
    profile: String,
    env: AwsEnv,
    /// The region STS is asked in when neither the profile nor the environment names one.
    default_region: String,
    held: Mutex<Option<Held>>,
    /// A copy of what `/status` shows, readable without waiting on a refresh.
    status: std::sync::Mutex<CredentialsStatus>,
    /// Nudges the background refresh when new credentials arrive.
    changed: watch::Sender<u64>,
    metrics: OnceLock<Arc<Metrics>>,
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
            default_region: "us-east-1".into(),
            held: Mutex::new(None),
            status: std::sync::Mutex::new(CredentialsStatus {
                setting: source.as_str(),
                ..CredentialsStatus::default()
            }),
            changed: watch::Sender::new(0),
            metrics: OnceLock::new(),
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

    /// STS is asked in `region` unless the profile or `AWS_REGION` names one (the bucket's
    /// region, from the config).
    pub fn with_default_region(mut self, region: &str) -> Self {
        self.default_region = region.to_owned();
        self
    }

    /// Counts refreshes and exports the expiry into `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        // A second attach (a test building two uploaders on one provider) keeps the first.
        if self.metrics.set(metrics).is_err() {
            tracing::debug!("credentials already report to a metrics registry");
        }
    }

    /// What `/status` shows.
    pub fn status(&self) -> CredentialsStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Credentials valid for at least `need` from now (the longest a request signed now can
    /// take to reach the store), or `None` for anonymous requests. Credentials past their
    /// refresh time, or too close to expiry for `need`, are replaced first; if that fails
    /// they are used while still valid at all.
    pub async fn get(
        &self,
        transport: &Arc<Transport>,
        need: Duration,
    ) -> Result<Option<Credentials>, Error> {
        if self.source == CredentialSource::Anonymous {
            return Ok(None);
        }
        let now = SystemTime::now();
        let mut held = self.held.lock().await;
        if let Some(h) = held.as_ref().filter(|h| h.serves(now, need)) {
            return Ok(Some(h.creds.clone()));
        }
        match self.refresh_locked(&mut held, transport).await {
            Ok(c) => Ok(Some(c)),
            // Without others, still-valid ones are the request's only chance: the store judges
            // them when the request arrives.
            Err(e) => match held.as_ref() {
                Some(h) if h.creds.valid_for(now, Duration::ZERO) => {
                    tracing::warn!(error = %e, "cannot refresh AWS credentials; using the current ones while they last");
                    Ok(Some(h.creds.clone()))
                }
                _ => Err(e),
            },
        }
    }

    /// After the store refused `used` (`ExpiredToken`, or an unknown key or a signature that
    /// does not match after a rotation): whether other credentials are now in hand, so the
    /// request is worth sending again at once. Long-lived sources are read again too: a
    /// rewritten credentials file is picked up here.
    pub async fn after_refusal(&self, used: &Credentials, transport: &Arc<Transport>) -> bool {
        if matches!(
            self.source,
            CredentialSource::Anonymous | CredentialSource::Static | CredentialSource::Env
        ) {
            return false;
        }
        let mut held = self.held.lock().await;
        match held.as_ref() {
            Some(h) if h.creds != *used => return true,
            Some(h)
                if h.after_refusal
                    .is_some_and(|at| at.elapsed() < REFUSED_AGAIN_WITHIN) =>
            {
                return false;
            }
            Some(_) | None => {}
        }
        match self.refresh_locked(&mut held, transport).await {
            Ok(c) => {
                if let Some(h) = held.as_mut() {
                    h.after_refusal = Some(std::time::Instant::now());
                }
                c != *used
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store refused the credentials and they cannot be refreshed");
                false
            }
        }
    }

    /// Keeps expiring credentials fresh until `shutdown`: each is replaced at its refresh
    /// time; a failed refresh is retried with backoff while the current ones are valid.
    pub async fn keep_fresh(
        self: Arc<Self>,
        transport: Arc<Transport>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut changed = self.changed.subscribe();
        let mut failures = 0u32;
        loop {
            let wait = if failures > 0 {
                REFRESH_RETRY.ceiling(failures - 1)
            } else {
                match self.held.lock().await.as_ref().and_then(|h| h.refresh_at) {
                    Some(at) => at.duration_since(SystemTime::now()).unwrap_or_default(),
                    // Nothing expiring in hand: wait until something arrives.
                    None => Duration::MAX,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                r = changed.changed() => {
                    if r.is_err() {
                        return;
                    }
                    // New credentials, from this loop or a request's own refresh: the source
                    // works again, so wait for their refresh time rather than a retry.
                    failures = 0;
                    continue;
                }
                _ = sleep_for(wait) => {}
            }
            let mut held = self.held.lock().await;
            match self.refresh_locked(&mut held, &transport).await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let left = held
                        .as_ref()
                        .and_then(|h| h.creds.expires_at)
                        .and_then(|exp| exp.duration_since(SystemTime::now()).ok());
                    tracing::warn!(error = %e, expires_in_seconds = left.map(|d| d.as_secs()),
                        "cannot refresh AWS credentials ahead of their expiry; retrying");
                }
            }
        }
    }

    /// Resolves anew into `held`; on failure `held` keeps what it had.
    async fn refresh_locked(
        &self,
        held: &mut Option<Held>,
        transport: &Arc<Transport>,
    ) -> Result<Credentials, Error> {
        let result = self.resolve(transport).await;
        let metrics = self.metrics.get();
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok((creds, from)) => {
                if let Some(m) = metrics {
                    m.credentials_refreshes.inc("ok");
                    m.credentials_expires_at_seconds.set(
                        creds
                            .expires_at
                            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                            .map_or(f64::INFINITY, |d| d.as_secs_f64()),
                    );
                }
                let rotated = held.as_ref().is_some_and(|h| h.creds != creds);
                if rotated {
                    tracing::info!(source = %from, access_key_id = %creds.access_key_id,
                        expires_at = ?creds.expires_at.map(time::OffsetDateTime::from),
                        "new AWS credentials");
                }
                status.source = Some(from.clone());
                status.access_key_id = Some(creds.access_key_id.clone());
                status.expires_at = creds.expires_at;
                status.last_error = None;
                *held = Some(Held::new(creds.clone(), SystemTime::now()));
                self.changed.send_modify(|n| *n += 1);
                Ok(creds)
            }
            Err(e) => {
                if let Some(m) = metrics {
                    m.credentials_refreshes.inc("error");
                }
                status.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }
}

/// `tokio::time::sleep` that accepts "forever".
async fn sleep_for(d: Duration) {
    match tokio::time::Instant::now().checked_add(d) {
        Some(at) if d < Duration::from_secs(86_400 * 365) => tokio::time::sleep_until(at).await,
        _ => std::future::pending().await,
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

    #[test]
    fn expiring_credentials_are_replaced_ahead_of_expiry_with_jitter() {
        let now = SystemTime::now();
        let hour = Credentials::new("A", "s", Some("t")).expiring(now + Duration::from_secs(3600));
        for _ in 0..50 {
            let h = Held::new(hour.clone(), now);
            let lead = (now + Duration::from_secs(3600))
                .duration_since(h.refresh_at.unwrap())
                .unwrap();
            assert!((300..=360).contains(&lead.as_secs()), "{lead:?}");
        }
        // Sixty seconds: at half their life at the latest.
        let minute = Credentials::new("B", "s", Some("t")).expiring(now + Duration::from_secs(60));
        let h = Held::new(minute, now);
        let at = h.refresh_at.unwrap().duration_since(now).unwrap();
        assert!((24..=30).contains(&at.as_secs()), "{at:?}");
        assert!(h.serves(now, Duration::from_secs(20)));
        // A part that needs longer than half their life is signed only with fresh ones.
        assert!(h.serves(now, Duration::from_secs(600)));
        assert!(!h.serves(now + Duration::from_secs(31), Duration::ZERO));
        // An hour's credentials with ten minutes left are before their refresh time, but a
        // part that needs more than ten minutes to send is not signed with them.
        let h = Held::new(hour, now);
        let left_600 = now + Duration::from_secs(3000);
        assert!(h.serves(left_600, Duration::from_secs(100)));
        assert!(!h.serves(left_600, Duration::from_secs(700)));
        let long = Held::new(Credentials::new("C", "s", None), now);
        assert!(long.serves(now + Duration::from_secs(86_400 * 365), Duration::MAX / 4));
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
        let key_id = async |p: &CredentialsProvider| {
            p.get(&transport, Duration::ZERO)
                .await
                .unwrap()
                .unwrap()
                .access_key_id
        };
        assert_eq!(key_id(&p).await, "P");
        let env = AwsEnv {
            access_key_id: Some("E".into()),
            secret_access_key: Some("F".into()),
            ..env
        };
        let p = CredentialsProvider::new(CredentialSource::Chain, None, Some("ops".into()), env);
        assert_eq!(key_id(&p).await, "E");
        let none = CredentialsProvider::new(
            CredentialSource::Chain,
            None,
            Some("nope".into()),
            AwsEnv {
                imds_disabled: true,
                ..Default::default()
            },
        );
        let err = none
            .get(&transport, Duration::ZERO)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("environment") && err.contains("profile `nope`"),
            "{err}"
        );
    }
}
