//! The lab reproduces the incident's physics: with eno1 at MTU 9000 behind the 1500-byte hop,
//! bulk TCP stalls while small pings pass; reverting or letting PMTUD work restores it.

use std::time::Duration;

use backhaul_lab::{IcmpPolicy, Node};

use super::support::{assert_eventually, lab, ping, progress, start_transfer};

const MIB: u64 = 1 << 20;

pub fn mtu_9000_stalls_then_revert_completes() {
    let lab = lab(1500, IcmpPolicy::Block);
    assert!(ping(&lab, &[]), "healthy lab answers pings");
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();

    let t = start_transfer(&lab, MIB, Duration::from_secs(60));
    // Bounded wait: three seconds is dozens of RTOs' worth of chances on a sub-ms path.
    std::thread::sleep(Duration::from_secs(3));
    let (got, done) = progress(&t.progress);
    assert!(
        !done && got < MIB,
        "1 MiB must stall behind the black hole, got {got} bytes"
    );
    let lan = lab.counters().unwrap()["lan"];
    assert!(
        lan.a_to_b.dropped_oversize > 0,
        "the wire dropped the big segments: {lan:?}"
    );

    assert!(ping(&lab, &[]), "56-byte pings pass during the black hole");
    assert!(
        !ping(&lab, &["-M", "do", "-s", "1473"]),
        "1501-byte DF pings must not pass"
    );
    assert_eq!(
        lab.frag_needed_sent().unwrap(),
        0,
        "a silent L2 drop never yields ICMP"
    );

    lab.set_mtu(Node::Site, "eno1", 1500).unwrap();
    // The stalled connection resumes on its next retransmission, re-segmented to the new MTU.
    assert_eventually(
        "transfer completes after the revert",
        Duration::from_secs(30),
        || progress(&t.progress) == (MIB, true),
    );
    lab.down().unwrap();
}

pub fn pmtud_completes_when_icmp_allowed() {
    // A jumbo-capable switch delivers the 9000-byte packet to the gateway, whose 1500-byte
    // uplink makes it answer with ICMP frag-needed, which is allowed out.
    let lab = lab(9000, IcmpPolicy::Allow);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let t = start_transfer(&lab, MIB, Duration::from_secs(30));
    assert_eventually(
        "transfer completes through PMTUD",
        Duration::from_secs(15),
        || progress(&t.progress) == (MIB, true),
    );
    assert!(
        lab.frag_needed_sent().unwrap() > 0,
        "the gateway sent frag-needed"
    );
    lab.down().unwrap();
}

pub fn blocked_icmp_black_holes_behind_jumbo_switch() {
    let lab = lab(9000, IcmpPolicy::Block);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let t = start_transfer(&lab, MIB, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    let (got, done) = progress(&t.progress);
    assert!(
        !done && got < MIB,
        "blocked frag-needed is a black hole, got {got} bytes"
    );
    assert!(
        lab.frag_needed_sent().unwrap() > 0,
        "the gateway tried to tell the sender"
    );
    lab.set_icmp(IcmpPolicy::Allow).unwrap();
    assert_eventually(
        "PMTUD recovers once ICMP is allowed",
        Duration::from_secs(30),
        || progress(&t.progress) == (MIB, true),
    );
    lab.down().unwrap();
}

pub fn wire_counts_loss_and_cut_links() {
    let lab = lab(1500, IcmpPolicy::Block);
    lab.set_link("wan", |s| s.up = false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!ping(&lab, &[]), "a cut link passes nothing");
    assert!(lab.counters().unwrap()["wan"].total().dropped_down > 0);
    lab.set_link("wan", |s| {
        s.up = true;
        s.loss_percent = 100.0;
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(!ping(&lab, &[]));
    assert!(lab.counters().unwrap()["wan"].total().dropped_loss > 0);
    lab.set_link("wan", |s| {
        s.loss_percent = 0.0;
        s.delay_ms = 20;
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // Several pings: the cut and the 100 % loss left ARP entries failed, and the first
    // packet may wait for re-resolution.
    let out = lab
        .exec(
            Node::Site,
            "ping",
            &["-c", "4", "-i", "0.2", "-W", "2", "203.0.113.10"],
        )
        .unwrap();
    // "rtt min/avg/max/mdev = 40.6/…": the minimum is the wire's delay without queueing.
    let rtt: f64 = out
        .split(" = ")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(
        (40.0..80.0).contains(&rtt),
        "20 ms each way gives ~40 ms RTT, got {rtt}"
    );
    lab.down().unwrap();
}
