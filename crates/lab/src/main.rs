//! `backhaul-lab`: the lab's commands without the agent binary (the same code as
//! `backhaul lab …`). Used by the lab's own root test suite, which needs an executable of this
//! package to run the wire and the probes as processes.

use std::process::ExitCode;

use clap::Parser as _;

/// The incident lab.
#[derive(Debug, clap::Parser)]
#[command(name = "backhaul-lab", version)]
struct Cli {
    /// The backhaul binary, for `run --uploader backhaul` and `--s3 embedded`.
    #[arg(long, global = true, env = "BACKHAUL_EXE")]
    backhaul_exe: Option<std::path::PathBuf>,
    /// What to do.
    #[command(subcommand)]
    command: backhaul_lab::LabCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BACKHAUL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let this = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lab = backhaul_lab::Invocation {
        program: this,
        prefix_args: Vec::new(),
    };
    match backhaul_lab::run_with(cli.command, &lab, cli.backhaul_exe.as_deref()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}
