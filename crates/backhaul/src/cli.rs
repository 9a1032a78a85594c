use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `--version`: the crate's version and the source revision it was built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BACKHAUL_REVISION"),
    ")"
);

/// Ships video chunks from an edge site to S3-compatible storage without losing any, and
/// watches the network path they travel.
#[derive(Debug, Parser)]
#[command(name = "backhaul", version = VERSION, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the spool, upload chunks, serve metrics.
    Run(RunArgs),
    /// Run the real agent against an embedded S3 server with synthetic camera chunks.
    Demo(DemoArgs),
    /// Run the PMTUD runbook live: interfaces vs declared, path-MTU search toward gateway and
    /// endpoint, ICMP frag-needed; print the verdict and the fix (needs `[inventory]`; probes
    /// need root or CAP_NET_RAW).
    Diagnose(ProbeArgs),
    /// One-shot health check for monitoring (replaces healthcheck.sh): the MTU check and a
    /// large-payload probe (with an `[inventory]`), and the running agent's uploads (answering,
    /// backlog age, open incidents); exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN, with perfdata.
    Check(CheckArgs),
    /// Summary of the running agent: open incidents with cause and fix, interfaces against
    /// their declared MTU, the latest probes and path MTUs, goodput, backlog, disk, uptime
    /// (reads the agent's `/status`; exits 1 when it is not running).
    Status(StatusArgs),
    /// Netplan change guard: check a proposed config against the change's intent and policy,
    /// or apply it with a post-change connectivity test and automatic, proven rollback.
    Netplan {
        /// Netplan action.
        #[command(subcommand)]
        command: backhaul_netplan::cli::NetplanCommand,
    },
    /// The incident lab: the 2025-11-12 site in network namespaces (needs root).
    Lab {
        /// Lab action.
        #[command(subcommand)]
        command: backhaul_lab::LabCommand,
    },
    /// Serve the embedded S3-compatible store (s3s-fs) for labs and benchmarks.
    S3Server(S3ServerArgs),
    /// Journal maintenance: `recover` moves a corrupt journal aside and rebuilds it from the
    /// spool (nothing is deleted; chunks already in the bucket are recognised, not re-sent).
    Journal {
        /// Journal action.
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Check or print configuration.
    Config {
        /// Config action.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write shell completions and man pages generated from this command line into a
    /// directory (for scripts/build-deb; hidden from help, completions and man pages).
    #[command(hide = true)]
    PackageFiles(PackageFilesArgs),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Options shared by commands that log.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log format (overrides `[log] format`).
    #[arg(long, env = "BACKHAUL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `backhaul_upload=debug` (overrides `[log] level`).
    #[arg(long, env = "BACKHAUL_LOG", value_parser = crate::logging::parse_filter)]
    pub log_level: Option<String>,
}

/// `backhaul run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Site configuration file (TOML).
    #[arg(
        long,
        short,
        env = "BACKHAUL_CONFIG",
        default_value = "/etc/backhaul/site.toml"
    )]
    pub config: PathBuf,
    /// Upload everything ready in the spool, then exit (0 when all verified, 1 otherwise).
    #[arg(long, env = "BACKHAUL_DRAIN")]
    pub drain: bool,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `backhaul demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Chunks the synthetic cameras record.
    #[arg(long, env = "BACKHAUL_DEMO_CHUNKS", default_value_t = 12)]
    pub chunks: u32,
    /// Size of each chunk in MiB.
    #[arg(long, env = "BACKHAUL_DEMO_CHUNK_MIB", default_value_t = 24)]
    pub chunk_mib: u32,
    /// Milliseconds between recorded chunks.
    #[arg(long, env = "BACKHAUL_DEMO_INTERVAL_MS", default_value_t = 200)]
    pub interval_ms: u64,
    /// Number of cameras (chunks go to subdirectories cam1, cam2, …).
    #[arg(long, env = "BACKHAUL_DEMO_CAMERAS", default_value_t = 2)]
    pub cameras: u32,
    /// Keep the demo directory (spool, journal, bucket) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `backhaul diagnose` and `backhaul check`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Site configuration file (TOML) with an `[inventory]` table.
    #[arg(
        long,
        short,
        env = "BACKHAUL_CONFIG",
        default_value = "/etc/backhaul/site.toml"
    )]
    pub config: PathBuf,
    /// Milliseconds to wait for each probe's answer.
    #[arg(long, env = "BACKHAUL_PROBE_TIMEOUT_MS", default_value_t = 500)]
    pub probe_timeout_ms: u64,
}

/// `backhaul check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config and probe settings.
    #[command(flatten)]
    pub probe: ProbeArgs,
    /// WARNING when the oldest chunk waiting is older than this many seconds (a plugin's -w).
    #[arg(long, default_value_t = 900)]
    pub backlog_age_warning: u64,
    /// CRITICAL when the oldest chunk waiting is older than this many seconds (a plugin's -c).
    #[arg(long, default_value_t = 3600)]
    pub backlog_age_critical: u64,
}

/// `backhaul status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Site configuration file: the agent is asked at its `metrics.listen` address.
    #[arg(
        long,
        short,
        env = "BACKHAUL_CONFIG",
        default_value = "/etc/backhaul/site.toml"
    )]
    pub config: PathBuf,
    /// Ask the agent at this URL instead (`http://127.0.0.1:9464`); the config is not read.
    #[arg(long, env = "BACKHAUL_STATUS_URL")]
    pub url: Option<String>,
    /// Print the agent's JSON document instead of the summary.
    #[arg(long)]
    pub json: bool,
}

/// `backhaul s3-server`.
#[derive(Debug, Args)]
pub struct S3ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "BACKHAUL_S3_LISTEN", default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
    /// Directory holding the buckets (one subdirectory each).
    #[arg(long, env = "BACKHAUL_S3_ROOT")]
    pub root: PathBuf,
    /// Buckets to create at start.
    #[arg(long = "bucket")]
    pub buckets: Vec<String>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// `backhaul journal …`.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Move the journal aside as `<journal>.corrupt-<ms>` and rebuild it from the spool. Run
    /// it with the agent stopped.
    Recover {
        /// Site configuration file (TOML).
        #[arg(
            long,
            short,
            env = "BACKHAUL_CONFIG",
            default_value = "/etc/backhaul/site.toml"
        )]
        config: PathBuf,
        /// Rebuild even when the journal opens fine.
        #[arg(long)]
        force: bool,
    },
}

/// `backhaul config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; errors give file:line and a hint.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Print a complete, commented example config with every default.
    Default,
}

/// `backhaul package-files` (hidden).
#[derive(Debug, Args)]
pub struct PackageFilesArgs {
    /// Directory to write `completions/` (bash, zsh, fish) and `man/` (section 1) into.
    pub out_dir: PathBuf,
}
