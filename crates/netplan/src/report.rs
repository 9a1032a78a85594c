//! The evidence of a guarded apply: how it ended, why, and what the kernel and the probes
//! showed before, during and after.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::connectivity::Measurement;
use crate::link::LinkState;

/// How a guarded apply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Applied, verified for the whole window, kept. Exit 0.
    Kept,
    /// Stopped before anything changed (baseline or backup failed). Exit 1.
    NotApplied,
    /// The change failed its test and the rollback is proven. Exit 2.
    RolledBack,
    /// The change failed and the rollback could not be proven: act now. Exit 3.
    RollbackUnproven,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Kept => 0,
            Outcome::NotApplied => 1,
            Outcome::RolledBack => 2,
            Outcome::RollbackUnproven => 3,
        }
    }
}

/// One verify round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// The probes.
    pub measurement: Measurement,
    /// What got worse than the baseline.
    pub regressions: Vec<String>,
}

/// The evidence of a guarded apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Run id.
    pub id: String,
    /// Ticket.
    pub ticket: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was rolled back or not applied.
    pub reason: Option<String>,
    /// The checked diff.
    pub changes: Vec<String>,
    /// The backup.
    pub backup_dir: PathBuf,
    /// Kernel state before the change.
    pub kernel_before: Vec<LinkState>,
    /// Kernel state after applying (after the settle time).
    pub kernel_after_apply: Vec<LinkState>,
    /// Kernel state after the rollback.
    pub kernel_after_rollback: Vec<LinkState>,
    /// Probes before the change.
    pub baseline: Measurement,
    /// Verify rounds.
    pub rounds: Vec<Round>,
    /// Probes after the rollback (the last one decides).
    pub after_rollback: Vec<Measurement>,
    /// When the apply finished (ms since start).
    pub applied_at_ms: Option<u64>,
    /// When the failure was decided.
    pub failed_at_ms: Option<u64>,
    /// When the rollback was proven (or given up).
    pub rolled_back_at_ms: Option<u64>,
    /// When the run ended.
    pub finished_at_ms: u64,
    /// Every error met on the way, in order.
    pub errors: Vec<String>,
}

pub(crate) fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

pub(crate) fn states(s: &[LinkState]) -> String {
    s.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApplyReport {
    /// The human form.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let head = match self.outcome {
            Outcome::Kept => "APPLIED and verified; the change is kept",
            Outcome::NotApplied => "NOT APPLIED: nothing was changed",
            Outcome::RolledBack => {
                "ROLLED BACK: the change failed its test; previous state restored and verified"
            }
            Outcome::RollbackUnproven => {
                "ROLLBACK NOT PROVEN: the links may still carry the change; act now"
            }
        };
        let name = self.ticket.as_deref().unwrap_or("change");
        out.push_str(&format!("{name} (run {}): {head}\n", self.id));
        if let Some(r) = &self.reason {
            out.push_str(&format!("reason: {r}\n"));
        }
        for c in &self.changes {
            out.push_str(&format!("change: {c}\n"));
        }
        out.push_str(&format!(
            "before: {}\n  probes: {}\n",
            states(&self.kernel_before),
            self.baseline.summary()
        ));
        if let Some(at) = self.applied_at_ms {
            out.push_str(&format!(
                "applied at +{}: {}\n",
                secs(at),
                states(&self.kernel_after_apply)
            ));
        }
        if let Some(last) = self.rounds.last() {
            let bad = self
                .rounds
                .iter()
                .filter(|r| !r.regressions.is_empty())
                .count();
            out.push_str(&format!(
                "verify: {} rounds, {bad} worse than the baseline; last: {}\n",
                self.rounds.len(),
                last.measurement.summary()
            ));
        }
        if let (Some(applied), Some(failed)) = (self.applied_at_ms, self.failed_at_ms) {
            out.push_str(&format!(
                "failed {} after the apply\n",
                secs(failed.saturating_sub(applied))
            ));
        }
        if let Some(done) = self.rolled_back_at_ms {
            let from = self.failed_at_ms.or(self.applied_at_ms).unwrap_or(0);
            out.push_str(&format!(
                "rollback at +{} ({} after the failure): {}\n",
                secs(done),
                secs(done.saturating_sub(from)),
                states(&self.kernel_after_rollback)
            ));
            if let Some(m) = self.after_rollback.last() {
                out.push_str(&format!("  probes: {}\n", m.summary()));
            }
        }
        for e in &self.errors {
            out.push_str(&format!("error: {e}\n"));
        }
        out.push_str(&format!("backup: {}\n", self.backup_dir.display()));
        out
    }
}
