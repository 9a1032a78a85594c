//! The incident lab: the site of the 2025-11-12 PMTUD black hole rebuilt on one machine, in
//! Linux network namespaces, so that the real kernel, real TCP and a real S3 server misbehave as
//! they did that day. Every network capability of backhaul is tested on it, side by side with
//! the uploader sites use today (rclone).
//!
//! Owns: the namespace + TAP topology ([`topology`]), the userspace wire that silently drops
//! oversize frames and counts what it did ([`wire`]), the lab's state files and the cleanup of
//! stale instances ([`state`]), the peers inside (S3 server, camera simulator, webhook receiver,
//! the uploader under test), the scenario format ([`scenario`]), the `[vpn]` tunnel between two strongSwan charons ([`vpn`]), the runner and its report
//! ([`run`], [`report`]), what a run puts under test ([`peers`]), the side-by-side comparison of uploaders ([`compare`]), and the `lab`
//! command line ([`cli`]).
//!
//! Does not own: the agent itself (it runs the `backhaul` binary it is given), the S3 server's
//! code (moto's, or the binary's `s3-server`), or deciding what an incident means
//! (`backhaul-diagnose`).
//!
//! Safety: `sys` is the crate's one module with `unsafe` (the TUNSETIFF ioctl, `kill`,
//! `geteuid`, and a flag-only signal handler).
#![warn(missing_docs)]

pub mod cli;
mod cmd;
pub mod compare;
mod error;
pub mod peers;
pub mod probe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod state;
mod sys;
pub mod topology;
pub mod vpn;
pub mod wire;

pub use cli::{LabCommand, run, run_with};
pub use cmd::start_time;
pub use error::Error;
pub use topology::{IcmpPolicy, Invocation, Lab, LabOptions, Node, require_root};
