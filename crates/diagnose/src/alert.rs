//! Alerts: which incident transitions page someone, and what the payload says.
//!
//! Policy: a new incident alerts; the same incident at the same severity does not alert again
//! until the re-notify interval has passed ([`AlertPolicy::renotify`] sends the reminder); a
//! rise in severity alerts at once; a fall does not (but is remembered, so rising again
//! alerts); a resolved incident that was alerted on gets a resolve message.
//!
//! Flapping: an incident the engine re-opened within the flap hold-down pages only if its
//! fault stays (a quarter of the hold-down, and never sooner than the hold-down after the last
//! firing message of its kind and subject) or its severity rises. One that comes and goes
//! faster costs the on-call nothing more than its first page and its resolve.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use crate::settings::Settings;
use crate::{Incident, Kind, Severity, Status, TimeBase, Transition};

/// Default seconds before a still-firing incident is alerted on again.
pub const DEFAULT_RENOTIFY_SECONDS: u64 = 3600;

/// Evidence lines in a Slack message; Slack cuts a section at 3000 characters.
const SLACK_EVIDENCE_LINES: usize = 10;

/// Why an alert was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertReason {
    /// The incident is new.
    Opened,
    /// Its severity rose.
    Escalated,
    /// It is still firing after the re-notify interval.
    Reminder,
    /// It came back within the flap hold-down after it resolved, and has stayed.
    Flapping,
    /// The agent acted on it by itself (`[remediation]`); the root cause says what it did.
    Remediated,
    /// It is over.
    Resolved,
}

/// One webhook payload, in the native JSON shape (serialize it with serde).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// The incident's id; receivers can deduplicate on it.
    pub id: String,
    /// The cause.
    pub kind: Kind,
    /// Severity at the time of the alert.
    pub severity: Severity,
    /// The site name.
    pub site: String,
    /// `firing` or `resolved`.
    pub status: Status,
    /// Why this alert was sent.
    pub reason: AlertReason,
    /// RFC 3339 UTC start of the fault.
    pub started_at: String,
    /// RFC 3339 UTC end, when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
    /// When this message was raised, Unix milliseconds. It can arrive much later: alerts
    /// raised while the receiver is unreachable wait in the agent's outbox.
    pub raised_at_unix_ms: u64,
    /// What it is about (interface, `endpoint`, `spool`, …).
    pub subject: String,
    /// The root-cause sentence.
    pub root_cause: String,
    /// Evidence lines, `HH:MM:SS text`, oldest first.
    pub evidence: Vec<String>,
    /// The fix, in order.
    pub fix: Vec<String>,
    /// Runbook link.
    pub runbook: String,
    /// The change that caused it, when known: receivers group a fleet's alerts by its `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<AlertChange>,
}

/// [`crate::Change`] as an alert carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertChange {
    /// The ticket, or the link change, the same on every site that got it.
    pub id: String,
    /// RFC 3339 UTC, when this site saw it happen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// The link change (`eno1 mtu 1500→9000`).
    pub link: String,
}

/// The Slack-compatible payload (`text` plus minimal `blocks`), for incoming webhooks.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlackMessage {
    /// Fallback text (notifications, clients without blocks).
    pub text: String,
    /// Block Kit sections.
    pub blocks: Vec<Value>,
}

impl Alert {
    /// One line: `[CRITICAL] pmtu_blackhole at SITE-2847: <root cause>`.
    pub fn summary(&self) -> String {
        let tag = match self.status {
            Status::Resolved => "RESOLVED".to_string(),
            Status::Firing => self.severity.as_str().to_uppercase(),
        };
        format!(
            "[{tag}] {} at {}: {}",
            self.kind, self.site, self.root_cause
        )
    }

    /// The Slack-compatible shape of this alert.
    pub fn slack(&self) -> SlackMessage {
        let mut blocks = vec![json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": format!("*{}*", self.summary())},
        })];
        if self.status == Status::Firing {
            let skip = self.evidence.len().saturating_sub(SLACK_EVIDENCE_LINES);
            let lines: Vec<&str> = self
                .evidence
                .iter()
                .skip(skip)
                .map(String::as_str)
                .collect();
            if !lines.is_empty() {
                blocks.push(json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": format!("*Evidence*\n```{}```", lines.join("\n"))},
                }));
            }
            if !self.fix.is_empty() {
                blocks.push(json!({
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": format!("*Fix*\n```{}```", self.fix.join("\n"))},
                }));
            }
        }
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(
                "started {} · runbook {} · id {}", self.started_at, self.runbook, self.id
            )}],
        }));
        SlackMessage {
            text: self.summary(),
            blocks,
        }
    }
}

/// What was last sent for one incident.
#[derive(Debug, Clone, Copy)]
struct Sent {
    severity: Severity,
    at_ms: u64,
}

/// Turns [`Transition`]s into [`Alert`]s with dedup, escalation and resolve messages. Pure:
/// the caller passes the time and sends the alerts.
#[derive(Debug, Clone)]
pub struct AlertPolicy {
    site: String,
    renotify_ms: u64,
    min_severity: Severity,
    time: TimeBase,
    sent: BTreeMap<String, Sent>,
    hold_down_ms: u64,
    /// When a firing message last went out for each kind and subject.
    last_firing: BTreeMap<(Kind, String), u64>,
}

impl AlertPolicy {
    /// A policy for `site` that reminds about still-firing incidents every
    /// `renotify_seconds` and alerts on every severity.
    pub fn new(site: impl Into<String>, renotify_seconds: u64, time: TimeBase) -> Self {
        Self {
            site: site.into(),
            renotify_ms: Settings::ms(renotify_seconds),
            min_severity: Severity::Info,
            time,
            sent: BTreeMap::new(),
            hold_down_ms: Settings::ms(crate::DEFAULT_FLAP_HOLD_DOWN_SECONDS),
            last_firing: BTreeMap::new(),
        }
    }

    /// The engine's flap hold-down ([`Settings::flap_hold_down_seconds`]).
    pub fn with_flap_hold_down(mut self, seconds: u64) -> Self {
        self.hold_down_ms = Settings::ms(seconds);
        self
    }

    /// Alerts only on incidents at or above `min` (an incident that escalates past it alerts
    /// then).
    pub fn with_min_severity(mut self, min: Severity) -> Self {
        self.min_severity = min;
        self
    }

    /// The alert for one transition at `now_ms`, if it should be sent.
    pub fn on_transition(&mut self, transition: &Transition, now_ms: u64) -> Option<Alert> {
        let incident = transition.incident();
        let last = self.sent.get(&incident.id).copied();
        let reason = match (transition, last) {
            (Transition::Resolved(_), Some(_)) => {
                self.sent.remove(&incident.id);
                return Some(self.alert(incident, AlertReason::Resolved, now_ms));
            }
            (Transition::Resolved(_), None) => return None,
            _ if incident.severity < self.min_severity => return None,
            // A fault back within the hold-down pages from `renotify` if it stays.
            (Transition::Reopened(_), None) => return None,
            (Transition::Updated { previous, .. }, None)
                if incident.flapping.is_some() && incident.severity <= *previous =>
            {
                return None;
            }
            (_, None) => AlertReason::Opened,
            (_, Some(s)) if incident.severity > s.severity => AlertReason::Escalated,
            (_, Some(s)) if incident.severity < s.severity => {
                // Remember the lower level so that rising again alerts; page nobody now.
                self.sent.insert(
                    incident.id.clone(),
                    Sent {
                        severity: incident.severity,
                        at_ms: s.at_ms,
                    },
                );
                return None;
            }
            (_, Some(s)) if now_ms.saturating_sub(s.at_ms) < self.renotify_ms => return None,
            (_, Some(_)) => AlertReason::Reminder,
        };
        self.record(incident, now_ms);
        Some(self.alert(incident, reason, now_ms))
    }

    /// Alerts for every transition in a batch, in order.
    pub fn on_transitions(&mut self, transitions: &[Transition], now_ms: u64) -> Vec<Alert> {
        transitions
            .iter()
            .filter_map(|t| self.on_transition(t, now_ms))
            .collect()
    }

    /// Reminders for firing incidents last alerted on at least the re-notify interval ago.
    /// Call it periodically with [`crate::Engine::incidents`].
    pub fn renotify<'a>(
        &mut self,
        firing: impl IntoIterator<Item = &'a Incident>,
        now_ms: u64,
    ) -> Vec<Alert> {
        let mut alerts = Vec::new();
        for incident in firing {
            if incident.severity < self.min_severity {
                continue;
            }
            let reason = match self.sent.get(&incident.id) {
                Some(s) if now_ms.saturating_sub(s.at_ms) >= self.renotify_ms => {
                    AlertReason::Reminder
                }
                Some(_) => continue,
                None if self.flap_stays(incident, now_ms) => AlertReason::Flapping,
                None => continue,
            };
            self.record(incident, now_ms);
            alerts.push(self.alert(incident, reason, now_ms));
        }
        alerts
    }

    /// The alert saying the agent acted on a firing incident by itself, whatever the re-notify
    /// interval. Only for an incident already alerted on, so the page that names the fault
    /// always comes first.
    pub fn remediated(&mut self, incident: &Incident, now_ms: u64) -> Option<Alert> {
        if incident.status() != Status::Firing || !self.sent.contains_key(&incident.id) {
            return None;
        }
        self.record(incident, now_ms);
        Some(self.alert(incident, AlertReason::Remediated, now_ms))
    }

    /// Whether a re-opened incident not paged since has stayed long enough to page again.
    fn flap_stays(&self, incident: &Incident, now_ms: u64) -> bool {
        let Some(f) = incident.flapping else {
            return false;
        };
        let quiet = self
            .last_firing
            .get(&(incident.kind, incident.subject.clone()))
            .is_none_or(|last| now_ms.saturating_sub(*last) >= self.hold_down_ms);
        incident.held_since_ms.is_none()
            && now_ms.saturating_sub(f.back_at_ms) >= self.hold_down_ms / 4
            && quiet
    }

    fn record(&mut self, incident: &Incident, now_ms: u64) {
        if incident.status() == Status::Firing {
            self.last_firing
                .insert((incident.kind, incident.subject.clone()), now_ms);
        }
        self.sent.insert(
            incident.id.clone(),
            Sent {
                severity: incident.severity,
                at_ms: now_ms,
            },
        );
    }

    fn alert(&self, incident: &Incident, reason: AlertReason, now_ms: u64) -> Alert {
        Alert {
            id: incident.id.clone(),
            kind: incident.kind,
            severity: incident.severity,
            site: self.site.clone(),
            status: incident.status(),
            reason,
            started_at: self.time.rfc3339(incident.started_at_ms),
            resolved_at: incident.resolved_at_ms.map(|at| self.time.rfc3339(at)),
            raised_at_unix_ms: self.time.unix_ms(now_ms),
            subject: incident.subject.clone(),
            root_cause: incident.root_cause.clone(),
            evidence: incident
                .evidence
                .iter()
                .map(|e| format!("{} {}", self.time.hms(e.at_ms), e.text))
                .collect(),
            fix: incident.fix.clone(),
            runbook: incident.runbook.clone(),
            change: incident.change.as_ref().map(|c| AlertChange {
                id: c.id.clone(),
                at: c.at_ms.map(|at| self.time.rfc3339(at)),
                link: c.link.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
