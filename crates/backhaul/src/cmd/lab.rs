//! `backhaul lab …`: hands over to `backhaul-lab`, passing this executable so the lab can run
//! the agent, the embedded S3 server and its own helper processes inside its namespaces.

use std::process::ExitCode;

use anyhow::Context as _;

/// Entry point.
pub fn main(command: backhaul_lab::LabCommand) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the backhaul executable")?;
    Ok(backhaul_lab::run(command, &exe)?)
}
