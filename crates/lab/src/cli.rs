//! The `lab` command line, shared by `backhaul lab …` and the standalone `backhaul-lab`.
//!
//! The binary parses [`LabCommand`] and calls [`run`] with its own path; hidden subcommands
//! (`wire`, `tcp-recv`, `tcp-send`, `wait-tcp`, `webhook`) are how the lab starts its own
//! helpers as separate processes inside namespaces, so the binary must dispatch them like the
//! visible ones (it does, by passing every `LabCommand` to [`run`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::peers::{S3Server, Uploader};
use crate::state::{self, Proc, State};
use crate::topology::{IcmpPolicy, Invocation, Lab, LabOptions, Node, prefix_of, require_root};
use crate::{Error, probe, wire};

/// Default instance name of `up`, `down`, `exec`.
pub const DEFAULT_LAB_NAME: &str = "lab";

/// What `--uploader` accepts: one uploader, or `both`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UploaderChoice {
    /// `backhaul run` with a generated site config.
    Backhaul,
    /// backhaul with `[remediation] mode = "route-mtu"`, whatever the scenario says.
    BackhaulRouteMtu,
    /// backhaul with `[remediation] mode = "restore-declared"`, whatever the scenario says.
    BackhaulRestoreDeclared,
    /// backhaul with the kernel's `net.ipv4.tcp_mtu_probing = 1` in the site.
    BackhaulMtuProbing,
    /// `rclone move` of the spool on a loop (the incumbent).
    Rclone,
    /// Every uploader, one run after the other, then a comparison.
    Both,
}

/// The uploaders `choices` name, each once, in the order given (`both` expands in place).
pub fn uploaders(choices: &[UploaderChoice]) -> Vec<Uploader> {
    let mut out: Vec<Uploader> = Vec::new();
    for choice in choices {
        let add: &[Uploader] = match choice {
            UploaderChoice::Backhaul => &[Uploader::Backhaul],
            UploaderChoice::BackhaulRouteMtu => &[Uploader::BackhaulRouteMtu],
            UploaderChoice::BackhaulRestoreDeclared => &[Uploader::BackhaulRestoreDeclared],
            UploaderChoice::BackhaulMtuProbing => &[Uploader::BackhaulMtuProbing],
            UploaderChoice::Rclone => &[Uploader::Rclone],
            UploaderChoice::Both => &Uploader::ALL,
        };
        for u in add {
            if !out.contains(u) {
                out.push(*u);
            }
        }
    }
    out
}

/// `lab run` options.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Scenario file (TOML), e.g. crates/lab/scenarios/incident-2025-11-12.toml.
    pub scenario: PathBuf,
    /// Uploader(s) under test: `backhaul`, `rclone`, `both`, or a list (`backhaul,rclone`).
    /// With more than one, the scenario runs once per uploader, one after the other, and a
    /// comparison (`<scenario>-compare-<unix>/`) is written beside the runs' reports.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "backhaul",
        env = "BACKHAUL_LAB_UPLOADER"
    )]
    pub uploader: Vec<UploaderChoice>,
    /// S3 server in the cloud namespace.
    #[arg(long, value_enum, default_value = "embedded", env = "BACKHAUL_LAB_S3")]
    pub s3: S3Server,
    /// Wall seconds per scenario second, also applied to chunk and disk sizes (1 = real time).
    #[arg(long, default_value_t = 1.0, env = "BACKHAUL_LAB_TIME_SCALE")]
    pub time_scale: f64,
    /// Directory for the report (summary.json, report.svg, samples, logs).
    #[arg(long, default_value = "lab-runs", env = "BACKHAUL_LAB_OUT_DIR")]
    pub out_dir: PathBuf,
    /// Instance name (default: bhl-<pid>-<n>).
    #[arg(long, env = "BACKHAUL_LAB_NAME")]
    pub name: Option<String>,
}

/// `backhaul lab …`: build, inspect and tear down incident labs, and run scenarios in them.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LabCommand {
    /// Build a lab (site, gw, cloud namespaces joined by the wire) and leave it running.
    Up {
        /// Instance name; namespaces are bhl-<name>-site, -gw, -cloud.
        #[arg(long, default_value = DEFAULT_LAB_NAME, env = "BACKHAUL_LAB_NAME")]
        name: String,
        /// Largest packet the site–gateway wire carries; bigger frames vanish silently.
        #[arg(long, default_value_t = 1500, env = "BACKHAUL_LAB_LAN_WIRE_MTU")]
        lan_wire_mtu_bytes: u32,
        /// Whether the gateway's ICMP "fragmentation needed" gets out.
        #[arg(long, value_enum, default_value = "block", env = "BACKHAUL_LAB_ICMP")]
        icmp: IcmpPolicy,
    },
    /// Tear a lab down (and every stale instance whose owner is gone).
    Down {
        /// Instance name.
        #[arg(long, default_value = DEFAULT_LAB_NAME, env = "BACKHAUL_LAB_NAME")]
        name: String,
        /// Tear down every lab instance, running or not.
        #[arg(long)]
        all: bool,
    },
    /// List lab instances, their namespaces, processes and wire counters.
    Status,
    /// Run a command inside a node of a lab: `lab exec site -- ping -c1 203.0.113.10`.
    Exec {
        /// Instance name.
        #[arg(long, default_value = DEFAULT_LAB_NAME, env = "BACKHAUL_LAB_NAME")]
        name: String,
        /// Node.
        #[arg(value_enum)]
        node: Node,
        /// Command and arguments.
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Run a scenario end to end and write its report.
    Run(RunArgs),
    /// (internal) The wire forwarder process.
    #[command(hide = true)]
    Wire {
        /// Lab state directory holding wire.json.
        #[arg(long)]
        dir: PathBuf,
        /// Exit when this process exits.
        #[arg(long)]
        owner: Option<u32>,
    },
    /// (internal) Receive one TCP stream, recording progress.
    #[command(hide = true)]
    TcpRecv {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// Progress file.
        #[arg(long)]
        progress: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// (internal) Send bytes over one TCP stream.
    #[command(hide = true)]
    TcpSend {
        /// Destination.
        #[arg(long)]
        to: SocketAddr,
        /// Bytes to send.
        #[arg(long, default_value_t = 1 << 20)]
        bytes: u64,
        /// Send for this many seconds instead.
        #[arg(long)]
        seconds: Option<f64>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// (internal) Wait until a TCP port accepts connections.
    #[command(hide = true)]
    WaitTcp {
        /// Address.
        #[arg(long)]
        addr: SocketAddr,
        /// Seconds.
        #[arg(long, default_value_t = 20.0)]
        timeout: f64,
    },
    /// (internal) Webhook receiver.
    #[command(hide = true)]
    Webhook {
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// JSONL file of received alerts.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a lab command from the `backhaul` binary: `backhaul_exe` is that binary, which runs
/// the lab's helpers as `backhaul_exe lab <hidden subcommand>`, the agent as `backhaul_exe run`
/// and the embedded S3 server as `backhaul_exe s3-server`.
pub fn run(cmd: LabCommand, backhaul_exe: &Path) -> Result<ExitCode, Error> {
    let lab = Invocation {
        program: backhaul_exe.to_owned(),
        prefix_args: vec!["lab".into()],
    };
    run_with(cmd, &lab, Some(backhaul_exe))
}

/// Runs a lab command with explicit executables: `lab` starts the hidden helpers; `backhaul`
/// (when known) is the agent for `--uploader backhaul` and `--s3 embedded`.
pub fn run_with(
    cmd: LabCommand,
    lab: &Invocation,
    backhaul: Option<&Path>,
) -> Result<ExitCode, Error> {
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
    match cmd {
        LabCommand::Up {
            name,
            lan_wire_mtu_bytes,
            icmp,
        } => {
            let options = LabOptions {
                name: Some(name),
                lan_wire_mtu_bytes,
                icmp,
                persistent: true,
                exe: lab.clone(),
            };
            let up = Lab::up(&options)?;
            println!("lab {} is up", up.prefix());
            for node in Node::ALL {
                println!("  {:5} netns {}", node.name(), up.ns(node));
            }
            println!("  state {}", up.dir().display());
            println!("  try: lab exec site -- ping -c1 203.0.113.10; tear down with: lab down");
            up.keep();
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { name, all } => {
            require_root()?;
            let mut errors = Vec::new();
            let targets = if all {
                state::instances()
            } else {
                vec![prefix_of(&name)?]
            };
            for prefix in targets {
                match State::load(&prefix) {
                    Ok(s) => match s.teardown() {
                        Ok(()) => println!("lab {prefix} is down"),
                        Err(e) => errors.push(e.to_string()),
                    },
                    Err(_) if !all => println!("lab {prefix} was not up"),
                    Err(_) => {}
                }
            }
            match state::clean_stale() {
                Ok(removed) => {
                    for r in removed {
                        println!("removed stale {r}");
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
            if errors.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(Error::Teardown {
                    prefix: "down".into(),
                    errors,
                })
            }
        }
        LabCommand::Status => status(),
        LabCommand::Exec { name, node, cmd } => {
            require_root()?;
            let prefix = prefix_of(&name)?;
            let attached = Lab::attach(&prefix)?;
            let Some((program, args)) = cmd.split_first() else {
                return Err(Error::NotFound("exec needs a command after --".into()));
            };
            let status = attached
                .command(node, program)
                .args(args)
                .status()
                .map_err(|source| Error::Spawn {
                    command: cmd.join(" "),
                    source,
                })?;
            Ok(ExitCode::from(
                status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1)),
            ))
        }
        LabCommand::Run(args) => crate::run::run_scenario(
            &crate::run::RunOptions {
                scenario: args.scenario,
                uploaders: uploaders(&args.uploader),
                s3: args.s3,
                time_scale: args.time_scale,
                out_dir: args.out_dir,
                name: args.name,
            },
            lab,
            backhaul,
        ),
        LabCommand::Wire { dir, owner } => {
            let owner = owner.and_then(|pid| Proc::of("owner", pid));
            wire::serve(&dir, owner)?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::TcpRecv {
            listen,
            progress,
            timeout,
        } => {
            probe::tcp_recv(listen, &progress, secs(timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::TcpSend {
            to,
            bytes,
            seconds,
            timeout,
        } => {
            probe::tcp_send(to, bytes, seconds, secs(timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::WaitTcp { addr, timeout } => {
            probe::wait_tcp(addr, secs(timeout))?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Webhook { listen, out } => {
            probe::webhook(listen, &out)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn status() -> Result<ExitCode, Error> {
    let namespaces = state::list_namespaces().unwrap_or_default();
    let instances = state::instances();
    if instances.is_empty() {
        println!("no lab instances");
    }
    for prefix in instances {
        let Ok(s) = State::load(&prefix) else {
            println!("{prefix}: unreadable state (stale; `lab down` removes it)");
            continue;
        };
        let health = if s.stale() {
            "STALE (owner gone; `lab down` removes it)"
        } else {
            "up"
        };
        println!("{prefix}: {health}");
        for ns in &s.namespaces {
            let present = if namespaces.contains(ns) {
                ""
            } else {
                " (missing)"
            };
            println!("  netns {ns}{present}");
        }
        for p in &s.processes {
            let alive = if p.alive() { "running" } else { "gone" };
            println!("  {} pid {} {alive}", p.name, p.pid);
        }
        if let Ok(counters) = wire::read_counters(&s.dir()) {
            for (link, c) in counters {
                let t = c.total();
                println!(
                    "  wire {link}: forwarded {} frames, dropped oversize {} (ESP {}, TCP {}, ICMP {}), loss {}, down {}",
                    t.forwarded_frames,
                    t.dropped_oversize,
                    t.dropped_oversize_esp,
                    t.dropped_oversize_tcp,
                    t.dropped_oversize_icmp,
                    t.dropped_loss,
                    t.dropped_down
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_uploaders_keeps_its_order_and_names_each_once() {
        use UploaderChoice as C;
        assert_eq!(
            uploaders(&[
                C::Backhaul,
                C::BackhaulRouteMtu,
                C::Both,
                C::BackhaulMtuProbing
            ]),
            [
                Uploader::Backhaul,
                Uploader::BackhaulRouteMtu,
                Uploader::Rclone,
                Uploader::BackhaulMtuProbing
            ]
        );
        assert_eq!(
            Uploader::BackhaulRestoreDeclared.name(),
            "backhaul-restore-declared"
        );
        assert!(Uploader::BackhaulMtuProbing.is_backhaul() && !Uploader::Rclone.is_backhaul());
    }
}
