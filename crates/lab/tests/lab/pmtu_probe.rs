//! backhaul-netprobe's probes inside the lab: they must see the black hole that small pings
//! miss, find the path MTU by probe loss alone, and report frag-needed when a router sends it.

use std::net::Ipv4Addr;
use std::time::Duration;

use backhaul_lab::topology::{CLOUD_ADDR, GW_LAN_ADDR};
use backhaul_lab::{IcmpPolicy, Node};
use backhaul_netprobe::{ProbeOutcome, Prober};

use super::support::{in_site, lab};

pub fn probes_see_the_black_hole_and_find_the_path_mtu_by_loss() {
    let lab = lab(1500, IcmpPolicy::Block);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let gw: Ipv4Addr = GW_LAN_ADDR.parse().unwrap();
    let (small, large, search) = in_site(&lab, move || {
        let mut p = Prober::new(gw, Duration::from_millis(300)).unwrap();
        (
            p.probe(84).unwrap(),
            p.probe(9000).unwrap(),
            p.search(1200, 9000, 2, None).unwrap(),
        )
    });
    assert!(
        matches!(small, ProbeOutcome::Passed { .. }),
        "small probes pass: {small:?}"
    );
    assert_eq!(
        large,
        ProbeOutcome::Lost,
        "9000-byte DF probe vanishes without ICMP"
    );
    assert_eq!(search.largest_passing, Some(1500), "{search:?}");
    assert_eq!(search.smallest_failing, Some(1501), "{search:?}");
    assert_eq!(search.frag_needed, None, "an L2 drop sends no ICMP");

    lab.set_mtu(Node::Site, "eno1", 1500).unwrap();
    let (big, full) = in_site(&lab, move || {
        let mut p = Prober::new(gw, Duration::from_millis(300)).unwrap();
        (p.probe(9000).unwrap(), p.probe(1500).unwrap())
    });
    assert_eq!(
        big,
        ProbeOutcome::LocalTooBig,
        "after the revert eno1 itself refuses 9000"
    );
    assert!(matches!(full, ProbeOutcome::Passed { .. }), "{full:?}");
    lab.down().unwrap();
}

pub fn frag_needed_reaches_the_prober_when_icmp_is_allowed() {
    // Jumbo-capable switch to the gateway; the gateway's 1500-byte uplink answers frag-needed.
    let lab = lab(9000, IcmpPolicy::Allow);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let cloud: Ipv4Addr = CLOUD_ADDR.parse().unwrap();
    let (large, search) = in_site(&lab, move || {
        let mut p = Prober::new(cloud, Duration::from_millis(300)).unwrap();
        (
            p.probe(9000).unwrap(),
            p.search(1200, 9000, 2, None).unwrap(),
        )
    });
    let ProbeOutcome::FragNeeded(f) = large else {
        panic!("expected frag-needed, got {large:?}");
    };
    assert_eq!(f.from, GW_LAN_ADDR.parse::<Ipv4Addr>().unwrap());
    assert_eq!(f.next_hop_mtu, 1500);
    assert_eq!(search.largest_passing, Some(1500), "{search:?}");
    lab.down().unwrap();
}
