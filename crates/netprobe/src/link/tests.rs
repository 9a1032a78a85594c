use super::*;

/// Two `RTM_NEWLINK` datagrams captured from an `RTMGRP_LINK` socket (x86-64, Linux 6.x) in a
/// fresh namespace: `ip link set tap0 mtu 9000` (still down), then `ip link set tap0 up` (a
/// TAP without a reader has no carrier, so it stays down operationally).
const CAPTURED: &str = include_str!("tap0-mtu-9000-then-up.hex");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn captured() -> Vec<Vec<u8>> {
    CAPTURED.lines().map(unhex).collect()
}

fn link(index: u32, name: &str, mtu: u32, up: bool) -> Link {
    Link {
        index,
        name: name.into(),
        mtu_bytes: mtu,
        up,
    }
}

#[test]
fn parses_captured_mtu_change_and_admin_up() {
    let dgrams = captured();
    let first = parse(&dgrams[0]).unwrap().unwrap();
    assert_eq!(first, vec![LinkMessage::New(link(2, "tap0", 9000, false))]);
    // Admin up without carrier: IFF_UP but not IFF_RUNNING, operstate DOWN.
    let second = parse(&dgrams[1]).unwrap().unwrap();
    assert_eq!(second, vec![LinkMessage::New(link(2, "tap0", 9000, false))]);
}

#[test]
fn table_turns_messages_into_events_with_old_values() {
    let mut t = LinkTable::default();
    assert_eq!(
        t.resync(vec![link(2, "tap0", 1500, false)]),
        vec![LinkEvent::Appeared(link(2, "tap0", 1500, false))]
    );
    let events: Vec<LinkEvent> = captured()
        .iter()
        .flat_map(|d| parse(d).unwrap().unwrap())
        .flat_map(|m| t.apply(m))
        .collect();
    // The second message repeats the MTU and changes nothing we watch.
    assert_eq!(
        events,
        vec![LinkEvent::MtuChanged {
            ifname: "tap0".into(),
            old_bytes: 1500,
            new_bytes: 9000
        }]
    );
    assert_eq!(
        t.apply(LinkMessage::New(link(2, "tap0", 9000, true))),
        vec![LinkEvent::StateChanged {
            ifname: "tap0".into(),
            up: true
        }]
    );
    assert_eq!(
        t.apply(LinkMessage::New(link(2, "wan0", 9000, true))),
        vec![
            LinkEvent::Removed {
                ifname: "tap0".into()
            },
            LinkEvent::Appeared(link(2, "wan0", 9000, true))
        ],
        "a rename is the old name going and the new one coming"
    );
    assert_eq!(
        t.apply(LinkMessage::Removed { index: 2 }),
        vec![LinkEvent::Removed {
            ifname: "wan0".into()
        }]
    );
    assert!(t.get("wan0").is_none());
}

#[test]
fn resync_after_lost_messages_reports_the_difference() {
    let mut t = LinkTable::default();
    t.resync(vec![
        link(1, "lo", 65536, true),
        link(2, "eno1", 1500, true),
    ]);
    let events = t.resync(vec![
        link(1, "lo", 65536, true),
        link(3, "eno2", 9000, true),
    ]);
    assert_eq!(
        events,
        vec![
            LinkEvent::Appeared(link(3, "eno2", 9000, true)),
            LinkEvent::Removed {
                ifname: "eno1".into()
            }
        ]
    );
}

#[test]
fn several_messages_error_and_garbage() {
    let dgrams = captured();
    let mut both = dgrams[0].clone();
    both.extend(&dgrams[1]);
    let mut done = vec![0u8; 20];
    done[..4].copy_from_slice(&20u32.to_ne_bytes());
    done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
    both.extend(&done);
    let msgs = parse(&both).unwrap().unwrap();
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2], LinkMessage::DumpDone);

    let mut err = vec![0u8; 36];
    err[..4].copy_from_slice(&36u32.to_ne_bytes());
    err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
    err[16..20].copy_from_slice(&(-libc::EPERM).to_ne_bytes());
    assert_eq!(parse(&err).unwrap(), Err(libc::EPERM));

    let mut cut = dgrams[0].clone();
    cut.truncate(100);
    assert_eq!(
        parse(&cut).unwrap_err().what,
        "length outside the datagram",
        "a length that points past the end is refused, not read"
    );
    let mut no_mtu = dgrams[0].clone();
    no_mtu.truncate(NLMSG_HEADER + IFINFOMSG + 8); // up to IFLA_IFNAME's header only
    no_mtu[..4].copy_from_slice(&((NLMSG_HEADER + IFINFOMSG + 8) as u32).to_ne_bytes());
    assert!(parse(&no_mtu).is_err());
}

#[test]
fn sysfs_fallback_reads_loopback_and_refuses_paths() {
    // Every namespace has lo; its MTU is 65536 and it reports operstate "unknown" when up.
    let lo = Link::from_sysfs("lo").unwrap();
    assert_eq!((lo.name.as_str(), lo.mtu_bytes), ("lo", 65536), "{lo:?}");
    assert_eq!(lo.index, 1);
    assert!(lo.up, "{lo:?}");
    assert_eq!(Link::from_sysfs("no-such-if0"), None);
    assert_eq!(Link::from_sysfs("../../etc"), None);
    assert_eq!(Link::from_sysfs(""), None);
}

#[test]
fn subscription_starts_with_the_kernels_interfaces() {
    // rtnetlink needs no privilege; the dump must agree with sysfs about lo.
    let w = LinkWatcher::subscribe().unwrap();
    assert_eq!(w.table().get("lo"), Link::from_sysfs("lo").as_ref());
}
