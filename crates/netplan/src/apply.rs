//! The seam for applying a checked change (issue 6, part 2). Only the trait exists so far:
//! nothing in this crate applies or rolls back yet, and `backhaul netplan apply` does not exist.
//!
//! The plan: `netplan apply` on hosts; the lab supplies an implementation that sets the same
//! values with `ip link` inside its namespace (systemd-networkd does not run there). Rollback
//! must set previous values explicitly: removing `mtu:` and re-applying leaves a link at 9000.

use crate::resolve::Resolved;

/// Applies a resolved configuration to the links it names.
pub trait Applier {
    /// The implementation's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the kernel state match `target`, setting every value explicitly (an unset key
    /// must not mean "leave as is" on rollback).
    fn apply(&mut self, target: &Resolved) -> Result<(), Self::Error>;
}
