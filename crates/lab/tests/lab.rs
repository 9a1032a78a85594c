//! The lab's root suite, every test that needs root: ground truth of the lab itself (the black
//! hole behaves like the incident; revert and PMTUD restore it), netprobe's probes, link watcher
//! and frag-needed listener inside the lab, `diagnose`/`check` and the daemon end to end, the
//! VPN signal against real strongSwan, guarded netplan apply inside the site, the agent on a
//! full disk (a tmpfs), and cleanup after a killed lab. One target with
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
    pub mod daemon_signals;
    pub mod diagnose;
    pub mod frag_listener;
    pub mod full_disk;
    pub mod ground_truth;
    pub mod link_watch;
    pub mod netplan_apply;
    pub mod pmtu_probe;
    pub mod support;
    pub mod tunnel;
    pub mod vpn;
}

use libtest_mimic::{Arguments, Trial};

fn main() {
    let mut args = Arguments::from_args();
    // One lab at a time: every `up` sweeps stale instances, and two labs being built at once in
    // one process can look stale to each other.
    args.test_threads = Some(1);
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
            "netprobe_sees_the_black_hole_and_finds_the_path_mtu_by_loss",
            lab::pmtu_probe::probes_see_the_black_hole_and_find_the_path_mtu_by_loss,
        ),
        (
            "netprobe_reports_frag_needed_when_icmp_is_allowed",
            lab::pmtu_probe::frag_needed_reaches_the_prober_when_icmp_is_allowed,
        ),
        (
            "netprobe_link_watch_reports_mtu_and_state_changes_within_a_second",
            lab::link_watch::rtnetlink_reports_mtu_and_state_changes_with_old_values_within_a_second,
        ),
        (
            "netprobe_frag_needed_listener_sees_any_sockets_frag_needed",
            lab::frag_listener::listener_counts_frag_needed_for_any_socket_when_icmp_is_allowed,
        ),
        (
            "netprobe_frag_needed_listener_sees_nothing_when_icmp_is_blocked",
            lab::frag_listener::listener_sees_nothing_when_icmp_is_blocked,
        ),
        (
            "vpn_follow_wan_black_hole_is_clamped_inside_the_tunnel_and_named",
            lab::tunnel::follow_wan_black_hole_is_clamped_inside_the_tunnel_and_named,
        ),
        (
            "vpn_esp_larger_than_the_path_is_found_by_probes_through_the_tunnel",
            lab::tunnel::esp_larger_than_the_path_is_found_by_probes_through_the_tunnel,
        ),
        (
            "vpn_every_tunnel_drop_is_counted_from_charons_events",
            lab::tunnel::every_tunnel_drop_is_counted_from_charons_events,
        ),
        (
            "vpn_route_mtu_remediation_goes_on_the_tunnels_routes",
            lab::tunnel::route_mtu_remediation_goes_on_the_tunnels_routes,
        ),
        (
            "diagnose_names_the_black_hole_its_interface_and_the_fix",
            lab::diagnose::diagnose_names_the_black_hole_and_the_fix,
        ),
        (
            "diagnose_tells_pmtud_working_from_a_black_hole",
            lab::diagnose::diagnose_tells_pmtud_working_from_a_black_hole,
        ),
        (
            "daemon_alerts_on_the_black_hole_and_resolves_after_the_revert",
            lab::diagnose::daemon_alerts_on_the_black_hole_and_resolves_after_the_revert,
        ),
        (
            "daemon_remediates_the_black_hole_with_a_route_mtu",
            lab::diagnose::daemon_remediates_the_black_hole_with_a_route_mtu,
        ),
        (
            "daemon_remediates_the_black_hole_by_restoring_the_declared_mtu",
            lab::diagnose::daemon_remediates_the_black_hole_by_restoring_the_declared_mtu,
        ),
        (
            "daemon_classifies_pmtud_working_as_path_mtu_reduced",
            lab::diagnose::daemon_classifies_pmtud_working_as_path_mtu_reduced,
        ),
        (
            "daemon_stays_quiet_on_a_healthy_lossy_uplink",
            lab::diagnose::daemon_stays_quiet_on_a_healthy_lossy_uplink,
        ),
        (
            "diagnose_copes_with_a_gateway_that_answers_no_ping",
            lab::diagnose::diagnose_copes_with_a_gateway_that_answers_no_ping,
        ),
        (
            "check_and_diagnose_probe_over_ping_sockets_as_an_unprivileged_user",
            lab::diagnose::check_and_diagnose_probe_over_ping_sockets_as_an_unprivileged_user,
        ),
        (
            "daemon_signals_drift_at_once_frag_needed_counted_in_status",
            lab::daemon_signals::daemon_reports_drift_at_once_and_counts_frag_needed,
        ),
        (
            "vpn_vici_sees_strongswan_and_the_daemon_counts_a_flap",
            lab::vpn::vici_sees_strongswan_tunnels_and_the_daemon_counts_a_flap,
        ),
        (
            "netplan_apply_rolls_back_a_wan_mtu_9000_that_slips_past_the_check",
            lab::netplan_apply::bad_change_that_slips_past_the_check_is_rolled_back_and_proven,
        ),
        (
            "netplan_apply_rolls_back_a_wan_mtu_9000_inside_a_follow_wan_tunnel",
            lab::netplan_apply::bad_change_is_rolled_back_by_the_probe_through_a_follow_wan_tunnel,
        ),
        (
            "netplan_apply_keeps_the_intended_camera_jumbo_change",
            lab::netplan_apply::intended_camera_jumbo_change_is_verified_and_kept,
        ),
        (
            "netplan_apply_rollback_survives_a_killed_session_and_blocks_a_second_apply",
            lab::netplan_apply::killed_session_does_not_stop_the_rollback_and_blocks_a_second_apply,
        ),
        (
            "full_disk_never_stops_the_agent_and_frees_space_when_the_store_returns",
            lab::full_disk::full_disk_never_stops_the_agent_and_frees_space_when_the_store_returns,
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
    if let Some(reason) = &skip {
        println!(
            "SKIP lab netns suite ({} tests): needs root/CAP_NET_ADMIN ({reason})",
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
