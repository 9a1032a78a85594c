//! `backhaul diagnose` and `backhaul check`: the PMTUD runbook run live, once. Both gather the
//! same observations — interface MTUs against the inventory, small and full-size DF probes and
//! a path-MTU search toward the gateway and the upload endpoint, frag-needed seen on the way —
//! and let the diagnosis rules judge them; `diagnose` explains, `check` speaks the monitoring
//! plugins' exit codes and perfdata.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use backhaul_diagnose::{
    Engine, Finding, Inventory, Observation, Severity, Signal, Target, TimeBase,
};

use crate::cli::ProbeArgs;
use crate::config::{self, Config};
use crate::exit::ConfigInvalid;
use crate::probe::{
    SMALL_PROBE_BYTES, TargetReport, endpoint_v4, full_size, gateway_v4, now_ms, probe_target,
    read_sys,
};

pub(super) struct Survey {
    pub(super) lines: Vec<String>,
    pub(super) targets: Vec<TargetReport>,
    pub(super) interfaces: Vec<(String, Option<u32>, u32)>,
    pub(super) findings: Vec<Finding>,
    pub(super) time: TimeBase,
}

pub(super) fn load(path: &Path) -> anyhow::Result<(Config, Inventory)> {
    let cfg = config::load(path)?;
    let inv = cfg.inventory.clone().ok_or_else(|| {
        anyhow::Error::new(ConfigInvalid(format!(
            "{}: no [inventory] table\n  help: declare the site's interfaces, gateway and endpoint, \
             e.g. interfaces = [{{ name = \"eno1\", role = \"wan\", mtu_bytes = 1500 }}], \
             gateway = \"192.0.2.1\", endpoint_host = \"s3.eu-west-1.amazonaws.com\"",
            path.display()
        )))
    })?;
    Ok((cfg, inv))
}

pub(super) fn survey(cfg: &Config, inv: &Inventory, timeout: Duration) -> Survey {
    let time = TimeBase::UNIX;
    let mut engine = Engine::new(inv.clone(), cfg.diagnose.clone(), time);
    let mut obs = Vec::new();
    let mut lines = Vec::new();
    let mut interfaces = Vec::new();
    for i in inv.interfaces() {
        let mtu = read_sys(&i.name, "mtu").and_then(|m| m.parse::<u32>().ok());
        let up = read_sys(&i.name, "operstate").map(|s| s != "down");
        match (mtu, up) {
            (Some(mtu), up) => {
                obs.push(Observation::new(
                    now_ms(),
                    Signal::LinkMtu {
                        ifname: i.name.clone(),
                        mtu_bytes: mtu,
                    },
                ));
                if let Some(up) = up {
                    obs.push(Observation::new(
                        now_ms(),
                        Signal::LinkState {
                            ifname: i.name.clone(),
                            up,
                        },
                    ));
                }
                let mark = if mtu == i.mtu_bytes { "ok" } else { "DIFFERS" };
                lines.push(format!(
                    "  {} ({}): MTU {mtu}, declared {} — {mark}",
                    i.name,
                    i.role.as_str(),
                    i.mtu_bytes
                ));
            }
            (None, _) => lines.push(format!(
                "  {} ({}): not found on this host — check the inventory's interface names",
                i.name,
                i.role.as_str()
            )),
        }
        interfaces.push((i.name.clone(), mtu, i.mtu_bytes));
    }
    let wan_mtu = inv.wan().and_then(|w| {
        interfaces
            .iter()
            .find(|(n, ..)| *n == w.name)
            .and_then(|(_, m, _)| *m)
    });
    let large = full_size(inv, wan_mtu);
    let gateway = gateway_v4(inv);
    let endpoint = endpoint_v4(inv);
    let hint = Some(inv.path_mtu_bytes() as usize);
    let targets = vec![
        probe_target(
            "gateway",
            Target::Gateway,
            gateway,
            large,
            hint,
            timeout,
            &mut obs,
        ),
        probe_target(
            "endpoint",
            Target::Endpoint,
            endpoint,
            large,
            hint,
            timeout,
            &mut obs,
        ),
    ];
    engine.observe_all(obs);
    let transitions = engine.tick(now_ms());
    drop(transitions);
    Survey {
        lines,
        targets,
        interfaces,
        findings: engine.findings(),
        time,
    }
}

/// The most severe finding; among equals the first, as the rules order causes before symptoms.
fn worst(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .min_by_key(|f| std::cmp::Reverse(f.severity))
}

fn show(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "not run",
    }
}

/// Evidence lines per open incident shown from the agent; the rest is in `backhaul status`.
const AGENT_EVIDENCE_LINES: usize = 6;

/// What the running agent has seen that a one-shot run cannot: its open incidents with their
/// evidence timelines (link changes, stalls), and its upload figures.
fn agent_lines(cfg: &Config) -> Vec<String> {
    let Some(url) = crate::cmd::status::url_of(cfg) else {
        return vec!["metrics.listen is \"off\": the agent serves no /status to ask".into()];
    };
    let status = crate::cmd::status::fetch(&url, Duration::from_secs(2)).and_then(|body| {
        serde_json::from_slice::<crate::status::Status>(&body).map_err(anyhow::Error::new)
    });
    let st = match status {
        Ok(st) => st,
        Err(_) => {
            return vec![format!(
                "not answering at {url} (is `backhaul run` running?): the verdict rests on this \
                 run's probes alone"
            )];
        }
    };
    let mut lines = vec![format!(
        "{url}: link watch {}; {} ICMP frag-needed since start",
        st.link_watch, st.frag_needed_total
    )];
    if st.incidents.is_empty() {
        lines.push("no open incident".into());
    }
    for i in &st.incidents {
        lines.push(format!(
            "open: {} ({}) — {}",
            i.kind, i.severity, i.root_cause
        ));
        let skip = i.evidence.len().saturating_sub(AGENT_EVIDENCE_LINES);
        lines.extend(i.evidence.iter().skip(skip).map(|e| format!("  {e}")));
    }
    let u = &st.upload;
    lines.push(format!(
        "uploads: {:.1} Mbit/s over 60 s, {} chunks waiting (oldest {:.0} s), disk {:.0} % used",
        u.goodput_mbps_60s, u.backlog_chunks, u.oldest_chunk_age_seconds, u.disk_used_percent
    ));
    lines
}

/// `backhaul diagnose`.
pub fn diagnose(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let (cfg, inv) = load(&args.config)?;
    let s = survey(&cfg, &inv, Duration::from_millis(args.probe_timeout_ms));
    let mut out = std::io::stdout().lock();
    writeln!(out, "backhaul diagnose — site {}", cfg.site)?;
    writeln!(out, "1. interfaces against the inventory:")?;
    for l in &s.lines {
        writeln!(out, "{l}")?;
    }
    writeln!(
        out,
        "2. probes with DF set (small {SMALL_PROBE_BYTES} B, full-size {} B) and path-MTU search:",
        s.targets[0].large_size
    )?;
    for t in &s.targets {
        let addr = t.addr.map_or("-".to_owned(), |a| a.to_string());
        write!(
            out,
            "  {} {addr}: small {}, full-size {}",
            t.name,
            show(t.small_ok),
            show(t.large_ok)
        )?;
        if let Some(p) = t.path_mtu {
            write!(out, ", path MTU {p}")?;
        }
        writeln!(out)?;
        if let Some(n) = &t.note {
            writeln!(out, "    note: {n}")?;
        }
    }
    writeln!(out, "3. ICMP fragmentation-needed:")?;
    let frag: Vec<_> = s
        .targets
        .iter()
        .filter_map(|t| t.frag_needed.map(|f| (t.name, f)))
        .collect();
    // Frag-needed arrives on the probes' socket (raw, or a ping socket's error queue): without
    // one nothing could be received.
    let listened = s
        .targets
        .iter()
        .any(|t| !t.no_permission && t.addr.is_some());
    if frag.is_empty() && listened {
        writeln!(
            out,
            "  none received (a failing full-size probe without it is a PMTUD black hole)"
        )?;
    } else if frag.is_empty() {
        writeln!(
            out,
            "  not listened for: the probes could not open an ICMP socket (see above), so its \
             absence says nothing"
        )?;
    }
    for (name, (from, mtu)) in frag {
        writeln!(
            out,
            "  toward {name}: from {from}, next-hop MTU {mtu} (PMTUD works)"
        )?;
    }
    match backhaul_netprobe::KernelCounters::read() {
        Ok(k) => writeln!(
            out,
            "  kernel, since boot: InDestUnreachs {}, FragFails {}, TCPMTUPFail {}, \
             TCPMTUPSuccess {}",
            k.icmp_in_dest_unreachs, k.ip_frag_fails, k.tcp_mtup_fail, k.tcp_mtup_success
        )?,
        Err(e) => writeln!(out, "  kernel counters unavailable: {e}")?,
    }
    writeln!(
        out,
        "4. the running agent (recent link events, stalls, uploads):"
    )?;
    for line in agent_lines(&cfg) {
        writeln!(out, "  {line}")?;
    }
    match worst(&s.findings) {
        None => {
            let (code, summary) = check_verdict(&s);
            let word = ["healthy", "warning", "critical", "unknown"][usize::from(code)];
            writeln!(out, "verdict: {word} — no incident; {summary}")?;
            Ok(ExitCode::from(code))
        }
        Some(_) => {
            for f in &s.findings {
                writeln!(
                    out,
                    "verdict: {} ({}) — {}",
                    f.kind.as_str(),
                    f.severity.as_str(),
                    f.root_cause
                )?;
                for e in &f.evidence {
                    writeln!(out, "  {} {}", s.time.hms(e.at_ms), e.text)?;
                }
                for fix in &f.fix {
                    writeln!(out, "  fix: {fix}")?;
                }
                writeln!(
                    out,
                    "  runbook: {}{}",
                    cfg.monitor.runbook_base_url,
                    f.kind.runbook()
                )?;
            }
            Ok(ExitCode::from(severity_code(
                worst(&s.findings).map(|f| f.severity),
            )))
        }
    }
}

pub(super) fn severity_code(s: Option<Severity>) -> u8 {
    match s {
        None | Some(Severity::Info) => 0,
        Some(Severity::Warning) => 1,
        Some(Severity::Critical) => 2,
    }
}

/// The exit code and one-line summary of `backhaul check`. A finding wins; without one, "OK"
/// is only said of what was measured: interfaces the inventory names but this host lacks are a
/// WARNING, and when no full-size probe could run at all the path is UNKNOWN, never healthy.
pub(super) fn check_verdict(s: &Survey) -> (u8, String) {
    let code = severity_code(worst(&s.findings).map(|f| f.severity));
    if let Some(f) = worst(&s.findings).filter(|_| code > 0) {
        return (code, format!("{}: {}", f.kind.as_str(), f.root_cause));
    }
    let missing: Vec<&str> = s
        .interfaces
        .iter()
        .filter(|(_, mtu, _)| mtu.is_none())
        .map(|(name, ..)| name.as_str())
        .collect();
    if !missing.is_empty() {
        return (
            1,
            format!(
                "inventory interface(s) {} not found on this host; fix the names in [inventory]",
                missing.join(", ")
            ),
        );
    }
    if s.targets.iter().all(|t| t.large_ok.is_none()) {
        let why = s
            .targets
            .iter()
            .find_map(|t| t.note.as_deref())
            .unwrap_or("no target to probe");
        return (
            3,
            format!("interfaces match the inventory; full-size probes not run: {why}"),
        );
    }
    let passing: Vec<&str> = s
        .targets
        .iter()
        .filter(|t| t.large_ok == Some(true))
        .map(|t| t.name)
        .collect();
    if passing.is_empty() {
        return (
            3,
            "interfaces match the inventory; no probe target answers at all, so the path \
             cannot be judged (ICMP echo filtered?)"
                .to_owned(),
        );
    }
    let mut summary = format!(
        "interfaces match the inventory; full-size probes pass toward {}",
        passing.join(" and ")
    );
    for t in s.targets.iter().filter(|t| t.small_ok == Some(false)) {
        let addr = t.addr.map_or("-".to_owned(), |a| a.to_string());
        summary.push_str(&format!(
            "; {} {addr} answers no ping (not judged: many drop ICMP by policy)",
            t.name
        ));
    }
    (0, summary)
}
