//! The `backhaul netplan …` subcommands; the binary only dispatches to [`run`].

use std::ffi::OsString;
use std::io::{Read as _, Seek as _, Write as _};
use std::net::{Ipv4Addr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::apply::ApplierKind;
use crate::check::{CheckInput, Verdict, check};
use crate::connectivity::{Connectivity, ProbeTarget};
use crate::error::Error;
use crate::guard::{self, Env, SystemClock};
use crate::intent::Intent;
use crate::inventory::SiteInventory;
use crate::link::run as run_command;
use crate::lock::{Lock, Pending, start_time};
use crate::oracle::DEFAULT_NETPLAN_BINARY;
use crate::plan::{self, Plan, PlanOptions, VerifyPolicy};
use crate::report::ApplyReport;
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
    /// Apply a change only if the check passes, test connectivity for the verify window, and
    /// roll back automatically (proving the rollback) if the test fails.
    ///
    /// The verify and rollback run in a detached process that survives the operator's session;
    /// this command streams its progress. Exits 0 when the change is kept, 1 when nothing was
    /// changed because of an error, 2 when the check blocked it or it was rolled back (proven),
    /// 3 when the rollback could not be proven, 75 when another guarded apply is pending.
    Apply(Box<ApplyArgs>),
    /// The detached verifier of `apply` (started by it; not for operators).
    #[command(hide = true)]
    ApplyRun {
        /// The run directory holding `plan.json`.
        #[arg(long)]
        run_dir: PathBuf,
    },
}

/// What `check` and `apply` read: the proposed and current config, intent, inventory, host.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
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
    /// Site inventory: the agent's site.toml (its [inventory]) or a file with that table's
    /// keys, TOML or YAML [default: /etc/backhaul/site.toml when it exists].
    #[arg(long, env = "BACKHAUL_NETPLAN_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// The host's interfaces as a file (TOML or YAML, `[[interfaces]]` name/mac/driver/mtu_bytes)
    /// instead of reading sysfs.
    #[arg(long, env = "BACKHAUL_NETPLAN_INTERFACES")]
    pub interfaces: Option<PathBuf>,
    /// sysfs mount to read interfaces from.
    #[arg(long, default_value = "/sys", env = "BACKHAUL_NETPLAN_SYS_ROOT")]
    pub sys_root: PathBuf,
    /// The netplan binary used as a second opinion (and by `apply --applier netplan`).
    #[arg(long, default_value = DEFAULT_NETPLAN_BINARY, env = "BACKHAUL_NETPLAN_BINARY")]
    pub netplan: PathBuf,
    /// Do not run `netplan generate`.
    #[arg(long, env = "BACKHAUL_NETPLAN_NO_NETPLAN")]
    pub no_netplan: bool,
}

/// Arguments of `backhaul netplan check`.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Inputs.
    #[command(flatten)]
    pub input: InputArgs,
    /// Print the report as JSON.
    #[arg(long, env = "BACKHAUL_NETPLAN_JSON")]
    pub json: bool,
}

/// How `apply` reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApplierChoice {
    /// `netplan apply` (hosts with a renderer; needs --root /).
    Netplan,
    /// `ip link`/`ip addr` in the current network namespace (labs, hosts without a renderer).
    IpLink,
}

/// Arguments of `backhaul netplan apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// Inputs, as for `check`.
    #[command(flatten)]
    pub input: InputArgs,
    /// How long to test connectivity after applying (`300`, `20s`, `5m`).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "BACKHAUL_NETPLAN_VERIFY")]
    pub verify: Duration,
    /// Pause between verify rounds.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "BACKHAUL_NETPLAN_VERIFY_INTERVAL")]
    pub verify_interval: Duration,
    /// Rounds worse than the baseline in a row that roll the change back.
    #[arg(long, default_value_t = plan::DEFAULT_FAIL_AFTER_ROUNDS, env = "BACKHAUL_NETPLAN_FAIL_AFTER")]
    pub fail_after: u32,
    /// Wait after applying (and after rolling back) before reading the kernel and probing.
    #[arg(long, default_value = "2s", value_parser = parse_duration, env = "BACKHAUL_NETPLAN_SETTLE")]
    pub settle: Duration,
    /// The WAN gateway to probe (default: the default route's gateway).
    #[arg(long, env = "BACKHAUL_NETPLAN_GATEWAY")]
    pub gateway: Option<Ipv4Addr>,
    /// The upload endpoint to probe (address or host name; IPv4).
    #[arg(long, env = "BACKHAUL_NETPLAN_ENDPOINT")]
    pub endpoint: Option<String>,
    /// Milliseconds to wait for each probe's answer.
    #[arg(long, default_value_t = 500, env = "BACKHAUL_NETPLAN_PROBE_TIMEOUT_MS")]
    pub probe_timeout_ms: u64,
    /// How to apply.
    #[arg(
        long,
        value_enum,
        default_value = "netplan",
        env = "BACKHAUL_NETPLAN_APPLIER"
    )]
    pub applier: ApplierChoice,
    /// The `ip` binary (ip-link applier, rollback, default gateway).
    #[arg(long, default_value = "ip", env = "BACKHAUL_NETPLAN_IP")]
    pub ip: PathBuf,
    /// Where runs (plan, progress, backup, report) and the pending lock are kept.
    #[arg(long, default_value = plan::DEFAULT_STATE_DIR, env = "BACKHAUL_NETPLAN_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print every step it would take and change nothing.
    #[arg(long, env = "BACKHAUL_NETPLAN_DRY_RUN")]
    pub dry_run: bool,
    /// Clear the lock of an earlier apply whose process is gone (after checking the links).
    #[arg(long)]
    pub clear_stale: bool,
}

/// Parses `300`, `20s`, `5m`, `1h`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 20s, 5m)"))?;
    let ms = match unit {
        "" | "s" => n.checked_mul(1000),
        "ms" => Some(n),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("unknown unit in `{text}`: use ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// What the binary provides: how to start this command again (for the detached verifier) and
/// the real probes (this crate does not own them).
pub struct Runtime {
    /// The program and the arguments before `netplan` subcommands (`[backhaul, netplan]`).
    pub self_command: Vec<OsString>,
    /// Builds the connectivity test toward `targets`.
    pub connectivity: fn(&[ProbeTarget], &VerifyPolicy) -> Box<dyn Connectivity>,
}

/// Runs a `netplan` subcommand and returns its exit code.
pub fn run(cmd: NetplanCommand, rt: &Runtime) -> Result<ExitCode, Error> {
    match cmd {
        NetplanCommand::Check(args) => run_check(&args),
        NetplanCommand::Apply(args) => run_apply(&args, rt),
        NetplanCommand::ApplyRun { run_dir } => run_detached(&run_dir, rt),
    }
}

fn load_input(args: &InputArgs) -> Result<CheckInput, Error> {
    let intent = match (&args.intent, &args.ticket) {
        (Some(text), _) => Some(Intent::parse(text)?),
        (None, Some(path)) => Some(Intent::load(path)?),
        (None, None) => None,
    };
    // The agent's own config by default, so the guard and the agent agree on the WAN.
    let default_site = Path::new(crate::inventory::DEFAULT_SITE_CONFIG);
    let inventory = match &args.inventory {
        Some(p) => SiteInventory::load(p)?,
        None if default_site.exists() => {
            SiteInventory::from_site_config(default_site)?.unwrap_or_default()
        }
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
    Ok(CheckInput {
        current: ConfigFiles::load_search_path(&args.root)?,
        proposed: ConfigFiles::load_proposed(&args.root, &args.proposed)?,
        intent,
        inventory,
        system,
        netplan: (!args.no_netplan).then(|| args.netplan.clone()),
    })
}

fn print(text: &str) -> Result<(), Error> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        // A closed pipe (`| head`) is not a failure of the command.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(Error::Output),
    }
}

fn run_check(args: &CheckArgs) -> Result<ExitCode, Error> {
    let report = check(&load_input(&args.input)?)?;
    let text = if args.json {
        let mut s = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::Output(std::io::Error::other(e)))?;
        s.push('\n');
        s
    } else {
        report.render_text()
    };
    print(&text)?;
    Ok(ExitCode::from(report.verdict.exit_code()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The gateway of the IPv4 default route (`default via 192.0.2.1 dev eno1`).
fn default_gateway(ip: &Path) -> Option<Ipv4Addr> {
    let out = run_command(&[
        ip.display().to_string(),
        "-4".into(),
        "route".into(),
        "show".into(),
        "default".into(),
    ])
    .ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)?
        .parse()
        .ok()
}

/// The probe targets: the flags, else the inventory's gateway and endpoint, else the default
/// route's gateway.
fn targets(args: &ApplyArgs, inventory: &SiteInventory) -> Result<Vec<ProbeTarget>, Error> {
    let mut out = Vec::new();
    let inventory_gateway = match inventory.gateway {
        Some(std::net::IpAddr::V4(v4)) => Some(v4),
        _ => None,
    };
    if let Some(addr) = args
        .gateway
        .or(inventory_gateway)
        .or_else(|| default_gateway(&args.ip))
    {
        out.push(ProbeTarget {
            name: "gateway".into(),
            addr,
        });
    }
    // The inventory's endpoint may carry a port (`host:9000`); probes need the host.
    let from_inventory = inventory
        .endpoint_host
        .as_deref()
        .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_owned());
    if let Some(host) = args.endpoint.clone().or(from_inventory) {
        let addr = match host.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => (host.as_str(), 443)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| {
                    it.find_map(|s| match s.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                }),
        };
        let addr = addr.ok_or_else(|| Error::Usage {
            message: format!("the endpoint `{host}` has no IPv4 address"),
            help: "pass --endpoint as an IPv4 address or a name that resolves to one".into(),
        })?;
        out.push(ProbeTarget {
            name: "endpoint".into(),
            addr,
        });
    }
    Ok(out)
}

fn run_apply(args: &ApplyArgs, rt: &Runtime) -> Result<ExitCode, Error> {
    if args.clear_stale
        && let Some(p) = Lock::clear_stale(&args.state_dir)?
    {
        print(&format!(
            "cleared the stale lock of run {} (pid {}); its record is {}\n",
            p.id,
            p.pid,
            p.run_dir.join("lock-stale.json").display()
        ))?;
    }
    if !args.dry_run {
        // Before the check: with a change pending, the check would judge its half-applied files.
        Lock::ensure_free(&args.state_dir)?;
    }
    let input = load_input(&args.input)?;
    let report = check(&input)?;
    print(&report.render_text())?;
    if report.verdict == Verdict::Block {
        print("not applied: the check blocks this change\n")?;
        return Ok(ExitCode::from(Verdict::Block.exit_code()));
    }
    if args.applier == ApplierChoice::Netplan && args.input.root != Path::new("/") {
        return Err(Error::Usage {
            message: format!(
                "`netplan apply` reads /etc/netplan, not {}",
                args.input.root.display()
            ),
            help: "use --root / with --applier netplan, or --applier ip-link for another root"
                .into(),
        });
    }
    let verify = VerifyPolicy {
        window_ms: args.verify.as_millis() as u64,
        interval_ms: args.verify_interval.as_millis() as u64,
        settle_ms: args.settle.as_millis() as u64,
        fail_after_rounds: args.fail_after,
        probe_timeout_ms: args.probe_timeout_ms,
    };
    let applier = match args.applier {
        ApplierChoice::Netplan => ApplierKind::Netplan {
            binary: args.input.netplan.clone(),
        },
        ApplierChoice::IpLink => ApplierKind::IpLink {
            ip: args.ip.clone(),
            sys_root: args.input.sys_root.clone(),
        },
    };
    let ticket = input.intent.as_ref().and_then(|i| i.ticket.clone());
    let options = PlanOptions {
        id: format!("{}-{}", plan::utc_stamp(unix_now()), std::process::id()),
        root: args.input.root.clone(),
        proposed_path: args.input.proposed.clone(),
        state_dir: args.state_dir.clone(),
        ticket: ticket.clone(),
        inventory: input.inventory.clone(),
        system: input.system.clone(),
        targets: targets(args, &input.inventory)?,
        verify: verify.clone(),
        applier,
        sys_root: args.input.sys_root.clone(),
        ip: args.ip.clone(),
    };
    let (plan, target) = Plan::new(options, &input.current, &input.proposed)?;
    if args.dry_run {
        let links = plan.links_seam();
        let connectivity = (rt.connectivity)(&plan.targets, &plan.verify);
        let mut text = plan.render_dry_run(
            &target,
            plan.applier.build().as_ref(),
            &links,
            connectivity.as_ref(),
        );
        if let Some(p) = Lock::read(&args.state_dir)? {
            text.push_str(&format!(
                "note: run {} (pid {}) holds {}; a real apply would stop here\n",
                p.id,
                p.pid,
                Lock::path_in(&args.state_dir).display()
            ));
        }
        print(&text)?;
        return Ok(ExitCode::from(report.verdict.exit_code()));
    }
    let verify_until_unix = unix_now() + (verify.settle_ms + verify.window_ms).div_ceil(1000);
    let mut pending = Pending {
        id: plan.id.clone(),
        pid: std::process::id(),
        start_time: start_time(std::process::id()),
        run_dir: plan.run_dir.clone(),
        ticket,
        verify_until_unix,
    };
    let lock = Lock::acquire(&args.state_dir, &pending)?;
    let child = plan.save().and_then(|()| spawn_verifier(&plan, rt));
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            // Nothing changed yet: free the lock so the next attempt is not blocked.
            std::fs::create_dir_all(&plan.run_dir).ok();
            lock.release(&plan.run_dir).ok();
            return Err(e);
        }
    };
    pending.pid = child.id();
    pending.start_time = start_time(child.id());
    lock.update(&pending)?;
    print(&format!(
        "run {}: the verifier (pid {}) owns the change now; it keeps going if this session ends\n\
         follow: tail -f {}\n",
        plan.id,
        child.id(),
        plan.run_dir.join("progress.log").display()
    ))?;
    follow(&plan.run_dir, &mut child)
}

fn spawn_verifier(plan: &Plan, rt: &Runtime) -> Result<std::process::Child, Error> {
    use std::os::unix::process::CommandExt as _;
    let log_path = plan.run_dir.join("verify.log");
    let log = std::fs::File::create(&log_path).map_err(|source| Error::Io {
        op: "create",
        path: log_path.clone(),
        help: "check the state directory",
        source,
    })?;
    let err_log = log.try_clone().map_err(|source| Error::Io {
        op: "open",
        path: log_path.clone(),
        help: "check the state directory",
        source,
    })?;
    let Some((program, prefix)) = rt.self_command.split_first() else {
        return Err(Error::Usage {
            message: "no program to start the verifier with".into(),
            help: "this is a bug in the caller of backhaul_netplan::cli::run".into(),
        });
    };
    let mut c = Command::new(program);
    c.args(prefix)
        .arg("apply-run")
        .arg("--run-dir")
        .arg(&plan.run_dir)
        // Its own process group: Ctrl-C or a hangup of the operator's terminal reaches the
        // foreground group only, so the verify and the rollback run to their end (like
        // `netplan try`). Its output goes to files, never to a terminal that may be gone.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    c.spawn().map_err(|source| Error::Spawn {
        command: format!("{} apply-run", program.to_string_lossy()),
        source,
    })
}

/// Streams `progress.log` until the verifier exits, then prints its report.
fn follow(run_dir: &Path, child: &mut std::process::Child) -> Result<ExitCode, Error> {
    let progress = run_dir.join("progress.log");
    let mut offset = 0u64;
    loop {
        let finished = child.try_wait().map_err(Error::Output)?;
        if let Ok(mut f) = std::fs::File::open(&progress)
            && f.seek(std::io::SeekFrom::Start(offset)).is_ok()
        {
            let mut chunk = String::new();
            if let Ok(n) = f.read_to_string(&mut chunk) {
                offset += n as u64;
                print(&chunk)?;
            }
        }
        if finished.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let path = run_dir.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        path: path.clone(),
        help: "the verifier ended without a report; see verify.log in the same directory and check the links",
        source,
    })?;
    let report: ApplyReport =
        serde_json::from_str(&text).map_err(|source| Error::State { path, source })?;
    print(&report.render_text())?;
    Ok(ExitCode::from(report.outcome.exit_code()))
}

/// The detached verifier: runs the plan, writes the report, releases the lock.
fn run_detached(run_dir: &Path, rt: &Runtime) -> Result<ExitCode, Error> {
    let plan = Plan::load(run_dir)?;
    let me = std::process::id();
    let lock = Lock::adopt(
        &plan.state_dir,
        &plan.id,
        &Pending {
            id: plan.id.clone(),
            pid: me,
            start_time: start_time(me),
            run_dir: plan.run_dir.clone(),
            ticket: plan.ticket.clone(),
            verify_until_unix: unix_now()
                + (plan.verify.settle_ms + plan.verify.window_ms).div_ceil(1000),
        },
    )?;
    let progress_path = run_dir.join("progress.log");
    let mut progress = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&progress_path)
        .map_err(|source| Error::Io {
            op: "open",
            path: progress_path.clone(),
            help: "check the state directory",
            source,
        })?;
    let mut sink = |line: &str| {
        // Progress is a courtesy; the report below is the record, so a failed write here
        // must not stop a rollback.
        let _ignored = writeln!(progress, "{line}");
    };
    let mut applier = plan.applier.build();
    let mut links = plan.links_seam();
    let mut connectivity = (rt.connectivity)(&plan.targets, &plan.verify);
    let mut clock = SystemClock::start();
    let report = guard::execute(
        &plan,
        &mut Env {
            applier: applier.as_mut(),
            links: &mut links,
            connectivity: connectivity.as_mut(),
            clock: &mut clock,
            progress: &mut sink,
        },
    );
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| Error::Output(std::io::Error::other(e)))?;
    let write = |name: &str, text: &str| {
        let path = run_dir.join(name);
        std::fs::write(&path, text).map_err(|source| Error::Io {
            op: "write",
            path,
            help: "check the state directory",
            source,
        })
    };
    write("report.txt", &report.render_text())?;
    write("report.json", &json)?;
    lock.release(run_dir)?;
    Ok(ExitCode::from(report.outcome.exit_code()))
}
