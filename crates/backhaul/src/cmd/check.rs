//! `backhaul check`: the monitoring plugin. One line, perfdata, monitoring-plugins exit codes
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); it never fails loudly. The path part is
//! `backhaul diagnose`'s survey.

use std::process::ExitCode;
use std::time::Duration;

use backhaul_diagnose::Severity;

use crate::cli::CheckArgs;
use crate::config;
use crate::status::Status;

use super::diagnose::{Survey, check_verdict, severity_code, survey};

/// How long the agent has to answer `/status`.
const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Exit codes as the plugins' states, and their order when parts disagree: CRITICAL beats
/// WARNING beats UNKNOWN beats OK.
const STATES: [&str; 4] = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];
fn rank(code: u8) -> u8 {
    match code {
        0 => 0,
        3 => 1,
        1 => 2,
        _ => 3,
    }
}

/// One part of the check: its exit code, its summary, its perfdata.
struct Part {
    code: u8,
    summary: String,
    perf: String,
}

/// The running agent, asked at its `/status`: answering at all, the age of the oldest chunk
/// waiting against the thresholds, and its worst open incident.
fn agent(cfg: &config::Config, args: &CheckArgs) -> Part {
    let Some(url) = super::status::url_of(cfg) else {
        return Part {
            code: 0,
            summary: "agent not asked (metrics.listen is off)".into(),
            perf: String::new(),
        };
    };
    let status = super::status::fetch(&url, AGENT_TIMEOUT)
        .ok()
        .and_then(|body| serde_json::from_slice::<Status>(&body).ok());
    let Some(s) = status else {
        return Part {
            code: 2,
            summary: format!(
                "the agent does not answer at {url}: nothing is uploaded (systemctl status backhaul)"
            ),
            perf: "agent_answering=0;;1:;;".into(),
        };
    };
    let age = s.upload.oldest_chunk_age_seconds.max(0.0) as u64;
    let (w, c) = (args.backlog_age_warning, args.backlog_age_critical);
    let perf = format!(
        "agent_answering=1;;1:;; backlog_age_seconds={age};{w};{c};0; backlog_chunks={};;;0;",
        s.upload.backlog_chunks
    );
    let incident = s.incidents.first().map(|i| {
        (
            severity_code(Severity::parse(&i.severity)),
            format!("agent: {} on {}: {}", i.kind, i.subject, i.root_cause),
        )
    });
    let backlog = if age > c {
        Some((
            2,
            format!("oldest chunk waiting {age} s (critical above {c} s)"),
        ))
    } else if age > w {
        Some((
            1,
            format!("oldest chunk waiting {age} s (warning above {w} s)"),
        ))
    } else {
        None
    };
    let (code, summary) = [incident, backlog]
        .into_iter()
        .flatten()
        .max_by_key(|(code, _)| rank(*code))
        .filter(|(code, _)| *code > 0)
        .unwrap_or_else(|| {
            (
                0,
                format!(
                    "agent uploading: {} waiting, oldest {age} s",
                    crate::status::chunks(s.upload.backlog_chunks)
                ),
            )
        });
    Part {
        code,
        summary,
        perf,
    }
}

/// The check's performance data in the monitoring-plugins syntax
/// (`label=value;warn;crit;min;max`): an interface's MTU is fine only at exactly its declared
/// value (`1500:1500`), a large probe only when it passed (`1:`).
fn perfdata(s: &Survey) -> String {
    let mut perf = Vec::new();
    for (name, mtu, declared) in &s.interfaces {
        if let Some(m) = mtu {
            perf.push(format!(
                "{name}_mtu_bytes={m};{declared}:{declared};{declared}:{declared};;"
            ));
        }
    }
    for t in &s.targets {
        if let Some(p) = t.path_mtu {
            perf.push(format!("path_mtu_{}_bytes={p};;;;", t.name));
        }
        if let Some(ok) = t.large_ok {
            perf.push(format!("large_probe_{}_ok={};;1:;;", t.name, u8::from(ok)));
        }
    }
    perf.join(" ")
}

/// `backhaul check`: one line, perfdata, monitoring-plugins exit codes; never fails loudly.
/// The path (with an `[inventory]`) and the agent are checked; the worst part leads.
pub fn main(args: CheckArgs) -> ExitCode {
    let cfg = match config::load(&args.probe.config) {
        Ok(c) => c,
        Err(e) => {
            println!(
                "BACKHAUL UNKNOWN - {}",
                format!("{e:#}").lines().next().unwrap_or_default()
            );
            return ExitCode::from(3);
        }
    };
    let path = match &cfg.inventory {
        Some(inv) => {
            let s = survey(
                &cfg,
                inv,
                Duration::from_millis(args.probe.probe_timeout_ms),
            );
            let (code, summary) = check_verdict(&s);
            Part {
                code,
                summary,
                perf: perfdata(&s),
            }
        }
        None => Part {
            code: 0,
            summary: "path not checked (no [inventory])".into(),
            perf: String::new(),
        },
    };
    let mut parts = [path, agent(&cfg, &args)];
    parts.sort_by_key(|p| std::cmp::Reverse(rank(p.code)));
    let code = parts[0].code;
    let summary: Vec<&str> = parts.iter().map(|p| p.summary.as_str()).collect();
    let perf: Vec<&str> = parts
        .iter()
        .map(|p| p.perf.as_str())
        .filter(|p| !p.is_empty())
        .collect();
    println!(
        "BACKHAUL {} - {} | {}",
        STATES[usize::from(code)],
        summary.join("; "),
        perf.join(" ")
    );
    ExitCode::from(code)
}
