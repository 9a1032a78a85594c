//! Where the monitor's observations come from besides probes: rtnetlink link events, the
//! strongSwan VICI poll, the host-wide frag-needed listener, and the spool's disk sample.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use backhaul_diagnose::{Inventory, Observation, Signal, VpnState};
use backhaul_netprobe::{FragNeededListener, LinkEvent, LinkWatcher, Vici};
use backhaul_spool::DiskStatus;
use backhaul_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::probe::now_ms;
use crate::status::StatusBoard;

/// Subscribes to rtnetlink link changes on a thread of its own that forwards them, stamped
/// with the time they arrived; the interfaces' current state comes first. Returns false
/// (after one warning) when the subscription fails, so the caller polls sysfs instead. When
/// the subscription breaks later, the thread logs once and drops the sender.
pub(super) fn watch_links(tx: mpsc::UnboundedSender<(u64, LinkEvent)>) -> bool {
    let mut watcher = match LinkWatcher::subscribe() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "cannot subscribe to rtnetlink link changes; polling /sys/class/net instead");
            return false;
        }
    };
    let now = now_ms();
    for link in watcher.table().links() {
        tx.send((now, LinkEvent::Appeared(link.clone()))).ok();
    }
    let spawned = std::thread::Builder::new()
        .name("link-watch".into())
        .spawn(move || {
            while !tx.is_closed() {
                match watcher.next_events() {
                    Ok(events) => {
                        let now = now_ms();
                        for e in events {
                            tx.send((now, e)).ok();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"),
                            "rtnetlink link watch failed; polling /sys/class/net instead");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the link watcher thread; polling /sys/class/net instead");
        return false;
    }
    true
}

/// The rules' view of a disk reading: seconds to full only while filling (the spool says
/// +Inf when not), and the window its projection looks back over.
pub(crate) fn disk_signal(d: &DiskStatus) -> Signal {
    Signal::Disk {
        used_percent: d.used_percent,
        seconds_to_full: d
            .seconds_to_full
            .is_finite()
            .then_some(d.seconds_to_full as u64),
        fill_window_seconds: d.fill_window.as_secs(),
    }
}

/// How often strongSwan is asked for its tunnels.
const VPN_POLL: Duration = Duration::from_secs(2);

/// Asks strongSwan over VICI every [`VPN_POLL`] for its loaded connections and established
/// IKE SAs, on a thread of its own: an established tunnel that drops is a flap. Sends a `Vpn`
/// observation whenever the state changes, keeps `backhaul_vpn_up`/`_flaps_total` and the
/// status line current. No socket or no loaded connection is `absent`: "not monitored".
pub(super) fn watch_vpn(
    socket: std::path::PathBuf,
    tx: mpsc::UnboundedSender<Observation>,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
) {
    let spawned = std::thread::Builder::new()
        .name("vpn-watch".into())
        .spawn(move || {
            let (mut last, mut flaps, mut was_up) = (None, 0u32, false);
            while !tx.is_closed() {
                let (state, text) =
                    match Vici::connect(&socket, VPN_POLL).and_then(|mut v| v.tunnels()) {
                        Err(_) if !socket.exists() => (
                            VpnState::Absent,
                            format!(
                                "not monitored: no strongSwan VICI socket at {}",
                                socket.display()
                            ),
                        ),
                        Err(e) => (
                            VpnState::Absent,
                            format!(
                                "not monitored: {}",
                                format_args!("{e}: {}", error_source(&e))
                            ),
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
                    };
                if was_up && state != VpnState::Up {
                    flaps += 1;
                    metrics.vpn_flaps.inc();
                }
                was_up = state == VpnState::Up;
                metrics.vpn_up.set(if was_up { 1.0 } else { 0.0 });
                if last != Some(state) {
                    tracing::info!(vpn = %text, flaps, "VPN state");
                    tx.send(Observation::new(now_ms(), Signal::Vpn { state, flaps }))
                        .ok();
                    last = Some(state);
                }
                let line = if state == VpnState::Absent {
                    text
                } else {
                    format!("{text}; {flaps} flaps since start")
                };
                board.update(|v| v.vpn = line);
                std::thread::sleep(VPN_POLL);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the VPN watcher thread; VPN not monitored");
    }
}

fn error_source(e: &backhaul_netprobe::Error) -> String {
    std::error::Error::source(e).map_or(String::new(), |s| s.to_string())
}

/// Listens for ICMP "fragmentation needed" about any socket's packets on a thread of its own:
/// counts them, keeps the latest next-hop MTU, and forwards each as an observation. Without
/// `CAP_NET_RAW` it says so once and the counter stays 0.
pub(super) fn listen_frag_needed(tx: mpsc::UnboundedSender<Observation>, metrics: Arc<Metrics>) {
    let mut listener = match FragNeededListener::open() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"),
                "ICMP fragmentation-needed listener off: backhaul_icmp_frag_needed_total stays 0");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("frag-needed".into())
        .spawn(move || {
            let mut last_mtu = None;
            while !tx.is_closed() {
                match listener.recv() {
                    Ok(None) => {}
                    Ok(Some(seen)) => {
                        let mtu = seen.frag.next_hop_mtu;
                        metrics.icmp_frag_needed.inc();
                        metrics.icmp_frag_needed_last_mtu_bytes.set(f64::from(mtu));
                        // One line per new next-hop MTU, not one per packet.
                        if last_mtu.replace(mtu) != Some(mtu) {
                            tracing::warn!(from = %seen.frag.from, next_hop_mtu = mtu,
                                destination = %seen.destination, protocol = seen.protocol,
                                "ICMP fragmentation needed");
                        }
                        tx.send(Observation::new(
                            now_ms(),
                            Signal::FragNeeded {
                                from: std::net::IpAddr::V4(seen.frag.from),
                                next_hop_mtu: u32::from(mtu),
                            },
                        ))
                        .ok();
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"),
                            "ICMP fragmentation-needed listener stopped");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the fragmentation-needed listener thread");
    }
}

/// Turns a link event on an inventory interface into observations; true when a known MTU
/// changed (the moment a black hole begins). `mtus` and `ups` are the monitor's view of the
/// interfaces now.
pub(super) fn link_observation(
    inventory: &Inventory,
    (mtus, ups): (&mut HashMap<String, u32>, &mut HashMap<String, bool>),
    at: u64,
    event: LinkEvent,
    obs: &mut Vec<Observation>,
) -> bool {
    let (ifname, mtu, up) = match event {
        LinkEvent::Appeared(l) => (l.name, Some(l.mtu_bytes), Some(l.up)),
        LinkEvent::MtuChanged {
            ifname, new_bytes, ..
        } => (ifname, Some(new_bytes), None),
        LinkEvent::StateChanged { ifname, up } => (ifname, None, Some(up)),
        // A vanished interface carries nothing: to the rules that is a link down.
        LinkEvent::Removed { ifname } => (ifname, None, Some(false)),
    };
    let Some(declared) = inventory.interface(&ifname) else {
        return false;
    };
    if let Some(up) = up {
        ups.insert(ifname.clone(), up);
        tracing::info!(interface = %ifname, up, "interface state");
        obs.push(Observation::new(
            at,
            Signal::LinkState {
                ifname: ifname.clone(),
                up,
            },
        ));
    }
    let Some(mtu) = mtu else {
        return false;
    };
    match mtus.insert(ifname.clone(), mtu) {
        None => {
            obs.push(Observation::new(
                at,
                Signal::LinkMtu {
                    ifname,
                    mtu_bytes: mtu,
                },
            ));
            false
        }
        Some(old) if old != mtu => {
            tracing::warn!(interface = %ifname, old_mtu = old, new_mtu = mtu,
                declared = declared.mtu_bytes, "interface MTU changed");
            obs.push(Observation::new(
                at,
                Signal::LinkMtuChanged {
                    ifname,
                    old_bytes: old,
                    new_bytes: mtu,
                },
            ));
            true
        }
        Some(_) => false,
    }
}
