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
use std::time::{Duration, Instant};

use backhaul_diagnose::{Inventory, Observation, Settings, Signal, UploadErrorClass};
use backhaul_netprobe::Route;
use backhaul_telemetry::Metrics;
use backhaul_upload::{ErrorClass, Transport};
use tokio::sync::{broadcast, watch};

use crate::config::{MonitorConfig, RemediationConfig};
use crate::status::StatusBoard;

pub(crate) mod clamp;
mod delivery;
pub(crate) mod remedy;
mod sources;
mod state;
pub(crate) mod tunnel;
mod upload_signals;
mod vpn;

use state::MonitorLoop;

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
        | ErrorClass::Resigned
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

/// The most errors of one class a batch turns into observations: an outage fails requests by
/// the hundred, and no rule needs more than a few.
const ERRORS_PER_CLASS: usize = 10;

/// Upload errors that arrived together as the rules' observations: one per error of a class
/// they read, at most [`ERRORS_PER_CLASS`] of each.
fn error_observations(batch: &[ErrorClass], now: u64) -> Vec<Observation> {
    let mut taken: HashMap<ErrorClass, usize> = HashMap::new();
    let mut obs = Vec::new();
    for &class in batch {
        let Some(rule) = rule_class(class) else {
            continue;
        };
        let n = taken.entry(class).or_default();
        if *n < ERRORS_PER_CLASS {
            *n += 1;
            obs.push(Observation::new(now, Signal::UploadError { class: rule }));
        }
    }
    obs
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
    /// The uploader's errors, each as it happens.
    pub upload_errors: broadcast::Receiver<ErrorClass>,
    /// The uploads' credentials, whose refreshes it reports.
    pub credentials: Arc<backhaul_upload::CredentialsProvider>,
}

/// Runs until `shutdown`.
pub async fn run(
    monitor: Monitor,
    metrics: Arc<Metrics>,
    board: Arc<StatusBoard>,
    transport: Arc<Transport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut state, mut inputs) =
        MonitorLoop::start(monitor, metrics, board, transport, shutdown.clone());
    let mut tick = tokio::time::interval(state.tick_every());
    loop {
        state.heartbeat();
        let mut obs = Vec::new();
        let mut link_events = Vec::new();
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
            Some(round) = inputs.probes.recv() => state.on_probe_round(round, &mut obs),
            Some(o) = inputs.signals.recv() => state.on_signal(o, &mut obs),
            r = inputs.errors.recv(), if state.errors_open => {
                let mut batch = Vec::new();
                match r {
                    Ok(class) => batch.push(class),
                    // More failed than anyone needs counted; the next ones still arrive.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => state.errors_open = false,
                }
                while let Ok(class) = inputs.errors.try_recv() {
                    batch.push(class);
                }
                state.on_upload_errors(&batch, &mut obs);
            }
            event = inputs.links.recv(), if state.watching => match event {
                Some(e) => {
                    link_events.push(e);
                    // Take whatever else the same change produced in one batch.
                    while let Ok(e) = inputs.links.try_recv() {
                        link_events.push(e);
                    }
                }
                None => state.links_lost(),
            },
        }
        state.turn(link_events, obs);
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
    fn a_batch_of_errors_feeds_the_rules_at_most_ten_of_a_class() {
        let mut batch = vec![ErrorClass::Auth; 3];
        batch.extend([ErrorClass::Timeout; 25]);
        batch.extend([ErrorClass::Checksum; 4]);
        let obs = error_observations(&batch, 7);
        let count = |c: UploadErrorClass| {
            obs.iter()
                .filter(|o| o.signal == Signal::UploadError { class: c })
                .count()
        };
        assert_eq!(count(UploadErrorClass::Auth), 3);
        assert_eq!(count(UploadErrorClass::Timeout), 10);
        // A checksum refusal is the integrity path's business, not a path rule's.
        assert_eq!(obs.len(), 13);
        assert!(obs.iter().all(|o| o.at_ms == 7));
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
