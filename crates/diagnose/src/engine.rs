//! The engine: keeps the store, runs the rules, and turns their findings into incident
//! transitions.

use std::collections::BTreeMap;

use crate::rules::{self, Context};
use crate::settings::Settings;
use crate::{
    Evidence, Finding, Flapping, Incident, Inventory, Kind, Observation, Severity, Store, TimeBase,
    Transition,
};

/// Most evidence lines an incident keeps.
const MAX_EVIDENCE: usize = 50;

/// Causes that, when found, explain away a finding of another kind: they are its symptoms.
/// A black hole makes uploads fail and look slow; a dead link explains everything on it.
fn explained_by(kind: Kind) -> &'static [Kind] {
    match kind {
        Kind::PmtuBlackhole | Kind::PathMtuReduced => &[Kind::UplinkDown],
        Kind::EndpointUnreachable => &[Kind::PmtuBlackhole, Kind::UplinkDown, Kind::AuthFailure],
        Kind::UplinkDegraded => &[
            Kind::PmtuBlackhole,
            Kind::UplinkDown,
            Kind::EndpointUnreachable,
        ],
        // Tunnel flaps while the path is broken are that outage's symptom (DPD fails with
        // everything else), reported under it rather than as a second page.
        Kind::VpnFlapping => &[
            Kind::PmtuBlackhole,
            Kind::PathMtuReduced,
            Kind::UplinkDown,
            Kind::UplinkDegraded,
            Kind::EndpointUnreachable,
        ],
        _ => &[],
    }
}

/// Whether `cause` explains `finding`, so one alert stands for both. Beyond the symptom table:
/// a WAN drift is the change the MTU findings name (their root cause attributes it), a
/// filling disk during an outage is that outage's backlog (its incident carries the disk line
/// and escalates on it), and an endpoint cut off beyond the gateway (`cut`: it stopped
/// answering even small probes) is an outage no MTU fault explains.
fn explains(cause: &Finding, finding: &Finding, cut: bool) -> bool {
    match finding.kind {
        Kind::EndpointUnreachable if cut => cause.kind == Kind::UplinkDown,
        Kind::MtuDrift => {
            finding.severity >= Severity::Warning
                && matches!(cause.kind, Kind::PmtuBlackhole | Kind::PathMtuReduced)
        }
        Kind::DiskPressure => cause.kind.stops_uploads(),
        kind => explained_by(kind).contains(&cause.kind),
    }
}

/// The diagnosis engine. Feed it every observation with [`Engine::observe`]; act on the
/// returned transitions (log, metric, [`crate::AlertPolicy`]); call [`Engine::tick`]
/// periodically (every few seconds) so incidents also resolve when signals simply stop
/// arriving and windows expire.
#[derive(Debug, Clone)]
pub struct Engine {
    inventory: Inventory,
    settings: Settings,
    time: TimeBase,
    store: Store,
    active: BTreeMap<(Kind, String), Active>,
    now_ms: u64,
    /// When the last incident that stopped uploads resolved: a disk projection looking back
    /// past it still carries that outage's backlog.
    outage_ended_ms: Option<u64>,
    /// Put before each kind's runbook path: where the fleet publishes the docs.
    runbook_base: String,
    /// Incidents resolved within the flap hold-down: a finding of the same kind and subject
    /// re-opens the incident instead of opening a new one.
    recent: BTreeMap<(Kind, String), Incident>,
}

/// An open incident and the evidence it was opened with. Rules recompute evidence from the
/// store each time, and the store forgets; the opening evidence (the change, the onset) is
/// kept for the incident's whole life, while the rest follows the latest finding, so lines
/// that change every evaluation (counters, rates) do not pile up.
#[derive(Debug, Clone)]
struct Active {
    incident: Incident,
    opening: Vec<Evidence>,
}

impl Engine {
    /// An engine for the site described by `inventory`. `time` maps observation timestamps
    /// to UTC for the texts. Call [`Settings::validate`] on configured settings first; the
    /// engine does not fail on odd thresholds, it just follows them.
    pub fn new(inventory: Inventory, settings: Settings, time: TimeBase) -> Self {
        let store = Store::new(Settings::ms(settings.retention_seconds));
        Self {
            inventory,
            settings,
            time,
            store,
            active: BTreeMap::new(),
            now_ms: 0,
            outage_ended_ms: None,
            runbook_base: String::new(),
            recent: BTreeMap::new(),
        }
    }

    /// Runbook links as `base` + the kind's path (`https://docs.example.net/backhaul/` gives
    /// `https://docs.example.net/backhaul/docs/runbook-pmtud.md#pmtu-blackhole`); without a
    /// base, the path alone.
    pub fn with_runbook_base(mut self, base: &str) -> Self {
        self.runbook_base = base.to_owned();
        self
    }

    /// Records one observation and re-evaluates every rule at the newest time seen. Returns
    /// what changed; usually nothing.
    pub fn observe(&mut self, obs: Observation) -> Vec<Transition> {
        self.now_ms = self.now_ms.max(obs.at_ms);
        self.store.push(obs);
        self.evaluate()
    }

    /// Records several observations (one producer batch), then evaluates once.
    pub fn observe_all(&mut self, batch: impl IntoIterator<Item = Observation>) -> Vec<Transition> {
        for obs in batch {
            self.now_ms = self.now_ms.max(obs.at_ms);
            self.store.push(obs);
        }
        self.evaluate()
    }

    /// Advances time to `now_ms` without a new observation and re-evaluates.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Transition> {
        self.now_ms = self.now_ms.max(now_ms);
        self.evaluate()
    }

    /// The open incidents, most severe first, then oldest first.
    pub fn incidents(&self) -> Vec<&Incident> {
        let mut open: Vec<&Incident> = self.active.values().map(|a| &a.incident).collect();
        open.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.started_at_ms.cmp(&b.started_at_ms))
        });
        open
    }

    /// The store, for `backhaul diagnose` to print recent evidence from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The thresholds the engine runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The inventory the engine runs with.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The newest time the engine has seen.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Current findings, before they are turned into incidents (for one-shot checks).
    ///
    /// A finding another one explains is folded into it: the explaining finding takes the
    /// higher severity of the two and, for a filling disk or a flapping tunnel, its line as
    /// evidence. An incident
    /// already open is never explained away: it resolves only when its own signals recover, so
    /// a late explanation cannot send a resolve for a fault that is still there.
    pub fn findings(&self) -> Vec<Finding> {
        let ctx = Context {
            inventory: &self.inventory,
            settings: &self.settings,
            time: self.time,
            now_ms: self.now_ms,
        };
        let mut findings = rules::evaluate_all(&self.store, &ctx);
        // Another pass over the store, needed only when there is an outage to judge.
        let cut = findings.iter().any(|f| f.kind == Kind::EndpointUnreachable)
            && rules::endpoint_unreachable::cut_beyond_gateway(&self.store, &ctx);
        let mut explained = vec![false; findings.len()];
        for i in 0..findings.len() {
            let f = &findings[i];
            if self.active.contains_key(&(f.kind, f.subject.clone())) {
                continue;
            }
            let causes: Vec<usize> = (0..findings.len())
                .filter(|&j| j != i && explains(&findings[j], f, cut))
                .collect();
            if causes.is_empty() {
                explained[i] = f.kind == Kind::DiskPressure && self.outage_backlog(&ctx);
                continue;
            }
            explained[i] = true;
            let (severity, kind) = (f.severity, f.kind);
            let line = Evidence::new(self.now_ms, f.root_cause.clone());
            for j in causes {
                let cause = &mut findings[j];
                cause.severity = cause.severity.max(severity);
                if matches!(kind, Kind::DiskPressure | Kind::VpnFlapping)
                    && !cause.evidence.contains(&line)
                {
                    cause.evidence.push(line.clone());
                    cause.evidence.sort();
                }
            }
        }
        findings
            .into_iter()
            .zip(explained)
            .filter(|(f, gone)| {
                let waiting = f.kind == Kind::MtuDrift
                    && !self.active.contains_key(&(f.kind, f.subject.clone()))
                    && rules::mtu_drift::held(&self.store, &ctx, f);
                !gone && !waiting
            })
            .map(|(f, _)| f)
            .collect()
    }

    /// Whether the disk projection still looks back into an upload outage that has ended and
    /// the disk is not actually full: the backlog it reports is draining, not growing.
    fn outage_backlog(&self, ctx: &Context<'_>) -> bool {
        // An outage incident still open is resolving in this very evaluation.
        let open = self.active.keys().any(|(k, _)| k.stops_uploads());
        let Some(ended) = self.outage_ended_ms.or(open.then_some(self.now_ms)) else {
            return false;
        };
        let window = rules::disk_fill_window_ms(&self.store).unwrap_or(0);
        let full = rules::latest_disk(&self.store, ctx)
            .is_some_and(|(_, used, _)| used >= self.settings.disk_critical_percent);
        self.now_ms < ended.saturating_add(window) && !full
    }

    fn evaluate(&mut self) -> Vec<Transition> {
        let now = self.now_ms;
        let hold_down = Settings::ms(self.settings.flap_hold_down_seconds);
        self.recent.retain(|_, i| {
            i.resolved_at_ms
                .is_some_and(|r| now < r.saturating_add(hold_down))
        });
        let mut found: BTreeMap<(Kind, String), Finding> = self
            .findings()
            .into_iter()
            .map(|f| ((f.kind, f.subject.clone()), f))
            .collect();
        let mut transitions = Vec::new();

        let keys: Vec<(Kind, String)> = self.active.keys().cloned().collect();
        for key in keys {
            match found.remove(&key) {
                Some(finding) => transitions.extend(self.follow(&key, finding)),
                None => transitions.extend(self.clear(&key, hold_down)),
            }
        }
        for (key, f) in found {
            let evidence = f.evidence.clone();
            let transition = match self.recent.remove(&key) {
                Some(mut incident) => {
                    let gone_at = incident.resolved_at_ms.unwrap_or(now);
                    incident.resolved_at_ms = None;
                    incident.updated_at_ms = now;
                    incident.severity = f.severity;
                    incident.root_cause = f.root_cause;
                    incident.fix = f.fix;
                    if f.change.is_some() {
                        incident.change = f.change;
                    }
                    // Opened, went away, is back: three changes so far.
                    let flapping = Flapping {
                        changes: 3,
                        back_at_ms: now,
                    };
                    incident.evidence = merge_evidence(&incident.evidence, evidence);
                    incident
                        .evidence
                        .push(back(gone_at, &flapping, &incident, now));
                    incident.flapping = Some(flapping);
                    Transition::Reopened(incident)
                }
                None => Transition::Opened(Incident {
                    id: format!("{}:{}:{}", f.kind, f.subject, f.started_at_ms),
                    kind: f.kind,
                    subject: f.subject,
                    severity: f.severity,
                    started_at_ms: f.started_at_ms,
                    updated_at_ms: now,
                    resolved_at_ms: None,
                    root_cause: f.root_cause,
                    evidence,
                    fix: f.fix,
                    runbook: format!("{}{}", self.runbook_base, f.kind.runbook()),
                    flapping: None,
                    held_since_ms: None,
                    change: f.change,
                }),
            };
            let incident = transition.incident().clone();
            let opening = incident.evidence.clone();
            self.active.insert(key, Active { incident, opening });
            transitions.push(transition);
        }
        transitions
    }

    /// An open incident whose finding is still there: its texts follow the finding. Only a
    /// severity change is news worth a transition (texts carry live numbers: flap counts, time
    /// to full). An incident held open while its fault was gone is flapping once the fault is
    /// back, silently.
    fn follow(&mut self, key: &(Kind, String), finding: Finding) -> Option<Transition> {
        let now = self.now_ms;
        let Active { incident, opening } = self.active.get_mut(key)?;
        let previous = incident.severity;
        incident.evidence = merge_evidence(opening, finding.evidence);
        incident.severity = finding.severity;
        incident.root_cause = finding.root_cause;
        incident.fix = finding.fix;
        if finding.change.is_some() {
            incident.change = finding.change;
        }
        if let Some(gone) = incident.held_since_ms.take() {
            let flapping = match incident.flapping {
                Some(f) => Flapping {
                    changes: f.changes + 1,
                    back_at_ms: now,
                },
                None => Flapping {
                    changes: 3,
                    back_at_ms: now,
                },
            };
            let line = back(gone, &flapping, incident, now);
            incident.flapping = Some(flapping);
            keep_opening(opening, line.clone());
            incident.evidence.push(line);
        }
        if finding.severity == previous {
            return None;
        }
        incident.updated_at_ms = now;
        Some(Transition::Updated {
            incident: incident.clone(),
            previous,
        })
    }

    /// An open incident whose finding is gone. It resolves at once, unless it may be the start
    /// of a flap (it lasted under a quarter of the hold-down) or is flapping: then it is held
    /// open until its fault has stayed away for the hold-down, and its resolve says how long
    /// it flapped.
    fn clear(&mut self, key: &(Kind, String), hold_down: u64) -> Option<Transition> {
        let now = self.now_ms;
        let Active { incident, opening } = self.active.get_mut(key)?;
        let lasted = now.saturating_sub(incident.started_at_ms);
        // Decided when the fault first goes away: it keeps growing while the incident is held.
        let hold = incident.flapping.is_some()
            || incident.held_since_ms.is_some()
            || lasted < hold_down / 4;
        if hold {
            let gone = *incident.held_since_ms.get_or_insert_with(|| {
                let changes = incident.flapping.map_or(2, |f| f.changes + 1);
                if let Some(f) = incident.flapping.as_mut() {
                    f.changes = changes;
                }
                let line = Evidence::new(
                    now,
                    format!(
                        "cleared after {} s; held open until it stays away for {} s ({} changes so far)",
                        lasted / 1000,
                        hold_down / 1000,
                        changes
                    ),
                );
                keep_opening(opening, line.clone());
                incident.evidence.push(line);
                now
            });
            if now < gone.saturating_add(hold_down) {
                return None;
            }
        }
        let Active { mut incident, .. } = self.active.remove(key)?;
        if incident.kind.stops_uploads() {
            self.outage_ended_ms = Some(now);
        }
        incident.resolved_at_ms = Some(now);
        incident.updated_at_ms = now;
        let gone = incident.held_since_ms.take().unwrap_or(now);
        let line = match incident.flapping {
            Some(f) => {
                let flapped = gone.saturating_sub(incident.started_at_ms) / 1000;
                incident.root_cause = format!(
                    "{} (flapped for {flapped} s: {} changes)",
                    incident.root_cause, f.changes
                );
                format!(
                    "stable for {} s after flapping for {flapped} s ({} changes); resolved",
                    now.saturating_sub(gone) / 1000,
                    f.changes
                )
            }
            None if gone < now => format!(
                "did not come back within {} s; resolved",
                now.saturating_sub(gone) / 1000
            ),
            None => "signals recovered; resolved".to_owned(),
        };
        incident.evidence.push(Evidence::new(now, line));
        self.recent.insert(key.clone(), incident.clone());
        Some(Transition::Resolved(incident))
    }
}

/// The evidence line of a fault that came back `gone_at` after it went away.
fn back(gone_at: u64, flapping: &Flapping, incident: &Incident, now: u64) -> Evidence {
    Evidence::new(
        now,
        format!(
            "back {} s after it cleared: {}",
            now.saturating_sub(gone_at) / 1000,
            flapping.describe(incident.started_at_ms, now)
        ),
    )
}

/// Adds a flap line to the evidence an incident keeps for its whole life, dropping the oldest
/// flap lines (never the first, the change that opened it) so a link flapping for hours keeps
/// room for the latest findings.
fn keep_opening(opening: &mut Vec<Evidence>, line: Evidence) {
    opening.push(line);
    while opening.len() > MAX_EVIDENCE / 2 {
        opening.remove(1);
    }
}

/// The opening evidence plus the latest finding's, in time order, without duplicates; the
/// oldest of the latest lines go first when there are too many.
fn merge_evidence(opening: &[Evidence], latest: Vec<Evidence>) -> Vec<Evidence> {
    let room = MAX_EVIDENCE.saturating_sub(opening.len());
    let skip = latest.len().saturating_sub(room);
    let mut all: Vec<Evidence> = opening
        .iter()
        .cloned()
        .chain(latest.into_iter().skip(skip))
        .collect();
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests;
