//! `backhaul config check|default`.

use std::io::Write as _;
use std::process::ExitCode;

use crate::cli::ConfigCommand;
use crate::config;
use crate::env::ProcessEnv;

/// Entry point.
pub fn main(command: ConfigCommand, _env: ProcessEnv) -> anyhow::Result<ExitCode> {
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
                    "note: no [inventory]: the path rules (pmtu_blackhole, mtu_drift, \
                     path_mtu_reduced, uplink_down) and their probes are off; auth_failure, \
                     endpoint_unreachable, disk_pressure, uplink_degraded and vpn_flapping \
                     alert {to}. Declare the WAN interface, gateway and endpoint in \
                     [inventory] to turn the path rules on"
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
