//! `backhaul check`: the monitoring plugin. One line, perfdata, monitoring-plugins exit codes
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); it never fails loudly. The path part is
//! `backhaul diagnose`'s survey.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::ProbeArgs;

use super::diagnose::{Survey, check_verdict, load, survey};

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
pub fn main(args: ProbeArgs) -> ExitCode {
    let (cfg, inv) = match load(&args.config) {
        Ok(v) => v,
        Err(e) => {
            println!(
                "BACKHAUL UNKNOWN - {}",
                format!("{e:#}").lines().next().unwrap_or_default()
            );
            return ExitCode::from(3);
        }
    };
    let s = survey(&cfg, &inv, Duration::from_millis(args.probe_timeout_ms));
    let (code, summary) = check_verdict(&s);
    let state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][usize::from(code)];
    println!("BACKHAUL {state} - {summary} | {}", perfdata(&s));
    ExitCode::from(code)
}
