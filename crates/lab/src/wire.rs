//! The wire: a userspace forwarder that joins pairs of TAP devices, one end in each namespace,
//! like a cable with a switch in the middle. It enforces each link's MTU by *silently*
//! dropping frames whose L3 payload is larger (what a port that cannot take jumbo frames does:
//! no ICMP, nothing logged), and can add loss, delay, jitter or cut the link. Rate limits are
//! left to `tc tbf` on the gateway, where the kernel's queueing is realistic.
//!
//! It runs as its own process (`lab wire`), so it keeps forwarding after `lab up` returns and
//! `down` can stop it by pid. One blocking thread per direction copies frames with one read and
//! one write each: no poll loop, no per-frame allocation on the undelayed path. Delayed frames go
//! through a queue to a second thread per direction that writes them when they are due.
//!
//! Files in the lab's state directory:
//! * `wire.json` ([`WireConfig`]): the links and their TAP names, read at start.
//! * `control.json` (link name → [`LinkSettings`]): polled every 50 ms; change it with
//!   [`set_link`] to apply a fault while traffic flows.
//! * `counters.json` (link name → [`LinkCounters`]): rewritten every 100 ms and at exit; the
//!   ground truth tests read ([`read_counters`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::state::{Proc, write_atomic};

/// Largest frame a TAP hands us (64 KiB L3 plus headers).
const FRAME_BUFFER_BYTES: usize = 65_536 + 64;
/// Ethernet header without a VLAN tag.
const ETH_HEADER_BYTES: usize = 14;

/// How one link behaves; every field can change while the wire runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Largest L3 packet carried; bigger frames are dropped without a trace.
    pub mtu_bytes: u32,
    /// Random loss in percent (0–100), each direction.
    #[serde(default)]
    pub loss_percent: f64,
    /// One-way delay in milliseconds.
    #[serde(default)]
    pub delay_ms: u32,
    /// Extra random delay, 0..jitter, in milliseconds (order is kept).
    #[serde(default)]
    pub jitter_ms: u32,
    /// False cuts the link: every frame is dropped.
    #[serde(default = "yes")]
    pub up: bool,
}

fn yes() -> bool {
    true
}

impl LinkSettings {
    /// A clean link of `mtu_bytes`.
    pub fn clean(mtu_bytes: u32) -> Self {
        Self {
            mtu_bytes,
            loss_percent: 0.0,
            delay_ms: 0,
            jitter_ms: 0,
            up: true,
        }
    }
}

/// One link: TAP `a` and TAP `b` (host-side names at creation).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// Link name (`lan`, `wan`).
    pub name: String,
    /// TAP that goes to the first namespace.
    pub a: String,
    /// TAP that goes to the second namespace.
    pub b: String,
    /// Initial behaviour.
    pub settings: LinkSettings,
}

/// `wire.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    /// The links.
    pub links: Vec<LinkSpec>,
}

/// Counters of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionCounters {
    /// Frames delivered to the other end.
    pub forwarded_frames: u64,
    /// Bytes (whole frames) delivered.
    pub forwarded_bytes: u64,
    /// Frames dropped because their L3 payload exceeded the link MTU.
    pub dropped_oversize: u64,
    /// Of those, ESP (IP protocol 50, or in UDP port 4500): a VPN tunnel's packets.
    #[serde(default)]
    pub dropped_oversize_esp: u64,
    /// Of those, TCP in the clear.
    #[serde(default)]
    pub dropped_oversize_tcp: u64,
    /// Of those, ICMP (probes).
    #[serde(default)]
    pub dropped_oversize_icmp: u64,
    /// Frames dropped by random loss.
    pub dropped_loss: u64,
    /// Frames dropped because the link was cut.
    pub dropped_down: u64,
    /// Frames the far TAP refused (its interface down or its queue full).
    pub write_errors: u64,
}

/// Counters of one link, by direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// From `a` (first namespace) to `b`.
    pub a_to_b: DirectionCounters,
    /// From `b` to `a`.
    pub b_to_a: DirectionCounters,
}

impl LinkCounters {
    /// Both directions added up.
    pub fn total(&self) -> DirectionCounters {
        let (x, y) = (self.a_to_b, self.b_to_a);
        DirectionCounters {
            forwarded_frames: x.forwarded_frames + y.forwarded_frames,
            forwarded_bytes: x.forwarded_bytes + y.forwarded_bytes,
            dropped_oversize: x.dropped_oversize + y.dropped_oversize,
            dropped_oversize_esp: x.dropped_oversize_esp + y.dropped_oversize_esp,
            dropped_oversize_tcp: x.dropped_oversize_tcp + y.dropped_oversize_tcp,
            dropped_oversize_icmp: x.dropped_oversize_icmp + y.dropped_oversize_icmp,
            dropped_loss: x.dropped_loss + y.dropped_loss,
            dropped_down: x.dropped_down + y.dropped_down,
            write_errors: x.write_errors + y.write_errors,
        }
    }
}

#[derive(Default)]
struct Counters {
    forwarded_frames: AtomicU64,
    forwarded_bytes: AtomicU64,
    dropped_oversize: AtomicU64,
    dropped_oversize_esp: AtomicU64,
    dropped_oversize_tcp: AtomicU64,
    dropped_oversize_icmp: AtomicU64,
    dropped_loss: AtomicU64,
    dropped_down: AtomicU64,
    write_errors: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionCounters {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DirectionCounters {
            forwarded_frames: r(&self.forwarded_frames),
            forwarded_bytes: r(&self.forwarded_bytes),
            dropped_oversize: r(&self.dropped_oversize),
            dropped_oversize_esp: r(&self.dropped_oversize_esp),
            dropped_oversize_tcp: r(&self.dropped_oversize_tcp),
            dropped_oversize_icmp: r(&self.dropped_oversize_icmp),
            dropped_loss: r(&self.dropped_loss),
            dropped_down: r(&self.dropped_down),
            write_errors: r(&self.write_errors),
        }
    }
}

/// Live settings, shared by both directions of a link.
struct Shared {
    mtu_bytes: AtomicU32,
    loss_bits: AtomicU64,
    delay_us: AtomicU32,
    jitter_us: AtomicU32,
    up: AtomicBool,
}

impl Shared {
    fn new(s: &LinkSettings) -> Self {
        let shared = Self {
            mtu_bytes: AtomicU32::new(0),
            loss_bits: AtomicU64::new(0),
            delay_us: AtomicU32::new(0),
            jitter_us: AtomicU32::new(0),
            up: AtomicBool::new(true),
        };
        shared.apply(s);
        shared
    }

    fn apply(&self, s: &LinkSettings) {
        self.mtu_bytes.store(s.mtu_bytes, Ordering::Relaxed);
        self.loss_bits.store(
            s.loss_percent.clamp(0.0, 100.0).to_bits(),
            Ordering::Relaxed,
        );
        self.delay_us
            .store(s.delay_ms.saturating_mul(1000), Ordering::Relaxed);
        self.jitter_us
            .store(s.jitter_ms.saturating_mul(1000), Ordering::Relaxed);
        self.up.store(s.up, Ordering::Relaxed);
    }
}

/// Where an Ethernet frame's L3 packet starts (802.1Q tag accounted for).
fn l3_offset(frame: &[u8]) -> usize {
    let tagged = frame.len() >= 16 && frame[12] == 0x81 && frame[13] == 0x00;
    if tagged {
        ETH_HEADER_BYTES + 4
    } else {
        ETH_HEADER_BYTES
    }
}

/// L3 payload length of an Ethernet frame.
fn l3_len(frame: &[u8]) -> usize {
    frame.len().saturating_sub(l3_offset(frame))
}

/// What an IPv4 frame carries, as far as the drop counters tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// ESP, or ESP in UDP on port 4500 (NAT traversal, and kernel-libipsec always).
    Esp,
    Tcp,
    Icmp,
    Other,
}

fn protocol(frame: &[u8]) -> Protocol {
    let ip = l3_offset(frame);
    if frame.get(ip - 2..ip) != Some(&[0x08, 0x00]) {
        return Protocol::Other;
    }
    let Some(&ver_ihl) = frame.get(ip) else {
        return Protocol::Other;
    };
    let l4 = ip + usize::from(ver_ihl & 0x0f) * 4;
    let port = |at: usize| {
        frame
            .get(at..at + 2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
    };
    match frame.get(ip + 9) {
        Some(50) => Protocol::Esp,
        Some(6) => Protocol::Tcp,
        Some(1) => Protocol::Icmp,
        Some(17) if port(l4) == Some(4500) || port(l4 + 2) == Some(4500) => Protocol::Esp,
        _ => Protocol::Other,
    }
}

/// What happens to one frame.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Forward,
    Oversize,
    Loss,
    Down,
}

fn judge(frame: &[u8], shared: &Shared) -> Verdict {
    if !shared.up.load(Ordering::Relaxed) {
        return Verdict::Down;
    }
    if l3_len(frame) > shared.mtu_bytes.load(Ordering::Relaxed) as usize {
        return Verdict::Oversize;
    }
    let loss = f64::from_bits(shared.loss_bits.load(Ordering::Relaxed));
    if loss > 0.0 && fastrand::f64() * 100.0 < loss {
        return Verdict::Loss;
    }
    Verdict::Forward
}

fn deliver(to: &File, frame: &[u8], counters: &Counters) {
    match (&*to).write_all(frame) {
        Ok(()) => {
            counters.forwarded_frames.fetch_add(1, Ordering::Relaxed);
            counters
                .forwarded_bytes
                .fetch_add(frame.len() as u64, Ordering::Relaxed);
        }
        Err(_) => {
            counters.write_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Copies frames `from` → `to` until `from` fails (its device is gone).
fn pump(from: Arc<File>, to: Arc<File>, shared: Arc<Shared>, counters: Arc<Counters>) {
    let (delayed_tx, delayed_rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    {
        let (to, counters) = (Arc::clone(&to), Arc::clone(&counters));
        std::thread::spawn(move || {
            for (due, frame) in delayed_rx {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                deliver(&to, &frame, &counters);
            }
        });
    }
    let mut buf = vec![0u8; FRAME_BUFFER_BYTES];
    let mut last_due = Instant::now();
    loop {
        let n = match (&*from).read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let frame = &buf[..n];
        match judge(frame, &shared) {
            Verdict::Forward => {}
            Verdict::Oversize => {
                counters.dropped_oversize.fetch_add(1, Ordering::Relaxed);
                let by = match protocol(frame) {
                    Protocol::Esp => Some(&counters.dropped_oversize_esp),
                    Protocol::Tcp => Some(&counters.dropped_oversize_tcp),
                    Protocol::Icmp => Some(&counters.dropped_oversize_icmp),
                    Protocol::Other => None,
                };
                if let Some(c) = by {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            Verdict::Loss => {
                counters.dropped_loss.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Verdict::Down => {
                counters.dropped_down.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        let delay_us = shared.delay_us.load(Ordering::Relaxed);
        let jitter_us = shared.jitter_us.load(Ordering::Relaxed);
        if delay_us == 0 && jitter_us == 0 {
            deliver(&to, frame, &counters);
            continue;
        }
        let extra = if jitter_us > 0 {
            fastrand::u32(0..jitter_us)
        } else {
            0
        };
        // Never earlier than the previous frame: jitter varies latency but keeps order, as a
        // single queue on a real path does.
        let due =
            (Instant::now() + Duration::from_micros(u64::from(delay_us + extra))).max(last_due);
        last_due = due;
        if delayed_tx.send((due, frame.to_vec())).is_err() {
            return;
        }
    }
}

/// `control.json` of the lab in `dir`.
fn control_path(dir: &Path) -> PathBuf {
    dir.join("control.json")
}

/// `counters.json` of the lab in `dir`.
fn counters_path(dir: &Path) -> PathBuf {
    dir.join("counters.json")
}

/// Reads the current settings of every link from `control.json`.
pub fn read_control(dir: &Path) -> Result<BTreeMap<String, LinkSettings>, Error> {
    let path = control_path(dir);
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::State { path, source })
}

/// Writes the settings of every link to `control.json`.
pub fn write_control(dir: &Path, links: &BTreeMap<String, LinkSettings>) -> Result<(), Error> {
    let path = control_path(dir);
    let text = serde_json::to_vec_pretty(links).map_err(|source| Error::State {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &text)
}

/// Changes one link's settings; the wire applies them within about 50 ms.
pub fn set_link(
    dir: &Path,
    link: &str,
    change: impl FnOnce(&mut LinkSettings),
) -> Result<(), Error> {
    let mut all = read_control(dir)?;
    let settings = all
        .get_mut(link)
        .ok_or_else(|| Error::NotFound(format!("no link named {link:?} in this lab")))?;
    change(settings);
    write_control(dir, &all)
}

/// The wire's counters, as last written (at most 100 ms old).
pub fn read_counters(dir: &Path) -> Result<BTreeMap<String, LinkCounters>, Error> {
    let path = counters_path(dir);
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    serde_json::from_slice(&text).map_err(|source| Error::State { path, source })
}

struct Link {
    name: String,
    shared: Arc<Shared>,
    a_to_b: Arc<Counters>,
    b_to_a: Arc<Counters>,
}

fn write_counters(dir: &Path, links: &[Link]) -> Result<(), Error> {
    let all: BTreeMap<&str, LinkCounters> = links
        .iter()
        .map(|l| {
            let c = LinkCounters {
                a_to_b: l.a_to_b.snapshot(),
                b_to_a: l.b_to_a.snapshot(),
            };
            (l.name.as_str(), c)
        })
        .collect();
    let path = counters_path(dir);
    let text = serde_json::to_vec_pretty(&all).map_err(|source| Error::State {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, &text)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The wire process: creates the TAPs of `dir/wire.json`, prints `ready` on stdout once they
/// exist (the parent then moves them into their namespaces), and forwards until SIGTERM, or
/// until `owner` (when given) exits. Counters are written at exit.
pub fn serve(dir: &Path, owner: Option<Proc>) -> Result<(), Error> {
    crate::sys::catch_terminate();
    let config_path = dir.join("wire.json");
    let text = std::fs::read(&config_path).map_err(|e| Error::io("read", &config_path, e))?;
    let config: WireConfig = serde_json::from_slice(&text).map_err(|source| Error::State {
        path: config_path.clone(),
        source,
    })?;
    let mut links = Vec::new();
    let mut ends = Vec::new();
    for spec in &config.links {
        let open = |name: &str| {
            crate::sys::open_tap(name)
                .map(Arc::new)
                .map_err(|source| Error::Tap {
                    name: name.to_owned(),
                    source,
                })
        };
        let (a, b) = (open(&spec.a)?, open(&spec.b)?);
        let link = Link {
            name: spec.name.clone(),
            shared: Arc::new(Shared::new(&spec.settings)),
            a_to_b: Arc::default(),
            b_to_a: Arc::default(),
        };
        ends.push((
            a,
            b,
            Arc::clone(&link.shared),
            link.a_to_b.clone(),
            link.b_to_a.clone(),
        ));
        links.push(link);
    }
    let initial: BTreeMap<String, LinkSettings> = config
        .links
        .iter()
        .map(|l| (l.name.clone(), l.settings))
        .collect();
    write_control(dir, &initial)?;
    write_counters(dir, &links)?;
    for (a, b, shared, ab, ba) in ends {
        let (a2, b2, shared2) = (Arc::clone(&a), Arc::clone(&b), Arc::clone(&shared));
        std::thread::spawn(move || pump(a, b, shared, ab));
        std::thread::spawn(move || pump(b2, a2, shared2, ba));
    }
    {
        let mut out = std::io::stdout().lock();
        // The parent reads this line; if it is gone the owner check below ends us.
        let _ignored = out.write_all(b"ready\n").and_then(|()| out.flush());
    }
    let control = control_path(dir);
    let mut seen = mtime(&control);
    let mut last_counters = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now_mtime = mtime(&control);
        if now_mtime != seen {
            seen = now_mtime;
            match read_control(dir) {
                Ok(all) => {
                    for link in &links {
                        if let Some(s) = all.get(&link.name) {
                            link.shared.apply(s);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "ignoring unreadable wire control file"),
            }
        }
        let stop = crate::sys::terminate_requested() || owner.as_ref().is_some_and(|o| !o.alive());
        if stop || last_counters.elapsed() >= Duration::from_millis(100) {
            write_counters(dir, &links)?;
            last_counters = Instant::now();
        }
        if stop {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(l3: usize, tagged: bool) -> Vec<u8> {
        let mut f = vec![0u8; ETH_HEADER_BYTES + l3 + if tagged { 4 } else { 0 }];
        if tagged {
            f[12] = 0x81;
        } else {
            f[12] = 0x08;
        }
        f
    }

    #[test]
    fn drops_frames_whose_payload_exceeds_the_mtu() {
        let shared = Shared::new(&LinkSettings::clean(1500));
        assert_eq!(judge(&frame(1500, false), &shared), Verdict::Forward);
        assert_eq!(judge(&frame(1501, false), &shared), Verdict::Oversize);
        assert_eq!(judge(&frame(1500, true), &shared), Verdict::Forward);
        assert_eq!(judge(&frame(9000, false), &shared), Verdict::Oversize);
    }

    fn ipv4(proto: u8, dst_port: u16) -> Vec<u8> {
        let mut f = frame(1600, false);
        f[13] = 0x00;
        f[ETH_HEADER_BYTES] = 0x45;
        f[ETH_HEADER_BYTES + 9] = proto;
        f[ETH_HEADER_BYTES + 22..ETH_HEADER_BYTES + 24].copy_from_slice(&dst_port.to_be_bytes());
        f
    }

    #[test]
    fn oversize_drops_are_told_apart_by_protocol() {
        assert_eq!(protocol(&ipv4(17, 4500)), Protocol::Esp);
        assert_eq!(protocol(&ipv4(50, 0)), Protocol::Esp);
        assert_eq!(protocol(&ipv4(6, 443)), Protocol::Tcp);
        assert_eq!(protocol(&ipv4(1, 0)), Protocol::Icmp);
        assert_eq!(protocol(&ipv4(17, 53)), Protocol::Other);
        let mut v6 = ipv4(6, 443);
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(protocol(&v6), Protocol::Other);
    }

    #[test]
    fn cut_and_lossy_links_drop_everything_they_should() {
        let shared = Shared::new(&LinkSettings {
            up: false,
            ..LinkSettings::clean(1500)
        });
        assert_eq!(judge(&frame(60, false), &shared), Verdict::Down);
        let shared = Shared::new(&LinkSettings {
            loss_percent: 100.0,
            ..LinkSettings::clean(1500)
        });
        assert_eq!(judge(&frame(60, false), &shared), Verdict::Loss);
    }
}
