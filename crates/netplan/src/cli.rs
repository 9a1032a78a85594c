//! The `backhaul netplan …` subcommands; the binary only dispatches to [`run`].

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::check::{CheckInput, check};
use crate::error::Error;
use crate::intent::Intent;
use crate::inventory::SiteInventory;
use crate::oracle::DEFAULT_NETPLAN_BINARY;
use crate::resolve::SystemInterfaces;
use crate::source::ConfigFiles;

/// Netplan change guard.
#[derive(Debug, clap::Subcommand)]
pub enum NetplanCommand {
    /// Check a proposed netplan change against its declared intent and the site's policy.
    ///
    /// Prints the effective per-interface diff and the verdict. Exits 0 when clean, 1 with
    /// warnings, 2 when the change must not be applied.
    Check(CheckArgs),
}

/// Arguments of `backhaul netplan check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// The proposed config: a directory replacing /etc/netplan, or one file replacing its
    /// namesake there.
    #[arg(env = "BACKHAUL_NETPLAN_PROPOSED")]
    pub proposed: PathBuf,
    /// Root of the current config (reads ROOT/{lib,etc,run}/netplan).
    #[arg(long, default_value = "/", env = "BACKHAUL_NETPLAN_ROOT")]
    pub root: PathBuf,
    /// What the change declares, e.g. "eno2.mtu=9000" (comma-separated interface.key[=value]).
    #[arg(long, env = "BACKHAUL_NETPLAN_INTENT", conflicts_with = "ticket")]
    pub intent: Option<String>,
    /// A ticket file (TOML or YAML) with `ticket` and `intent = [...]`.
    #[arg(long, env = "BACKHAUL_NETPLAN_TICKET")]
    pub ticket: Option<PathBuf>,
    /// Site inventory (TOML or YAML): interface roles, declared MTUs, upstream path MTU.
    #[arg(long, env = "BACKHAUL_NETPLAN_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// The host's interfaces as a file (TOML or YAML, `[[interfaces]]` name/mac/driver/mtu_bytes)
    /// instead of reading sysfs.
    #[arg(long, env = "BACKHAUL_NETPLAN_INTERFACES")]
    pub interfaces: Option<PathBuf>,
    /// sysfs mount to read interfaces from.
    #[arg(long, default_value = "/sys", env = "BACKHAUL_NETPLAN_SYS_ROOT")]
    pub sys_root: PathBuf,
    /// The netplan binary used as a second opinion.
    #[arg(long, default_value = DEFAULT_NETPLAN_BINARY, env = "BACKHAUL_NETPLAN_BINARY")]
    pub netplan: PathBuf,
    /// Do not run `netplan generate`.
    #[arg(long, env = "BACKHAUL_NETPLAN_NO_NETPLAN")]
    pub no_netplan: bool,
    /// Print the report as JSON.
    #[arg(long, env = "BACKHAUL_NETPLAN_JSON")]
    pub json: bool,
}

/// Runs a `netplan` subcommand and returns its exit code (0 pass, 1 warnings, 2 block).
pub fn run(cmd: NetplanCommand) -> Result<ExitCode, Error> {
    match cmd {
        NetplanCommand::Check(args) => run_check(&args),
    }
}

fn run_check(args: &CheckArgs) -> Result<ExitCode, Error> {
    let intent = match (&args.intent, &args.ticket) {
        (Some(text), _) => Some(Intent::parse(text)?),
        (None, Some(path)) => Some(Intent::load(path)?),
        (None, None) => None,
    };
    let inventory = match &args.inventory {
        Some(p) => SiteInventory::load(p)?,
        None => SiteInventory::default(),
    };
    let system = match &args.interfaces {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| Error::Read {
                path: p.clone(),
                help: "pass an interface list with --interfaces, or drop it to read sysfs",
                source,
            })?;
            crate::inventory::from_file_text(
                p,
                &text,
                "an interface list holds [[interfaces]] with name, mac, driver, mtu_bytes",
            )?
        }
        None => SystemInterfaces::from_sysfs(&args.sys_root)?,
    };
    let input = CheckInput {
        current: ConfigFiles::load_search_path(&args.root)?,
        proposed: ConfigFiles::load_proposed(&args.root, &args.proposed)?,
        intent,
        inventory,
        system,
        netplan: (!args.no_netplan).then(|| args.netplan.clone()),
    };
    let report = check(&input)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Output(std::io::Error::other(e)))?;
        s.push('\n');
        s
    } else {
        report.render_text()
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is not a failure of the check.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.map_err(Error::Output)?,
    }
    Ok(ExitCode::from(report.verdict.exit_code()))
}
