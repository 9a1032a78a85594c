//! backhaul-netprobe's rtnetlink link watcher in the lab's site namespace: the incident's
//! `ip link set eno1 mtu 9000` must arrive as an event with old and new values well inside a
//! second, and so must the revert and a link going down.

use std::process::Command;
use std::time::{Duration, Instant};

use backhaul_lab::IcmpPolicy;
use backhaul_netprobe::{LinkEvent, LinkWatcher};

use super::support::{in_site, lab};

/// Runs `ip link set dev eno1 <args>` and waits for the first event about eno1 the
/// subscription reports; returns it and how long after the command started it arrived.
fn change_and_wait(w: &mut LinkWatcher, args: &[&str]) -> (LinkEvent, Duration) {
    let started = Instant::now();
    let status = Command::new("ip")
        .args(["link", "set", "dev", "eno1"])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "ip link set eno1 {args:?}");
    loop {
        let events = w.next_events().unwrap();
        let about_eno1 = events.into_iter().find(|e| match e {
            LinkEvent::Appeared(l) => l.name == "eno1",
            LinkEvent::MtuChanged { ifname, .. }
            | LinkEvent::StateChanged { ifname, .. }
            | LinkEvent::Removed { ifname } => ifname == "eno1",
        });
        if let Some(e) = about_eno1 {
            return (e, started.elapsed());
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no rtnetlink event for eno1 within 5 s"
        );
    }
}

pub fn rtnetlink_reports_mtu_and_state_changes_with_old_values_within_a_second() {
    let lab = lab(1500, IcmpPolicy::Block);
    let (initial, changes) = in_site(&lab, || {
        let mut w = LinkWatcher::subscribe().unwrap();
        let initial = w.table().get("eno1").cloned();
        let changes = [
            change_and_wait(&mut w, &["mtu", "9000"]),
            change_and_wait(&mut w, &["mtu", "1500"]),
            change_and_wait(&mut w, &["down"]),
            change_and_wait(&mut w, &["up"]),
        ];
        (initial, changes)
    });
    let initial = initial.expect("the dump lists eno1");
    assert_eq!(initial.mtu_bytes, 1500);
    assert!(initial.up, "the lab's eno1 is up with carrier: {initial:?}");
    let events: Vec<&LinkEvent> = changes.iter().map(|(e, _)| e).collect();
    assert_eq!(
        events,
        [
            &LinkEvent::MtuChanged {
                ifname: "eno1".into(),
                old_bytes: 1500,
                new_bytes: 9000
            },
            &LinkEvent::MtuChanged {
                ifname: "eno1".into(),
                old_bytes: 9000,
                new_bytes: 1500
            },
            &LinkEvent::StateChanged {
                ifname: "eno1".into(),
                up: false
            },
            &LinkEvent::StateChanged {
                ifname: "eno1".into(),
                up: true
            },
        ]
    );
    for (e, latency) in &changes {
        // Includes starting `ip`; the kernel's notification itself takes microseconds.
        println!("link event latency {latency:?}: {e:?}");
        assert!(*latency < Duration::from_secs(1), "{e:?} took {latency:?}");
    }
    lab.down().unwrap();
}
