//! `backhaul config check|default`.

use std::io::Write as _;
use std::process::ExitCode;

use backhaul_diagnose::Kind;

use crate::cli::ConfigCommand;
use crate::config;
use crate::env::ProcessEnv;

/// Why the agent could not append to `file`, if it could not: its directory is missing or
/// not writable, or it lies outside what the packaged unit may write.
fn unwritable(file: &std::path::Path) -> Option<String> {
    const UNIT_WRITABLE: [&str; 3] = [
        "/var/log/backhaul",
        "/var/spool/backhaul",
        "/var/lib/backhaul",
    ];
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty())?;
    if !dir.is_dir() {
        return Some(format!("{} does not exist", dir.display()));
    }
    if let Err(e) = tempfile::tempfile_in(dir) {
        return Some(format!("cannot write in {}: {e}", dir.display()));
    }
    if file.is_absolute() && !UNIT_WRITABLE.iter().any(|w| file.starts_with(w)) {
        return Some(format!(
            "outside the paths the packaged unit may write ({})",
            UNIT_WRITABLE.join(", ")
        ));
    }
    None
}

/// Entry point.
pub fn main(command: ConfigCommand, env: ProcessEnv) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Check { file } => {
            let cfg = config::load(&file)?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{}: ok (site {}, spool {}, bucket {} at {})",
                file.display(),
                cfg.site,
                cfg.spool.dir.display(),
                cfg.upload.bucket,
                cfg.upload.endpoint
            )?;
            // As this shell sees them: the unit's drop-in environment may set more.
            match cfg.credentials(&env).describe() {
                Ok(line) => writeln!(out, "credentials: {line}")?,
                Err(why) => writeln!(
                    out,
                    "warning: credentials: {why} (as this shell's environment sees it; the \
                     service's drop-in may set more); see docs/credentials.md"
                )?,
            }
            if cfg.inventory.is_none() {
                let to = if cfg.monitor.webhook_url.is_some()
                    || cfg.monitor.alertmanager_url.is_some()
                {
                    "to the configured receivers"
                } else {
                    "in the log only (no monitor.webhook_url or monitor.alertmanager_url)"
                };
                writeln!(
                    out,
                    "note: no [inventory]: the path rules ({}) and their probes are off; {} \
                     alert {to}. Declare the WAN interface, gateway and endpoint in \
                     [inventory] to turn the path rules on",
                    Kind::names(true),
                    Kind::names(false)
                )?;
            }
            if let Some(emf) = &cfg.emf_path
                && let Some(why) = unwritable(emf)
            {
                writeln!(
                    out,
                    "warning: metrics.emf_path {}: {why}; the agent will warn at every interval. \
                     Under the packaged unit use /var/log/backhaul/ (LogsDirectory)",
                    emf.display()
                )?;
            }
            if !cfg.spool.dir.is_dir() {
                writeln!(
                    out,
                    "warning: spool directory {} does not exist yet; `backhaul run` needs it",
                    cfg.spool.dir.display()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Default => {
            std::io::stdout()
                .lock()
                .write_all(config::DEFAULT_CONFIG.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
