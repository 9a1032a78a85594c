//! `backhaul`: the edge agent's single binary. Parses the command line, dispatches to a
//! subcommand, maps the outcome to an exit code. Everything substantial lives in the library
//! crates; this crate only assembles them.

mod cli;
mod cmd;
mod config;
mod env;
mod exit;
mod logging;
mod metrics_server;
mod monitor;
mod probe;
mod service;
mod status;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; everything else is a usage error (64).
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            e.print().ok();
            return ExitCode::from(code);
        }
    };
    // Read before any thread starts: the local UTC offset is only knowable single-threaded.
    let process = env::ProcessEnv::read();
    let stderr = process.stderr;
    let result = match cli.command {
        cli::Command::Run(args) => cmd::run::main(args, process),
        cli::Command::Demo(args) => cmd::demo::main(args, process),
        cli::Command::S3Server(args) => cmd::s3_server::main(args, &process),
        cli::Command::Lab { command } => cmd::lab::main(command),
        cli::Command::Netplan { command } => cmd::netplan::main(command, &process),
        cli::Command::Diagnose(args) => cmd::diagnose::diagnose(args),
        cli::Command::Check(args) => Ok(cmd::check::main(args)),
        cli::Command::Status(args) => cmd::status::main(args),
        cli::Command::Config { command } => cmd::config::main(command, process),
        cli::Command::Journal { command } => cmd::journal::main(command),
        cli::Command::PackageFiles(args) => cmd::package_files::main(args),
    };
    logging::flush();
    exit::report(result, stderr)
}
