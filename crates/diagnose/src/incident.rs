//! Incidents: what the engine concluded, and how that changed.

use std::fmt;

use serde::Serialize;

/// The root cause an incident names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Large packets are dropped without ICMP "fragmentation needed": TCP cannot adapt.
    PmtuBlackhole,
    /// An interface's MTU differs from its declared value.
    MtuDrift,
    /// The path carries less than the local MTU, but ICMP reports it and TCP adapts.
    PathMtuReduced,
    /// The WAN link or the gateway is down.
    UplinkDown,
    /// Uploads work but far below the expected rate, for a sustained period.
    UplinkDegraded,
    /// The upload endpoint cannot be reached or does not serve us; the local path is fine.
    EndpointUnreachable,
    /// The store rejects our credentials or the bucket is missing.
    AuthFailure,
    /// The spool disk is filling up.
    DiskPressure,
    /// The VPN tunnel keeps dropping.
    VpnFlapping,
    /// This host's clock is far from the store's; past 15 minutes every request is refused.
    ClockSkew,
    /// The upload credentials cannot be refreshed and will expire.
    CredentialsExpiring,
}

impl Kind {
    /// Every kind, in rule order.
    pub const ALL: [Kind; 11] = [
        Kind::PmtuBlackhole,
        Kind::MtuDrift,
        Kind::PathMtuReduced,
        Kind::UplinkDown,
        Kind::UplinkDegraded,
        Kind::EndpointUnreachable,
        Kind::AuthFailure,
        Kind::DiskPressure,
        Kind::VpnFlapping,
        Kind::ClockSkew,
        Kind::CredentialsExpiring,
    ];

    /// The kind's name (`pmtu_blackhole`), as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PmtuBlackhole => "pmtu_blackhole",
            Kind::MtuDrift => "mtu_drift",
            Kind::PathMtuReduced => "path_mtu_reduced",
            Kind::UplinkDown => "uplink_down",
            Kind::UplinkDegraded => "uplink_degraded",
            Kind::EndpointUnreachable => "endpoint_unreachable",
            Kind::AuthFailure => "auth_failure",
            Kind::DiskPressure => "disk_pressure",
            Kind::VpnFlapping => "vpn_flapping",
            Kind::ClockSkew => "clock_skew",
            Kind::CredentialsExpiring => "credentials_expiring",
        }
    }

    /// Whether the rule needs the site's path declared (`[inventory]`: interfaces, gateway,
    /// probes); without one only the others can fire.
    pub fn needs_path(self) -> bool {
        match self {
            Kind::PmtuBlackhole | Kind::MtuDrift | Kind::PathMtuReduced | Kind::UplinkDown => true,
            Kind::UplinkDegraded
            | Kind::EndpointUnreachable
            | Kind::AuthFailure
            | Kind::DiskPressure
            | Kind::VpnFlapping
            | Kind::ClockSkew
            | Kind::CredentialsExpiring => false,
        }
    }

    /// The names of the kinds that need the path declared (`true`) or not, in [`Kind::ALL`]
    /// order: `pmtu_blackhole, mtu_drift, path_mtu_reduced, uplink_down`.
    pub fn names(needs_path: bool) -> String {
        Kind::ALL
            .iter()
            .filter(|k| k.needs_path() == needs_path)
            .map(|k| k.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The runbook section for this kind.
    pub fn runbook(self) -> &'static str {
        match self {
            Kind::PmtuBlackhole => "docs/runbook-pmtud.md#pmtu-blackhole",
            Kind::MtuDrift => "docs/runbook-pmtud.md#mtu-drift",
            Kind::PathMtuReduced => "docs/runbook-pmtud.md#path-mtu-reduced",
            Kind::UplinkDown => "docs/runbook-pmtud.md#uplink-down",
            Kind::UplinkDegraded => "docs/runbook-pmtud.md#uplink-degraded",
            Kind::EndpointUnreachable => "docs/runbook-pmtud.md#endpoint-unreachable",
            Kind::AuthFailure => "docs/runbook-pmtud.md#auth-failure",
            Kind::DiskPressure => "docs/runbook-pmtud.md#disk-pressure",
            Kind::VpnFlapping => "docs/runbook-pmtud.md#vpn-flapping",
            Kind::ClockSkew => "docs/runbook-pmtud.md#clock-skew",
            Kind::CredentialsExpiring => "docs/runbook-pmtud.md#credentials-expiring",
        }
    }

    /// Whether incidents of this kind mean uploads are not getting through, so a filling disk
    /// makes them critical.
    pub fn stops_uploads(self) -> bool {
        matches!(
            self,
            Kind::PmtuBlackhole | Kind::UplinkDown | Kind::EndpointUnreachable | Kind::AuthFailure
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How urgent an incident is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing; nothing is failing.
    Info,
    /// Something is wrong; act today.
    Warning,
    /// Data is at risk; act now.
    Critical,
}

impl Severity {
    /// The severity [`Severity::as_str`] names (as in `/status` and alerts).
    pub fn parse(s: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }

    /// `info`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an incident is still going on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Open.
    Firing,
    /// Over.
    Resolved,
}

/// One timestamped line of an incident's evidence timeline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Evidence {
    /// When it was observed.
    pub at_ms: u64,
    /// What was observed, with times already formatted.
    pub text: String,
}

impl Evidence {
    /// A line observed at `at_ms`.
    pub fn new(at_ms: u64, text: impl Into<String>) -> Self {
        Self {
            at_ms,
            text: text.into(),
        }
    }
}

/// What one rule concluded from the store at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The cause.
    pub kind: Kind,
    /// What it is about (interface name, `gateway`, `endpoint`, `spool`, `vpn`).
    pub subject: String,
    /// How urgent.
    pub severity: Severity,
    /// When the fault began, as far as the evidence shows.
    pub started_at_ms: u64,
    /// One sentence naming the cause, the interface and the change.
    pub root_cause: String,
    /// The observations that support it, oldest first.
    pub evidence: Vec<Evidence>,
    /// Commands and edits that fix it, in order.
    pub fix: Vec<String>,
    /// The change it follows, when one is known.
    pub change: Option<Change>,
}

/// An open or resolved incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// Stable id: `<kind>:<subject>:<started_at_ms>`.
    pub id: String,
    /// The cause.
    pub kind: Kind,
    /// What it is about.
    pub subject: String,
    /// Current severity.
    pub severity: Severity,
    /// When the fault began.
    pub started_at_ms: u64,
    /// When its severity last changed (or it opened or resolved).
    pub updated_at_ms: u64,
    /// When it was resolved.
    pub resolved_at_ms: Option<u64>,
    /// The root-cause sentence.
    pub root_cause: String,
    /// The evidence timeline, oldest first.
    pub evidence: Vec<Evidence>,
    /// The fix.
    pub fix: Vec<String>,
    /// The runbook section: the engine's base ([`crate::Engine::with_runbook_base`]) and the
    /// kind's path, a link wherever the incident is shown.
    pub runbook: String,
    /// Set once the fault came back within the hold-down after the incident cleared.
    pub flapping: Option<Flapping>,
    /// Since when the fault has been gone while the incident is held open, waiting to see
    /// whether it comes back; `None` while the fault is present.
    pub held_since_ms: Option<u64>,
    /// The change that caused it, when one is known (MTU kinds).
    pub change: Option<Change>,
}

/// The change an incident follows: what a fleet's receiver groups alerts by, so one change
/// rolled out to many sites is one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The same on every site that got the same change: the netplan guard's ticket
    /// (`NET-4521`) when the change was applied through it, else the link change (`eno1 mtu
    /// 1500→9000`), or the mismatch when the agent found it at start (`eno1 mtu 9000, declared
    /// 1500`).
    pub id: String,
    /// When it happened on this site, if the agent saw it happen.
    pub at_ms: Option<u64>,
    /// The link change itself, also when `id` is a ticket.
    pub link: String,
}

/// An incident whose fault comes and goes ([`crate::Settings::flap_hold_down_seconds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flapping {
    /// Times the fault appeared or went away since the incident first opened.
    pub changes: u32,
    /// When the fault last came back.
    pub back_at_ms: u64,
}

impl Flapping {
    /// `flapping: 5 changes in 48 s` for an incident that started at `started_at_ms`.
    pub fn describe(&self, started_at_ms: u64, now_ms: u64) -> String {
        format!(
            "flapping: {} changes in {} s",
            self.changes,
            now_ms.saturating_sub(started_at_ms) / 1000
        )
    }
}

impl Incident {
    /// Whether it is still open.
    pub fn status(&self) -> Status {
        if self.resolved_at_ms.is_some() {
            Status::Resolved
        } else {
            Status::Firing
        }
    }
}

/// A change in the set of incidents, returned by [`crate::Engine::observe`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
pub enum Transition {
    /// A new incident.
    Opened(Incident),
    /// An open incident changed severity (its texts and evidence follow the latest finding
    /// silently; read them from [`crate::Engine::incidents`]).
    Updated {
        /// The incident as it is now.
        incident: Incident,
        /// Its severity before.
        previous: Severity,
    },
    /// A resolved incident's fault came back within the hold-down: the same incident is open
    /// again and flapping. It pages only if it stays (see [`crate::AlertPolicy`]).
    Reopened(Incident),
    /// An incident is over.
    Resolved(Incident),
}

impl Transition {
    /// The incident this transition is about.
    pub fn incident(&self) -> &Incident {
        match self {
            Transition::Opened(i) | Transition::Reopened(i) | Transition::Resolved(i) => i,
            Transition::Updated { incident, .. } => incident,
        }
    }

    /// Whether the severity rose.
    pub fn escalated(&self) -> bool {
        match self {
            Transition::Updated { incident, previous } => incident.severity > *previous,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_rules_are_the_ones_an_inventory_turns_on() {
        assert_eq!(
            Kind::names(true),
            "pmtu_blackhole, mtu_drift, path_mtu_reduced, uplink_down"
        );
        assert_eq!(
            Kind::names(false),
            "uplink_degraded, endpoint_unreachable, auth_failure, disk_pressure, vpn_flapping, clock_skew, credentials_expiring"
        );
    }
}
