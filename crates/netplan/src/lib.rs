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
//! Does not own: applying, verifying or rolling back a change (issue 6 part 2; only the
//! [`Applier`] seam exists, nothing implements it yet), probing the network (`netprobe`),
//! diagnosing incidents (`diagnose`), or the binary's exit-code mapping (`backhaul`).
//!
//! Talks to: nothing at run time except the filesystem and, when installed, `netplan`.
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
mod diff;
mod error;
mod intent;
mod inventory;
mod oracle;
mod parse;
pub mod policy;
mod resolve;
mod source;

pub use apply::Applier;
pub use check::{CheckInput, Report, Verdict, check};
pub use diff::{Change, DEFINITION_KEY, diff};
pub use error::{Error, Location};
pub use intent::{ANY_KEY, Intent, IntentItem};
pub use inventory::{InventoryInterface, Role, SiteInventory};
pub use oracle::{DEFAULT_NETPLAN_BINARY, NetplanOutcome, netplan_generate};
pub use parse::{
    Definition, Kind, MAX_FILE_BYTES, Match, Nameservers, Network, Renderer, Route, parse_files,
};
pub use policy::{DEFAULT_MTU_BYTES, Finding, Rule, Severity};
pub use resolve::{Interface, Resolved, SystemInterface, SystemInterfaces, glob_match, resolve};
pub use source::{ConfigFiles, ETC_DIR, SEARCH_DIRS, SourceFile};
