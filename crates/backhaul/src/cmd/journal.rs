//! `backhaul journal recover`: the documented way out of a corrupt journal.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use backhaul_spool::{journal_is_healthy, recover_journal};
use backhaul_telemetry::Metrics;

use crate::cli::JournalCommand;
use crate::config;

/// Entry point.
pub fn main(command: JournalCommand) -> anyhow::Result<ExitCode> {
    let JournalCommand::Recover { config, force } = command;
    let cfg = config::load(&config)?;
    let journal = cfg.spool.journal.clone();
    if let Some(addr) = cfg.metrics_listen
        && std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(300))
            .is_ok()
    {
        anyhow::bail!(
            "something answers on the agent's metrics address {addr}: the agent seems to be running\n  help: stop it first (systemctl stop backhaul), then run this again"
        );
    }
    let healthy = journal_is_healthy(&journal)
        .with_context(|| format!("cannot open the journal {}", journal.display()))?;
    if healthy && !force {
        println!(
            "journal {} is healthy; nothing to recover (--force rebuilds it anyway)",
            journal.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let r = recover_journal(cfg.spool.clone(), Arc::new(Metrics::default()))
        .with_context(|| format!("cannot rebuild the journal {}", journal.display()))?;
    match &r.moved_to {
        Some(p) => println!("moved the old journal to {} (nothing deleted)", p.display()),
        None => println!("there was no journal at {}", journal.display()),
    }
    println!(
        "journaled {} chunks from {} again ({} still being written); start the agent: chunks already in the bucket are recognised by their content and not sent twice",
        r.chunks,
        cfg.spool.dir.display(),
        r.waiting
    );
    Ok(ExitCode::SUCCESS)
}
