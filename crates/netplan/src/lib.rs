//! The netplan change guard: would this netplan change touch what its ticket says, and only
//! that, without breaking the site's links?
//!
//! Owns: parsing netplan YAML the way netplan does (strict keys, file:line:col errors, the
//! `/lib` → `/etc` → `/run` search path with shadowing and name-ordered merging), resolving each
//! definition to the real interface it touches (`match:` on MAC, driver, name globs), the
//! per-interface diff, the change declaration ([`Intent`]), the site policy
//! (`policy.rs`: WAN MTU = upstream path MTU, VLAN MTU ≤ parent, nothing removed from the WAN
//! link), the verdict, and consulting the real `netplan generate` as a second opinion.
//!
//! It also owns the guarded apply (issue 6 part 2): the [`Plan`] (`plan.rs`), the pending-apply
//! [`Lock`], backing up and restoring `etc/netplan`, the appliers (`netplan apply`, or `ip link`
//! in the current namespace), recording and explicitly restoring kernel link state, and the
//! state machine back up → write → apply → verify → keep or roll back and prove it
//! (`guard.rs`), with its [`ApplyReport`] (`report.rs`). The detached verifier is this crate's
//! hidden `apply-run` subcommand.
//!
//! And the agent's opt-in site remediation (`remedy.rs`, issue 12): the WAN interface's MTU
//! back to its declared value, or the path MTU on the WAN's routes (main table and strongSwan's
//! table 220) and taking it off again. Deciding when to act is the agent's.
//!
//! Does not own: the site inventory's schema (`backhaul-diagnose` owns it; [`SiteInventory`]
//! reads the agent's `[inventory]` so guard and agent agree on the WAN), the probes of the
//! connectivity test (the binary implements [`Connectivity`] with `backhaul-netprobe`, so this
//! crate stays free of raw sockets), diagnosing incidents (`diagnose`), or the binary's
//! exit-code mapping (`backhaul`).
//!
//! Talks to: the filesystem, `netplan` (generate, apply) and `ip` when installed, and the
//! [`Connectivity`] the binary hands in.
//!
//! # Deliberately stricter than netplan
//!
//! * Duplicate mapping keys are errors (netplan silently keeps one).
//! * A `match:` that selects two interfaces on this host is an error: the guard must know which
//!   link each definition touches.
//! * Two definitions resolving to the same interface are an error.
//! * Only `ethernets`, `vlans`, `bonds` and `bridges`, and a common subset of their keys, are
//!   understood; anything else is reported as an unknown key rather than ignored.

mod apply;
mod check;
pub mod cli;
mod connectivity;
mod diff;
mod error;
mod guard;
mod intent;
mod inventory;
mod link;
mod lock;
mod oracle;
mod parse;
mod plan;
pub mod policy;
mod remedy;
mod report;
mod resolve;
mod source;

pub use apply::{Applier, ApplierKind, IpLinkApplier, NetplanApplier};
pub use check::{CheckInput, Report, Verdict, check};
pub use connectivity::{Connectivity, Measurement, ProbeKind, ProbeResult, ProbeTarget};
pub use diff::{Change, DEFINITION_KEY, diff};
pub use error::{Error, Location};
pub use guard::{Clock, Env, SystemClock, execute};
pub use intent::{ANY_KEY, Intent, IntentItem};
pub use inventory::{DEFAULT_SITE_CONFIG, InventoryInterface, Role, SiteInventory, describe_role};
pub use link::{LinkState, Links, SysfsLinks};
pub use lock::{LOCK_FILE, Lock, Pending};
pub use oracle::{DEFAULT_NETPLAN_BINARY, NetplanOutcome, netplan_generate};
pub use parse::{
    Definition, Kind, MAX_FILE_BYTES, Match, Nameservers, Network, Renderer, Route, parse_files,
};
pub use plan::{
    DEFAULT_STATE_DIR, DISPLACED_DIR, Plan, PlanOptions, PlannedFile, Settings, VerifyPolicy,
};
pub use policy::{DEFAULT_MTU_BYTES, Finding, Rule, Severity};
pub use remedy::{KernelRoute, RouteMtu, STRONGSWAN_TABLE, SiteNet, wan_routes};
pub use report::{ApplyReport, Outcome, Round};
pub use resolve::{Interface, Resolved, SystemInterface, SystemInterfaces, glob_match, resolve};
pub use source::{ConfigFiles, ETC_DIR, SEARCH_DIRS, SourceFile};
