//! What leaves the monitor: incident transitions as log lines, alerts as webhook POSTs.

use std::time::Duration;

use backhaul_diagnose::{Alert, Transition};
use backhaul_upload::Transport;

pub(super) fn log_transition(t: &Transition) {
    let i = t.incident();
    match t {
        Transition::Opened(_) | Transition::Updated { .. } => tracing::error!(
            incident = %i.id, kind = i.kind.as_str(), severity = i.severity.as_str(),
            root_cause = %i.root_cause, fix = %i.fix.join("; "), runbook = i.kind.runbook(),
            "incident {}", if matches!(t, Transition::Opened(_)) { "opened" } else { "escalated" }
        ),
        Transition::Resolved(_) => tracing::info!(
            incident = %i.id, kind = i.kind.as_str(), "incident resolved"
        ),
    }
}

pub(super) async fn post(
    transport: &Transport,
    url: &str,
    body: serde_json::Result<Vec<u8>>,
    alert: &Alert,
) {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode alert");
            return;
        }
    };
    let req = backhaul_upload::SimpleRequest {
        method: "POST",
        url,
        headers: &[("content-type", "application/json")],
        body,
        timeout: Duration::from_secs(10),
    };
    match transport.simple(req).await {
        Ok(_) => tracing::info!(url = %url, alert = %alert.summary(), "alert sent"),
        Err(e) => tracing::warn!(url = %url, error = %e, "alert webhook failed"),
    }
}
