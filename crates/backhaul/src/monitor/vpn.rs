//! The site's strongSwan VPN as the monitor sees it over VICI.

use std::sync::Arc;
use std::time::Duration;

use backhaul_diagnose::{Observation, Signal, VpnState};
use backhaul_netprobe::Vici;
use backhaul_telemetry::Metrics;
use tokio::sync::mpsc;

use crate::probe::now_ms;
use crate::status::StatusBoard;

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

