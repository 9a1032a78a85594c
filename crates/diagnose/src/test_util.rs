//! Synthetic timelines for the rule, engine and alert tests.

use std::net::{IpAddr, Ipv4Addr};

use crate::rules::Context;
use crate::{
    Inventory, Observation, Settings, Signal, Store, Target, TimeBase, UploadErrorClass, VpnState,
};

/// Milliseconds of `HH:MM:SS` on day 0 (with [`TimeBase::UNIX`] it formats back the same).
pub fn t(hms: &str) -> u64 {
    let parts: Vec<u64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    (parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1000
}

/// The incident site: eno1 WAN 1500, eno2 camera 9000, 45 Mbit/s expected.
pub fn inventory() -> Inventory {
    inventory_expecting(Some(45.0))
}

/// The incident site with `expected` Mbit/s configured, or none (the rate is then learned).
pub fn inventory_expecting(expected: Option<f64>) -> Inventory {
    let mut v: serde_json::Value = serde_json::from_str(
        r#"{
            "interfaces": [
                {"name": "eno1", "role": "wan", "mtu_bytes": 1500,
                 "netplan_file": "/etc/netplan/01-wan.yaml"},
                {"name": "eno2", "role": "camera", "mtu_bytes": 9000}
            ],
            "gateway": "192.0.2.1",
            "endpoint_host": "s3.eu-west-1.amazonaws.com"
        }"#,
    )
    .unwrap();
    if let Some(mbps) = expected {
        v["expected_upload_mbps"] = mbps.into();
    }
    serde_json::from_value(v).unwrap()
}

/// Runs one rule over the observations up to `now`, with the default settings.
pub fn run_rule<R>(obs: &[Observation], now: &str, rule: impl Fn(&Store, &Context<'_>) -> R) -> R {
    run_rule_with(&inventory(), obs, now, rule)
}

/// [`run_rule`] with another inventory.
pub fn run_rule_with<R>(
    inventory: &Inventory,
    obs: &[Observation],
    now: &str,
    rule: impl Fn(&Store, &Context<'_>) -> R,
) -> R {
    let now_ms = t(now);
    let settings = Settings::default();
    let mut store = Store::new(Settings::ms(settings.retention_seconds));
    for o in obs.iter().filter(|o| o.at_ms <= now_ms) {
        store.push(o.clone());
    }
    let ctx = Context {
        inventory,
        settings: &settings,
        time: TimeBase::UNIX,
        now_ms,
    };
    rule(&store, &ctx)
}

/// A list of observations built in any order and sorted on use.
#[derive(Debug, Default)]
pub struct Timeline {
    pub obs: Vec<Observation>,
}

impl Timeline {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, at: &str, signal: Signal) {
        self.obs.push(Observation::new(t(at), signal));
    }

    pub fn push_ms(&mut self, at_ms: u64, signal: Signal) {
        self.obs.push(Observation::new(at_ms, signal));
    }

    /// Sorted by time, stable, as a producer would deliver them.
    pub fn sorted(mut self) -> Vec<Observation> {
        self.obs.sort_by_key(|o| o.at_ms);
        self.obs
    }
}

pub fn link_mtu(ifname: &str, mtu_bytes: u32) -> Signal {
    Signal::LinkMtu {
        ifname: ifname.into(),
        mtu_bytes,
    }
}

pub fn mtu_changed(ifname: &str, old_bytes: u32, new_bytes: u32) -> Signal {
    Signal::LinkMtuChanged {
        ifname: ifname.into(),
        old_bytes,
        new_bytes,
    }
}

pub fn link_state(ifname: &str, up: bool) -> Signal {
    Signal::LinkState {
        ifname: ifname.into(),
        up,
    }
}

pub fn probe(target: Target, size_bytes: u32, ok: bool) -> Signal {
    Signal::Probe {
        target,
        size_bytes,
        df: true,
        ok,
        rtt_ms: ok.then_some(4.2),
    }
}

pub fn pmtu_result(target: Target, bytes: u32) -> Signal {
    Signal::PathMtu { target, bytes }
}

pub fn frag(next_hop_mtu: u32) -> Signal {
    Signal::FragNeeded {
        from: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        next_hop_mtu,
    }
}

pub fn rate(mbps_10s: f64) -> Signal {
    Signal::UploadGoodput { mbps_10s }
}

pub fn stall(stalled_seconds: u64) -> Signal {
    Signal::UploadStall { stalled_seconds }
}

pub fn upload_error(class: &str) -> Signal {
    Signal::UploadError {
        class: UploadErrorClass::from_class(class),
    }
}

pub fn disk(used_percent: f64, seconds_to_full: Option<u64>) -> Signal {
    Signal::Disk {
        used_percent,
        seconds_to_full,
        fill_window_seconds: 300,
    }
}

pub fn vpn(state: VpnState, flaps: u32) -> Signal {
    Signal::Vpn { state, flaps }
}

pub fn tcp(snd_mss: u32, pmtu: u32, retransmits: u32, bytes_acked_delta: u64) -> Signal {
    Signal::TcpInfo {
        snd_mss,
        pmtu,
        retransmits,
        bytes_acked_delta,
    }
}

/// Every 10 s for `minutes`: small and 1500-byte DF probes to gateway and endpoint pass, and
/// goodput is `rate_at(step)`.
pub fn healthy(tl: &mut Timeline, from: &str, minutes: u64, rate_at: impl Fn(u64) -> f64) {
    let start = t(from);
    for step in 0..minutes * 6 {
        let at = start + step * 10_000;
        for target in [Target::Gateway, Target::Endpoint] {
            tl.push_ms(at, probe(target, 84, true));
            tl.push_ms(at, probe(target, 1500, true));
        }
        tl.push_ms(at, rate(rate_at(step)));
    }
}

/// The 2025-11-12 incident: eno1 1500 → 9000 at 08:15:03, reverted at 09:00:00. With `icmp`
/// the gateway answers oversized packets with fragmentation-needed and uploads continue (the
/// ICMP-allowed variant); without, large packets vanish, uploads stall, the VPN flaps and the
/// spool disk fills at 2.5 %/min.
pub fn incident_2025_11_12(icmp: bool) -> Vec<Observation> {
    let mut tl = Timeline::new();
    tl.push("08:00:00", link_mtu("eno1", 1500));
    tl.push("08:00:00", link_mtu("eno2", 9000));
    tl.push("08:00:00", link_state("eno1", true));
    healthy(&mut tl, "08:00:00", 15, |step| 41.0 + (step % 4) as f64);
    for minute in 0..15 {
        tl.push_ms(t("08:00:00") + minute * 60_000, disk(52.0, None));
        tl.push_ms(t("08:00:00") + minute * 60_000, vpn(VpnState::Up, 0));
    }
    tl.push("08:15:03", mtu_changed("eno1", 1500, 9000));
    let broken_from = t("08:15:10");
    let revert = t("09:00:00");
    let mut step = 0;
    let mut at = broken_from;
    while at < revert {
        for target in [Target::Gateway, Target::Endpoint] {
            tl.push_ms(at, probe(target, 84, true));
            tl.push_ms(at, probe(target, 9000, false));
        }
        if icmp {
            tl.push_ms(at + 50, frag(1500));
            tl.push_ms(at + 2_000, pmtu_result(Target::Gateway, 1500));
            tl.push_ms(at + 5_000, rate(40.0));
            tl.push_ms(at + 5_000, tcp(1448, 1500, 0, 5_000_000));
        } else {
            tl.push_ms(at + 2_000, pmtu_result(Target::Gateway, 1500));
            tl.push_ms(at + 5_000, rate(if step < 2 { 1.8 } else { 0.0 }));
            tl.push_ms(at + 5_000, tcp(8948, 9000, 1 + step.min(14) as u32, 0));
            if step % 3 == 2 {
                tl.push_ms(at + 5_000, stall(30));
            }
        }
        step += 1;
        at += 10_000;
    }
    let mut flaps = 0;
    for minute in 15..60 {
        let at = t("08:00:00") + minute * 60_000;
        if !icmp && [21, 25, 35, 50].contains(&minute) {
            flaps += 1;
        }
        tl.push_ms(at, vpn(VpnState::Up, flaps));
        if icmp {
            tl.push_ms(at, disk(52.0, None));
        } else {
            let used = (52.0 + 2.5 * (minute - 15) as f64).min(99.0);
            let ttf = ((100.0 - used) / 2.5 * 60.0) as u64;
            tl.push_ms(at, disk(used, (minute > 15).then_some(ttf)));
            if minute >= 18 {
                tl.push_ms(at + 30_000, upload_error("timeout"));
            }
        }
    }
    tl.push("09:00:00", mtu_changed("eno1", 9000, 1500));
    healthy(&mut tl, "09:00:10", 5, |_| 45.0);
    for minute in 0..5 {
        let at = t("09:00:30") + minute * 60_000;
        tl.push_ms(at, disk(80.0 - minute as f64, None));
        tl.push_ms(at, vpn(VpnState::Up, flaps));
    }
    tl.sorted()
}

/// A healthy site whose store starts failing with 5xx at 10:10, with no interface change.
pub fn server_outage() -> Vec<Observation> {
    let mut tl = Timeline::new();
    tl.push("10:00:00", link_mtu("eno1", 1500));
    healthy(
        &mut tl,
        "10:00:00",
        15,
        |step| if step < 60 { 42.0 } else { 0.0 },
    );
    for i in 0..15 {
        tl.push_ms(t("10:10:00") + i * 20_000, upload_error("server_5xx"));
    }
    tl.sorted()
}
