//! `netplan check`: parse both configs, resolve them onto the host, diff, judge.

use std::path::PathBuf;

use serde::Serialize;

use crate::diff::{Change, diff};
use crate::error::Error;
use crate::intent::Intent;
use crate::inventory::SiteInventory;
use crate::oracle::{NetplanOutcome, netplan_generate};
use crate::parse::parse_files;
use crate::policy::{Finding, Rule, Severity, evaluate};
use crate::resolve::{SystemInterfaces, resolve};
use crate::source::ConfigFiles;

/// Everything a check needs; the caller reads files and the host, the check itself is pure
/// apart from the optional `netplan generate` run.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    /// What netplan reads today.
    pub current: ConfigFiles,
    /// What it would read after the change.
    pub proposed: ConfigFiles,
    /// The declared change; `None` checks policy only (and warns).
    pub intent: Option<Intent>,
    /// Roles and MTUs.
    pub inventory: SiteInventory,
    /// The host's interfaces, for `match:`.
    pub system: SystemInterfaces,
    /// The `netplan` binary to consult, if any.
    pub netplan: Option<PathBuf>,
}

/// The overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Nothing to say; exit 0.
    Pass,
    /// Warnings only; exit 1.
    Warn,
    /// Do not apply; exit 2.
    Block,
}

impl Verdict {
    /// The process exit code (Nagios style: 0 ok, 1 warning, 2 critical).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Warn => 1,
            Verdict::Block => 2,
        }
    }
}

/// The result of a check; `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Overall verdict.
    pub verdict: Verdict,
    /// The ticket, if the intent came from one.
    pub ticket: Option<String>,
    /// Per-interface changes.
    pub changes: Vec<Change>,
    /// Blocks first, then warnings.
    pub findings: Vec<Finding>,
    /// What the real netplan said about the proposed config.
    pub netplan: NetplanOutcome,
}

impl Report {
    /// The block reasons, one line each.
    pub fn block_reasons(&self) -> Vec<&str> {
        self.lines(Severity::Block)
    }

    /// The warnings, one line each.
    pub fn warnings(&self) -> Vec<&str> {
        self.lines(Severity::Warning)
    }

    fn lines(&self, s: Severity) -> Vec<&str> {
        self.findings
            .iter()
            .filter(|f| f.severity == s)
            .map(|f| f.message.as_str())
            .collect()
    }

    /// The human form: the diff, then blocks and warnings, then the verdict.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str("no effective change\n");
        }
        for c in &self.changes {
            out.push_str(&format!("{c}\n"));
        }
        for f in &self.findings {
            let tag = match f.severity {
                Severity::Block => "block",
                Severity::Warning => "warning",
            };
            for (i, line) in f.message.lines().enumerate() {
                if i == 0 {
                    out.push_str(&format!("{tag}: {line}\n"));
                } else {
                    out.push_str(&format!("  {line}\n"));
                }
            }
        }
        if let NetplanOutcome::NotRun { reason } = &self.netplan {
            out.push_str(&format!("note: netplan generate not run: {reason}\n"));
        }
        let verdict = match self.verdict {
            Verdict::Pass => "pass",
            Verdict::Warn => "pass with warnings",
            Verdict::Block => "BLOCKED: do not apply",
        };
        match &self.ticket {
            Some(t) => out.push_str(&format!("{t}: {verdict}\n")),
            None => out.push_str(&format!("verdict: {verdict}\n")),
        }
        out
    }
}

/// Runs the check. Errors are inputs that cannot be judged (bad YAML, a `match` hitting two
/// interfaces); a change that parses but must not be applied is a [`Verdict::Block`].
pub fn check(input: &CheckInput) -> Result<Report, Error> {
    let current = parse_files(&input.current.files)?;
    let proposed = parse_files(&input.proposed.files)?;
    let current = resolve(&current, &input.system)?;
    let proposed = resolve(&proposed, &input.system)?;
    let changes = diff(&current, &proposed, &input.inventory);
    let mut findings = evaluate(
        &current,
        &proposed,
        &changes,
        input.intent.as_ref(),
        &input.inventory,
        &input.system,
    );
    let netplan = match &input.netplan {
        None => NetplanOutcome::NotRun {
            reason: "disabled".into(),
        },
        Some(bin) if !bin.exists() => NetplanOutcome::NotRun {
            reason: format!("{} is not installed", bin.display()),
        },
        Some(bin) => netplan_generate(bin, &input.proposed)?,
    };
    if let NetplanOutcome::Rejected { message } = &netplan {
        findings.insert(
            0,
            Finding {
                severity: Severity::Block,
                rule: Rule::Netplan,
                interface: None,
                message: format!("netplan generate rejects the proposed config: {message}"),
            },
        );
    }
    let verdict = match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Block) => Verdict::Block,
        Some(Severity::Warning) => Verdict::Warn,
        None => Verdict::Pass,
    };
    Ok(Report {
        verdict,
        ticket: input.intent.as_ref().and_then(|i| i.ticket.clone()),
        changes,
        findings,
        netplan,
    })
}
