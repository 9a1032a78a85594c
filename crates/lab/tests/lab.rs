//! The lab's root suite: ground truth of the lab itself (the black hole behaves like the
//! incident; revert and PMTUD restore it) and cleanup after a killed lab. One target with
//! `harness = false` (libtest-mimic): without root or the ability to create a namespace it
//! prints one SKIP line and reports every trial as ignored, never as passed.

// A `harness = false` target is not compiled with `--test`, so clippy's allow-unwrap-in-tests
// does not reach it; these are tests all the same.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::let_underscore_must_use
)]

mod lab {
    pub mod cleanup;
    pub mod ground_truth;
    pub mod support;
}

use libtest_mimic::{Arguments, Trial};

fn main() {
    let args = Arguments::from_args();
    let tests: Vec<(&'static str, fn())> = vec![
        (
            "incident_2025_11_12_wan_mtu_9000_stalls_bulk_tcp_while_pings_pass",
            lab::ground_truth::mtu_9000_stalls_then_revert_completes,
        ),
        (
            "pmtud_completes_the_transfer_when_icmp_is_allowed",
            lab::ground_truth::pmtud_completes_when_icmp_allowed,
        ),
        (
            "blocked_icmp_black_holes_even_behind_a_jumbo_switch",
            lab::ground_truth::blocked_icmp_black_holes_behind_jumbo_switch,
        ),
        (
            "wire_counts_loss_and_cut_links",
            lab::ground_truth::wire_counts_loss_and_cut_links,
        ),
        (
            "killed_lab_is_removed_by_the_next_up",
            lab::cleanup::killed_lab_is_removed_by_the_next_up,
        ),
        (
            "dropped_lab_leaves_nothing_behind",
            lab::cleanup::dropped_lab_leaves_nothing_behind,
        ),
    ];
    let skip = lab::support::skip_reason();
    if skip.is_some() {
        println!(
            "SKIP lab netns suite ({} tests): needs root/CAP_NET_ADMIN",
            tests.len()
        );
    }
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            Trial::test(name, move || {
                f();
                Ok(())
            })
            .with_ignored_flag(skip.is_some())
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}
