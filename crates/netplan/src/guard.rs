//! The guarded apply: back up → write → apply → verify → keep or roll back, with evidence.
//!
//! [`Plan`] is everything decided in the foreground after the check passed: which files are
//! written and which are moved aside, which links are recorded, what is probed, the verify
//! window, the applier. It is saved as `plan.json` in the run directory so the detached
//! verifier (a separate process, see `cli.rs`) runs exactly what was checked. [`execute`] is
//! the state machine; every effect goes through a seam ([`Applier`], [`Links`],
//! [`Connectivity`], [`Clock`]) so it is unit-tested with in-memory fakes.
//!
//! # Run directory
//!
//! `<state dir>/<id>/`: `plan.json`, `progress.log` (one line per step, streamed by the
//! foreground), `backup/` (every `*.yaml` of `etc/netplan` before the change, verified by
//! reading back), `report.json` + `report.txt`, `lock.json` (the released lock).
//!
//! # Rollback
//!
//! On any failure after the first file was touched: the backup files are written back and
//! files the change added are moved aside; the previous configuration is applied; then every
//! recorded link gets its previous kernel MTU and up/down state set explicitly (a renderer
//! does not reset an MTU it no longer manages); then the kernel is re-read and the probes are
//! repeated. Only when the kernel matches the record and no probe is worse than the baseline
//! is the rollback called proven. Every step runs even if an earlier one failed, and every
//! error is reported.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::apply::{Applier, ApplierKind};
use crate::connectivity::{Connectivity, Measurement, ProbeTarget};
use crate::diff::diff;
use crate::error::Error;
use crate::inventory::SiteInventory;
use crate::link::{LinkState, Links, SysfsLinks};
use crate::parse::parse_files;
use crate::resolve::{Resolved, SystemInterfaces, resolve};
use crate::source::{ConfigFiles, ETC_DIR};

/// Where runs are recorded unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/backhaul/netplan-apply";
/// Default verify window (the incident's action item: a 5-minute connectivity test).
pub const DEFAULT_VERIFY_SECONDS: u64 = 300;
/// Default pause between verify rounds.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 2;
/// Default number of failing rounds in a row that triggers the rollback.
pub const DEFAULT_FAIL_AFTER_ROUNDS: u32 = 3;
/// Default wait after applying before the kernel is read and probed (links may bounce).
pub const DEFAULT_SETTLE_SECONDS: u64 = 2;
/// Hidden directory in `etc/netplan` holding files a run moved aside. netplan reads only
/// `*.yaml` at the top of the directory, and a subdirectory stays on the same filesystem, so
/// moving there is an atomic rename that rollback can undo.
pub const DISPLACED_DIR: &str = ".backhaul-displaced";

/// Timing of the post-change test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// How long after the apply the test runs.
    pub window_ms: u64,
    /// Pause between rounds.
    pub interval_ms: u64,
    /// Wait after applying (and after rolling back) before reading the kernel and probing.
    pub settle_ms: u64,
    /// Rounds with a regression in a row that fail the change.
    pub fail_after_rounds: u32,
    /// Wait for each probe's answer.
    pub probe_timeout_ms: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_VERIFY_SECONDS * 1000,
            interval_ms: DEFAULT_INTERVAL_SECONDS * 1000,
            settle_ms: DEFAULT_SETTLE_SECONDS * 1000,
            fail_after_rounds: DEFAULT_FAIL_AFTER_ROUNDS,
            probe_timeout_ms: 500,
        }
    }
}

/// A file the change writes into `etc/netplan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// File name.
    pub name: String,
    /// Exactly the text that was checked.
    pub text: String,
}

/// Everything a guarded apply will do, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Run id (`20251112T081500Z-4242`).
    pub id: String,
    /// Root of the netplan tree (`/` on a host).
    pub root: PathBuf,
    /// The state directory holding the lock.
    pub state_dir: PathBuf,
    /// This run's directory.
    pub run_dir: PathBuf,
    /// The ticket, if any.
    pub ticket: Option<String>,
    /// The checked diff, one line per change.
    pub changes: Vec<String>,
    /// Every setting of every interface as the checked config leaves it, to compare with
    /// what is on disk right before applying.
    pub expected: Settings,
    /// Files written into `etc/netplan`.
    pub writes: Vec<PlannedFile>,
    /// Files of `etc/netplan` moved aside (the proposed directory does not have them).
    pub displaced: Vec<String>,
    /// Inventory, to re-diff what is on disk before applying.
    pub inventory: SiteInventory,
    /// The host's interfaces when checked, for `match:`.
    pub system: SystemInterfaces,
    /// Links whose kernel state is recorded and restored.
    pub links: Vec<String>,
    /// What the connectivity test probes.
    pub targets: Vec<ProbeTarget>,
    /// Verify timing.
    pub verify: VerifyPolicy,
    /// How to apply.
    pub applier: ApplierKind,
    /// sysfs mount, to read the links.
    pub sys_root: PathBuf,
    /// The `ip` binary, to restore the links.
    pub ip: PathBuf,
}

/// Interface → key → value ([`crate::Interface::settings`]).
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

fn settings_of(r: &Resolved) -> Settings {
    r.interfaces
        .iter()
        .map(|(n, i)| {
            let s = i
                .settings()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            (n.clone(), s)
        })
        .collect()
}

/// `eno2.mtu: checked unset, on disk 9000` for every setting that differs.
fn settings_diff(checked: &Settings, now: &Settings) -> Vec<String> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = checked.keys().chain(now.keys()).collect();
    for n in names {
        let (a, b) = (
            checked.get(n).unwrap_or(&empty),
            now.get(n).unwrap_or(&empty),
        );
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            if a.get(k) != b.get(k) {
                out.push(format!(
                    "{n}.{k}: checked {}, on disk {}",
                    a.get(k).map_or("unset", String::as_str),
                    b.get(k).map_or("unset", String::as_str)
                ));
            }
        }
    }
    out
}

/// Inputs of [`Plan::new`] besides the files.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Run id.
    pub id: String,
    /// Root of the netplan tree.
    pub root: PathBuf,
    /// The proposed file or directory as given (a directory replaces `etc/netplan`).
    pub proposed_path: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Ticket.
    pub ticket: Option<String>,
    /// Inventory.
    pub inventory: SiteInventory,
    /// The host's interfaces.
    pub system: SystemInterfaces,
    /// Probe targets.
    pub targets: Vec<ProbeTarget>,
    /// Verify timing.
    pub verify: VerifyPolicy,
    /// Applier.
    pub applier: ApplierKind,
    /// sysfs mount.
    pub sys_root: PathBuf,
    /// The `ip` binary.
    pub ip: PathBuf,
}

impl Plan {
    /// Plans the change from the checked configs. `proposed` must be what the check read.
    pub fn new(
        o: PlanOptions,
        current: &ConfigFiles,
        proposed: &ConfigFiles,
    ) -> Result<(Self, Resolved), Error> {
        let etc = o.root.join(ETC_DIR);
        let inside_etc = match (o.proposed_path.canonicalize(), etc.canonicalize()) {
            (Ok(p), Ok(e)) => p.starts_with(&e),
            _ => false,
        };
        if inside_etc {
            return Err(Error::Usage {
                message: format!(
                    "the proposed config {} is inside {}, whose current content is what gets backed up",
                    o.proposed_path.display(),
                    etc.display()
                ),
                help: "put the proposed file or directory elsewhere (e.g. /root/NET-4521/)".into(),
            });
        }
        if o.targets.is_empty() {
            return Err(Error::Usage {
                message: "nothing to probe: no gateway or endpoint to test the change against"
                    .into(),
                help: "pass --gateway ADDR and/or --endpoint HOST (the gateway defaults to the default route's)".into(),
            });
        }
        let writes: Vec<PlannedFile> = proposed
            .files
            .iter()
            .filter(|f| f.dir == ETC_DIR && !f.path.starts_with(&etc))
            .map(|f| PlannedFile {
                name: f.name(),
                text: f.text.clone(),
            })
            .collect();
        let displaced = if o.proposed_path.is_dir() {
            yaml_names(&etc)?
                .into_iter()
                .filter(|n| !writes.iter().any(|w| &w.name == n))
                .collect()
        } else {
            Vec::new()
        };
        let before = resolve(&parse_files(&current.files)?, &o.system)?;
        let target = resolve(&parse_files(&proposed.files)?, &o.system)?;
        let changes = diff(&before, &target, &o.inventory)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut links: Vec<String> = Vec::new();
        for i in before.interfaces.values().chain(target.interfaces.values()) {
            if i.present && !links.contains(&i.name) {
                links.push(i.name.clone());
            }
        }
        let plan = Plan {
            run_dir: o.state_dir.join(&o.id),
            id: o.id,
            root: o.root,
            state_dir: o.state_dir,
            ticket: o.ticket,
            changes,
            expected: settings_of(&target),
            writes,
            displaced,
            inventory: o.inventory,
            system: o.system,
            links,
            targets: o.targets,
            verify: o.verify,
            applier: o.applier,
            sys_root: o.sys_root,
            ip: o.ip,
        };
        Ok((plan, target))
    }

    /// The host's links as the plan reads and restores them.
    pub fn links_seam(&self) -> SysfsLinks {
        SysfsLinks {
            sys_root: self.sys_root.clone(),
            ip: self.ip.clone(),
        }
    }

    /// `etc/netplan` under the root.
    pub fn etc_dir(&self) -> PathBuf {
        self.root.join(ETC_DIR)
    }

    /// Where the current files are copied.
    pub fn backup_dir(&self) -> PathBuf {
        self.run_dir.join("backup")
    }

    /// Where displaced and rolled-back files go.
    pub fn displaced_dir(&self) -> PathBuf {
        self.etc_dir().join(DISPLACED_DIR).join(&self.id)
    }

    /// Writes `plan.json` into the run directory (creating it).
    pub fn save(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.run_dir).map_err(|source| Error::Io {
            op: "create the run directory",
            path: self.run_dir.clone(),
            help: "pass a writable --state-dir",
            source,
        })?;
        let path = self.run_dir.join("plan.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Output(std::io::Error::other(e)))?;
        std::fs::write(&path, text).map_err(|source| Error::Io {
            op: "write the plan",
            path,
            help: "check the state directory's filesystem",
            source,
        })
    }

    /// Reads `plan.json` of a run directory.
    pub fn load(run_dir: &Path) -> Result<Self, Error> {
        let path = run_dir.join("plan.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            help: "the detached verifier reads the plan the foreground wrote; pass its run directory",
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::State { path, source })
    }

    /// Every step the apply would take, for `--dry-run`.
    pub fn render_dry_run(
        &self,
        target: &Resolved,
        applier: &dyn Applier,
        links: &dyn Links,
        connectivity: &dyn Connectivity,
    ) -> String {
        let mut out = String::from("dry run: nothing is changed\n");
        let mut step = |title: &str, lines: Vec<String>| {
            out.push_str(title);
            out.push('\n');
            for l in lines {
                out.push_str(&format!("    {l}\n"));
            }
        };
        step(
            &format!(
                "1. lock {} (run {})",
                crate::lock::Lock::path_in(&self.state_dir).display(),
                self.id
            ),
            vec![],
        );
        let before = links.read(&self.links);
        step(
            "2. record the kernel state of the links and measure the baseline",
            before
                .iter()
                .map(ToString::to_string)
                .chain(connectivity.describe())
                .collect(),
        );
        step(
            &format!(
                "3. back up every *.yaml of {} to {}",
                self.etc_dir().display(),
                self.backup_dir().display()
            ),
            yaml_names(&self.etc_dir()).unwrap_or_default(),
        );
        let mut files: Vec<String> = self
            .writes
            .iter()
            .map(|w| {
                format!(
                    "write {} ({} bytes)",
                    self.etc_dir().join(&w.name).display(),
                    w.text.len()
                )
            })
            .collect();
        files.extend(self.displaced.iter().map(|n| {
            format!(
                "move {} to {}",
                self.etc_dir().join(n).display(),
                self.displaced_dir().display()
            )
        }));
        step("4. write the proposed files", files);
        step(
            "5. apply",
            applier
                .commands(target)
                .iter()
                .map(|c| c.join(" "))
                .collect(),
        );
        let v = &self.verify;
        step(
            &format!(
                "6. verify (detached, survives the session): settle {}, then every {} for {}; \
                 {} rounds in a row worse than the baseline roll back",
                secs(v.settle_ms),
                secs(v.interval_ms),
                secs(v.window_ms),
                v.fail_after_rounds
            ),
            self.links
                .iter()
                .filter_map(|n| {
                    let m = target.interfaces.get(n)?.mtu_bytes?;
                    Some(format!("kernel must show {n} mtu {m}"))
                })
                .collect(),
        );
        let mut rollback = vec![format!(
            "restore {} from {}, apply it",
            self.etc_dir().display(),
            self.backup_dir().display()
        )];
        for s in &before {
            rollback.extend(links.restore_commands(s).iter().map(|c| c.join(" ")));
        }
        rollback.push("re-read the kernel and re-probe to prove the rollback".into());
        step("7. on failure, roll back", rollback);
        out
    }
}

/// Time for the state machine; tests advance it by hand.
pub trait Clock {
    /// Milliseconds since the run started.
    fn now_ms(&self) -> u64;
    /// Waits.
    fn sleep(&mut self, d: Duration);
}

/// The real clock.
#[derive(Debug)]
pub struct SystemClock(Instant);

impl SystemClock {
    /// A clock starting now.
    pub fn start() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.0.elapsed().as_millis() as u64
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

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

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn states(s: &[LinkState]) -> String {
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

/// The effects a run goes through.
pub struct Env<'a> {
    /// Applies a configuration.
    pub applier: &'a mut dyn Applier,
    /// Reads and restores kernel link state.
    pub links: &'a mut dyn Links,
    /// Probes.
    pub connectivity: &'a mut dyn Connectivity,
    /// Time.
    pub clock: &'a mut dyn Clock,
    /// Receives one line per step.
    pub progress: &'a mut dyn FnMut(&str),
}

impl Env<'_> {
    fn say(&mut self, line: &str) {
        let at = secs(self.clock.now_ms());
        (self.progress)(&format!("[+{at}] {line}"));
    }

    fn measure(&mut self) -> Measurement {
        let mut m = self.connectivity.measure();
        m.at_ms = self.clock.now_ms();
        m
    }
}

/// Runs a planned change to its end and returns the evidence. Never returns early without a
/// report: a failure after the first file changed always goes through the rollback.
pub fn execute(plan: &Plan, env: &mut Env<'_>) -> ApplyReport {
    let mut report = ApplyReport {
        id: plan.id.clone(),
        ticket: plan.ticket.clone(),
        outcome: Outcome::NotApplied,
        reason: None,
        changes: plan.changes.clone(),
        backup_dir: plan.backup_dir(),
        kernel_before: env.links.read(&plan.links),
        kernel_after_apply: Vec::new(),
        kernel_after_rollback: Vec::new(),
        baseline: Measurement::default(),
        rounds: Vec::new(),
        after_rollback: Vec::new(),
        applied_at_ms: None,
        failed_at_ms: None,
        rolled_back_at_ms: None,
        finished_at_ms: 0,
        errors: Vec::new(),
    };
    env.say(&format!("kernel before: {}", states(&report.kernel_before)));
    report.baseline = env.measure();
    env.say(&format!("baseline: {}", report.baseline.summary()));
    if !report.baseline.all_ok() {
        env.say("note: some probes fail before the change; they cannot fail it");
    }

    let previous = match ConfigFiles::load_search_path(&plan.root)
        .and_then(|f| parse_files(&f.files))
        .and_then(|n| resolve(&n, &plan.system))
    {
        Ok(p) => p,
        Err(e) => return not_applied(report, env, format!("cannot read the current config: {e}")),
    };
    if let Err(e) = backup(&plan.etc_dir(), &plan.backup_dir()) {
        return not_applied(report, env, format!("backup failed: {e}"));
    }
    env.say(&format!("backed up to {}", plan.backup_dir().display()));

    match change_files(plan).and_then(|()| on_disk_target(plan)) {
        Err(e) => fail(
            &mut report,
            env,
            format!("writing the proposed files failed: {e}"),
        ),
        Ok((_, differs)) if !differs.is_empty() => fail(
            &mut report,
            env,
            format!(
                "the files on disk changed since the check ({}); not applying an unchecked change",
                differs.join("; ")
            ),
        ),
        Ok((target, _)) => {
            env.say("files written; applying");
            match env.applier.apply(&target) {
                Err(e) => fail(&mut report, env, format!("apply failed: {e}")),
                Ok(()) => {
                    report.applied_at_ms = Some(env.clock.now_ms());
                    verify(plan, &target, &mut report, env);
                }
            }
        }
    }
    if report.failed_at_ms.is_some() {
        rollback(plan, &previous, &mut report, env);
    } else {
        report.outcome = Outcome::Kept;
        env.say("verify window passed; the change is kept");
    }
    report.finished_at_ms = env.clock.now_ms();
    report
}

fn not_applied(mut report: ApplyReport, env: &mut Env<'_>, reason: String) -> ApplyReport {
    env.say(&format!("not applied: {reason}"));
    report.reason = Some(reason);
    report.finished_at_ms = env.clock.now_ms();
    report
}

fn fail(report: &mut ApplyReport, env: &mut Env<'_>, reason: String) {
    env.say(&format!("FAILED: {reason}"));
    report.reason = Some(reason);
    report.failed_at_ms = Some(env.clock.now_ms());
}

fn verify(plan: &Plan, target: &Resolved, report: &mut ApplyReport, env: &mut Env<'_>) {
    let v = &plan.verify;
    let applied = report.applied_at_ms.unwrap_or(0);
    env.clock.sleep(Duration::from_millis(v.settle_ms));
    report.kernel_after_apply = env.links.read(&plan.links);
    env.say(&format!(
        "kernel after apply: {}",
        states(&report.kernel_after_apply)
    ));
    let not_taken: Vec<String> = report
        .kernel_after_apply
        .iter()
        .filter(|s| s.present)
        .filter_map(|s| {
            let want = target.interfaces.get(&s.name)?.mtu_bytes?;
            (s.mtu_bytes != Some(want)).then(|| {
                format!(
                    "{} is at mtu {} but the change sets {want}",
                    s.name,
                    s.mtu_bytes.map_or("?".into(), |m| m.to_string())
                )
            })
        })
        .collect();
    if !not_taken.is_empty() {
        return fail(
            report,
            env,
            format!(
                "the applier succeeded but the kernel disagrees: {}",
                not_taken.join("; ")
            ),
        );
    }
    let mut in_a_row = 0;
    loop {
        let measurement = env.measure();
        let regressions = measurement.regressions(&report.baseline);
        in_a_row = if regressions.is_empty() {
            0
        } else {
            in_a_row + 1
        };
        env.say(&format!(
            "verify round {}: {}",
            report.rounds.len() + 1,
            if regressions.is_empty() {
                "ok".to_string()
            } else {
                format!("WORSE: {}", regressions.join("; "))
            }
        ));
        report.rounds.push(Round {
            measurement,
            regressions: regressions.clone(),
        });
        if in_a_row >= v.fail_after_rounds.max(1) {
            return fail(
                report,
                env,
                format!(
                    "{in_a_row} verify rounds in a row worse than the baseline: {}",
                    regressions.join("; ")
                ),
            );
        }
        if env.clock.now_ms() + v.interval_ms > applied + v.window_ms {
            return;
        }
        env.clock.sleep(Duration::from_millis(v.interval_ms));
    }
}

fn rollback(plan: &Plan, previous: &Resolved, report: &mut ApplyReport, env: &mut Env<'_>) {
    env.say("rolling back");
    let mut errors = restore_files(plan);
    let files_restored = errors.is_empty();
    if let Err(e) = env.applier.apply(previous) {
        errors.push(format!("applying the previous config: {e}"));
    }
    for s in &report.kernel_before {
        if let Err(e) = env.links.restore(s) {
            errors.push(format!("restoring {s}: {e}"));
        }
    }
    for e in &errors {
        env.say(&format!("rollback error: {e}"));
    }
    env.clock
        .sleep(Duration::from_millis(plan.verify.settle_ms));
    report.kernel_after_rollback = env.links.read(&plan.links);
    env.say(&format!(
        "kernel after rollback: {}",
        states(&report.kernel_after_rollback)
    ));
    let mismatched: Vec<String> = report
        .kernel_before
        .iter()
        .zip(&report.kernel_after_rollback)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| format!("{a} (was {b})"))
        .collect();
    // A renderer may bounce links while re-applying; give the probes the same patience the
    // verify had before calling the rollback unproven.
    let mut probes_ok = false;
    for i in 0..plan.verify.fail_after_rounds.max(1) {
        if i > 0 {
            env.clock
                .sleep(Duration::from_millis(plan.verify.interval_ms));
        }
        let m = env.measure();
        let worse = m.regressions(&report.baseline);
        env.say(&format!(
            "after rollback: {}",
            if worse.is_empty() {
                format!("ok ({})", m.summary())
            } else {
                format!("WORSE: {}", worse.join("; "))
            }
        ));
        report.after_rollback.push(m);
        if worse.is_empty() {
            probes_ok = true;
            break;
        }
    }
    report.rolled_back_at_ms = Some(env.clock.now_ms());
    if !mismatched.is_empty() {
        errors.push(format!(
            "kernel differs from before the change: {}",
            mismatched.join("; ")
        ));
    }
    if !probes_ok {
        errors.push("probes are still worse than the baseline after the rollback".into());
    }
    let proven = mismatched.is_empty() && probes_ok && files_restored;
    report.outcome = if proven {
        Outcome::RolledBack
    } else {
        Outcome::RollbackUnproven
    };
    env.say(if proven {
        "rollback proven: kernel as before, probes as good as the baseline"
    } else {
        "ROLLBACK NOT PROVEN"
    });
    report.errors.extend(errors);
}

/// The `*.yaml` file names of `dir`, sorted; a missing directory has none.
fn yaml_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                help: "check that the directory is readable (run as root for /etc/netplan)",
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    Ok(names)
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        help: "check permissions and free space; the run directory has the backup",
        source,
    }
}

/// Copies every `*.yaml` of `etc` into `backup` and reads each copy back.
fn backup(etc: &Path, backup: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(backup)
        .map_err(|e| io_err("create the backup directory", backup, e))?;
    for name in yaml_names(etc)? {
        let (from, to) = (etc.join(&name), backup.join(&name));
        let original = std::fs::read(&from).map_err(|e| io_err("read", &from, e))?;
        std::fs::write(&to, &original).map_err(|e| io_err("write the backup", &to, e))?;
        let copy = std::fs::read(&to).map_err(|e| io_err("read the backup back", &to, e))?;
        if copy != original {
            return Err(io_err(
                "verify the backup",
                &to,
                std::io::Error::other("the copy differs from the original"),
            ));
        }
    }
    Ok(())
}

/// Writes `text` to `dir/name` atomically with mode 0600 (netplan warns about readable files).
fn write_atomic(dir: &Path, name: &str, text: &[u8]) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = dir.join(format!(".{name}.backhaul-tmp"));
    let dest = dir.join(name);
    std::fs::write(&tmp, text).map_err(|e| io_err("write", &tmp, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io_err("chmod 0600", &tmp, e))?;
    std::fs::rename(&tmp, &dest).map_err(|e| io_err("rename into place", &dest, e))
}

fn change_files(plan: &Plan) -> Result<(), Error> {
    let etc = plan.etc_dir();
    std::fs::create_dir_all(&etc).map_err(|e| io_err("create", &etc, e))?;
    if !plan.displaced.is_empty() {
        let aside = plan.displaced_dir();
        std::fs::create_dir_all(&aside).map_err(|e| io_err("create", &aside, e))?;
        for n in &plan.displaced {
            std::fs::rename(etc.join(n), aside.join(n))
                .map_err(|e| io_err("move aside", &etc.join(n), e))?;
        }
    }
    for w in &plan.writes {
        write_atomic(&etc, &w.name, w.text.as_bytes())?;
    }
    Ok(())
}

/// What netplan will read now, resolved, and how it differs from what was checked: the last
/// look before the applier runs.
fn on_disk_target(plan: &Plan) -> Result<(Resolved, Vec<String>), Error> {
    let now = resolve(
        &parse_files(&ConfigFiles::load_search_path(&plan.root)?.files)?,
        &plan.system,
    )?;
    let differs = settings_diff(&plan.expected, &settings_of(&now));
    Ok((now, differs))
}

/// Puts `etc/netplan` back as the backup has it and proves it by comparing; returns errors
/// instead of stopping, so the kernel rollback still runs.
fn restore_files(plan: &Plan) -> Vec<String> {
    let etc = plan.etc_dir();
    let aside = plan.displaced_dir();
    let mut errors = Vec::new();
    let backup_names = match yaml_names(&plan.backup_dir()) {
        Ok(n) => n,
        Err(e) => return vec![format!("files: cannot list the backup: {e}")],
    };
    for w in &plan.writes {
        if backup_names.contains(&w.name) {
            continue;
        }
        let added = aside.join("added");
        let r = std::fs::create_dir_all(&added)
            .and_then(|()| std::fs::rename(etc.join(&w.name), added.join(&w.name)));
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("files: moving the added {} aside: {e}", w.name));
        }
    }
    for n in &plan.displaced {
        if let Err(e) = std::fs::rename(aside.join(n), etc.join(n))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("files: moving {n} back: {e}"));
        }
    }
    for n in &backup_names {
        let r = std::fs::read(plan.backup_dir().join(n))
            .map_err(|e| io_err("read the backup", &plan.backup_dir().join(n), e))
            .and_then(|text| write_atomic(&etc, n, &text));
        if let Err(e) = r {
            errors.push(format!("files: restoring {n}: {e}"));
        }
    }
    match yaml_names(&etc) {
        Ok(now) if now != backup_names => errors.push(format!(
            "files: {} holds [{}], the backup [{}]",
            etc.display(),
            now.join(", "),
            backup_names.join(", ")
        )),
        Ok(_) => {
            for n in &backup_names {
                let same = std::fs::read(etc.join(n)).ok()
                    == std::fs::read(plan.backup_dir().join(n)).ok();
                if !same {
                    errors.push(format!(
                        "files: {n} differs from its backup after restoring"
                    ));
                }
            }
        }
        Err(e) => errors.push(format!("files: cannot list {}: {e}", etc.display())),
    }
    errors
}

/// `YYYYMMDDTHHMMSSZ` of Unix seconds (UTC), for run ids that sort by time.
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil-from-days (H. Hinnant), valid for every date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
