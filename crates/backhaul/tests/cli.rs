//! Tests of the real `backhaul` binary: config errors and exit codes, the demo, the daemon's
//! metrics and signals, the SIGKILL torture test, the fleet view in `deploy/` against a live
//! agent's `/metrics`, the status page in headless Chromium, and the Debian package installed
//! and purged (root), on this host and under a real systemd booted as PID 1 in its own namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod cli {
    pub mod alerts;
    pub mod config;
    pub mod credentials;
    pub mod daemon;
    pub mod deb;
    pub mod degraded;
    pub mod demo;
    pub mod deploy;
    pub mod fleet;
    pub mod journal;
    pub mod kill;
    pub mod netplan;
    pub mod proxy;
    pub mod service;
    pub mod status_page;
    pub mod support;
    pub mod systemd;
}
