//! Diagnosis: turns timestamped observations of the site's network and uploads into incidents
//! that name the root cause, show the evidence and give the fix — and into deduplicated alerts.
//!
//! Owns: the site inventory (interfaces with role and declared MTU, gateway, upload endpoint,
//! expected upload rate), the vocabulary of observations ([`Signal`]), the time-ordered
//! [`Store`] they are kept in, one rule per root cause (`rules/<cause>.rs`), the [`Engine`]
//! that opens, updates and resolves [`Incident`]s, and the [`AlertPolicy`] that turns incident
//! transitions into webhook payloads (native JSON and a Slack-compatible shape).
//!
//! Does not own: producing observations (`backhaul-netprobe` for links, probes, ICMP and
//! `TCP_INFO`; `backhaul-upload` for goodput, stalls and error classes; `backhaul-spool` for
//! disk), sending alerts, metrics (`backhaul-telemetry`), or the clock.
//!
//! # Purity
//!
//! Nothing here does I/O, reads a clock, spawns a thread or touches the network. Every
//! timestamp is a `u64` of milliseconds since an epoch the caller chooses; the caller passes
//! the current time in with each observation (or with [`Engine::tick`]), and a [`TimeBase`]
//! that maps those milliseconds to UTC wall-clock time for the human-readable texts. The same
//! timeline therefore always yields the same incidents, which is what the rule tests rely on.
//!
//! # Flow
//!
//! ```text
//! netprobe / upload / spool ──Observation──▶ Engine::observe ──▶ Store (time-ordered)
//!                                               │ rules::evaluate_all → Findings
//!                                               ▼
//!                        Vec<Transition> (Opened / Updated / Resolved Incident)
//!                                               │ AlertPolicy::on_transition
//!                                               ▼
//!                               Alert (native JSON | Slack JSON) → webhook sender
//! ```
//!
//! An incident is identified by its kind and subject (for example `pmtu_blackhole` on `eno1`):
//! while a rule keeps finding it, it stays open and is updated; when no rule finds it any more,
//! it is resolved. A fault whose onset falls within the attribution window (default 10 min,
//! [`DEFAULT_ATTRIBUTION_WINDOW_SECONDS`]) after an MTU change of a WAN interface is attributed
//! to that change: the root cause names the interface, the change and when it happened, and
//! the fix reverts it.

#![warn(missing_docs)]

mod alert;
mod engine;
mod error;
mod incident;
mod inventory;
mod observation;
pub mod rules;
mod settings;
mod store;
#[cfg(test)]
mod test_util;
mod time;

pub use alert::{
    Alert, AlertChange, AlertPolicy, AlertReason, DEFAULT_RENOTIFY_SECONDS, SlackMessage,
};
pub use engine::Engine;
pub use error::Error;
pub use incident::{
    Change, Evidence, Finding, Flapping, Incident, Kind, Severity, Status, Transition,
};
pub use inventory::{
    DEFAULT_PATH_MTU_BYTES, Interface, InterfaceConfig, Inventory, InventoryConfig, Role,
};
pub use observation::{Observation, PathRecovery, Signal, Target, UploadErrorClass, VpnState};
pub use settings::{
    DEFAULT_ATTRIBUTION_WINDOW_SECONDS, DEFAULT_DEGRADED_FRACTION,
    DEFAULT_DEGRADED_SUSTAIN_SECONDS, DEFAULT_DISK_CRITICAL_PERCENT,
    DEFAULT_DISK_CRITICAL_TIME_TO_FULL_SECONDS, DEFAULT_DISK_WARNING_PERCENT,
    DEFAULT_DISK_WARNING_TIME_TO_FULL_SECONDS, DEFAULT_ENDPOINT_ERRORS,
    DEFAULT_FLAP_HOLD_DOWN_SECONDS, DEFAULT_LARGE_PROBE_FAILURES, DEFAULT_PROBE_STALE_SECONDS,
    DEFAULT_RETENTION_SECONDS, DEFAULT_SIGNAL_WINDOW_SECONDS, DEFAULT_SMALL_PROBE_MAX_BYTES,
    DEFAULT_VPN_FLAP_WINDOW_SECONDS, DEFAULT_VPN_FLAPS, Settings,
};
pub use store::{LinkStatus, MtuChange, Store};
pub use time::TimeBase;
