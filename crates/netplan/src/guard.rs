//! The guarded apply: back up → write → apply → verify → keep or roll back, with evidence.
//!
//! [`execute`] runs a [`Plan`] (`plan.rs`; the detached verifier of `cli.rs` calls it) and
//! returns an [`ApplyReport`] (`report.rs`). Every effect goes through a seam ([`Applier`],
//! [`Links`], [`Connectivity`], [`Clock`]), so the state machine is unit-tested with
//! in-memory fakes.
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

use std::path::Path;
use std::time::{Duration, Instant};

use crate::apply::Applier;
use crate::connectivity::{Connectivity, Measurement};
use crate::error::Error;
use crate::link::Links;
use crate::parse::parse_files;
use crate::plan::{Plan, settings_diff, settings_of, yaml_names};
use crate::report::{ApplyReport, Outcome, Round, secs, states};
use crate::resolve::{Resolved, resolve};
use crate::source::ConfigFiles;

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

#[cfg(test)]
mod tests;
