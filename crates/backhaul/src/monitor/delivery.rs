//! What leaves the monitor: incident transitions as log lines, and alerts through the durable
//! outbox to the webhook (JSON or Slack) and to Alertmanager's v2 API. An alert is queued in
//! the journal first and delivered by its own task, retried with backoff until it arrives, so
//! an alert raised while the uplink is down arrives when it is back, with its original times,
//! and a firing alert always arrives before its resolve. Alertmanager also gets every firing
//! alert again each `alertmanager_resend_seconds` with `endsAt` ahead, so it resolves them by
//! itself if the agent dies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backhaul_diagnose::{Alert, Status, Transition};
use backhaul_spool::{Destination, MessageStatus, Outbox, OutboxMessage};
use backhaul_telemetry::Metrics;
use backhaul_upload::{ErrorClass, Transport};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::{MonitorConfig, ReceiverTls, WebhookFormat};
use crate::probe::now_ms;

pub(super) fn log_transition(t: &Transition) {
    let i = t.incident();
    match t {
        Transition::Opened(_) | Transition::Updated { .. } => tracing::error!(
            incident = %i.id, kind = i.kind.as_str(), severity = i.severity.as_str(),
            root_cause = %i.root_cause, fix = %i.fix.join("; "), runbook = %i.runbook,
            "incident {}", if matches!(t, Transition::Opened(_)) { "opened" } else { "changed severity" }
        ),
        Transition::Reopened(_) => tracing::warn!(
            incident = %i.id, kind = i.kind.as_str(), severity = i.severity.as_str(),
            flapping = %i.flapping.map(|f| f.describe(i.started_at_ms, i.updated_at_ms)).unwrap_or_default(),
            "incident back within the flap hold-down"
        ),
        Transition::Resolved(_) => tracing::info!(
            incident = %i.id, kind = i.kind.as_str(), "incident resolved"
        ),
    }
}

/// How often the outbox is looked at.
const PUMP_EVERY: Duration = Duration::from_secs(1);
/// Longest pause between two attempts at one message.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// `alertname` of a kind: one prefix, CamelCase (`pmtu_blackhole` → `BackhaulPmtuBlackhole`).
pub(super) fn alertname(kind: &str) -> String {
    let mut out = String::from("Backhaul");
    for word in kind.split('_') {
        let mut c = word.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// The Alertmanager v2 alert for `a` (`endsAt` only when resolved; a firing one gets it at
/// each send). `interfaces` are the inventory's: the subject is an `interface` label only
/// when it names one.
pub(super) fn alertmanager_alert(
    a: &Alert,
    interfaces: &[String],
    generator_url: Option<&str>,
) -> Value {
    let kind = a.kind.as_str();
    let mut labels = json!({
        "alertname": alertname(kind),
        "site": a.site,
        "kind": kind,
        "severity": a.severity.as_str(),
    });
    if interfaces.contains(&a.subject) {
        labels["interface"] = json!(a.subject);
    }
    // What a fleet's route groups by: one change on many sites is one notification.
    if let Some(c) = &a.change {
        labels["change"] = json!(c.id);
    }
    let mut alert = json!({
        "labels": labels,
        "annotations": {
            "summary": a.summary(),
            "description": a.root_cause,
            "fix": a.fix.join("\n"),
            "runbook_url": a.runbook,
        },
        "startsAt": a.started_at,
    });
    if let Some(end) = &a.resolved_at {
        alert["endsAt"] = json!(end);
    }
    if let Some(c) = &a.change {
        alert["annotations"]["change_link"] = json!(c.link);
        if let Some(at) = &c.at {
            alert["annotations"]["change_at"] = json!(at);
        }
    }
    if let Some(url) = generator_url {
        alert["generatorURL"] = json!(url);
    }
    alert
}

/// Queues alerts for every configured destination and keeps Alertmanager's view of what
/// fires, for the re-sends.
#[derive(Debug)]
pub(super) struct Delivery {
    outbox: Arc<Outbox>,
    webhook: Option<WebhookFormat>,
    alertmanager: bool,
    /// `generatorURL` of every Alertmanager alert: the site's status page.
    generator_url: Option<String>,
    interfaces: Vec<String>,
    /// Incident id → its firing Alertmanager alert.
    firing: Arc<Mutex<HashMap<String, Value>>>,
    /// Wakes the delivery task as soon as something is queued.
    queued: Arc<tokio::sync::Notify>,
}

impl Delivery {
    /// Starts the delivery task (until `shutdown`) and returns the queueing side.
    pub(super) fn start(
        cfg: &MonitorConfig,
        outbox: Arc<Outbox>,
        transport: Arc<Transport>,
        metrics: Arc<Metrics>,
        interfaces: Vec<String>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let firing = Arc::new(Mutex::new(HashMap::new()));
        // Each receiver gets its own connections (and its TLS settings): dropping the upload
        // connections after a path change must not cut an alert on its way out. They follow
        // the upload transport's MSS clamp, since they cross the same path.
        let own = |tls: Option<&ReceiverTls>| {
            Arc::new(transport.sibling(ReceiverTls::apply(tls, transport.config().clone())))
        };
        let sender = Sender {
            webhook: cfg.webhook_url.as_ref().map(|url| Receiver {
                url: url.clone(),
                bearer_token_file: cfg.webhook_bearer_token_file.clone(),
                transport: own(cfg.webhook_tls.as_ref()),
            }),
            alertmanager: cfg.alertmanager_url.as_ref().map(|u| Receiver {
                url: alertmanager_api(u),
                bearer_token_file: cfg.alertmanager_bearer_token_file.clone(),
                transport: own(cfg.alertmanager_tls.as_ref()),
            }),
            resend: Duration::from_secs(cfg.alertmanager_resend_seconds),
        };
        let queued = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(pump(
            sender,
            outbox.clone(),
            metrics,
            (firing.clone(), queued.clone()),
            shutdown,
        ));
        Self {
            outbox,
            webhook: cfg.webhook_url.as_ref().map(|_| cfg.webhook_format),
            alertmanager: cfg.alertmanager_url.is_some(),
            generator_url: cfg.status_page_url.clone(),
            interfaces,
            firing,
            queued,
        }
    }

    /// Queues `a` for each destination. Nothing is sent here; a full disk or a broken journal
    /// loses the alert only after saying so.
    pub(super) fn send(&self, a: &Alert) {
        let status = match a.status {
            Status::Firing => MessageStatus::Firing,
            Status::Resolved => MessageStatus::Resolved,
        };
        let now = now_ms() as i64;
        let queue = |dest: Destination, body: serde_json::Result<Vec<u8>>| {
            let queued = body.map_err(|e| e.to_string()).and_then(|b| {
                self.outbox
                    .enqueue(dest, &a.id, status, &b, now)
                    .map_err(|e| format!("{e:#}"))
            });
            if let Err(e) = queued {
                tracing::error!(alert = %a.summary(), destination = dest.as_str(), error = %e, "cannot queue alert");
            }
        };
        if let Some(format) = self.webhook {
            queue(
                Destination::Webhook,
                match format {
                    WebhookFormat::Json => serde_json::to_vec(a),
                    WebhookFormat::Slack => serde_json::to_vec(&a.slack()),
                },
            );
        }
        if self.alertmanager {
            let alert = alertmanager_alert(a, &self.interfaces, self.generator_url.as_deref());
            let mut firing = self.firing.lock().unwrap_or_else(|p| p.into_inner());
            // A new severity is a new label set in Alertmanager: end the old one.
            if let Some(old) = firing.get(&a.id)
                && old["labels"] != alert["labels"]
                && status == MessageStatus::Firing
            {
                let mut ended = old.clone();
                ended["endsAt"] = json!(rfc3339(now as u64));
                queue(Destination::Alertmanager, serde_json::to_vec(&ended));
            }
            match status {
                MessageStatus::Firing => firing.insert(a.id.clone(), alert.clone()),
                MessageStatus::Resolved => firing.remove(&a.id),
            };
            queue(Destination::Alertmanager, serde_json::to_vec(&alert));
        }
        self.queued.notify_one();
    }
}

fn rfc3339(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// `<url>/api/v2/alerts`, the query (if any) kept at the end.
fn alertmanager_api(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let api = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    match query {
        Some(q) => format!("{api}?{q}"),
        None => api,
    }
}

/// Where one kind of message goes and how it authenticates (a URL's `user:password@` is the
/// transport's business; a bearer token is read from its file at every send, so a rotated
/// token needs no restart).
struct Receiver {
    url: String,
    bearer_token_file: Option<std::path::PathBuf>,
    transport: Arc<Transport>,
}

struct Sender {
    webhook: Option<Receiver>,
    alertmanager: Option<Receiver>,
    resend: Duration,
}

impl Sender {
    /// One POST; the error says why it did not arrive.
    async fn post(&self, to: &Receiver, body: Vec<u8>) -> Result<(), Undelivered> {
        let bearer = match &to.bearer_token_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(t) => Some(format!("Bearer {}", t.trim())),
                Err(e) => {
                    return Err(Undelivered::Refused(format!(
                        "cannot read the bearer token file {}: {e}",
                        file.display()
                    )));
                }
            },
            None => None,
        };
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let req = backhaul_upload::SimpleRequest {
            method: "POST",
            url: &to.url,
            headers: &headers,
            body,
            timeout: Duration::from_secs(10),
        };
        to.transport.simple(req).await.map(|_| ()).map_err(|e| {
            let message = format!("{e:#}");
            match e.class() {
                ErrorClass::Connection | ErrorClass::Timeout | ErrorClass::Tls => {
                    Undelivered::Unreachable(message)
                }
                ErrorClass::SlowDown
                | ErrorClass::NoSuchBucket
                | ErrorClass::NoSuchUpload
                | ErrorClass::Precondition
                | ErrorClass::NotImplemented
                | ErrorClass::Checksum
                | ErrorClass::Auth
                | ErrorClass::ClockSkew
                | ErrorClass::Server5xx
                | ErrorClass::Client4xx
                | ErrorClass::Stall
                | ErrorClass::Abandoned
                | ErrorClass::Resigned
                | ErrorClass::Protocol
                | ErrorClass::LocalIo
                | ErrorClass::ChunkChanged
                | ErrorClass::Verify
                | ErrorClass::Corrupt
                | ErrorClass::Unproven
                | ErrorClass::KeyTaken
                | ErrorClass::Credentials
                | ErrorClass::Config => Undelivered::Refused(message),
            }
        })
    }

    /// A firing Alertmanager alert is sent with `endsAt` four re-send intervals ahead.
    fn alertmanager_body(&self, alert: &Value) -> Vec<u8> {
        let mut a = alert.clone();
        if a.get("endsAt").is_none() {
            a["endsAt"] = json!(rfc3339(now_ms() + 4 * self.resend.as_millis() as u64));
        }
        serde_json::to_vec(&[a]).unwrap_or_default()
    }

    async fn deliver(&self, m: &OutboxMessage) -> Result<(), Undelivered> {
        match (m.destination, &self.webhook, &self.alertmanager) {
            (Destination::Webhook, Some(to), _) => self.post(to, m.body.clone()).await,
            (Destination::Alertmanager, _, Some(to)) => {
                let alert: Value = serde_json::from_slice(&m.body)
                    .map_err(|e| Undelivered::Refused(format!("queued body is not JSON: {e}")))?;
                self.post(to, self.alertmanager_body(&alert)).await
            }
            // Queued for a destination the config no longer has: nothing to deliver to.
            (Destination::Webhook, None, _) | (Destination::Alertmanager, _, None) => Ok(()),
        }
    }
}

/// Why a message did not arrive: the receiver could not be reached (its later messages wait
/// too), or it answered and refused this one.
#[derive(Debug)]
enum Undelivered {
    Unreachable(String),
    Refused(String),
}

impl Undelivered {
    fn message(&self) -> &str {
        match self {
            Undelivered::Unreachable(m) | Undelivered::Refused(m) => m,
        }
    }
}

/// Delivers due messages at once when queued and every [`PUMP_EVERY`], oldest first, and
/// re-sends firing alerts to Alertmanager; keeps `backhaul_alerts_undelivered` current.
async fn pump(
    sender: Sender,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    (firing, queued): (Arc<Mutex<HashMap<String, Value>>>, Arc<tokio::sync::Notify>),
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(PUMP_EVERY);
    let mut next_resend = tokio::time::Instant::now() + sender.resend;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
            _ = queued.notified() => {}
        }
        let now = now_ms() as i64;
        match outbox.due(now) {
            Ok(due) => {
                // Destinations found unreachable in this round: their later messages wait, so
                // none overtakes an older one when the receiver is back.
                let mut down: Vec<Destination> = Vec::new();
                for m in due {
                    if down.contains(&m.destination) {
                        continue;
                    }
                    match sender.deliver(&m).await {
                        Ok(()) => {
                            tracing::info!(destination = m.destination.as_str(), incident = %m.incident,
                                status = m.status.as_str(), attempts = m.attempts, "alert delivered");
                            if let Err(e) = outbox.delivered(m.id) {
                                tracing::error!(error = %e, "outbox: cannot record a delivery");
                            }
                        }
                        Err(e) => {
                            if matches!(e, Undelivered::Unreachable(_)) {
                                down.push(m.destination);
                            }
                            let e = e.message();
                            let pause = Duration::from_secs(1)
                                .saturating_mul(2u32.saturating_pow(m.attempts.min(10)))
                                .min(MAX_RETRY);
                            tracing::warn!(destination = m.destination.as_str(), incident = %m.incident,
                                attempts = m.attempts + 1, retry_in_s = pause.as_secs(), error = %e,
                                "alert not delivered; kept in the outbox, will retry");
                            if let Err(e) = outbox.failed(m.id, e, now + pause.as_millis() as i64) {
                                tracing::error!(error = %e, "outbox: cannot record a failure");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "outbox: cannot read"),
        }
        if let Some(to) = &sender.alertmanager
            && tokio::time::Instant::now() >= next_resend
        {
            next_resend = tokio::time::Instant::now() + sender.resend;
            let alerts: Vec<Value> = firing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
                .collect();
            for a in alerts {
                if let Err(e) = sender.post(to, sender.alertmanager_body(&a)).await {
                    tracing::debug!(error = %e.message(), "Alertmanager re-send failed; the next one may pass");
                }
            }
        }
        if let Ok(n) = outbox.undelivered() {
            metrics.alerts_undelivered.set(n as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertnames_are_camel_case_with_one_prefix() {
        assert_eq!(alertname("pmtu_blackhole"), "BackhaulPmtuBlackhole");
        assert_eq!(alertname("mtu_drift"), "BackhaulMtuDrift");
        assert_eq!(alertname("uplink_down"), "BackhaulUplinkDown");
    }

    #[test]
    fn the_alertmanager_api_path_goes_before_the_query() {
        assert_eq!(
            alertmanager_api("https://u:p@am.example.net:9093/"),
            "https://u:p@am.example.net:9093/api/v2/alerts"
        );
        assert_eq!(
            alertmanager_api("http://am:9093/prefix?tenant=a"),
            "http://am:9093/prefix/api/v2/alerts?tenant=a"
        );
    }
}
