//! `backhaul netplan …`: the change guard from `backhaul-netplan`. Its verdicts are exit codes
//! (0 pass, 1 warnings, 2 block); input it cannot judge is a configuration error (78).

use std::process::ExitCode;

use crate::exit::ConfigInvalid;

/// Entry point.
pub fn main(command: backhaul_netplan::cli::NetplanCommand) -> anyhow::Result<ExitCode> {
    match backhaul_netplan::cli::run(command) {
        Ok(code) => Ok(code),
        Err(e) if e.is_input_error() => Err(anyhow::Error::new(ConfigInvalid(format!("{e:#}")))),
        Err(e) => Err(e.into()),
    }
}
