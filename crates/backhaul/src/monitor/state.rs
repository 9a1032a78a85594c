//! The monitor's state between turns, and one method per input: a probe round's report, a
//! signal from a listener, link events, and the turn that samples the uploads, starts probe
//! rounds, follows the clamp, remediates and evaluates.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backhaul_diagnose::{
    AlertPolicy, Engine, Inventory, Kind, Observation, PathRecovery, Signal, Target, TimeBase,
};
use backhaul_netprobe::{KernelCounters, Link, LinkEvent, LinkTable, Route, TcpInfo};
use backhaul_telemetry::Metrics;
use backhaul_upload::{CredentialsProvider, ErrorClass, Transport};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::{MonitorConfig, RemediationConfig};
use crate::probe::{endpoint_v4, full_size, gateway_v4, now_ms, probe_target};
use crate::status::{IncidentStatus, InterfaceStatus, ProbeStatus, StatusBoard};

use super::delivery::{Delivery, log_transition};
use super::sources::{disk_signal, link_observation, listen_frag_needed, watch_links};
use super::upload_signals::{self, sample_tcp};
use super::vpn::{self, watch_vpn};
use super::{
    GOODPUT_WINDOW_SECONDS, INCIDENT_PROBE_EVERY, Monitor, ProbeRound, clamp, error_observations,
    remedy, restored_interface, sources, triggered_probe_due, tunnel_overhead,
};

/// Where the monitor's inputs arrive: kept apart from [`MonitorLoop`] so the loop can wait on
/// them while its methods borrow the state.
pub(super) struct Inputs {
    pub(super) links: mpsc::UnboundedReceiver<(u64, LinkEvent)>,
    pub(super) signals: mpsc::UnboundedReceiver<Observation>,
    pub(super) probes: mpsc::UnboundedReceiver<ProbeRound>,
    pub(super) errors: broadcast::Receiver<ErrorClass>,
}

/// Everything the monitor knows between turns.
pub(super) struct MonitorLoop {
    cfg: MonitorConfig,
    inventory: Inventory,
    stall_timeout_seconds: u64,
    disk: backhaul_spool::DiskFeed,
    remediation: RemediationConfig,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    transport: Arc<Transport>,
    delivery: Delivery,
    engine: Engine,
    policy: AlertPolicy,
    /// Whether the inventory declares a path: without one nothing is probed or clamped.
    path: bool,
    mtus: HashMap<String, u32>,
    ups: HashMap<String, bool>,
    /// Whether rtnetlink reports link changes; else the sysfs poll does.
    pub(super) watching: bool,
    /// The polling fallback's view of the inventory's interfaces.
    polled: LinkTable,
    vpn_view: vpn::VpnView,
    kernel_seen: Option<KernelCounters>,
    tcp_seen: HashMap<u64, TcpInfo>,
    /// Set once the missing-permission warning for probes has been logged.
    probes_degraded: Arc<AtomicBool>,
    /// Whether the uploader still reports its errors (it stops only with the agent).
    pub(super) errors_open: bool,
    stalls_seen: u64,
    recoveries_seen: u64,
    credentials: Arc<CredentialsProvider>,
    trust: upload_signals::TrustReports,
    probe_tx: mpsc::UnboundedSender<ProbeRound>,
    /// Each probe cycle carries the link generation it started in; a cycle that straddles an
    /// interface change measured a configuration that no longer exists and is dropped.
    generation: u64,
    probing: bool,
    next_probe: Instant,
    last_stuck_probe: Option<Instant>,
    path_recovery: PathRecovery,
    known: clamp::PathMtuKnown,
    mss_clamp: Option<clamp::MssClamp>,
    /// The route toward the endpoint and its address, from the latest probe round.
    endpoint: Option<(Ipv4Addr, Option<Route>)>,
    clamped_for: Option<u32>,
    ladder: clamp::Ladder,
    stuck_rounds: u32,
    quick_look: upload_signals::QuickLook,
    remedy: remedy::Remediator,
    next_upload_sample: Instant,
    busy_since: Option<Instant>,
    probe_every: Duration,
    probe_timeout: Duration,
}

impl MonitorLoop {
    /// Starts the delivery task and the watchers, and returns the state and its inputs.
    pub(super) fn start(
        monitor: Monitor,
        metrics: Arc<Metrics>,
        board: Arc<StatusBoard>,
        transport: Arc<Transport>,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, Inputs) {
        let Monitor {
            cfg,
            inventory,
            settings,
            site,
            stall_timeout_seconds,
            outbox,
            disk,
            remediation,
            upload_errors,
            credentials,
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
            shutdown,
        );
        let time = TimeBase::UNIX;
        // Without a declared path (no `[inventory]`) nothing is probed and nothing clamped: the
        // probes' targets and the clamp's MTUs come from the inventory.
        let path = inventory.declares_path();
        let engine =
            Engine::new(inventory.clone(), settings, time).with_runbook_base(&cfg.runbook_base_url);
        let policy = AlertPolicy::new(site, cfg.renotify_seconds, time)
            .with_flap_hold_down(engine.settings().flap_hold_down_seconds);
        let (link_tx, links) = mpsc::unbounded_channel::<(u64, LinkEvent)>();
        let watching = watch_links(link_tx);
        board.update(|v| {
            v.monitoring = path;
            v.link_watch = if watching { "rtnetlink" } else { "sysfs poll" };
        });
        let (signal_tx, signals) = mpsc::unbounded_channel::<Observation>();
        let vpn_view = watch_vpn(
            cfg.vici_socket.clone(),
            signal_tx.clone(),
            metrics.clone(),
            board.clone(),
        );
        if path {
            listen_frag_needed(signal_tx, metrics.clone());
        }
        let kernel_seen = KernelCounters::read()
            .inspect_err(
                |e| tracing::warn!(error = %format!("{e:#}"), "kernel counters unavailable"),
            )
            .ok();
        let (probe_tx, probes) = mpsc::unbounded_channel::<ProbeRound>();
        let path_recovery = PathRecovery::new(
            engine.settings().small_probe_max_bytes,
            engine.settings().large_probe_failures,
        );
        let remedy = remedy::Remediator::new(&remediation);
        board.update(|v| v.remediation = Some(remedy.status.clone()));
        let state = Self {
            stall_timeout_seconds,
            disk,
            remediation,
            stalls_seen: metrics.stalls.value(),
            recoveries_seen: metrics.store_recoveries.value(),
            probe_every: Duration::from_secs(cfg.probe_interval_seconds),
            probe_timeout: Duration::from_millis(cfg.probe_timeout_milliseconds),
            cfg,
            inventory,
            metrics,
            board,
            transport,
            delivery,
            engine,
            policy,
            path,
            mtus: HashMap::new(),
            ups: HashMap::new(),
            watching,
            polled: LinkTable::default(),
            vpn_view,
            kernel_seen,
            tcp_seen: HashMap::new(),
            probes_degraded: Arc::new(AtomicBool::new(false)),
            errors_open: true,
            credentials,
            trust: upload_signals::TrustReports::default(),
            probe_tx,
            generation: 0,
            probing: false,
            next_probe: Instant::now(),
            last_stuck_probe: None,
            path_recovery,
            known: clamp::PathMtuKnown::default(),
            mss_clamp: None,
            endpoint: None,
            clamped_for: None,
            ladder: clamp::Ladder::default(),
            stuck_rounds: 0,
            quick_look: upload_signals::QuickLook::default(),
            remedy,
            next_upload_sample: Instant::now(),
            busy_since: None,
        };
        (
            state,
            Inputs {
                links,
                signals,
                probes,
                errors: upload_errors,
            },
        )
    }

    /// How often the loop turns without an input: the re-evaluation and the sysfs poll.
    pub(super) fn tick_every(&self) -> Duration {
        Duration::from_millis(self.cfg.link_poll_milliseconds)
    }

    /// Says the loop is alive (systemd's watchdog reads it through `/metrics`' heartbeat).
    pub(super) fn heartbeat(&self) {
        self.metrics
            .monitor_heartbeat_seconds
            .set(crate::service::now_seconds());
    }

    /// A probe round's report: its observations, unless an interface changed since it began.
    pub(super) fn on_probe_round(&mut self, round: ProbeRound, obs: &mut Vec<Observation>) {
        let ProbeRound {
            born,
            last,
            found,
            endpoint: seen,
        } = round;
        if last {
            self.probing = false;
        }
        if let Some((addr, mut route)) = seen {
            // The route was looked up when the round began; its device's MTU may have
            // moved since (a tunnel device following the WAN).
            if let Some(r) = &mut route
                && let Some(link) = Link::from_sysfs(&r.device)
            {
                r.device_mtu = link.mtu_bytes;
            }
            self.endpoint = Some((addr, route));
        }
        if born == self.generation {
            // Every probe goes through the tracker (no short-circuit): it keeps state.
            let recoveries = found
                .iter()
                .filter(|o| self.path_recovery.observe(&o.signal))
                .count();
            if recoveries > 0 {
                // Whatever stuck connections said was about the path that recovered.
                self.ladder.reset();
                // The path carries full-size packets again with no local change (a
                // shrunk hop recovered): connections opened meanwhile sit in
                // retransmission backoff, and their late stalls would read as fresh
                // evidence. Fresh connections carry the uploads from here.
                tracing::info!(
                    "full-size probes pass again; dropping upload connections opened while they failed"
                );
                self.fresh_connections();
            }
            obs.extend(found);
        }
    }

    /// A signal from a listener (frag-needed, strongSwan).
    pub(super) fn on_signal(&mut self, o: Observation, obs: &mut Vec<Observation>) {
        if matches!(o.signal, Signal::FragNeeded { .. })
            && triggered_probe_due(&mut self.last_stuck_probe)
        {
            // A router says the path got smaller: measure it now, as for a link event.
            self.next_probe = Instant::now();
        }
        obs.push(o);
    }

    /// Upload errors that arrived together.
    pub(super) fn on_upload_errors(&mut self, batch: &[ErrorClass], obs: &mut Vec<Observation>) {
        obs.extend(error_observations(batch, now_ms()));
    }

    /// The rtnetlink subscription ended: the poll takes over from its last state.
    pub(super) fn links_lost(&mut self) {
        // The watcher thread logged why.
        self.watching = false;
        self.board.update(|v| v.link_watch = "sysfs poll");
    }

    /// One turn: link events (and the poll's), the uploads' signals, a probe round if due, the
    /// clamp, remediation, then the rules and the alerts.
    pub(super) fn turn(
        &mut self,
        mut link_events: Vec<(u64, LinkEvent)>,
        mut obs: Vec<Observation>,
    ) {
        if !self.watching {
            let now = now_ms();
            let current = self
                .inventory
                .interfaces()
                .iter()
                .filter_map(|i| Link::from_sysfs(&i.name))
                .collect();
            link_events.extend(self.polled.resync(current).into_iter().map(|e| (now, e)));
        }
        let now = now_ms();
        self.on_link_events(link_events, &mut obs);
        self.sample_uploads(now, &mut obs);
        self.probe_if_due();
        let overhead = self.follow_clamp(now, &mut obs);
        let remedied = self.remediate(overhead.as_ref(), &mut obs);
        self.evaluate(obs, now, remedied);
    }

    fn on_link_events(&mut self, link_events: Vec<(u64, LinkEvent)>, obs: &mut Vec<Observation>) {
        let mtus_before = (!link_events.is_empty()).then(|| self.mtus.clone());
        for (_, event) in &link_events {
            // The tunnel device's MTU follows the WAN's under xfrm-like tunnels: keep the route's view current.
            if let (
                LinkEvent::MtuChanged {
                    ifname, new_bytes, ..
                },
                Some((_, Some(route))),
            ) = (event, &mut self.endpoint)
                && *ifname == route.device
            {
                route.device_mtu = *new_bytes;
            }
        }
        for (at, event) in link_events {
            if link_observation(
                &self.inventory,
                (&mut self.mtus, &mut self.ups),
                at,
                event,
                obs,
            ) {
                // A change is when a black hole begins: look now, not at the next interval.
                self.next_probe = Instant::now();
                self.generation += 1;
                obs.extend(sources::guarded_apply(
                    &self.remediation.netplan_state_dir,
                    at,
                ));
            }
        }
        if let Some(before) = mtus_before
            && let Some(restored) = restored_interface(&self.inventory, &before, &self.mtus)
        {
            // Connections opened under the wrong MTU keep their segment size and their lost
            // segments: left alone they stall out over the next stall timeout and their late
            // stalls and TCP_INFO would read as fresh evidence against the fix.
            tracing::info!(interface = %restored,
                "interface MTU back to its declared value; dropping upload connections opened before, uploads resume on fresh ones");
            self.fresh_connections();
        }
    }

    /// The uploader's signals, every 2 s: goodput, stalls, the store answering, error classes,
    /// the kernel's counters, `TCP_INFO` of the connections (and the ladder it feeds), disk.
    fn sample_uploads(&mut self, now: u64, obs: &mut Vec<Observation>) {
        let sample_due = Instant::now() >= self.next_upload_sample;
        // One read of the connections serves the quick look and the upload sample.
        let connections = if sample_due || self.quick_look.due(Instant::now()) {
            self.transport.tcp_info()
        } else {
            Vec::new()
        };
        if self.quick_look.stuck(Instant::now(), &connections)
            && triggered_probe_due(&mut self.last_stuck_probe)
        {
            // The first sign of a path that shrank with no local change: probe now.
            self.next_probe = Instant::now();
        }
        if !sample_due {
            return;
        }
        self.next_upload_sample = Instant::now() + Duration::from_secs(2);
        obs.extend(self.trust.sample(now, &self.metrics, &self.credentials));
        let metrics = self.metrics.clone();
        // Goodput means something only while there is work: an idle uploader behind a
        // camera that records less than the link carries is not a degraded link. And only
        // once the work has lasted the whole goodput window, or the idle part of the window
        // before a chunk arrived would read as a slow link.
        let sampled = Instant::now();
        if metrics.backlog_chunks.value() > 0.0 {
            let since = *self.busy_since.get_or_insert(sampled);
            if sampled.duration_since(since) >= Duration::from_secs(GOODPUT_WINDOW_SECONDS) {
                obs.push(Observation::new(
                    now,
                    Signal::UploadGoodput {
                        mbps_10s: metrics.goodput.mbps(sampled, GOODPUT_WINDOW_SECONDS),
                    },
                ));
            }
        } else {
            self.busy_since = None;
        }
        let stalls = metrics.stalls.value();
        if stalls > self.stalls_seen {
            // A path that shrinks with no local change shows first as stalls: probe now.
            self.next_probe = Instant::now();
            obs.push(Observation::new(
                now,
                Signal::UploadStall {
                    stalled_seconds: self.stall_timeout_seconds,
                },
            ));
            self.stalls_seen = stalls;
        }
        let recoveries = metrics.store_recoveries.value();
        if recoveries > self.recoveries_seen {
            obs.push(Observation::new(now, Signal::StoreAnswered));
            self.recoveries_seen = recoveries;
        }
        if let Some(seen) = &mut self.kernel_seen
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
        let tcp = sample_tcp(&connections, &metrics, &mut self.tcp_seen, now);
        let stuck_mss = tcp
            .iter()
            .filter(|o| o.signal.tcp_stuck())
            .filter_map(|o| match o.signal {
                Signal::TcpInfo { snd_mss, .. } => Some(snd_mss),
                _ => None,
            })
            .max();
        self.stuck_rounds = if stuck_mss.is_some() {
            self.stuck_rounds + 1
        } else {
            0
        };
        // Two samples in a row (4 s) with nothing acknowledged while resending: the
        // ladder's next rung (random loss does not stay that stuck), also under a clamp
        // the probes call good: the connections are what carries the uploads.
        if let Some(mss) = stuck_mss
            && self.stuck_rounds >= 2
            && self.ladder.stuck(mss, Instant::now())
        {
            self.stuck_rounds = 0;
            let measured = self
                .mss_clamp
                .as_ref()
                .filter(|c| c.source != clamp::ClampSource::Ladder)
                .map(|c| c.path_mtu_bytes);
            tracing::warn!(
                stuck_mss = mss,
                next_mss = self.ladder.mss(),
                measured_path_mtu = measured,
                "upload connections stuck resending full-size segments; stepping the clamp down"
            );
            obs.push(Observation::new(
                now,
                Signal::ClampStuck {
                    stuck_mss: mss,
                    next_mss: self.ladder.mss().unwrap_or(mss),
                    measured_path_mtu: measured,
                },
            ));
        }
        if stuck_mss.is_some() && triggered_probe_due(&mut self.last_stuck_probe) {
            // A connection in retransmission timeout with nothing acknowledged is the first
            // sign of a path that shrank with no local change; the stall watchdog would
            // wait out its whole timeout. Probe now, as for a link event.
            self.next_probe = Instant::now();
        }
        obs.extend(tcp);
        if let Some(d) = self.disk.latest() {
            obs.push(Observation::new(now, disk_signal(&d)));
        }
    }

    /// Starts a probe round in the background when one is due; its report arrives as a
    /// [`ProbeRound`] (the gateway's first).
    fn probe_if_due(&mut self) {
        if !self.path || self.probing || Instant::now() < self.next_probe {
            return;
        }
        self.probing = true;
        // While the path is known broken, look often: a hop that recovers with no local
        // change is seen only by probes (clamped uploads flow and say nothing).
        let path_broken = self.engine.incidents().iter().any(|i| {
            matches!(
                i.kind,
                Kind::PmtuBlackhole
                    | Kind::PathMtuReduced
                    | Kind::UplinkDown
                    | Kind::EndpointUnreachable
            )
        });
        self.next_probe = Instant::now()
            + if path_broken {
                self.probe_every.min(INCIDENT_PROBE_EVERY)
            } else {
                self.probe_every
            };
        let inv = self.inventory.clone();
        let tx = self.probe_tx.clone();
        let large = full_size(
            &inv,
            inv.wan().and_then(|w| self.mtus.get(&w.name).copied()),
        );
        let born = self.generation;
        let wan_name = inv.wan().map(|w| w.name.clone());
        let hint = Some(inv.path_mtu_bytes() as usize);
        let board = self.board.clone();
        let degraded = self.probes_degraded.clone();
        let probe_timeout = self.probe_timeout;
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

    /// The MSS clamp new upload connections get, from what is known about the path now;
    /// returns the tunnel overhead it took into account.
    fn follow_clamp(
        &mut self,
        now: u64,
        obs: &mut Vec<Observation>,
    ) -> Option<super::tunnel::EspOverhead> {
        let wan_mtu = self
            .inventory
            .wan()
            .and_then(|w| self.mtus.get(&w.name).copied());
        if wan_mtu != self.clamped_for {
            // Measurements crossed the old configuration; the inventory decides until the
            // change's own probe round reports.
            self.known.forget();
            self.ladder.reset();
            self.clamped_for = wan_mtu;
        }
        for o in obs.iter() {
            self.known.observe(&o.signal);
        }
        self.ladder.raise_if_due(Instant::now());
        let overhead = tunnel_overhead(&self.inventory, self.endpoint.as_ref(), &self.vpn_view);
        let next = clamp::decide(&clamp::Inputs {
            wan_mtu,
            route_mtu: self
                .endpoint
                .as_ref()
                .and_then(|(_, r)| r.as_ref())
                .map(|r| r.device_mtu),
            tunnel: overhead.as_ref(),
            known: &self.known,
            inventory_path_mtu: self.inventory.path_mtu_bytes(),
            ladder: &self.ladder,
        });
        if next == self.mss_clamp {
            return overhead;
        }
        self.transport
            .set_mss_clamp(next.as_ref().map(|c| c.mss_bytes));
        self.metrics
            .upload_mss_clamp_bytes
            .set(f64::from(next.as_ref().map_or(0, |c| c.mss_bytes)));
        self.board.update(|v| v.mss_clamp = next.clone());
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
        if clamp::tightens(self.mss_clamp.as_ref(), next.as_ref()) {
            // Open connections keep the segment size the path drops: replace them now
            // rather than after their stall timeout; their parts resume from the journal.
            self.fresh_connections();
        }
        self.mss_clamp = next;
        overhead
    }

    /// What `[remediation]` does this turn; the id of the incident it acted on, if any.
    /// Before this turn's observations reach the rules: a restored MTU's link event must find
    /// the remediation already in the store, so the resolve says who fixed it.
    fn remediate(
        &mut self,
        overhead: Option<&super::tunnel::EspOverhead>,
        obs: &mut Vec<Observation>,
    ) -> Option<String> {
        let path_mtu = self
            .mss_clamp
            .as_ref()
            .map_or(self.inventory.path_mtu_bytes(), |c| c.path_mtu_bytes);
        let tunnel_device = overhead
            .and(self.endpoint.as_ref())
            .and_then(|(_, route)| route.as_ref())
            .map(|r| r.device.as_str());
        let turn = self.remedy.turn(
            &self.engine.incidents(),
            &self.inventory,
            &self.mtus,
            path_mtu,
            tunnel_device,
        );
        if let Some(held) = turn.held {
            self.metrics.remediation_held.inc(held);
        }
        let remedied = turn.done.and_then(|done| {
            let commands = done.commands.join("; ");
            match &done.error {
                None => {
                    self.metrics.remediations.inc(done.label);
                    tracing::warn!(interface = %done.ifname, action = %done.action, %commands,
                        "remediated: the site's network was changed by the agent ([remediation])");
                }
                Some(e) => {
                    self.metrics.remediation_failures.inc(done.label);
                    tracing::error!(interface = %done.ifname, action = %done.action, error = %e,
                        "remediation failed; the alert's fix is for a person now");
                }
            }
            obs.push(Observation::new(now_ms(), done.signal()));
            done.incident
        });
        self.board
            .update(|v| v.remediation = Some(self.remedy.status.clone()));
        remedied
    }

    /// The rules over this turn's observations, the alerts their transitions call for, and
    /// what `/metrics` and `/status` show.
    fn evaluate(&mut self, obs: Vec<Observation>, now: u64, remedied: Option<String>) {
        let mut transitions = self.engine.observe_all(obs);
        transitions.extend(self.engine.tick(now));
        for t in &transitions {
            log_transition(t);
        }
        // The engine's incidents are the open ones (held ones included): resolved ones leave it.
        let open = self.engine.incidents();
        let mut alerts = self.policy.on_transitions(&transitions, now);
        alerts.extend(self.policy.renotify(open.iter().copied(), now));
        if let Some(id) = remedied
            && let Some(i) = open.iter().find(|i| i.id == id)
        {
            alerts.extend(self.policy.remediated(i, now));
        }
        *self
            .metrics
            .incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = open
            .iter()
            .map(|i| backhaul_telemetry::ActiveIncident {
                kind: i.kind.as_str().to_owned(),
                severity: i.severity.as_str().to_owned(),
                change: i.change.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
            })
            .collect();
        let incidents: Vec<IncidentStatus> =
            open.iter().copied().map(IncidentStatus::from).collect();
        let interfaces: Vec<InterfaceStatus> = self
            .inventory
            .interfaces()
            .iter()
            .map(|i| InterfaceStatus {
                name: i.name.clone(),
                role: i.role.as_str().to_owned(),
                declared_mtu_bytes: i.mtu_bytes,
                mtu_bytes: self.mtus.get(&i.name).copied(),
                up: self.ups.get(&i.name).copied(),
            })
            .collect();
        self.board.update(|v| {
            v.incidents = incidents;
            v.interfaces = interfaces;
        });
        for a in alerts {
            self.delivery.send(&a);
        }
    }

    /// Drops every upload connection (the path changed under them) and forgets what their
    /// `TCP_INFO` and stalls said: those connections' late signals are not evidence about the
    /// path as it is now.
    fn fresh_connections(&mut self) {
        self.transport.abandon_connections();
        self.tcp_seen.clear();
        self.stalls_seen = self.metrics.stalls.value();
    }
}
