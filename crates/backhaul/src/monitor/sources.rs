//! Where the monitor's observations come from besides probes: rtnetlink link events, the
//! host-wide frag-needed listener, and the spool's disk sample.

use std::collections::HashMap;
use std::sync::Arc;

use backhaul_diagnose::{Inventory, Observation, Signal};
use backhaul_netprobe::{FragNeededListener, LinkEvent, LinkWatcher};
use backhaul_spool::DiskStatus;
use backhaul_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::probe::now_ms;

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

/// The guarded `backhaul netplan apply` holding its lock in `state_dir` when an interface
/// changed at `at`: the change came through it, and its ticket is what the fleet groups the
/// alerts by. Nothing when no apply is pending (or its lock cannot be read: the link change
/// then stands for itself).
pub(super) fn guarded_apply(state_dir: &std::path::Path, at: u64) -> Option<Observation> {
    let pending = backhaul_netplan::Lock::read(state_dir).ok()??;
    tracing::info!(run = %pending.id, ticket = pending.ticket.as_deref().unwrap_or("none"),
        "interface change during a guarded netplan apply");
    Some(Observation::new(
        at,
        Signal::GuardedApply {
            ticket: pending.ticket,
            run_id: pending.id,
        },
    ))
}
