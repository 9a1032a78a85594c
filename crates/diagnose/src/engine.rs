//! The engine: keeps the store, runs the rules, and turns their findings into incident
//! transitions.

use std::collections::BTreeMap;

use crate::rules::{self, Context};
use crate::settings::Settings;
use crate::{
    Evidence, Finding, Incident, Inventory, Kind, Observation, Store, TimeBase, Transition,
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
        _ => &[],
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
        }
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

    /// The inventory the engine runs with.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The newest time the engine has seen.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Current findings, before they are turned into incidents (for one-shot checks).
    pub fn findings(&self) -> Vec<Finding> {
        let ctx = Context {
            inventory: &self.inventory,
            settings: &self.settings,
            time: self.time,
            now_ms: self.now_ms,
        };
        let findings = rules::evaluate_all(&self.store, &ctx);
        let present: Vec<Kind> = findings.iter().map(|f| f.kind).collect();
        findings
            .into_iter()
            .filter(|f| !explained_by(f.kind).iter().any(|k| present.contains(k)))
            .collect()
    }

    fn evaluate(&mut self) -> Vec<Transition> {
        let now = self.now_ms;
        let mut found: BTreeMap<(Kind, String), Finding> = self
            .findings()
            .into_iter()
            .map(|f| ((f.kind, f.subject.clone()), f))
            .collect();
        let mut transitions = Vec::new();

        let keys: Vec<(Kind, String)> = self.active.keys().cloned().collect();
        for key in keys {
            match found.remove(&key) {
                Some(finding) => {
                    let Some(Active { incident, opening }) = self.active.get_mut(&key) else {
                        continue;
                    };
                    let previous = incident.severity;
                    // Texts carry live numbers (flap counts, time to full); only a severity
                    // change is news worth a transition. The rest shows in `incidents()`.
                    let changed = finding.severity != previous;
                    incident.evidence = merge_evidence(opening, finding.evidence);
                    incident.severity = finding.severity;
                    incident.root_cause = finding.root_cause;
                    incident.fix = finding.fix;
                    if changed {
                        incident.updated_at_ms = now;
                        transitions.push(Transition::Updated {
                            incident: incident.clone(),
                            previous,
                        });
                    }
                }
                None => {
                    if let Some(Active { mut incident, .. }) = self.active.remove(&key) {
                        incident.resolved_at_ms = Some(now);
                        incident.updated_at_ms = now;
                        incident
                            .evidence
                            .push(Evidence::new(now, "signals recovered; resolved"));
                        transitions.push(Transition::Resolved(incident));
                    }
                }
            }
        }
        for (key, f) in found {
            let incident = Incident {
                id: format!("{}:{}:{}", f.kind, f.subject, f.started_at_ms),
                kind: f.kind,
                subject: f.subject,
                severity: f.severity,
                started_at_ms: f.started_at_ms,
                updated_at_ms: now,
                resolved_at_ms: None,
                root_cause: f.root_cause,
                evidence: f.evidence,
                fix: f.fix,
                runbook: f.kind.runbook(),
            };
            transitions.push(Transition::Opened(incident.clone()));
            let opening = incident.evidence.clone();
            self.active.insert(key, Active { incident, opening });
        }
        transitions
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
