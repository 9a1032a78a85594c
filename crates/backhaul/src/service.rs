//! Running under systemd with `Type=notify` (sd_notify(3), without libsystemd: the protocol is
//! one datagram per message to the unix socket in `NOTIFY_SOCKET`).
//!
//! * `READY=1` once the journal is open and the first spool scan is done.
//! * `WATCHDOG=1` every third of `WATCHDOG_USEC`, but only while the loops that must keep
//!   turning do: the uploader's and, with an `[inventory]`, the monitor's. Each loop stamps a
//!   heartbeat gauge every iteration; a loop that has not stamped for [`STALE_AFTER`] stops the
//!   pings, and systemd restarts the wedged agent.
//! * `STATUS=` a line a person reads in `systemctl status`: what is uploading, the backlog, the
//!   open incidents.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`) nothing is sent.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backhaul_telemetry::Metrics;
use tokio::sync::watch;

use crate::status::{StatusBoard, chunks, human_bytes};

/// A loop that has not stamped its heartbeat for this long counts as wedged. Longer than the
/// longest legitimate pause of the uploader's loop: a bucket check during a cut waits out two
/// request timeouts (2 × 60 s) and the integrity probe's requests after it.
pub const STALE_AFTER: Duration = Duration::from_secs(420);
/// How often `STATUS=` is refreshed when no watchdog is asked for.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// A connected notify socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket named by `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace),
    /// or `None` when the variable is unset or empty.
    pub fn from_env() -> io::Result<Option<Self>> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(v) if !v.is_empty() => Self::new(&v.to_string_lossy()).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `socket` as `NOTIFY_SOCKET` spells it.
    pub fn new(socket: &str) -> io::Result<Self> {
        let addr = match socket.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => SocketAddr::from_pathname(socket)?,
        };
        Ok(Self {
            sock: UnixDatagram::unbound()?,
            addr,
        })
    }

    /// Sends one message (`READY=1`, `STATUS=…`); newline-separated assignments.
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(drop)
    }
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), if it is meant for this process
/// (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .is_none_or(|p| p.trim() == std::process::id().to_string());
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (pid_ok && usec > 0).then(|| Duration::from_micros(usec))
}

/// Seconds since the epoch, for heartbeat gauges.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whether the loops that must keep turning stamped their heartbeats within [`STALE_AFTER`]
/// of `now` (the monitor runs on every site, with or without an `[inventory]`). The wedged
/// loop's name otherwise.
pub fn wedged(metrics: &Metrics, now: f64) -> Option<&'static str> {
    let stale = |beat: f64| now - beat > STALE_AFTER.as_secs_f64();
    if stale(metrics.uploader_heartbeat_seconds.value()) {
        return Some("uploader");
    }
    if stale(metrics.monitor_heartbeat_seconds.value()) {
        return Some("monitor");
    }
    None
}

/// The `STATUS=` line: "backlog 14 chunks (1.1 GB), uploading at 43.2 Mbit/s; incident
/// pmtu_blackhole on eno1 (warning)".
pub fn status_line(metrics: &Metrics, board: &StatusBoard) -> String {
    let s = board.status(metrics);
    let u = &s.upload;
    let mut line = format!(
        "backlog {} ({}), uploading at {:.1} Mbit/s",
        chunks(u.backlog_chunks),
        human_bytes(u.backlog_bytes),
        u.goodput_mbps_10s
    );
    if s.incidents.is_empty() {
        if s.monitoring {
            line.push_str("; no incident");
        }
    } else {
        let open: Vec<String> = s
            .incidents
            .iter()
            .map(|i| format!("{} on {} ({})", i.kind, i.subject, i.severity))
            .collect();
        line.push_str(&format!("; incident {}", open.join(", ")));
    }
    if let Some(c) = &s.mss_clamp {
        line.push_str(&format!("; uploads clamped to MSS {}", c.mss_bytes));
    }
    line
}

/// Sends `READY=1` when `ready` turns true, then keeps `STATUS=` current and pings the
/// watchdog while the loops turn, until `shutdown` (then `STOPPING=1`).
pub async fn supervise(
    notifier: Notifier,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    mut ready: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let warn = |e: io::Error| tracing::warn!(error = %e, "systemd notify socket: send failed");
    tokio::select! {
        r = ready.wait_for(|r| *r) => if r.is_err() { return },
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let status = status_line(&metrics, &board);
    notifier
        .send(&format!("READY=1\nSTATUS={status}"))
        .unwrap_or_else(warn);
    let watchdog = watchdog_interval();
    let every = watchdog.map_or(STATUS_EVERY, |w| (w / 3).min(STATUS_EVERY));
    let mut said_wedged = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
        let mut msg = format!("STATUS={}", status_line(&metrics, &board));
        match wedged(&metrics, now_seconds()) {
            None => {
                said_wedged = false;
                if watchdog.is_some() {
                    msg.push_str("\nWATCHDOG=1");
                }
            }
            Some(which) if !said_wedged => {
                said_wedged = true;
                tracing::error!(
                    loop_name = which,
                    stale_after_s = STALE_AFTER.as_secs(),
                    "the {which} loop has not turned; no more watchdog pings, systemd restarts the agent"
                );
            }
            Some(_) => {}
        }
        notifier.send(&msg).unwrap_or_else(warn);
    }
    notifier.send("STOPPING=1").unwrap_or_else(warn);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stopped_stamping_is_wedged() {
        let m = Metrics::default();
        let now = now_seconds();
        m.uploader_heartbeat_seconds.set(now);
        assert_eq!(wedged(&m, now), Some("monitor"));
        m.monitor_heartbeat_seconds.set(now);
        assert_eq!(wedged(&m, now + 60.0), None);
        assert_eq!(
            wedged(&m, now + STALE_AFTER.as_secs_f64() + 1.0),
            Some("uploader")
        );
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(1_100_000_000), "1.1 GB");
        assert_eq!(human_bytes(82_000_000), "82.0 MB");
        assert_eq!(human_bytes(512), "512 B");
    }
}
