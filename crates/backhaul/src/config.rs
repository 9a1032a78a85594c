//! The site config file: one TOML document whose tables belong to the library crates
//! (`[spool]` → `backhaul-spool`, `[upload]` → `backhaul-upload`). This module only reads the
//! file, assembles the tables, and turns every error into `file:line:col` plus a `help:` line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use backhaul_spool::{SpoolConfig, SpoolSettings};
use backhaul_upload::{Credentials, CredentialsProvider, UploadConfig, UploadSettings};
use serde::{Deserialize, Serialize};

use crate::cli::LogFormat;
use crate::env::ProcessEnv;
use crate::exit::ConfigInvalid;

/// Default metrics listen address (loopback: metrics are for the local scraper or a tunnel).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";
/// Default CloudWatch namespace.
pub const DEFAULT_NAMESPACE: &str = "Backhaul";
/// Default seconds between EMF lines / PutMetricData calls.
pub const DEFAULT_PUBLISH_INTERVAL_SECONDS: u64 = 60;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `[site]`.
    pub site: SiteConfig,
    /// `[spool]`.
    pub spool: SpoolConfig,
    /// `[upload]`.
    pub upload: UploadConfig,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// `[log]`.
    #[serde(default)]
    pub log: LogConfig,
    /// `[inventory]`: interfaces with roles and declared MTUs, gateway, endpoint (diagnosis).
    pub inventory: Option<backhaul_diagnose::InventoryConfig>,
    /// `[diagnose]`: thresholds of the diagnosis rules.
    #[serde(default)]
    pub diagnose: backhaul_diagnose::Settings,
    /// `[monitor]`: how the daemon watches the path and where alerts go.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// `[remediation]`: what the agent may change on the site's network by itself.
    #[serde(default)]
    pub remediation: RemediationConfig,
}

/// What the agent may change on the site's network by itself, once a PMTUD black hole is
/// attributed to a declared interface whose MTU left its declared value. Off unless asked:
/// either mode needs `CAP_NET_ADMIN` (`packaging/remediation.conf`, a systemd drop-in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RemediationMode {
    /// Alert only; a person runs the fix the alert names.
    #[default]
    Off,
    /// Cap the path MTU on the WAN's routes (main table and strongSwan's 220): heals every
    /// connection on the site, the open ones at their next retransmission, and leaves the
    /// interface's wrong MTU for a person to fix; taken off when the interface is back at its
    /// declared value.
    RouteMtu,
    /// Set the interface's MTU back to its declared value (`ip link set dev eno1 mtu 1500`):
    /// the fix the alert names, undone by the next `netplan apply` or reboot while the netplan
    /// files still carry the change.
    RestoreDeclared,
}

impl RemediationMode {
    /// `off`, `route-mtu`, `restore-declared`.
    pub fn as_str(self) -> &'static str {
        match self {
            RemediationMode::Off => "off",
            RemediationMode::RouteMtu => "route-mtu",
            RemediationMode::RestoreDeclared => "restore-declared",
        }
    }
}

/// `[remediation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemediationConfig {
    /// `off` (default), `route-mtu` or `restore-declared`.
    #[serde(default)]
    pub mode: RemediationMode,
    /// The guarded netplan apply's state directory: while its lock (`pending.json`) is there,
    /// the agent changes nothing.
    #[serde(default = "default_netplan_state_dir")]
    pub netplan_state_dir: PathBuf,
    /// Where the route MTU in force is recorded, so a restarted agent still takes it off.
    #[serde(default = "default_remediation_state_file")]
    pub state_file: PathBuf,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        Self {
            mode: RemediationMode::Off,
            netplan_state_dir: default_netplan_state_dir(),
            state_file: default_remediation_state_file(),
        }
    }
}

fn default_remediation_state_file() -> PathBuf {
    PathBuf::from("/var/lib/backhaul/remediation.json")
}

fn default_netplan_state_dir() -> PathBuf {
    PathBuf::from(backhaul_netplan::DEFAULT_STATE_DIR)
}

/// Default seconds between path probes.
pub const DEFAULT_PROBE_INTERVAL_SECONDS: u64 = 10;
/// Default wait for each probe's answer.
pub const DEFAULT_PROBE_TIMEOUT_MILLISECONDS: u64 = 500;
/// Default interval of the interface poll.
pub const DEFAULT_LINK_POLL_MILLISECONDS: u64 = 500;

/// Alert payload shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFormat {
    /// backhaul's JSON (kind, severity, root_cause, evidence, fix, runbook, status).
    #[default]
    Json,
    /// Slack incoming-webhook shape (`text` + `blocks`).
    Slack,
}

/// `[monitor]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Seconds between DF probes toward gateway and endpoint (also right after a link change).
    #[serde(default = "default_probe_interval")]
    pub probe_interval_seconds: u64,
    /// Wait for each probe's answer.
    #[serde(default = "default_probe_timeout")]
    pub probe_timeout_milliseconds: u64,
    /// Monitor tick: re-evaluation, and the sysfs poll of interfaces when the rtnetlink
    /// subscription is unavailable.
    #[serde(default = "default_link_poll")]
    pub link_poll_milliseconds: u64,
    /// POST alerts here (JSON or Slack shape); none: alerts go to the log only. May carry
    /// `user:password@` (basic auth) and a query (a token); both are redacted wherever the URL
    /// is shown.
    pub webhook_url: Option<String>,
    /// A file holding a bearer token for the webhook, read at every send (rotation needs no
    /// restart).
    #[serde(default)]
    pub webhook_bearer_token_file: Option<std::path::PathBuf>,
    /// TLS towards the webhook: a private CA, a client certificate, the name its certificate
    /// carries.
    #[serde(default)]
    pub webhook_tls: Option<ReceiverTls>,
    /// `json` or `slack`.
    #[serde(default)]
    pub webhook_format: WebhookFormat,
    /// Repeat a still-open incident's alert after this long.
    #[serde(default = "default_renotify")]
    pub renotify_seconds: u64,
    /// strongSwan's VICI socket; absent socket or no loaded connection: VPN "not monitored".
    #[serde(default = "default_vici_socket")]
    pub vici_socket: std::path::PathBuf,
    /// Alertmanager to push alerts to (`POST <url>/api/v2/alerts`), e.g.
    /// `http://alertmanager.example.net:9093`; none: no push.
    pub alertmanager_url: Option<String>,
    /// A file holding a bearer token for Alertmanager (Prometheus' `credentials_file`), read
    /// at every send.
    #[serde(default)]
    pub alertmanager_bearer_token_file: Option<std::path::PathBuf>,
    /// TLS towards Alertmanager (Prometheus' `tls_config`).
    #[serde(default)]
    pub alertmanager_tls: Option<ReceiverTls>,
    /// Where the NOC reaches this site's status page (e.g. through the VPN); sent as
    /// Alertmanager's `generatorURL`.
    #[serde(default)]
    pub status_page_url: Option<String>,
    /// Put before each runbook path in alerts, `/status` and the page, so `runbook_url` is a
    /// link: where the fleet publishes these docs (ends with `/`).
    #[serde(default = "default_runbook_base")]
    pub runbook_base_url: String,
    /// While an incident fires it is pushed again this often, with `endsAt` four intervals
    /// ahead: an agent that dies stops renewing and Alertmanager resolves the alert itself.
    #[serde(default = "default_alertmanager_resend")]
    pub alertmanager_resend_seconds: u64,
}

/// TLS settings of one alert receiver, as Prometheus' `tls_config` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverTls {
    /// PEM CA certificates trusted for this receiver beside the system's (instead of
    /// `upload.ca_file`, which it otherwise inherits).
    pub ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM, leaf first) for a receiver that asks for one.
    pub cert_file: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<std::path::PathBuf>,
    /// The name the receiver's certificate must carry (and the SNI sent) when the URL names
    /// it by address.
    pub server_name: Option<String>,
}

impl ReceiverTls {
    /// `base` (the upload's settings: proxies, CA, socket options) with these TLS settings.
    pub fn apply(
        tls: Option<&Self>,
        mut base: backhaul_upload::TransportConfig,
    ) -> backhaul_upload::TransportConfig {
        if let Some(t) = tls {
            if let Some(ca) = &t.ca_file {
                base.ca_bundle = Some(ca.clone());
            }
            if let (Some(cert_file), Some(key_file)) = (&t.cert_file, &t.key_file) {
                base.client_cert = Some(backhaul_upload::ClientCert {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                });
            }
            if let Some(name) = &t.server_name {
                base.server_name = Some(name.clone());
            }
        }
        base
    }
}

/// Default seconds between Alertmanager re-sends of a firing alert.
pub const DEFAULT_ALERTMANAGER_RESEND_SECONDS: u64 = 60;

/// The project's published docs, by default.
pub const DEFAULT_RUNBOOK_BASE_URL: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/blob/main/");

fn default_runbook_base() -> String {
    DEFAULT_RUNBOOK_BASE_URL.to_owned()
}

fn default_alertmanager_resend() -> u64 {
    DEFAULT_ALERTMANAGER_RESEND_SECONDS
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            probe_interval_seconds: DEFAULT_PROBE_INTERVAL_SECONDS,
            probe_timeout_milliseconds: DEFAULT_PROBE_TIMEOUT_MILLISECONDS,
            link_poll_milliseconds: DEFAULT_LINK_POLL_MILLISECONDS,
            webhook_url: None,
            webhook_bearer_token_file: None,
            webhook_tls: None,
            webhook_format: WebhookFormat::Json,
            renotify_seconds: backhaul_diagnose::DEFAULT_RENOTIFY_SECONDS,
            vici_socket: default_vici_socket(),
            alertmanager_url: None,
            alertmanager_bearer_token_file: None,
            alertmanager_tls: None,
            status_page_url: None,
            runbook_base_url: default_runbook_base(),
            alertmanager_resend_seconds: DEFAULT_ALERTMANAGER_RESEND_SECONDS,
        }
    }
}

fn default_probe_interval() -> u64 {
    DEFAULT_PROBE_INTERVAL_SECONDS
}
fn default_probe_timeout() -> u64 {
    DEFAULT_PROBE_TIMEOUT_MILLISECONDS
}
fn default_link_poll() -> u64 {
    DEFAULT_LINK_POLL_MILLISECONDS
}
fn default_vici_socket() -> std::path::PathBuf {
    backhaul_netprobe::VICI_SOCKET.into()
}
fn default_renotify() -> u64 {
    backhaul_diagnose::DEFAULT_RENOTIFY_SECONDS
}

/// `[site]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Site name (object key prefix, metric dimension).
    pub name: String,
}

/// `[metrics]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `/metrics` listen address, or `off`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Append CloudWatch EMF JSON lines to this file (for the CloudWatch agent).
    pub emf_path: Option<PathBuf>,
    /// Seconds between EMF lines and PutMetricData calls.
    #[serde(default = "default_interval")]
    pub publish_interval_seconds: u64,
    /// CloudWatch namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Direct PutMetricData publishing.
    pub cloudwatch: Option<CloudWatchConfig>,
    /// Serve `/metrics` and `/status` on an address other than loopback. They name the
    /// site's interfaces, addresses and incidents, so this must be asked for.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            emf_path: None,
            publish_interval_seconds: default_interval(),
            namespace: default_namespace(),
            cloudwatch: None,
            allow_remote: false,
        }
    }
}

/// `[metrics.cloudwatch]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudWatchConfig {
    /// Endpoint; default `https://monitoring.<region>.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Region; default the upload region.
    pub region: Option<String>,
}

/// `[log]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: Option<String>,
    /// Filter, e.g. `info`.
    pub level: Option<String>,
}

fn default_listen() -> String {
    DEFAULT_METRICS_LISTEN.into()
}
fn default_interval() -> u64 {
    DEFAULT_PUBLISH_INTERVAL_SECONDS
}
fn default_namespace() -> String {
    DEFAULT_NAMESPACE.into()
}

/// A validated config.
#[derive(Debug)]
pub struct Config {
    /// Site name.
    pub site: String,
    /// Spool settings.
    pub spool: SpoolSettings,
    /// Upload settings.
    pub upload: UploadSettings,
    /// The raw upload table (credentials source and keys).
    pub upload_raw: UploadConfig,
    /// Metrics listen address.
    pub metrics_listen: Option<SocketAddr>,
    /// EMF output.
    pub emf_path: Option<PathBuf>,
    /// Publish interval.
    pub publish_interval: std::time::Duration,
    /// Namespace.
    pub namespace: String,
    /// PutMetricData endpoint and region.
    pub cloudwatch: Option<(String, String)>,
    /// Log format.
    pub log_format: Option<LogFormat>,
    /// Log level.
    pub log_level: Option<String>,
    /// The validated site inventory, if the file has one.
    pub inventory: Option<backhaul_diagnose::Inventory>,
    /// Diagnosis thresholds.
    pub diagnose: backhaul_diagnose::Settings,
    /// Path monitoring and alerts.
    pub monitor: MonitorConfig,
    /// Site remediation.
    pub remediation: RemediationConfig,
}

impl Config {
    /// The credentials provider the upload table asks for.
    pub fn credentials(&self, env: &ProcessEnv) -> CredentialsProvider {
        let u = &self.upload_raw;
        let fixed = match (&u.access_key_id, &u.secret_access_key) {
            (Some(k), Some(s)) => Some(Credentials::new(k, s, None)),
            _ => None,
        };
        CredentialsProvider::new(u.credentials, fixed, u.profile.clone(), env.aws.clone())
            .with_default_region(&self.upload.region)
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

/// Where `key` is set inside `[table]` (or where the table starts), 1-based.
fn locate(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    let mut table_line = None;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_owned();
            if current == table {
                table_line = Some((i + 1, 1));
            }
            continue;
        }
        if current == table
            && let Some((k, _)) = t.split_once('=')
            && k.trim() == key
        {
            return Some((i + 1, line.find(key).unwrap_or(0) + 1));
        }
    }
    table_line
}

fn invalid(path: &Path, pos: Option<(usize, usize)>, what: &str, help: &str) -> anyhow::Error {
    let at = match pos {
        Some((l, c)) => format!("{}:{l}:{c}", path.display()),
        None => path.display().to_string(),
    };
    anyhow::Error::new(ConfigInvalid(format!("{at}: {what}\n  help: {help}")))
}

/// One alert destination's keys: `monitor.<name>_url`, `monitor.<name>_bearer_token_file`
/// and `[monitor.<name>_tls]`.
struct Receiver<'a> {
    name: &'a str,
    url: Option<&'a str>,
    token_file: Option<&'a Path>,
    tls: Option<&'a ReceiverTls>,
    example: &'a str,
}

/// An alert destination parses as the runtime will send to it, carries one way of
/// authenticating at most, and its token and TLS files can be read and used now. Messages show
/// the URL redacted.
fn check_destination((path, text): (&Path, &str), r: &Receiver<'_>) -> anyhow::Result<()> {
    let url_key = format!("{}_url", r.name);
    let parsed = match r.url.map(backhaul_upload::parse_request_url) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            return Err(invalid(
                path,
                locate(text, "monitor", &url_key),
                &format!("monitor.{url_key}: {e}"),
                r.example,
            ));
        }
        None => None,
    };
    if let Some(file) = r.token_file {
        check_token_file((path, text), r, parsed.as_ref(), file)?;
    }
    match (r.tls, parsed) {
        (None, _) => Ok(()),
        (Some(tls), parsed) => check_tls((path, text), r.name, tls, parsed.as_ref()),
    }
}

fn check_token_file(
    (path, text): (&Path, &str),
    r: &Receiver<'_>,
    parsed: Option<&backhaul_upload::RequestUrl>,
    file: &Path,
) -> anyhow::Result<()> {
    let url_key = format!("{}_url", r.name);
    let token_key = format!("{}_bearer_token_file", r.name);
    let at = locate(text, "monitor", &token_key);
    match parsed {
        None => Err(invalid(
            path,
            at,
            &format!("monitor.{token_key} is set but monitor.{url_key} is not"),
            &format!("set monitor.{url_key}, or remove the token file"),
        )),
        Some(u) if u.authorization.is_some() => Err(invalid(
            path,
            at,
            &format!(
                "monitor.{url_key} carries user:password@ and monitor.{token_key} is set: one authorization only"
            ),
            "keep the token file and take the user and password out of the URL, or the other way round",
        )),
        Some(_) => match std::fs::read_to_string(file) {
            Ok(t) if !t.trim().is_empty() => Ok(()),
            Ok(_) => Err(invalid(
                path,
                at,
                &format!("monitor.{token_key}: {} is empty", file.display()),
                "write the token into it (one line)",
            )),
            Err(e) => Err(invalid(
                path,
                at,
                &format!("monitor.{token_key}: cannot read {}: {e}", file.display()),
                "the agent runs as user backhaul: chown root:backhaul and chmod 0640 the file",
            )),
        },
    }
}

/// `[monitor.<name>_tls]` belongs to an https:// URL, names a certificate and its key together,
/// and builds a TLS client as the first connection will (files read, PEM parsed, key matched).
fn check_tls(
    (path, text): (&Path, &str),
    name: &str,
    tls: &ReceiverTls,
    parsed: Option<&backhaul_upload::RequestUrl>,
) -> anyhow::Result<()> {
    let table = format!("monitor.{name}_tls");
    let url_key = format!("{name}_url");
    // With "" for the key, the table's own line.
    let at = |key: &str| locate(text, &table, key);
    match parsed {
        None => {
            return Err(invalid(
                path,
                at(""),
                &format!("[{table}] is set but monitor.{url_key} is not"),
                &format!("set monitor.{url_key}, or remove [{table}]"),
            ));
        }
        Some(u) if !u.target.https => {
            return Err(invalid(
                path,
                at(""),
                &format!(
                    "[{table}] is set but monitor.{url_key} is {}, not https://",
                    u.shown
                ),
                &format!("use an https:// URL, or remove [{table}]"),
            ));
        }
        Some(_) => {}
    }
    let key = match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => Some("cert_file"),
        (None, Some(_)) => Some("key_file"),
        (Some(_), Some(_)) | (None, None) => None,
    };
    if let Some(key) = key {
        return Err(invalid(
            path,
            at(key),
            &format!("{table}.{key} is set without the other half of the client identity"),
            "set both cert_file and key_file (PEM), or neither",
        ));
    }
    ReceiverTls::apply(Some(tls), backhaul_upload::TransportConfig::default())
        .tls_client_config()
        .map(|_| ())
        .map_err(|e| {
            invalid(
                path,
                at(""),
                &format!("[{table}]: {e}"),
                "the agent runs as user backhaul: the files must be PEM it can read (chown root:backhaul, chmod 0640 for a key)",
            )
        })
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let help = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "the installed config is 0640 root:backhaul (it may hold keys): run as root, join \
                 group backhaul (`usermod -aG backhaul $USER`, then log in again), or ask the agent \
                 directly with `backhaul status --url http://127.0.0.1:9464`"
            }
            _ => "check the path given with --config",
        };
        invalid(path, None, &format!("cannot read config: {e}"), help)
    })?;
    parse(path, &text)
}

/// What the shipped example writes where only the site knows the value (lower case).
const PLACEHOLDER: &str = "edit-me";

/// Validates config text (the path is for messages).
pub fn parse(path: &Path, text: &str) -> anyhow::Result<Config> {
    let raw: FileConfig = toml::from_str(text).map_err(|e| {
        let pos = e.span().map(|s| line_col(text, s.start));
        invalid(
            path,
            pos,
            e.message(),
            "see `backhaul config default` for every key with its default",
        )
    })?;
    for (table, key, value) in [
        ("site", "name", raw.site.name.as_str()),
        ("upload", "endpoint", raw.upload.endpoint.as_str()),
        ("upload", "bucket", raw.upload.bucket.as_str()),
    ] {
        if value.to_ascii_lowercase().contains(PLACEHOLDER) {
            return Err(invalid(
                path,
                locate(text, table, key),
                &format!("{table}.{key} is still the example's placeholder (`{value}`)"),
                &format!(
                    "edit {}: the site's name, upload.endpoint, upload.bucket and the credentials; \
                     then `backhaul config check {}` and `systemctl restart backhaul`",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
    let site = raw.site.name.clone();
    if site.is_empty() || site.contains('/') {
        return Err(invalid(
            path,
            locate(text, "site", "name"),
            "site.name must be non-empty without '/'",
            "e.g. name = \"SITE-2847\"",
        ));
    }
    let spool = raw.spool.validate(&site).map_err(|(key, msg)| {
        invalid(
            path,
            locate(text, "spool", key),
            &format!("spool.{key}: {msg}"),
            "fix the value or remove the key to use the default",
        )
    })?;
    let upload = raw.upload.validate().map_err(|(key, msg)| {
        invalid(
            path,
            locate(text, "upload", key),
            &format!("upload.{key}: {msg}"),
            "fix the value or remove the key to use the default",
        )
    })?;
    let metrics_listen = match raw.metrics.listen.as_str() {
        "" | "off" => None,
        s => Some(s.parse::<SocketAddr>().map_err(|e| {
            invalid(
                path,
                locate(text, "metrics", "listen"),
                &format!("metrics.listen: `{s}`: {e}"),
                "use IP:PORT such as 127.0.0.1:9464, or \"off\"",
            )
        })?),
    };
    if let Some(a) = metrics_listen
        && !a.ip().is_loopback()
        && !raw.metrics.allow_remote
    {
        return Err(invalid(
            path,
            locate(text, "metrics", "listen"),
            &format!(
                "metrics.listen = \"{a}\" is reachable from other hosts; /metrics and /status describe the site's network and incidents"
            ),
            "keep 127.0.0.1:9464 and scrape through a tunnel, or set metrics.allow_remote = true to serve it on purpose",
        ));
    }
    if let Some(level) = raw.log.level.as_deref()
        && let Err(e) = crate::logging::parse_filter(level)
    {
        return Err(invalid(
            path,
            locate(text, "log", "level"),
            &format!("log.level: {e}"),
            "e.g. level = \"info\" or \"info,backhaul_upload=debug\"",
        ));
    }
    if raw.metrics.publish_interval_seconds == 0 {
        return Err(invalid(
            path,
            locate(text, "metrics", "publish_interval_seconds"),
            "metrics.publish_interval_seconds must be at least 1",
            "60 is CloudWatch's standard resolution",
        ));
    }
    let log_format = match raw.log.format.as_deref() {
        None => None,
        Some("human") => Some(LogFormat::Human),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            return Err(invalid(
                path,
                locate(text, "log", "format"),
                &format!("log.format: unknown format `{other}`"),
                "use \"human\" or \"json\"",
            ));
        }
    };
    let cloudwatch = raw.metrics.cloudwatch.as_ref().map(|c| {
        let region = c.region.clone().unwrap_or_else(|| upload.region.clone());
        let endpoint = c
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://monitoring.{region}.amazonaws.com"));
        (endpoint, region)
    });
    let inventory = match &raw.inventory {
        Some(inv) => Some(inv.validate().map_err(|e| {
            invalid(
                path,
                locate(text, "inventory", "interfaces"),
                &format!("inventory: {e}"),
                "declare each interface as { name, role = \"wan\"|\"camera\"|\"mgmt\"|\"other\", mtu_bytes }",
            )
        })?),
        None => None,
    };
    raw.diagnose.validate().map_err(|e| {
        invalid(
            path,
            locate(text, "diagnose", ""),
            &format!("diagnose: {e}"),
            "remove the key to use its default",
        )
    })?;
    let m = &raw.monitor;
    for (key, v) in [
        ("probe_interval_seconds", m.probe_interval_seconds),
        ("probe_timeout_milliseconds", m.probe_timeout_milliseconds),
        ("link_poll_milliseconds", m.link_poll_milliseconds),
    ] {
        if v == 0 {
            return Err(invalid(
                path,
                locate(text, "monitor", key),
                &format!("monitor.{key} must be at least 1"),
                "remove the key to use its default",
            ));
        }
    }
    check_destination(
        (path, text),
        &Receiver {
            name: "alertmanager",
            url: m.alertmanager_url.as_deref(),
            token_file: m.alertmanager_bearer_token_file.as_deref(),
            tls: m.alertmanager_tls.as_ref(),
            example: "e.g. http://alertmanager.example.net:9093 (the API path is added)",
        },
    )?;
    if !(m.runbook_base_url.starts_with("https://")
        || m.runbook_base_url.starts_with("http://")
        || m.runbook_base_url.starts_with("file://"))
        || !m.runbook_base_url.ends_with('/')
    {
        return Err(invalid(
            path,
            locate(text, "monitor", "runbook_base_url"),
            &format!(
                "monitor.runbook_base_url `{}` is not an http(s):// or file:// URL ending with /",
                m.runbook_base_url
            ),
            "e.g. https://docs.example.net/backhaul/ (docs/runbook-pmtud.md#… is appended)",
        ));
    }
    if let Some(url) = &m.status_page_url
        && let Err(e) = backhaul_upload::parse_request_url(url)
    {
        return Err(invalid(
            path,
            locate(text, "monitor", "status_page_url"),
            &format!("monitor.status_page_url: {e}"),
            "the URL the NOC opens for this site's status page, e.g. http://10.20.30.40:9464/",
        ));
    }
    if m.alertmanager_resend_seconds == 0 {
        return Err(invalid(
            path,
            locate(text, "monitor", "alertmanager_resend_seconds"),
            "monitor.alertmanager_resend_seconds must be at least 1",
            "remove the key to use its default (60)",
        ));
    }
    check_destination(
        (path, text),
        &Receiver {
            name: "webhook",
            url: m.webhook_url.as_deref(),
            token_file: m.webhook_bearer_token_file.as_deref(),
            tls: m.webhook_tls.as_ref(),
            example: "e.g. https://hooks.example.net/backhaul",
        },
    )?;
    if raw.remediation.mode != RemediationMode::Off && inventory.is_none() {
        return Err(invalid(
            path,
            locate(text, "remediation", "mode"),
            &format!(
                "remediation.mode = \"{}\" needs an [inventory]: the agent acts only on an interface it declares",
                raw.remediation.mode.as_str()
            ),
            "add an [inventory] with the WAN interface and its declared MTU, or set mode = \"off\"",
        ));
    }
    Ok(Config {
        monitor: raw.monitor.clone(),
        remediation: raw.remediation.clone(),
        inventory,
        diagnose: raw.diagnose,
        site,
        spool,
        upload,
        upload_raw: raw.upload,
        metrics_listen,
        emf_path: raw.metrics.emf_path,
        publish_interval: std::time::Duration::from_secs(raw.metrics.publish_interval_seconds),
        namespace: raw.metrics.namespace,
        cloudwatch,
        log_format,
        log_level: raw.log.level,
    })
}

/// The example config printed by `backhaul config default`; every key with its default.
pub const DEFAULT_CONFIG: &str = include_str!("../../../docs/site.example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[site]\nname = \"SITE-1\"\n[spool]\ndir = \"/tmp/x\"\n[upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"video\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(Path::new("site.toml"), MIN).unwrap();
        assert_eq!(c.site, "SITE-1");
        assert_eq!(
            c.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        assert_eq!(c.upload.part_size, backhaul_upload::DEFAULT_PART_SIZE_BYTES);
        assert_eq!(
            c.upload.multipart_threshold,
            backhaul_upload::DEFAULT_MULTIPART_THRESHOLD_BYTES
        );
    }

    #[test]
    fn a_multipart_threshold_below_one_part_is_refused_at_its_line() {
        let bad = MIN.replace(
            "bucket = \"video\"",
            "bucket = \"video\"\nmultipart_threshold_bytes = 1048576",
        );
        let e = format!("{:#}", parse(Path::new("site.toml"), &bad).unwrap_err());
        assert!(
            e.starts_with("site.toml:8:1: upload.multipart_threshold_bytes"),
            "{e}"
        );
        let good = bad.replace("1048576", "16777216");
        let c = parse(Path::new("site.toml"), &good).unwrap();
        assert_eq!(c.upload.multipart_threshold, 16 << 20);
    }

    #[test]
    fn remediation_without_an_inventory_is_refused_where_it_is_asked_for() {
        let bad = format!("{MIN}[remediation]\nmode = \"route-mtu\"\n");
        let e = format!("{:#}", parse(Path::new("site.toml"), &bad).unwrap_err());
        assert!(e.starts_with("site.toml:9:1: remediation.mode"), "{e}");
        assert!(e.contains("help:"), "{e}");
        let off = format!("{MIN}[remediation]\nmode = \"off\"\n");
        let c = parse(Path::new("site.toml"), &off).unwrap();
        assert_eq!(c.remediation.mode, RemediationMode::Off);
    }

    #[test]
    fn receiver_tls_belongs_to_an_https_url_and_its_files_must_load() {
        let err = |text: &str| {
            format!(
                "{:#}",
                parse(Path::new("site.toml"), &format!("{MIN}{text}")).unwrap_err()
            )
        };
        let e = err(
            "[monitor]\nalertmanager_url = \"http://am:9093\"\n[monitor.alertmanager_tls]\nserver_name = \"am\"\n",
        );
        assert!(
            e.starts_with("site.toml:10:1: [monitor.alertmanager_tls] is set but monitor.alertmanager_url is http://am:9093, not https://"),
            "{e}"
        );
        let e = err("[monitor.webhook_tls]\nserver_name = \"h\"\n");
        assert!(e.contains("monitor.webhook_url is not"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = err(&format!(
            "[monitor]\nwebhook_url = \"https://h/\"\n[monitor.webhook_tls]\nca_file = \"{}\"\n",
            dir.path().join("missing.pem").display()
        ));
        assert!(
            e.starts_with("site.toml:10:1: [monitor.webhook_tls]: CA file")
                && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = err(&format!(
            "[monitor]\nwebhook_url = \"https://h/\"\n[monitor.webhook_tls]\nca_file = \"{}\"\n",
            junk.display()
        ));
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn alert_destinations_are_checked_as_sent_and_never_shown_with_secrets() {
        let cfg = |monitor: &str| format!("{MIN}[monitor]\n{monitor}\n");
        let err = |monitor: &str| {
            format!(
                "{:#}",
                parse(Path::new("site.toml"), &cfg(monitor)).unwrap_err()
            )
        };
        // What the runtime sends to: basic auth in the URL, a token in the query.
        parse(
            Path::new("site.toml"),
            &cfg("webhook_url = \"https://u:pw@hooks.example.net/x?token=t\""),
        )
        .unwrap();
        let e = err("webhook_url = \"https://u:pw@hooks.example.net/x?token=t#f\"");
        assert!(e.starts_with("site.toml:9:1: monitor.webhook_url"), "{e}");
        assert!(e.contains("u:***@hooks.example.net/x?token=***"), "{e}");
        assert!(!e.contains("pw") && !e.contains("=t"), "{e}");
        let e = err("alertmanager_url = \"am.example.net:9093\"");
        assert!(e.contains("monitor.alertmanager_url"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t0k\n").unwrap();
        let e = err(&format!(
            "alertmanager_url = \"http://u:pw@am:9093\"\nalertmanager_bearer_token_file = \"{}\"",
            token.display()
        ));
        assert!(e.contains("one authorization only"), "{e}");
        let e = err(&format!(
            "webhook_bearer_token_file = \"{}\"",
            token.display()
        ));
        assert!(e.contains("monitor.webhook_url is not"), "{e}");
        let e = err(&format!(
            "webhook_url = \"http://h/\"\nwebhook_bearer_token_file = \"{}\"",
            dir.path().join("missing").display()
        ));
        assert!(
            e.starts_with("site.toml:10:1:") && e.contains("cannot read"),
            "{e}"
        );
        parse(
            Path::new("site.toml"),
            &cfg(&format!(
                "alertmanager_url = \"http://am:9093\"\nalertmanager_bearer_token_file = \"{}\"",
                token.display()
            )),
        )
        .unwrap();
    }

    #[test]
    fn a_proxy_the_transport_cannot_use_is_refused_at_its_line_without_its_password() {
        let bad = MIN.replace(
            "bucket = \"video\"",
            "bucket = \"video\"\nproxy = \"https://u:pw@proxy.example.net:3128\"",
        );
        let e = format!("{:#}", parse(Path::new("site.toml"), &bad).unwrap_err());
        assert!(e.starts_with("site.toml:8:1: upload.proxy"), "{e}");
        assert!(
            e.contains("u:***@proxy.example.net") && !e.contains("pw"),
            "{e}"
        );
        for good in ["http://proxy.example.net:3128", "off"] {
            let ok = MIN.replace(
                "bucket = \"video\"",
                &format!("bucket = \"video\"\nproxy = \"{good}\""),
            );
            parse(Path::new("site.toml"), &ok).unwrap();
        }
    }

    #[test]
    fn example_config_needs_editing_and_is_valid_once_edited() {
        // As shipped it cannot start a site by accident: the placeholders are refused at
        // their line, with what to do.
        let e = format!(
            "{:#}",
            parse(Path::new("/etc/backhaul/site.toml"), DEFAULT_CONFIG).unwrap_err()
        );
        assert!(
            e.contains("site.name is still the example's placeholder (`EDIT-ME`)")
                && e.contains("help: edit /etc/backhaul/site.toml"),
            "{e}"
        );
        // Edited, it is valid: `config_check_accepts_good_and_default_configs` (cli tests).
    }

    #[test]
    fn errors_name_file_line_and_help() {
        let bad = MIN.replace(
            "bucket = \"video\"",
            "bucket = \"video\"\npart_size_bytes = 10",
        );
        let e = format!("{:#}", parse(Path::new("site.toml"), &bad).unwrap_err());
        assert!(
            e.starts_with("site.toml:8:1: upload.part_size_bytes"),
            "{e}"
        );
        assert!(e.contains("help:"), "{e}");
        let typo = MIN.replace("[spool]\n", "[spool]\nsettle_secs = 3\n");
        let e = format!("{:#}", parse(Path::new("site.toml"), &typo).unwrap_err());
        assert!(
            e.starts_with("site.toml:4:1:") && e.contains("settle_secs"),
            "{e}"
        );
        let syntax = MIN.replace("name = \"SITE-1\"", "name = SITE-1");
        let e = format!("{:#}", parse(Path::new("site.toml"), &syntax).unwrap_err());
        assert!(e.starts_with("site.toml:2:"), "{e}");
    }
}
