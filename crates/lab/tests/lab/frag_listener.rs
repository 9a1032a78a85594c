//! backhaul-netprobe's host-wide frag-needed listener in the lab's site: it must see the
//! gateway's ICMP "fragmentation needed" about somebody else's TCP connection (not a probe of
//! ours), with the next-hop MTU, the router and the quoted destination, and the kernel's
//! `InDestUnreachs` must grow beside it. With ICMP blocked it must see nothing.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use backhaul_lab::topology::{CLOUD_ADDR, GW_LAN_ADDR};
use backhaul_lab::{IcmpPolicy, Node};
use backhaul_netprobe::{FragNeededListener, FragNeededSeen, KernelCounters};

use super::support::{assert_eventually, in_site, lab, progress, start_transfer};

const MIB: u64 = 1024 * 1024;

/// Frag-needed messages the listener reports within `patience`.
fn collect(listener: &mut FragNeededListener, patience: Duration) -> Vec<FragNeededSeen> {
    let deadline = Instant::now() + patience;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(s) = listener.recv().unwrap() {
            seen.push(s);
        }
    }
    seen
}

pub fn listener_counts_frag_needed_for_any_socket_when_icmp_is_allowed() {
    let lab = lab(9000, IcmpPolicy::Allow);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    // Sockets keep the namespace they were opened in, so the listener can be read from here.
    let mut listener = in_site(&lab, || FragNeededListener::open().unwrap());
    let before = in_site(&lab, || KernelCounters::read().unwrap());
    let t = start_transfer(&lab, MIB, Duration::from_secs(30));
    assert_eventually(
        "transfer completes through PMTUD",
        Duration::from_secs(15),
        || progress(&t.progress) == (MIB, true),
    );
    let seen = collect(&mut listener, Duration::from_millis(1500));
    let first = seen
        .first()
        .expect("the listener saw the gateway's frag-needed");
    assert_eq!(first.frag.from, GW_LAN_ADDR.parse::<Ipv4Addr>().unwrap());
    assert_eq!(first.frag.next_hop_mtu, 1500);
    assert_eq!(first.destination, CLOUD_ADDR.parse::<Ipv4Addr>().unwrap());
    assert_eq!(first.protocol, 6, "about the TCP transfer, not a probe");
    let grew = in_site(&lab, || KernelCounters::read().unwrap()).since(&before);
    assert!(
        grew.icmp_in_dest_unreachs >= seen.len() as u64,
        "kernel InDestUnreachs grew by {} for {} frag-needed seen",
        grew.icmp_in_dest_unreachs,
        seen.len()
    );
    lab.down().unwrap();
}

pub fn listener_sees_nothing_when_icmp_is_blocked() {
    let lab = lab(9000, IcmpPolicy::Block);
    lab.set_mtu(Node::Site, "eno1", 9000).unwrap();
    let mut listener = in_site(&lab, || FragNeededListener::open().unwrap());
    let _t = start_transfer(&lab, MIB, Duration::from_secs(30));
    let seen = collect(&mut listener, Duration::from_secs(3));
    assert!(
        lab.frag_needed_sent().unwrap() > 0,
        "the gateway tried to tell the sender"
    );
    assert_eq!(seen, Vec::new(), "blocked ICMP never arrives");
    lab.down().unwrap();
}
