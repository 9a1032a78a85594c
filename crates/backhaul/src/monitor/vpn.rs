//! The site's strongSwan VPN as the monitor sees it over VICI.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backhaul_diagnose::{Observation, Signal, VpnState};
use backhaul_netprobe::{ChildSa, Vici, VpnEventKind, VpnTunnels};
use backhaul_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::probe::now_ms;
use crate::status::{StatusBoard, VpnChildStatus};

/// How often strongSwan is asked for its SAs' counters (state changes come as events).
const VPN_POLL: Duration = Duration::from_secs(2);
/// Bytes out in one poll, with under 1 % of them back, that count as sending into a hole.
const ONE_WAY_MIN_BYTES: u64 = 64 * 1024;
/// How long one read of the event connection waits.
const EVENT_WAIT: Duration = Duration::from_millis(500);

/// The CHILD_SAs strongSwan reported last, shared with the monitor loop (the clamp reads the
/// one covering the endpoint); `None` until the watcher's first look.
#[derive(Debug, Clone, Default)]
pub(super) struct VpnView(Arc<Mutex<Option<Vec<ChildSa>>>>);

impl VpnView {
    /// The installed CHILD_SA whose remote selectors cover `addr`.
    pub(super) fn covering(&self, addr: Ipv4Addr) -> Option<ChildSa> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
            .find(|c| c.installed() && c.covers(addr))
            .cloned()
    }

    /// Whether the watcher has looked once: before that, no SA is no news.
    pub(super) fn looked(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    fn set(&self, children: Vec<ChildSa>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(children);
    }
}

/// Watches strongSwan on a thread of its own: charon's `ike-updown`/`child-updown` events on
/// one VICI connection, so every drop counts as a flap however quickly the tunnel returns, and
/// `list-sas` every [`VPN_POLL`] on another for the CHILD_SAs and their counters. Sends a
/// `Vpn` observation on every change of state and every flap, keeps the VPN metrics and the
/// status current. No socket or no loaded connection is `absent`: "not monitored". Where
/// charon refuses the event registration, a drop seen between two polls is the flap.
pub(super) fn watch_vpn(
    socket: std::path::PathBuf,
    tx: mpsc::UnboundedSender<Observation>,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
) -> VpnView {
    let view = VpnView::default();
    let shared = view.clone();
    let spawned = std::thread::Builder::new()
        .name("vpn-watch".into())
        .spawn(move || {
            let mut w = Watch {
                last: None,
                flaps: 0,
                was_up: false,
                counted: BTreeMap::new(),
            };
            let mut events: Option<Vici> = None;
            let mut next_poll = Instant::now();
            while !tx.is_closed() {
                if events.is_none() {
                    events = Vici::connect(&socket, EVENT_WAIT)
                        .and_then(|mut v| v.subscribe().map(|()| v))
                        .ok();
                }
                let mut flapped = false;
                if w.last.is_none() {
                    // The first look goes first: the clamp waits for it.
                } else if let Some(v) = &mut events {
                    loop {
                        match v.next_event() {
                            Ok(Some(e)) => {
                                tracing::info!(ike = %e.ike, up = e.up, kind = ?e.kind, "VPN event");
                                if e.kind == VpnEventKind::Ike && !e.up {
                                    flapped = true;
                                    w.flap(&metrics);
                                }
                                // A change: look at the SAs now.
                                next_poll = Instant::now();
                            }
                            Ok(None) => break,
                            Err(_) => {
                                // charon went away (killed, restarted): every SA it held is
                                // gone with it, however fast a new one re-establishes them.
                                if w.was_up {
                                    w.flap(&metrics);
                                    w.was_up = false;
                                    flapped = true;
                                }
                                events = None;
                                next_poll = Instant::now();
                                break;
                            }
                        }
                    }
                } else {
                    std::thread::sleep(EVENT_WAIT);
                }
                if Instant::now() < next_poll && !flapped {
                    continue;
                }
                next_poll = Instant::now() + VPN_POLL;
                let tunnels = Vici::connect(&socket, VPN_POLL).and_then(|mut v| v.tunnels());
                let (state, text) = vpn_state(&socket, &tunnels);
                if w.was_up && state != VpnState::Up && events.is_none() {
                    w.flap(&metrics);
                    flapped = true;
                }
                w.was_up = state == VpnState::Up;
                metrics.vpn_up.set(if w.was_up { 1.0 } else { 0.0 });
                let children = tunnels.map(|t| t.children).unwrap_or_default();
                metrics.vpn_child_sa_up.set(
                    if children.iter().any(ChildSa::installed) {
                        1.0
                    } else {
                        0.0
                    },
                );
                if let Some(bytes_out) = w.count_bytes(&children, &metrics) {
                    tx.send(Observation::new(
                        now_ms(),
                        Signal::VpnOneWay {
                            bytes_out,
                            seconds: VPN_POLL.as_secs(),
                        },
                    ))
                    .ok();
                }
                if w.last != Some(state) || flapped {
                    tracing::info!(vpn = %text, flaps = w.flaps, "VPN state");
                    tx.send(Observation::new(
                        now_ms(),
                        Signal::Vpn {
                            state,
                            flaps: w.flaps,
                        },
                    ))
                    .ok();
                    w.last = Some(state);
                }
                let line = if state == VpnState::Absent {
                    text
                } else {
                    format!("{text}; {} flaps since start", w.flaps)
                };
                let statuses = children.iter().map(VpnChildStatus::from).collect();
                shared.set(children);
                board.update(|v| {
                    v.vpn = line;
                    v.vpn_children = statuses;
                });
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the VPN watcher thread; VPN not monitored");
    }
    view
}

/// The watcher's running state.
struct Watch {
    last: Option<VpnState>,
    flaps: u32,
    was_up: bool,
    /// Bytes already counted per CHILD_SA (`ike/child`, in, out): a rekeyed SA starts at 0.
    counted: BTreeMap<String, (u64, u64)>,
}

impl Watch {
    fn flap(&mut self, metrics: &Metrics) {
        self.flaps += 1;
        metrics.vpn_flaps.inc();
    }

    /// Adds what each CHILD_SA moved since the last look to `backhaul_vpn_bytes_total`, and
    /// returns the bytes that went out while (almost) nothing came back, if that happened:
    /// the tunnel sends into a black hole.
    fn count_bytes(&mut self, children: &[ChildSa], metrics: &Metrics) -> Option<u64> {
        let mut now = BTreeMap::new();
        let (mut total_in, mut total_out) = (0, 0);
        for c in children {
            let key = format!("{}/{}", c.ike, c.name);
            let (was_in, was_out) = self.counted.get(&key).copied().unwrap_or((0, 0));
            let grew = |now: u64, was: u64| if now >= was { now - was } else { now };
            let (bytes_in, bytes_out) = (grew(c.bytes_in, was_in), grew(c.bytes_out, was_out));
            metrics.vpn_bytes.add("in", bytes_in);
            metrics.vpn_bytes.add("out", bytes_out);
            total_in += bytes_in;
            total_out += bytes_out;
            now.insert(key, (c.bytes_in, c.bytes_out));
        }
        let first = self.counted.is_empty();
        self.counted = now;
        // Probe replies and DPD come back even into a black hole: "nothing" is under 1 %.
        (!first && total_out >= ONE_WAY_MIN_BYTES && total_in * 100 <= total_out)
            .then_some(total_out)
    }
}

/// The VPN's state and its status line from one `get-conns` + `list-sas` look.
fn vpn_state(
    socket: &std::path::Path,
    tunnels: &Result<VpnTunnels, backhaul_netprobe::Error>,
) -> (VpnState, String) {
    match tunnels {
        Err(_) if !socket.exists() => (
            VpnState::Absent,
            format!(
                "not monitored: no strongSwan VICI socket at {}",
                socket.display()
            ),
        ),
        Err(e) => (
            VpnState::Absent,
            format!("not monitored: {e}: {}", error_source(e)),
        ),
        Ok(t) if t.configured.is_empty() => (
            VpnState::Absent,
            "not monitored: strongSwan has no connection loaded".to_owned(),
        ),
        Ok(t) if !t.established.is_empty() => {
            (VpnState::Up, format!("up: {}", t.established.join(", ")))
        }
        Ok(t) => (
            VpnState::Down,
            format!("down: {} loaded, none established", t.configured.join(", ")),
        ),
    }
}

fn error_source(e: &backhaul_netprobe::Error) -> String {
    std::error::Error::source(e).map_or(String::new(), |s| s.to_string())
}
