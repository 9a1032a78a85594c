//! The daemon's path monitor: watches the inventory's interfaces over rtnetlink (polling sysfs
//! every `link_poll_milliseconds` only when the subscription fails), probes the path with DF
//! set every `probe_interval_seconds` (at once after a link change), feeds those and the
//! uploader's own signals (goodput, stalls, error classes, disk, `TCP_INFO` of its
//! connections) and every ICMP "fragmentation needed" the host receives to the diagnosis
//! engine, exports those signals and the kernel's PMTU counters as metrics, and turns the
//! engine's transitions into structured log lines, `backhaul_incident_active`, and webhook
//! alerts.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backhaul_diagnose::{
    AlertPolicy, Engine, Inventory, Kind, Observation, PathRecovery, Settings, Signal, Target,
    TimeBase, UploadErrorClass,
};
use backhaul_netprobe::{KernelCounters, Link, LinkEvent, LinkTable, Route, TcpInfo};
use backhaul_telemetry::Metrics;
use backhaul_upload::{ErrorClass, Transport};
use tokio::sync::{mpsc, watch};

use crate::config::{MonitorConfig, RemediationConfig};
use crate::probe::{endpoint_v4, full_size, gateway_v4, now_ms, probe_target};
use crate::status::{IncidentStatus, InterfaceStatus, ProbeStatus, StatusBoard};

pub(crate) mod clamp;
mod delivery;
pub(crate) mod remedy;
mod sources;
pub(crate) mod tunnel;
mod upload_signals;
mod vpn;

use delivery::{Delivery, log_transition};
use sources::{disk_signal, link_observation, listen_frag_needed, watch_links};
use upload_signals::sample_tcp;
use vpn::watch_vpn;

/// Least time between probe rounds triggered by stuck upload connections or frag-needed, so a
/// lossy link whose connections keep timing out (or a stream of ICMP) does not probe
/// continuously.
const STUCK_PROBE_EVERY: Duration = Duration::from_secs(5);

/// Probe interval while a path incident is open, so its end is seen within seconds.
const INCIDENT_PROBE_EVERY: Duration = Duration::from_secs(2);

/// Seconds of the goodput window fed to the rules (`Signal::UploadGoodput::mbps_10s`).
const GOODPUT_WINDOW_SECONDS: u64 = 10;

/// The rules' name for an upload error class, for the classes they read; typed on both sides
/// so a class the uploader adds cannot silently miss a rule.
fn rule_class(class: ErrorClass) -> Option<UploadErrorClass> {
    Some(match class {
        ErrorClass::Auth => UploadErrorClass::Auth,
        ErrorClass::ClockSkew => UploadErrorClass::ClockSkew,
        ErrorClass::Credentials => UploadErrorClass::Credentials,
        ErrorClass::NoSuchBucket => UploadErrorClass::NoSuchBucket,
        ErrorClass::Connection => UploadErrorClass::Connection,
        ErrorClass::Timeout => UploadErrorClass::Timeout,
        ErrorClass::Stall => UploadErrorClass::Stall,
        ErrorClass::Server5xx => UploadErrorClass::Server5xx,
        ErrorClass::SlowDown => UploadErrorClass::SlowDown,
        ErrorClass::Tls => UploadErrorClass::Tls,
        ErrorClass::NoSuchUpload
        | ErrorClass::Precondition
        | ErrorClass::NotImplemented
        | ErrorClass::Checksum
        | ErrorClass::Client4xx
        | ErrorClass::Abandoned
        | ErrorClass::Protocol
        | ErrorClass::LocalIo
        | ErrorClass::ChunkChanged
        | ErrorClass::Verify
        | ErrorClass::Corrupt
        | ErrorClass::Unproven
        | ErrorClass::KeyTaken
        | ErrorClass::Config => return None,
    })
}

/// What the monitor watches and how.
#[derive(Debug)]
pub struct Monitor {
    /// `[monitor]`.
    pub cfg: MonitorConfig,
    /// `[inventory]`.
    pub inventory: Inventory,
    /// `[diagnose]`.
    pub settings: Settings,
    /// Site name for alerts.
    pub site: String,
    /// The uploader's stall timeout: each counted stall stands for this long without progress.
    pub stall_timeout_seconds: u64,
    /// Where alerts wait until delivered.
    pub outbox: Arc<backhaul_spool::Outbox>,
    /// The spool's disk readings (none until its first sample).
    pub disk: backhaul_spool::DiskFeed,
    /// `[remediation]`.
    pub remediation: RemediationConfig,
}

/// Runs until `shutdown`.
pub async fn run(
    monitor: Monitor,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    transport: Arc<Transport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Monitor {
        cfg,
        inventory,
        settings,
        site,
        stall_timeout_seconds,
        outbox,
        disk,
        remediation,
    } = monitor;
    let delivery = Delivery::start(
        &cfg,
        outbox,
        transport.clone(),
        metrics.clone(),
        inventory
            .interfaces()
            .iter()
            .map(|i| i.name.clone())
            .collect(),
        shutdown.clone(),
    );
    let time = TimeBase::UNIX;
    // Without a declared path (no `[inventory]`) nothing is probed and nothing clamped: the
    // probes' targets and the clamp's MTUs come from the inventory.
    let path = inventory.declares_path();
    let mut engine =
        Engine::new(inventory.clone(), settings, time).with_runbook_base(&cfg.runbook_base_url);
    let mut policy = AlertPolicy::new(site, cfg.renotify_seconds, time)
        .with_flap_hold_down(engine.settings().flap_hold_down_seconds);
    let mut mtus: HashMap<String, u32> = HashMap::new();
    let (link_tx, mut link_rx) = mpsc::unbounded_channel::<(u64, LinkEvent)>();
    let mut ups: HashMap<String, bool> = HashMap::new();
    let mut watching = watch_links(link_tx);
    board.update(|v| {
        v.monitoring = path;
        v.link_watch = if watching { "rtnetlink" } else { "sysfs poll" };
    });
    // The polling fallback's view of the inventory's interfaces.
    let mut polled = LinkTable::default();
    let (signal_tx, mut signal_rx) = mpsc::unbounded_channel::<Observation>();
    let vpn_view = watch_vpn(
        cfg.vici_socket.clone(),
        signal_tx.clone(),
        metrics.clone(),
        board.clone(),
    );
    if path {
        listen_frag_needed(signal_tx, metrics.clone());
    }
    let mut kernel_seen = KernelCounters::read()
        .inspect_err(|e| tracing::warn!(error = %format!("{e:#}"), "kernel counters unavailable"))
        .ok();
    let mut tcp_seen: HashMap<u64, TcpInfo> = HashMap::new();
    // Set once the missing-permission warning for probes has been logged.
    let probes_degraded = Arc::new(AtomicBool::new(false));
    let mut errors_seen: HashMap<ErrorClass, u64> = HashMap::new();
    let mut stalls_seen = metrics.stalls.value();
    let mut recoveries_seen = metrics.store_recoveries.value();
    // Each probe cycle carries the link generation it started in; a cycle that straddles an
    // interface change measured a configuration that no longer exists and is dropped.
    let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<ProbeRound>();
    let mut generation = 0u64;
    let mut probing = false;
    let mut next_probe = Instant::now();
    let mut last_stuck_probe: Option<Instant> = None;
    let mut path_recovery = PathRecovery::new(
        engine.settings().small_probe_max_bytes,
        engine.settings().large_probe_failures,
    );
    let mut known = clamp::PathMtuKnown::default();
    let mut mss_clamp: Option<clamp::MssClamp> = None;
    // The route toward the endpoint and its address, from the latest probe round.
    let mut endpoint: Option<(Ipv4Addr, Option<Route>)> = None;
    let mut clamped_for: Option<u32> = None;
    let mut ladder = clamp::Ladder::default();
    let mut stuck_rounds = 0u32;
    let mut quick_look = upload_signals::QuickLook::default();
    let mut remedy = remedy::Remediator::new(&remediation);
    board.update(|v| v.remediation = Some(remedy.status.clone()));
    let mut next_upload_sample = Instant::now();
    let mut busy_since: Option<Instant> = None;
    let probe_every = Duration::from_secs(cfg.probe_interval_seconds);
    let probe_timeout = Duration::from_millis(cfg.probe_timeout_milliseconds);
    let mut tick = tokio::time::interval(Duration::from_millis(cfg.link_poll_milliseconds));
    loop {
        metrics
            .monitor_heartbeat_seconds
            .set(crate::service::now_seconds());
        let mut obs = Vec::new();
        let mut link_events = Vec::new();
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
            Some(ProbeRound { born, last, found, endpoint: seen }) = probe_rx.recv() => {
                if last {
                    probing = false;
                }
                if let Some((addr, mut route)) = seen {
                    // The route was looked up when the round began; its device's MTU may have
                    // moved since (a tunnel device following the WAN).
                    if let Some(r) = &mut route
                        && let Some(link) = Link::from_sysfs(&r.device)
                    {
                        r.device_mtu = link.mtu_bytes;
                    }
                    endpoint = Some((addr, route));
                }
                if born == generation {
                    // Every probe goes through the tracker (no short-circuit): it keeps state.
                    let recoveries = found
                        .iter()
                        .filter(|o| path_recovery.observe(&o.signal))
                        .count();
                    if recoveries > 0 {
                        // Whatever stuck connections said was about the path that recovered.
                        ladder.reset();
                        // The path carries full-size packets again with no local change (a
                        // shrunk hop recovered): connections opened meanwhile sit in
                        // retransmission backoff, and their late stalls would read as fresh
                        // evidence. Fresh connections carry the uploads from here.
                        tracing::info!("full-size probes pass again; dropping upload connections opened while they failed");
                        fresh_connections(&transport, &metrics, &mut tcp_seen, &mut stalls_seen);
                    }
                    obs.extend(found);
                }
            }
            Some(o) = signal_rx.recv() => {
                if matches!(o.signal, Signal::FragNeeded { .. })
                    && triggered_probe_due(&mut last_stuck_probe)
                {
                    // A router says the path got smaller: measure it now, as for a link event.
                    next_probe = Instant::now();
                }
                obs.push(o);
            }
            event = link_rx.recv(), if watching => match event {
                Some(e) => {
                    link_events.push(e);
                    // Take whatever else the same change produced in one batch.
                    while let Ok(e) = link_rx.try_recv() {
                        link_events.push(e);
                    }
                }
                None => {
                    // The watcher thread logged why; the poll takes over from its last state.
                    watching = false;
                    board.update(|v| v.link_watch = "sysfs poll");
                }
            },
        }
        if !watching {
            let now = now_ms();
            let current = inventory
                .interfaces()
                .iter()
                .filter_map(|i| Link::from_sysfs(&i.name))
                .collect();
            link_events.extend(polled.resync(current).into_iter().map(|e| (now, e)));
        }
        let now = now_ms();
        let mtus_before = (!link_events.is_empty()).then(|| mtus.clone());
        for (_, event) in &link_events {
            // The tunnel device's MTU follows the WAN's under xfrm-like tunnels: keep the route's view current.
            if let (
                LinkEvent::MtuChanged {
                    ifname, new_bytes, ..
                },
                Some((_, Some(route))),
            ) = (event, &mut endpoint)
                && *ifname == route.device
            {
                route.device_mtu = *new_bytes;
            }
        }
        for (at, event) in link_events {
            if link_observation(&inventory, (&mut mtus, &mut ups), at, event, &mut obs) {
                // A change is when a black hole begins: look now, not at the next interval.
                next_probe = Instant::now();
                generation += 1;
                obs.extend(sources::guarded_apply(&remediation.netplan_state_dir, at));
            }
        }
        if let Some(before) = mtus_before
            && let Some(restored) = restored_interface(&inventory, &before, &mtus)
        {
            // Connections opened under the wrong MTU keep their segment size and their lost
            // segments: left alone they stall out over the next stall timeout and their late
            // stalls and TCP_INFO would read as fresh evidence against the fix.
            tracing::info!(interface = %restored,
                "interface MTU back to its declared value; dropping upload connections opened before, uploads resume on fresh ones");
            fresh_connections(&transport, &metrics, &mut tcp_seen, &mut stalls_seen);
        }
        let sample_due = Instant::now() >= next_upload_sample;
        // One read of the connections serves the quick look and the upload sample.
        let connections = if sample_due || quick_look.due(Instant::now()) {
            transport.tcp_info()
        } else {
            Vec::new()
        };
        if quick_look.stuck(Instant::now(), &connections)
            && triggered_probe_due(&mut last_stuck_probe)
        {
            // The first sign of a path that shrank with no local change: probe now.
            next_probe = Instant::now();
        }
        if sample_due {
            next_upload_sample = Instant::now() + Duration::from_secs(2);
            // Goodput means something only while there is work: an idle uploader behind a
            // camera that records less than the link carries is not a degraded link. And only
            // once the work has lasted the whole goodput window, or the idle part of the window
            // before a chunk arrived would read as a slow link.
            let sampled = Instant::now();
            if metrics.backlog_chunks.value() > 0.0 {
                let since = *busy_since.get_or_insert(sampled);
                if sampled.duration_since(since) >= Duration::from_secs(GOODPUT_WINDOW_SECONDS) {
                    obs.push(Observation::new(
                        now,
                        Signal::UploadGoodput {
                            mbps_10s: metrics.goodput.mbps(sampled, GOODPUT_WINDOW_SECONDS),
                        },
                    ));
                }
            } else {
                busy_since = None;
            }
            let stalls = metrics.stalls.value();
            if stalls > stalls_seen {
                // A path that shrinks with no local change shows first as stalls: probe now.
                next_probe = Instant::now();
                obs.push(Observation::new(
                    now,
                    Signal::UploadStall {
                        stalled_seconds: stall_timeout_seconds,
                    },
                ));
                stalls_seen = stalls;
            }
            let recoveries = metrics.store_recoveries.value();
            if recoveries > recoveries_seen {
                obs.push(Observation::new(now, Signal::StoreAnswered));
                recoveries_seen = recoveries;
            }
            for class in ErrorClass::ALL {
                let Some(rule) = rule_class(class) else {
                    continue;
                };
                let n = metrics.errors.value(class.as_str());
                let seen = errors_seen.entry(class).or_insert(n);
                for _ in 0..(n - *seen).min(10) {
                    obs.push(Observation::new(now, Signal::UploadError { class: rule }));
                }
                *seen = n;
            }
            if let Some(seen) = &mut kernel_seen
                && let Ok(now_counters) = KernelCounters::read()
            {
                let d = now_counters.since(seen);
                metrics
                    .kernel_icmp_in_dest_unreachs
                    .add(d.icmp_in_dest_unreachs);
                metrics.kernel_ip_frag_fails.add(d.ip_frag_fails);
                metrics.kernel_tcp_mtup_fail.add(d.tcp_mtup_fail);
                metrics.kernel_tcp_mtup_success.add(d.tcp_mtup_success);
                if d.tcp_mtup_success > 0 {
                    obs.push(Observation::new(
                        now,
                        Signal::KernelMtuProbing {
                            successes: d.tcp_mtup_success,
                        },
                    ));
                }
                *seen = now_counters;
            }
            let tcp = sample_tcp(&connections, &metrics, &mut tcp_seen, now);
            let stuck_mss = tcp
                .iter()
                .filter(|o| o.signal.tcp_stuck())
                .filter_map(|o| match o.signal {
                    Signal::TcpInfo { snd_mss, .. } => Some(snd_mss),
                    _ => None,
                })
                .max();
            stuck_rounds = if stuck_mss.is_some() {
                stuck_rounds + 1
            } else {
                0
            };
            // Two samples in a row (4 s) with nothing acknowledged while resending: the
            // ladder's next rung (random loss does not stay that stuck), also under a clamp
            // the probes call good: the connections are what carries the uploads.
            if let Some(mss) = stuck_mss
                && stuck_rounds >= 2
                && ladder.stuck(mss, Instant::now())
            {
                stuck_rounds = 0;
                let measured = mss_clamp
                    .as_ref()
                    .filter(|c| c.source != clamp::ClampSource::Ladder)
                    .map(|c| c.path_mtu_bytes);
                tracing::warn!(
                    stuck_mss = mss,
                    next_mss = ladder.mss(),
                    measured_path_mtu = measured,
                    "upload connections stuck resending full-size segments; stepping the clamp down"
                );
                obs.push(Observation::new(
                    now,
                    Signal::ClampStuck {
                        stuck_mss: mss,
                        next_mss: ladder.mss().unwrap_or(mss),
                        measured_path_mtu: measured,
                    },
                ));
            }
            if stuck_mss.is_some() && triggered_probe_due(&mut last_stuck_probe) {
                // A connection in retransmission timeout with nothing acknowledged is the first
                // sign of a path that shrank with no local change; the stall watchdog would
                // wait out its whole timeout. Probe now, as for a link event.
                next_probe = Instant::now();
            }
            obs.extend(tcp);
            if let Some(d) = disk.latest() {
                obs.push(Observation::new(now, disk_signal(&d)));
            }
        }
        if path && !probing && Instant::now() >= next_probe {
            probing = true;
            // While the path is known broken, look often: a hop that recovers with no local
            // change is seen only by probes (clamped uploads flow and say nothing).
            let path_broken = engine.incidents().iter().any(|i| {
                matches!(
                    i.kind,
                    Kind::PmtuBlackhole
                        | Kind::PathMtuReduced
                        | Kind::UplinkDown
                        | Kind::EndpointUnreachable
                )
            });
            next_probe = Instant::now()
                + if path_broken {
                    probe_every.min(INCIDENT_PROBE_EVERY)
                } else {
                    probe_every
                };
            let inv = inventory.clone();
            let tx = probe_tx.clone();
            let large = full_size(&inv, inv.wan().and_then(|w| mtus.get(&w.name).copied()));
            let born = generation;
            let wan_name = inv.wan().map(|w| w.name.clone());
            let hint = Some(inv.path_mtu_bytes() as usize);
            let board = board.clone();
            let degraded = probes_degraded.clone();
            tokio::task::spawn_blocking(move || {
                let mut found = Vec::new();
                let gateway = gateway_v4(&inv);
                let g = probe_target(
                    "gateway",
                    Target::Gateway,
                    gateway,
                    large,
                    hint,
                    probe_timeout,
                    &mut found,
                );
                if let Some(note) = &g.note {
                    if g.no_permission && !degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %note,
                            "path probes off: the agent keeps uploading and watching links");
                    }
                    tracing::debug!(note = %note, "gateway probe");
                }
                board.update(|v| {
                    v.probes.insert(g.name, ProbeStatus::from(&g));
                });
                // The gateway's verdict goes out before the endpoint is probed.
                tx.send(ProbeRound {
                    born,
                    last: false,
                    found: std::mem::take(&mut found),
                    endpoint: None,
                })
                .ok();
                let endpoint = endpoint_v4(&inv);
                let e = probe_target(
                    "endpoint",
                    Target::Endpoint,
                    endpoint,
                    large,
                    hint,
                    probe_timeout,
                    &mut found,
                );
                board.update(|v| {
                    v.probes.insert(e.name, ProbeStatus::from(&e));
                });
                // A route out of the WAN interface itself is no tunnel device of its own.
                let route = e.route.filter(|r| Some(&r.device) != wan_name.as_ref());
                tx.send(ProbeRound {
                    born,
                    last: true,
                    found,
                    endpoint: e.addr.map(|a| (a, route)),
                })
                .ok();
            });
        }
        let wan_mtu = inventory.wan().and_then(|w| mtus.get(&w.name).copied());
        if wan_mtu != clamped_for {
            // Measurements crossed the old configuration; the inventory decides until the
            // change's own probe round reports.
            known.forget();
            ladder.reset();
            clamped_for = wan_mtu;
        }
        for o in &obs {
            known.observe(&o.signal);
        }
        ladder.raise_if_due(Instant::now());
        let overhead = tunnel_overhead(&inventory, endpoint.as_ref(), &vpn_view);
        let next = clamp::decide(&clamp::Inputs {
            wan_mtu,
            route_mtu: endpoint
                .as_ref()
                .and_then(|(_, r)| r.as_ref())
                .map(|r| r.device_mtu),
            tunnel: overhead.as_ref(),
            known: &known,
            inventory_path_mtu: inventory.path_mtu_bytes(),
            ladder: &ladder,
        });
        if next != mss_clamp {
            transport.set_mss_clamp(next.as_ref().map(|c| c.mss_bytes));
            metrics
                .upload_mss_clamp_bytes
                .set(f64::from(next.as_ref().map_or(0, |c| c.mss_bytes)));
            board.update(|v| v.mss_clamp = next.clone());
            obs.push(Observation::new(
                now,
                Signal::UploadMssClamp {
                    mss_bytes: next.as_ref().map(|c| c.mss_bytes),
                    tunnel: next.as_ref().and_then(|c| c.tunnel.clone()),
                },
            ));
            match &next {
                Some(c) => tracing::warn!(
                    mss_bytes = c.mss_bytes,
                    path_mtu_bytes = c.path_mtu_bytes,
                    source = c.source.as_str(),
                    tunnel = c.tunnel.as_deref(),
                    "upload connections clamped to the path MTU"
                ),
                None => tracing::info!(
                    "upload connections no longer clamped: the interface MTU fits the path"
                ),
            }
            if clamp::tightens(mss_clamp.as_ref(), next.as_ref()) {
                // Open connections keep the segment size the path drops: replace them now
                // rather than after their stall timeout; their parts resume from the journal.
                fresh_connections(&transport, &metrics, &mut tcp_seen, &mut stalls_seen);
            }
            mss_clamp = next;
        }
        // Before this turn's observations reach the rules: a restored MTU's link event must
        // find the remediation already in the store, so the resolve says who fixed it.
        let path_mtu = mss_clamp
            .as_ref()
            .map_or(inventory.path_mtu_bytes(), |c| c.path_mtu_bytes);
        let tunnel_device = overhead
            .as_ref()
            .and(endpoint.as_ref())
            .and_then(|(_, route)| route.as_ref())
            .map(|r| r.device.as_str());
        let turn = remedy.turn(
            &engine.incidents(),
            &inventory,
            &mtus,
            path_mtu,
            tunnel_device,
        );
        if let Some(held) = turn.held {
            metrics.remediation_held.inc(held);
        }
        let remedied = turn.done.and_then(|done| {
            let commands = done.commands.join("; ");
            match &done.error {
                None => {
                    metrics.remediations.inc(done.label);
                    tracing::warn!(interface = %done.ifname, action = %done.action, %commands,
                        "remediated: the site's network was changed by the agent ([remediation])");
                }
                Some(e) => {
                    metrics.remediation_failures.inc(done.label);
                    tracing::error!(interface = %done.ifname, action = %done.action, error = %e,
                        "remediation failed; the alert's fix is for a person now");
                }
            }
            obs.push(Observation::new(now_ms(), done.signal()));
            done.incident
        });
        board.update(|v| v.remediation = Some(remedy.status.clone()));
        let mut transitions = engine.observe_all(obs);
        transitions.extend(engine.tick(now));
        for t in &transitions {
            log_transition(t);
        }
        let mut alerts = policy.on_transitions(&transitions, now);
        alerts.extend(policy.renotify(engine.incidents(), now));
        if let Some(id) = remedied
            && let Some(i) = engine.incidents().into_iter().find(|i| i.id == id)
        {
            alerts.extend(policy.remediated(i, now));
        }
        *metrics.incidents.lock().unwrap_or_else(|p| p.into_inner()) = engine
            .incidents()
            .iter()
            .filter(|i| i.resolved_at_ms.is_none())
            .map(|i| backhaul_telemetry::ActiveIncident {
                kind: i.kind.as_str().to_owned(),
                severity: i.severity.as_str().to_owned(),
                change: i.change.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            })
            .collect();
        board.update(|v| {
            v.incidents = engine
                .incidents()
                .into_iter()
                .filter(|i| i.resolved_at_ms.is_none())
                .map(IncidentStatus::from)
                .collect();
            v.interfaces = inventory
                .interfaces()
                .iter()
                .map(|i| InterfaceStatus {
                    name: i.name.clone(),
                    role: i.role.as_str().to_owned(),
                    declared_mtu_bytes: i.mtu_bytes,
                    mtu_bytes: mtus.get(&i.name).copied(),
                    up: ups.get(&i.name).copied(),
                })
                .collect();
        });
        for a in alerts {
            delivery.send(&a);
        }
    }
}

/// One probe round's report to the loop: the generation it started in, whether it is the
/// round's last, its observations, and (with the endpoint's) the endpoint's address and the
/// route toward it when that leaves through another device than the WAN interface.
struct ProbeRound {
    born: u64,
    last: bool,
    found: Vec<Observation>,
    endpoint: Option<(Ipv4Addr, Option<Route>)>,
}

/// The tunnel the uploads ride, if any: the CHILD_SA covering the endpoint (its proposal gives
/// the overhead); else, when the route leaves through a tunnel device or nothing reads VICI,
/// what the inventory declares; a tunnel device with nothing declared counts as the worst
/// common ESP.
fn tunnel_overhead(
    inventory: &Inventory,
    endpoint: Option<&(Ipv4Addr, Option<Route>)>,
    vpn: &vpn::VpnView,
) -> Option<tunnel::EspOverhead> {
    if let Some(sa) = endpoint.and_then(|(addr, _)| vpn.covering(*addr)) {
        return Some(tunnel::EspOverhead::of(&sa));
    }
    if let Some(bytes) = inventory.vpn_overhead_bytes() {
        return Some(tunnel::EspOverhead::declared(bytes));
    }
    // Until strongSwan was asked once, a tunnel device is not yet a tunnel of unknown kind.
    endpoint
        .and_then(|(_, route)| route.as_ref())
        .filter(|r| r.tunnel_device && vpn.looked())
        .map(|r| tunnel::EspOverhead::unknown(&r.device))
}

/// Drops every upload connection (the path changed under them) and forgets what their
/// `TCP_INFO` and stalls said: those connections' late signals are not evidence about the path
/// as it is now.
fn fresh_connections(
    transport: &Transport,
    metrics: &Metrics,
    tcp_seen: &mut HashMap<u64, TcpInfo>,
    stalls_seen: &mut u64,
) {
    transport.abandon_connections();
    tcp_seen.clear();
    *stalls_seen = metrics.stalls.value();
}

/// Whether a probe round triggered by a path signal (a stuck connection, a frag-needed) may
/// start now: at most one per [`STUCK_PROBE_EVERY`]. Records it when it may.
fn triggered_probe_due(last: &mut Option<Instant>) -> bool {
    let due = last.is_none_or(|t| t.elapsed() >= STUCK_PROBE_EVERY);
    if due {
        *last = Some(Instant::now());
    }
    due
}

/// The inventory interface whose MTU just went back to its declared value, if any.
fn restored_interface(
    inventory: &Inventory,
    before: &HashMap<String, u32>,
    now: &HashMap<String, u32>,
) -> Option<String> {
    inventory
        .interfaces()
        .iter()
        .find(|i| {
            let (was, is) = (before.get(&i.name), now.get(&i.name));
            was.is_some() && was != is && is == Some(&i.mtu_bytes)
        })
        .map(|i| i.name.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// eno1 the WAN at 1500, eno2 the camera VLAN at 9000 (the 2025-11-12 site).
    pub(crate) fn inventory() -> Inventory {
        let cfg: backhaul_diagnose::InventoryConfig = toml::from_str(
            "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\ninterfaces = [\n\
             { name = \"eno1\", role = \"wan\", mtu_bytes = 1500 },\n\
             { name = \"eno2\", role = \"camera\", mtu_bytes = 9000 },\n]\n",
        )
        .unwrap();
        cfg.validate().unwrap()
    }

    fn mtus(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(n, m)| ((*n).to_owned(), *m)).collect()
    }

    /// The credentials class never reached `auth_failure` while the classes were strings.
    #[test]
    fn every_class_the_rules_know_is_fed_to_them() {
        let fed: Vec<UploadErrorClass> =
            ErrorClass::ALL.into_iter().filter_map(rule_class).collect();
        for c in [
            UploadErrorClass::Auth,
            UploadErrorClass::ClockSkew,
            UploadErrorClass::Credentials,
            UploadErrorClass::NoSuchBucket,
            UploadErrorClass::Connection,
            UploadErrorClass::Timeout,
            UploadErrorClass::Stall,
            UploadErrorClass::Server5xx,
            UploadErrorClass::SlowDown,
            UploadErrorClass::Tls,
        ] {
            assert!(fed.contains(&c), "{c:?}");
        }
    }

    #[test]
    fn only_a_change_back_to_the_declared_mtu_is_a_restore() {
        let inv = inventory();
        let fault = mtus(&[("eno1", 9000), ("eno2", 9000)]);
        let fixed = mtus(&[("eno1", 1500), ("eno2", 9000)]);
        assert_eq!(
            restored_interface(&inv, &fault, &fixed).as_deref(),
            Some("eno1")
        );
        // The change that starts the fault, the first sight of an interface, no change.
        assert_eq!(restored_interface(&inv, &fixed, &fault), None);
        assert_eq!(restored_interface(&inv, &HashMap::new(), &fixed), None);
        assert_eq!(restored_interface(&inv, &fixed, &fixed), None);
    }
}
