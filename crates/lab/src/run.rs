//! The scenario runner: builds a lab, starts the peers (S3 server and webhook receiver in the
//! cloud, camera simulator writing the spool, the uploader under test in the site), plays the
//! timeline, samples what happens, then writes the report (see [`crate::report`]).
//!
//! Measurements are uploader-neutral: a chunk counts as delivered when it has left the spool
//! (both `backhaul` with `after_upload = "delete"` and `rclone move` remove a chunk only after
//! the store acknowledged it), and at the end the bucket itself is listed: a chunk that is
//! neither in the bucket nor still in the spool is *lost*. Throughput on the wire comes from the
//! wire's own counters (site → cloud on the `wan` link), retransmissions included.
//!
//! Time: `--time-scale` multiplies every scenario duration, chunk size and disk size, and keeps
//! the link rate and RTT. Utilisation, backlog in chunks and disk percentages then follow the
//! real timeline; TCP's and the uploaders' own timers do not scale (an RTO backoff or a 15 s
//! stall timeout is a bigger share of a compressed outage), which the README discusses.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::peers::{S3Server, Uploader};
use crate::report::{self, AppliedEvent, Sample, Summary};
use crate::scenario::{self, Action, Scenario};
use crate::topology::{CLOUD_ADDR, Invocation, Lab, LabOptions, Node, require_root};
use crate::vpn::{CLOUD_INNER_ADDR, Tunnel};
use crate::{Error, cmd, compare, probe};

mod bystander;
mod cloud;
mod site;

use bystander::Bystander;
use cloud::{Cloud, S3};
use site::{
    Camera, SpoolDisk, backhaul_config, scaled_timer, spool_files, used_bytes, write_backlog,
    write_chunk,
};

/// Access key the lab's S3 servers and uploaders use (the embedded server's fixed key; moto
/// accepts any).
pub const S3_ACCESS_KEY: &str = "BACKHAULDEMOKEY";
/// Secret key to match.
pub const S3_SECRET_KEY: &str = "backhaul-demo-secret-key";
/// Bucket the uploaders write to.
pub const BUCKET: &str = "site-video";
/// Site name (first component of object keys).
pub const SITE: &str = "SITE-2847";
/// S3 port in the cloud.
const S3_PORT: u16 = 9000;
/// Webhook receiver port in the cloud.
const WEBHOOK_PORT: u16 = 8080;

/// Where the site reaches the cloud's services (S3, the webhook receiver): the cloud's own
/// address, or its inner address behind the `[vpn]` tunnel, with the site charon's VICI socket.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    /// The address S3 and the webhook receiver listen on.
    pub(crate) addr: String,
    /// The site charon's VICI socket, for the agent's `[monitor] vici_socket`.
    pub(crate) vici_socket: Option<PathBuf>,
}

/// The longest the agent takes, at real time, to resolve an incident after its fault ends
/// (issue #11's target is 10 s) with room to see it re-open.
const AGENT_RESOLVE_WALL: Duration = Duration::from_secs(30);

/// Scenario clock: scenario seconds since the start.
#[derive(Debug, Clone, Copy)]
struct Clock {
    start: Instant,
    scale: f64,
}

impl Clock {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() / self.scale
    }

    fn wall(&self, scenario_seconds: f64) -> Duration {
        Duration::from_secs_f64((scenario_seconds * self.scale).max(0.0))
    }
}

fn open_log(path: &Path) -> Result<std::fs::File, Error> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// Strips the host's cloud and proxy settings from a peer's environment: AWS_* (credentials,
/// a CA bundle rclone cannot combine with plain HTTP) and *_PROXY, so nothing in the lab talks
/// to, or authenticates as, anything outside it.
fn scrub_env(c: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy().to_ascii_uppercase();
        if k.starts_with("AWS_") || k.ends_with("_PROXY") {
            c.env_remove(&key);
        }
    }
}

/// What `lab run` was asked for, whatever asked (the CLI builds it from its flags).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scenario file.
    pub scenario: PathBuf,
    /// Uploaders under test, each once, in order.
    pub uploaders: Vec<Uploader>,
    /// S3 server in the cloud namespace.
    pub s3: S3Server,
    /// Wall seconds per scenario second.
    pub time_scale: f64,
    /// Directory for the reports.
    pub out_dir: PathBuf,
    /// Lab instance name.
    pub name: Option<String>,
}

/// Runs `lab run`: the scenario once per uploader asked for, one after the other (each in its
/// own lab, so one run's leftovers cannot slow the next), then, with more than one uploader, the
/// comparison (see [`crate::compare`]). Returns exit code 0 when every run's assertions held,
/// 1 otherwise.
pub fn run_scenario(
    args: &RunOptions,
    invocation: &Invocation,
    backhaul: Option<&Path>,
) -> Result<ExitCode, Error> {
    require_root()?;
    let scenario = scenario::load(&args.scenario)?;
    if !(args.time_scale.is_finite() && args.time_scale > 0.0) {
        return Err(Error::Scenario(format!(
            "--time-scale {} must be > 0\nhelp: 1 is real time, 0.02 runs an hour in 72 s",
            args.time_scale
        )));
    }
    let uploaders = &args.uploaders;
    // Checked before the first run, so `both` does not fail half-way through.
    if uploaders.iter().any(|u| u.is_backhaul()) && backhaul.is_none() {
        return Err(Error::NotFound(
            "--uploader backhaul needs the backhaul binary\nhelp: run `backhaul lab run …`, or \
             pass --backhaul-exe / BACKHAUL_EXE"
                .into(),
        ));
    }
    crate::sys::catch_terminate();
    // One stamp for every run of this command, so the runs and their comparison sort together.
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let [only] = uploaders.as_slice() else {
        return run_several(&scenario, args, uploaders, invocation, backhaul, stamp);
    };
    let summary = run_once(&scenario, args, *only, invocation, backhaul, stamp)?;
    Ok(exit_code(summary.asserts.iter().all(|a| a.passed)))
}

fn exit_code(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs every uploader in turn and writes the comparison of those that finished. A run that
/// fails with an error is reported and skipped, so the other uploader's figures are not lost;
/// an interruption stops everything.
fn run_several(
    scenario: &Scenario,
    args: &RunOptions,
    uploaders: &[Uploader],
    invocation: &Invocation,
    backhaul: Option<&Path>,
    stamp: u64,
) -> Result<ExitCode, Error> {
    let mut summaries = Vec::new();
    let mut passed = true;
    for &uploader in uploaders {
        match run_once(scenario, args, uploader, invocation, backhaul, stamp) {
            Ok(summary) => {
                passed &= summary.asserts.iter().all(|a| a.passed);
                summaries.push(summary);
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                passed = false;
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                tracing::error!(uploader = uploader.name(), error = %text, "run failed");
                eprintln!("run with {} failed: {text}", uploader.name());
            }
        }
    }
    if summaries.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let comparison = compare::Comparison::build(&summaries);
    let out = args
        .out_dir
        .join(format!("{}-compare-{stamp}", scenario.name));
    std::fs::create_dir_all(&out).map_err(|e| Error::io("create directory", &out, e))?;
    compare::write(&comparison, &summaries, &out)?;
    println!("{}", comparison.table());
    println!("comparison: {}", out.display());
    Ok(exit_code(passed))
}

/// One run: builds a lab, plays the scenario with `uploader`, tears the lab down, writes the
/// report into `<out-dir>/<scenario>-<uploader>-<stamp>/` and prints its summary.
fn run_once(
    scenario: &Scenario,
    args: &RunOptions,
    uploader: Uploader,
    invocation: &Invocation,
    backhaul: Option<&Path>,
    stamp: u64,
) -> Result<Summary, Error> {
    let out = args
        .out_dir
        .join(format!("{}-{}-{stamp}", scenario.name, uploader.name()));
    std::fs::create_dir_all(&out).map_err(|e| Error::io("create directory", &out, e))?;
    let out = std::fs::canonicalize(&out).map_err(|e| Error::io("resolve", &out, e))?;

    let mut options = LabOptions::new(invocation.clone());
    options.name = args.name.clone();
    options.lan_wire_mtu_bytes = scenario.network.lan_wire_mtu_bytes;
    options.icmp = scenario.network.icmp;
    // From here on the lab guard tears everything down on every exit path, panics included.
    let mut lab = Lab::up(&options)?;
    tracing::info!(lab = lab.prefix(), uploader = uploader.name(), out = %out.display(),
        "scenario {} starting", scenario.name);
    let result = play(
        scenario, args, uploader, &mut lab, invocation, backhaul, &out,
    );
    let teardown = lab.down();
    let summary = result?;
    teardown?;
    println!("{}", report::text(&summary));
    println!("report: {}", out.display());
    Ok(summary)
}

fn play(
    scenario: &Scenario,
    args: &RunOptions,
    uploader_kind: Uploader,
    lab: &mut Lab,
    invocation: &Invocation,
    backhaul: Option<&Path>,
    out: &Path,
) -> Result<Summary, Error> {
    let scale = args.time_scale;
    shape_network(lab, scenario, uploader_kind)?;
    let mut tunnel = match &scenario.vpn {
        Some(cfg) => Some(Tunnel::start(lab, cfg, out)?),
        None => None,
    };
    let service = match &tunnel {
        Some(t) => Service {
            addr: CLOUD_INNER_ADDR.to_owned(),
            vici_socket: Some(t.site_vici()),
        },
        None => Service {
            addr: CLOUD_ADDR.to_owned(),
            vici_socket: None,
        },
    };
    let disk = SpoolDisk::mount(lab, scenario, scale)?;
    let backlog = write_backlog(scenario, &disk.spool, scale)?;
    let mut cloud = Cloud::start(lab, invocation, args.s3, backhaul, out, &service.addr)?;
    let bystander = if scenario.bystander_tcp {
        Some(Bystander::start(lab, invocation, out)?)
    } else {
        None
    };
    let spec = UploaderSpec {
        kind: uploader_kind,
        backhaul,
        cap_net_raw: scenario.agent_cap_net_raw,
        remediation: match uploader_kind {
            Uploader::BackhaulRouteMtu => scenario::Remediation::RouteMtu,
            Uploader::BackhaulRestoreDeclared => scenario::Remediation::RestoreDeclared,
            _ => scenario.agent_remediation,
        },
        service,
    };
    let mut uploader = spawn_uploader(lab, &spec, &cloud, &disk, out, scale)?;
    lab.track("uploader", uploader.id())?;
    let clock = Clock {
        start: Instant::now(),
        scale,
    };
    let camera = Camera::start(&scenario.camera, disk.spool.clone(), clock, backlog);

    let played = play_timeline(
        scenario,
        lab,
        invocation,
        (&mut cloud, bystander.as_ref(), tunnel.as_mut()),
        &disk,
        &camera,
        clock,
    );
    drop(bystander);
    let recorded = camera.stop();
    let _ignored = uploader.kill();
    let _ignored = uploader.wait();
    // The rclone loop's shell has children; nothing in the site may touch the spool or the
    // bucket while they are counted.
    crate::state::kill_namespace_processes(&lab.ns(Node::Site));
    let (samples, applied) = match played {
        Ok(v) => v,
        Err(e) => {
            cloud.s3.stop();
            return Err(e);
        }
    };
    let recorded = recorded?;
    if cloud.s3.child.is_none() {
        cloud.s3.start(lab, invocation)?;
    }
    let bucket = cloud.objects(lab)?;
    let left = spool_files(&disk.spool);
    let names: BTreeSet<&str> = recorded.written.iter().map(|w| w.name.as_str()).collect();
    let lost: Vec<String> = names
        .iter()
        .filter(|n| !bucket.contains_key(**n) && !left.contains_key(**n))
        .map(|n| (*n).to_owned())
        .collect();
    let bytes_delivered: u64 = recorded
        .written
        .iter()
        .filter(|w| bucket.get(&w.name) == Some(&w.bytes))
        .map(|w| w.bytes)
        .sum();
    let alerts = probe::read_alerts(&cloud.alerts);
    let start_unix_ms = SystemTime::now()
        .checked_sub(clock.start.elapsed())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    let frag_needed = lab.frag_needed_sent().unwrap_or(0);
    let wire = lab.counters().unwrap_or_default();
    cloud.s3.stop();
    let summary = report::summarize(report::Inputs {
        scenario,
        uploader: uploader_kind,
        s3: cloud.s3.kind,
        time_scale: scale,
        samples,
        events: applied,
        alerts,
        start_unix_ms,
        chunks_written: recorded.written.len() as u64,
        chunks_not_recorded: recorded.not_recorded,
        chunks_in_bucket: recorded
            .written
            .iter()
            .filter(|w| bucket.contains_key(&w.name))
            .count() as u64,
        chunks_left_in_spool: left.len() as u64,
        lost,
        bytes_delivered,
        frag_needed_sent: frag_needed,
        wire,
    });
    report::write(&summary, out)?;
    Ok(summary)
}

/// Network shape: RTT as delay on the wan wire, rate as tbf on the gateway's uplink, and the
/// site's TCP MTU probing (1 for [`Uploader::BackhaulMtuProbing`]).
fn shape_network(lab: &mut Lab, scenario: &Scenario, uploader: Uploader) -> Result<(), Error> {
    let network = &scenario.network;
    let half_rtt = network.rtt_ms / 2;
    lab.set_link("wan", |s| {
        s.delay_ms = half_rtt;
        s.loss_percent = network.loss_percent;
        s.jitter_ms = network.jitter_ms;
    })?;
    lab.set_rate(network.rate_mbit)?;
    let probing = match uploader {
        Uploader::BackhaulMtuProbing => 1,
        _ => network.tcp_mtu_probing,
    };
    if probing != 0 {
        let value = format!("net.ipv4.tcp_mtu_probing={probing}");
        cmd::in_ns(&lab.ns(Node::Site), "sysctl", &["-q", "-w", &value])?;
    }
    Ok(())
}

/// What runs as the uploader under test.
struct UploaderSpec<'a> {
    kind: Uploader,
    /// The backhaul binary (for [`Uploader::Backhaul`]).
    backhaul: Option<&'a Path>,
    /// Whether backhaul keeps CAP_NET_RAW.
    cap_net_raw: bool,
    /// backhaul's `[remediation] mode`.
    remediation: scenario::Remediation,
    /// Where S3 and the webhook are.
    service: Service,
}

/// The uploader under test, started in the site.
fn spawn_uploader(
    lab: &Lab,
    spec: &UploaderSpec<'_>,
    cloud: &Cloud,
    disk: &SpoolDisk,
    out: &Path,
    scale: f64,
) -> Result<std::process::Child, Error> {
    let log = open_log(&out.join("uploader.log"))?;
    let log2 = log.try_clone().map_err(|e| Error::io("open", out, e))?;
    let spool = &disk.spool;
    let mut uploader = match spec.kind {
        Uploader::Backhaul
        | Uploader::BackhaulRouteMtu
        | Uploader::BackhaulRestoreDeclared
        | Uploader::BackhaulMtuProbing => {
            let exe = spec.backhaul.map(Path::to_owned).unwrap_or_default();
            let config = out.join("site.toml");
            backhaul_config(&config, spool, out, spec.remediation, scale, &spec.service)?;
            let mut c = if spec.cap_net_raw {
                lab.command(Node::Site, &exe.to_string_lossy())
            } else {
                // Out of the bounding set, so not even root gets it back.
                let mut c = lab.command(Node::Site, "setpriv");
                c.args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"])
                    .arg(&exe);
                c
            };
            // Alerts go to the webhook receiver through the config's `[monitor] webhook_url`.
            c.args(["run", "--config"]).arg(&config);
            c
        }
        Uploader::Rclone => {
            // The incumbent: `rclone move` of the spool on a loop, as sites run it from cron or
            // a systemd timer. Default timeouts: rclone as people run it.
            // rclone's own defaults (--timeout 5m, --contimeout 1m) scaled like the clock.
            let script = format!(
                "while :; do rclone --config '{}' move '{}' 'lab:{BUCKET}/{SITE}' \
                 --exclude '*.part' --exclude '.*' --exclude '.*/**' -v --stats 0 \
                 --timeout {:.1}s --contimeout {:.1}s; sleep {:.2}; done",
                cloud.rclone_conf.display(),
                spool.display(),
                scaled_timer(300.0, scale, 1.0),
                scaled_timer(60.0, scale, 1.0),
                scaled_timer(60.0, scale, 0.2),
            );
            let mut c = lab.command(Node::Site, "sh");
            c.args(["-c", &script]);
            c
        }
    };
    scrub_env(&mut uploader);
    uploader
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| Error::Peer {
            peer: "uploader",
            message: e.to_string(),
        })
}

/// Plays the events and samples what happens until the backlog has drained and the reopen
/// window after the revert has passed (or the drain time is up).
fn play_timeline(
    scenario: &Scenario,
    lab: &mut Lab,
    invocation: &Invocation,
    (cloud, bystander, mut tunnel): (&mut Cloud, Option<&Bystander>, Option<&mut Tunnel>),
    disk: &SpoolDisk,
    camera: &Camera,
    clock: Clock,
) -> Result<(Vec<Sample>, Vec<AppliedEvent>), Error> {
    let mut samples: Vec<Sample> = Vec::new();
    let mut applied: Vec<AppliedEvent> = Vec::new();
    let mut pending = scenario.events.iter().peekable();
    let mut last_wall = Instant::now();
    let mut last_wire = 0u64;
    let mut last_delivered = 0u64;
    // The agent's own resolve timing is real time whatever the scale, so a scaled run keeps
    // going until a resolve after the revert can be confirmed: the reopen window in scenario
    // time plus the agent's unscaled resolve window in wall time.
    let settle_until = scenario.revert_at().map_or(0.0, |r| {
        r + scenario.reopen_window_seconds + AGENT_RESOLVE_WALL.as_secs_f64() / clock.scale
    });
    let drain_end = (scenario.duration_seconds + scenario.drain_seconds).max(settle_until);
    let sample_wall = clock
        .wall(scenario.sample_interval_seconds)
        .max(Duration::from_millis(100));
    let mut next_sample = Instant::now();
    loop {
        if crate::sys::terminate_requested() {
            return Err(Error::Interrupted);
        }
        let t = clock.now();
        while let Some(e) = pending.next_if(|e| e.at_seconds <= t) {
            tracing::info!(t, label = %e.label, "event");
            apply(
                lab,
                invocation,
                (&mut cloud.s3, tunnel.as_deref_mut()),
                &e.action,
                &disk.fill_extra,
                clock.scale,
            )?;
            applied.push(AppliedEvent {
                at_seconds: t,
                label: e.label.clone(),
                phase: e.phase,
            });
        }
        if t >= scenario.duration_seconds {
            camera.finish_recording();
        }
        if Instant::now() >= next_sample {
            next_sample += sample_wall;
            let present = spool_files(&disk.spool);
            let (mut delivered_chunks, mut delivered_bytes) = (0u64, 0u64);
            for c in camera.written() {
                if !present.contains_key(&c.name) {
                    delivered_chunks += 1;
                    delivered_bytes += c.bytes;
                }
            }
            let wire_up = lab
                .counters()
                .ok()
                .and_then(|c| c.get("wan").map(|l| l.a_to_b.forwarded_bytes))
                .unwrap_or(last_wire);
            let dt = last_wall.elapsed().as_secs_f64().max(1e-3);
            last_wall = Instant::now();
            let backlog_bytes: u64 = present.values().sum();
            samples.push(Sample {
                t_seconds: t,
                delivered_chunks,
                delivered_bytes,
                backlog_chunks: present.len() as u64,
                backlog_bytes,
                disk_used_percent: used_bytes(&disk.dir) as f64 * 100.0 / disk.bytes as f64,
                goodput_mbps: delivered_bytes.saturating_sub(last_delivered) as f64 * 8.0
                    / dt
                    / 1e6,
                wire_mbps: wire_up.saturating_sub(last_wire) as f64 * 8.0 / dt / 1e6,
                alerts: probe::read_alerts(&cloud.alerts).len() as u64,
                bystander_bytes: bystander.map(Bystander::received),
            });
            last_wire = wire_up;
            last_delivered = delivered_bytes;
            if t >= scenario.duration_seconds && present.is_empty() && t >= settle_until {
                break;
            }
            if t >= drain_end {
                tracing::warn!("backlog did not drain within drain_seconds");
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((samples, applied))
}

fn apply(
    lab: &mut Lab,
    invocation: &Invocation,
    (s3, tunnel): (&mut S3, Option<&mut Tunnel>),
    action: &Action,
    filler: &Path,
    scale: f64,
) -> Result<(), Error> {
    match action {
        Action::SetMtu {
            node,
            interface,
            mtu_bytes,
        } => lab.set_mtu(*node, interface, *mtu_bytes),
        Action::Vpn(op) => match tunnel {
            Some(t) => t.act(lab, *op),
            None => Err(Error::Scenario(
                "a `vpn` event needs a [vpn] table in the scenario".into(),
            )),
        },
        Action::Icmp(policy) => lab.set_icmp(*policy),
        Action::Link {
            link,
            loss_percent,
            delay_ms,
            jitter_ms,
            up,
            mtu_bytes,
        } => lab.set_link(link, |s| {
            if let Some(v) = loss_percent {
                s.loss_percent = *v;
            }
            if let Some(v) = delay_ms {
                s.delay_ms = *v;
            }
            if let Some(v) = jitter_ms {
                s.jitter_ms = *v;
            }
            if let Some(v) = up {
                s.up = *v;
            }
            if let Some(v) = mtu_bytes {
                s.mtu_bytes = *v;
            }
        }),
        Action::Rate(mbit) => lab.set_rate(*mbit),
        Action::S3 { running: false } => {
            s3.stop();
            Ok(())
        }
        Action::S3 { running: true } => {
            if s3.child.is_none() {
                s3.start(lab, invocation)?;
            }
            Ok(())
        }
        Action::FillDisk(bytes) => {
            let bytes = ((*bytes as f64) * scale).round() as u64;
            // A full disk is the point of this action: ENOSPC is expected, not an error.
            if let Err(e) = write_chunk(filler, bytes, false) {
                tracing::info!(error = %e, "fill-disk stopped early (disk full)");
            }
            Ok(())
        }
        Action::FreeDisk => {
            // Truncate rather than delete: file removal is reserved to the spool's verified
            // delete (clippy.toml), and an empty file frees the space just the same.
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(filler)
                .map(drop)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|e| Error::io("truncate", filler, e))
        }
    }
}
