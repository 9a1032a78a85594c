//! Scenario files: a timeline of faults and the assertions a run must meet, in TOML.
//!
//! ```toml
//! name = "incident-2025-11-12"
//! duration_seconds = 4500          # scenario time; --time-scale shrinks it
//! sample_interval_seconds = 15     # how often the runner samples (scenario time)
//! drain_seconds = 1800             # after the timeline, wait this long for the backlog to empty
//! cause_kinds = ["pmtu_blackhole"] # a firing alert of one of these kinds names the cause
//! wrong_cause_kinds = []           # a firing alert of one of these kinds is a misdiagnosis
//! reopen_window_seconds = 600      # a resolve counts only if nothing fires this long after it
//! agent_cap_net_raw = true         # false runs backhaul without CAP_NET_RAW (no probes)
//! agent_remediation = "off"        # backhaul's [remediation] mode: off, route-mtu, restore-declared
//! bystander_tcp = false            # another application's bulk TCP, site → cloud, the whole run
//!
//! [network]
//! rate_mbit = 50                   # tbf on the gateway's uplink; omit for unshaped
//! rtt_ms = 40                      # delay on the wan wire, half each way
//! lan_wire_mtu_bytes = 1500        # the hop that silently drops bigger frames
//! icmp = "block"                   # gateway's ICMP frag-needed: "block" or "allow"
//! loss_percent = 0                 # random loss on the wan wire, each direction
//! jitter_ms = 0                    # extra random delay 0..jitter on the wan wire
//! tcp_mtu_probing = 0              # the site namespace's net.ipv4.tcp_mtu_probing (0, 1, 2)
//!
//! [vpn]                          # omit for uploads in the clear
//! kind = "strongswan"              # IKEv2 + kernel-libipsec ESP-in-UDP between site and cloud;
//!                                  # S3 and the webhook behind it on inner addresses
//! inner_mtu = "stock"              # "stock": libipsec's fixed 1400 | "follow-wan": the tunnel
//!                                  # MTU follows eno1 minus the ESP overhead, as xfrm does
//! dpd_seconds = 10
//!
//! [camera]
//! cameras = 1
//! chunk_bytes = 82_000_000         # scaled by --time-scale, like every duration
//! interval_seconds = 120
//!
//! [disk]
//! size_bytes = 4_600_000_000       # the spool's filesystem (a tmpfs), scaled
//! prefill_bytes = 2_400_000_000    # other data already on it, scaled
//!
//! [[event]]
//! at_seconds = 900
//! phase = "fault"                  # marks fault start ("fault") or its end ("revert")
//! label = "NET-4521: eno1 MTU 1500 -> 9000"
//! action = "set-mtu"
//! node = "site"
//! interface = "eno1"
//! mtu_bytes = 9000
//!
//! [[assert]]
//! metric = "chunks_lost"
//! max = 0
//! ```
//!
//! Actions and their fields:
//! * `set-mtu`: `node` (`site`, `gw`, `cloud`), `interface`, `mtu_bytes`.
//! * `icmp`: `policy` (`block` or `allow`).
//! * `link`: `link` (`lan` or `wan`) and any of `loss_percent`, `delay_ms`, `jitter_ms`, `up`,
//!   `mtu_bytes`.
//! * `rate`: `mbit` (omit for unshaped).
//! * `s3`: `running` (false kills the S3 server, true starts it again; moto forgets its
//!   objects on restart, so use `--s3 embedded` for this action).
//! * `fill-disk`: `bytes` (scaled) written to a filler file beside the spool; `free-disk`
//!   empties it.
//! * `vpn` (needs `[vpn]`): `op` = `down` (the site's charon terminates the IKE SA), `up`
//!   (initiates it again), `kill-charon` (SIGKILL the site's charon; the lab starts a new one
//!   a second later, as systemd would).
//!
//! `cause_kinds` is how a run tells an alert that names the fault's real cause from one that
//! only says uploads are failing: the `kind` field of the alert's structured body (backhaul's
//! JSON shape; resolve messages never count) must be one of them. Matching words in the body
//! overstated: every body links `runbook-pmtud.md`, so "MTU" matched every alert. Omit the key
//! and "fault → alert naming the right cause" stays blank. `wrong_cause_kinds` is its
//! opposite: with ICMP allowed the right answer is `path_mtu_reduced`, and a firing
//! `pmtu_blackhole` is a misdiagnosis to count. Every other firing kind from the fault until
//! `reopen_window_seconds` after the revert is counted in `other_alerts`.
//!
//! Assertion metrics are the report's summary figures ([`Metric`]); each takes `min` and/or
//! `max`. A figure the run could not measure fails its assertion.
//!
//! Errors name the file, line and column, then a `help:` line.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::Error;
use crate::topology::{IcmpPolicy, Node};

/// Default scenario seconds between samples.
pub const DEFAULT_SAMPLE_INTERVAL_SECONDS: f64 = 10.0;
/// Default scenario seconds to wait for the backlog to drain after the timeline.
pub const DEFAULT_DRAIN_SECONDS: f64 = 600.0;

/// `[network]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Uplink rate limit (tbf on the gateway); `None` for unshaped.
    pub rate_mbit: Option<f64>,
    /// Round-trip delay added on the wan wire.
    #[serde(default)]
    pub rtt_ms: u32,
    /// Largest packet the site–gateway wire carries.
    #[serde(default = "default_lan_mtu")]
    pub lan_wire_mtu_bytes: u32,
    /// The gateway's ICMP frag-needed policy.
    #[serde(default)]
    pub icmp: IcmpPolicy,
    /// Random loss on the wan wire, percent each direction (a healthy but imperfect uplink).
    #[serde(default)]
    pub loss_percent: f64,
    /// Extra random delay of 0..jitter milliseconds on the wan wire.
    #[serde(default)]
    pub jitter_ms: u32,
    /// `net.ipv4.tcp_mtu_probing` in the site namespace: 1 lets the kernel shrink the segments
    /// of connections that lose full-size ones (what a site admin can set against a black hole).
    #[serde(default)]
    pub tcp_mtu_probing: u8,
}

fn default_lan_mtu() -> u32 {
    crate::topology::DEFAULT_MTU_BYTES
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            rate_mbit: None,
            rtt_ms: 0,
            lan_wire_mtu_bytes: default_lan_mtu(),
            icmp: IcmpPolicy::Block,
            loss_percent: 0.0,
            jitter_ms: 0,
            tcp_mtu_probing: 0,
        }
    }
}

/// `[vpn]`: the uploads ride an IPsec tunnel between site and cloud.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VpnConfig {
    /// The implementation.
    pub kind: VpnKind,
    /// How the site's tunnel device gets its MTU.
    #[serde(default)]
    pub inner_mtu: InnerMtu,
    /// strongSwan's `dpd_delay`.
    #[serde(default = "default_dpd")]
    pub dpd_seconds: u32,
}

fn default_dpd() -> u32 {
    10
}

/// `[vpn] kind`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VpnKind {
    /// IKEv2 with a pre-shared key, ESP in UDP through strongSwan's kernel-libipsec (this
    /// kernel has no xfrm).
    Strongswan,
}

/// `[vpn] inner_mtu`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InnerMtu {
    /// kernel-libipsec's fixed 1400-byte TUN device.
    #[default]
    Stock,
    /// Each side's tunnel device follows its link MTU minus the ESP overhead, as the
    /// kernel's xfrm derives it (needs the plugin built with a larger TUN buffer).
    FollowWan,
}

/// `vpn` event operations.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VpnOp {
    /// Terminate the IKE SA from the site.
    Down,
    /// Initiate it again.
    Up,
    /// SIGKILL the site's charon; a new one starts a second later.
    KillCharon,
}

/// `[camera]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Cameras writing chunks (each into its own subdirectory).
    #[serde(default = "one")]
    pub cameras: u32,
    /// Size of each chunk (scaled by the time scale).
    pub chunk_bytes: u64,
    /// Seconds between chunks of one camera (scaled).
    pub interval_seconds: f64,
}

fn one() -> u32 {
    1
}

impl Default for CameraConfig {
    fn default() -> Self {
        Self {
            cameras: 1,
            chunk_bytes: 8 << 20,
            interval_seconds: 10.0,
        }
    }
}

/// `[backlog]`: chunks already in the spool when the uploader starts, as after an outage
/// (recorded an hour before, so ready at once). Spread over the cameras' directories.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct BacklogConfig {
    /// Chunks.
    #[serde(default)]
    pub chunks: u32,
    /// Size of each (scaled by the time scale).
    #[serde(default)]
    pub chunk_bytes: u64,
}

/// `[disk]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Size of the spool's filesystem (scaled).
    pub size_bytes: u64,
    /// Bytes of other data on it at the start (scaled).
    #[serde(default)]
    pub prefill_bytes: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            size_bytes: 1 << 30,
            prefill_bytes: 0,
        }
    }
}

/// Which boundary of the fault an event marks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// The fault begins.
    Fault,
    /// The fault is undone.
    Revert,
}

/// Event kinds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum ActionKind {
    SetMtu,
    Icmp,
    Link,
    Rate,
    S3,
    FillDisk,
    FreeDisk,
    Vpn,
}

impl ActionKind {
    /// The name as written in the file.
    fn name(self) -> &'static str {
        match self {
            ActionKind::SetMtu => "set-mtu",
            ActionKind::Icmp => "icmp",
            ActionKind::Link => "link",
            ActionKind::Rate => "rate",
            ActionKind::S3 => "s3",
            ActionKind::FillDisk => "fill-disk",
            ActionKind::FreeDisk => "free-disk",
            ActionKind::Vpn => "vpn",
        }
    }
}

/// `[[event]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at_seconds: f64,
    phase: Option<Phase>,
    label: Option<String>,
    action: ActionKind,
    node: Option<Node>,
    interface: Option<String>,
    mtu_bytes: Option<u32>,
    policy: Option<IcmpPolicy>,
    link: Option<String>,
    loss_percent: Option<f64>,
    delay_ms: Option<u32>,
    jitter_ms: Option<u32>,
    up: Option<bool>,
    mbit: Option<f64>,
    running: Option<bool>,
    bytes: Option<u64>,
    op: Option<VpnOp>,
}

/// What an event does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `ip link set <interface> mtu <mtu_bytes>` in `node`.
    SetMtu {
        /// Namespace.
        node: Node,
        /// Interface.
        interface: String,
        /// New MTU.
        mtu_bytes: u32,
    },
    /// The gateway's ICMP frag-needed policy.
    Icmp(IcmpPolicy),
    /// Change a wire link.
    Link {
        /// `lan` or `wan`.
        link: String,
        /// New loss.
        loss_percent: Option<f64>,
        /// New one-way delay.
        delay_ms: Option<u32>,
        /// New jitter (extra random delay 0..jitter).
        jitter_ms: Option<u32>,
        /// Cut (false) or restore (true).
        up: Option<bool>,
        /// New wire MTU.
        mtu_bytes: Option<u32>,
    },
    /// Uplink rate; `None` removes shaping.
    Rate(Option<f64>),
    /// Stop (false) or start (true) the S3 server.
    S3 {
        /// Desired state.
        running: bool,
    },
    /// Write this many bytes (before scaling) to the filler file.
    FillDisk(u64),
    /// Empty the filler file.
    FreeDisk,
    /// Act on the site's tunnel.
    Vpn(VpnOp),
}

/// One timeline event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// When, in scenario seconds from the start.
    pub at_seconds: f64,
    /// Fault boundary it marks, if any.
    pub phase: Option<Phase>,
    /// Text for the report.
    pub label: String,
    /// What to do.
    pub action: Action,
}

/// backhaul's `[remediation] mode` in a run (the agent's own config spells it the same).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Remediation {
    /// Alert only.
    #[default]
    Off,
    /// The path MTU on the WAN's routes.
    RouteMtu,
    /// The WAN interface back to its declared MTU.
    RestoreDeclared,
}

impl Remediation {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            Remediation::Off => "off",
            Remediation::RouteMtu => "route-mtu",
            Remediation::RestoreDeclared => "restore-declared",
        }
    }
}

/// Summary figures an assertion can check.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Chunks the camera wrote that are neither in the bucket nor still in the spool.
    ChunksLost,
    /// Bytes of chunks in the bucket.
    BytesDelivered,
    /// Longest time with a backlog and no chunk delivered (scenario seconds).
    LongestOutageSeconds,
    /// Longest time during the fault with a backlog and nothing crossing the WAN wire
    /// (scenario seconds).
    LongestWireGapSeconds,
    /// From the fault to the first alert the agent sent.
    FaultToFirstAlertSeconds,
    /// From the fault to the first firing alert of a `cause_kinds` kind.
    FaultToCauseAlertSeconds,
    /// From the revert to the first chunk delivered after it.
    RevertToResumeSeconds,
    /// Largest backlog in chunks.
    PeakBacklogChunks,
    /// Firing alerts received (resolve messages not counted).
    AlertsFired,
    /// Firing alerts of a `wrong_cause_kinds` kind.
    WrongCauseAlerts,
    /// From the revert to the last resolve of the cause's incidents after which nothing fires
    /// for `reopen_window_seconds`.
    RevertToResolveSeconds,
    /// Firing alerts of any kind not in `cause_kinds`, from the fault until the reopen window
    /// after the revert has passed.
    OtherAlerts,
    /// From the start to the first sample with an empty spool (the `[backlog]` drained).
    BacklogDrainSeconds,
    /// Bytes delivered by then, in Mbit/s over that time.
    BacklogDrainMbps,
    /// With `bystander_tcp`: the longest stretch from the fault to the revert in which the
    /// other application's receiver got nothing (scenario seconds).
    BystanderGapSeconds,
    /// Firing alerts that said uploads continue while the WAN had carried (almost) nothing for
    /// 10 s (wall) with a backlog waiting.
    FalseFlowClaims,
    /// Firing messages about the cause (`cause_kinds`), from the fault until the reopen window
    /// after the revert: one fault, one page.
    CauseFiringMessages,
    /// Resolve messages about the cause over the same span.
    CauseResolvedMessages,
}

/// `[[assert]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Assertion {
    /// Which figure.
    pub metric: Metric,
    /// Lower bound (inclusive).
    pub min: Option<f64>,
    /// Upper bound (inclusive).
    pub max: Option<f64>,
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    duration_seconds: f64,
    #[serde(default = "default_sample")]
    sample_interval_seconds: f64,
    #[serde(default = "default_drain")]
    drain_seconds: f64,
    #[serde(default)]
    cause_kinds: Vec<String>,
    #[serde(default)]
    wrong_cause_kinds: Vec<String>,
    #[serde(default = "default_reopen_window")]
    reopen_window_seconds: f64,
    #[serde(default = "default_true")]
    agent_cap_net_raw: bool,
    #[serde(default)]
    agent_remediation: Remediation,
    #[serde(default)]
    bystander_tcp: bool,
    #[serde(default)]
    network: NetworkConfig,
    #[serde(default)]
    camera: CameraConfig,
    #[serde(default)]
    backlog: BacklogConfig,
    #[serde(default)]
    disk: DiskConfig,
    #[serde(default)]
    vpn: Option<VpnConfig>,
    #[serde(default, rename = "event")]
    events: Vec<Spanned<RawEvent>>,
    #[serde(default, rename = "assert")]
    asserts: Vec<Spanned<Assertion>>,
}

fn default_true() -> bool {
    true
}

fn default_sample() -> f64 {
    DEFAULT_SAMPLE_INTERVAL_SECONDS
}

fn default_drain() -> f64 {
    DEFAULT_DRAIN_SECONDS
}

/// Default scenario seconds after a resolve in which nothing may fire for it to count: the
/// issue's "zero alerts until 10 minutes after the fault ends".
pub const DEFAULT_REOPEN_WINDOW_SECONDS: f64 = 600.0;

fn default_reopen_window() -> f64 {
    DEFAULT_REOPEN_WINDOW_SECONDS
}

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name (used in output file names).
    pub name: String,
    /// What it reproduces.
    pub description: String,
    /// Length of the timeline in scenario seconds.
    pub duration_seconds: f64,
    /// Scenario seconds between samples.
    pub sample_interval_seconds: f64,
    /// Scenario seconds to wait for the backlog to drain after the timeline.
    pub drain_seconds: f64,
    /// Incident kinds that name the fault's real cause (`pmtu_blackhole`, …).
    pub cause_kinds: Vec<String>,
    /// Incident kinds that would be a misdiagnosis of this fault.
    pub wrong_cause_kinds: Vec<String>,
    /// Scenario seconds after a resolve in which nothing may fire for the resolve to count.
    pub reopen_window_seconds: f64,
    /// Whether backhaul runs with CAP_NET_RAW (false: its probes and frag-needed listener are
    /// off, as on a site that does not grant it).
    pub agent_cap_net_raw: bool,
    /// backhaul's `[remediation] mode`.
    pub agent_remediation: Remediation,
    /// Whether another application sends bulk TCP from the site to the cloud for the whole run
    /// (the lab's `tcp-send`), so the report shows how the site's other traffic fares.
    pub bystander_tcp: bool,
    /// Network shape.
    pub network: NetworkConfig,
    /// Camera simulator.
    pub camera: CameraConfig,
    /// Chunks in the spool at the start.
    pub backlog: BacklogConfig,
    /// Spool filesystem.
    pub disk: DiskConfig,
    /// The tunnel the uploads ride, if any.
    pub vpn: Option<VpnConfig>,
    /// Timeline, ordered by time.
    pub events: Vec<Event>,
    /// Assertions.
    pub asserts: Vec<Assertion>,
}

impl Scenario {
    /// When the fault starts (the first `phase = "fault"` event).
    pub fn fault_at(&self) -> Option<f64> {
        self.events
            .iter()
            .find(|e| e.phase == Some(Phase::Fault))
            .map(|e| e.at_seconds)
    }

    /// When the fault ends (the last `phase = "revert"` event).
    pub fn revert_at(&self) -> Option<f64> {
        self.events
            .iter()
            .rev()
            .find(|e| e.phase == Some(Phase::Revert))
            .map(|e| e.at_seconds)
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, col)
}

fn located(file: &str, text: &str, at: usize, message: &str, help: &str) -> Error {
    let (line, col) = line_col(text, at);
    Error::Scenario(format!("{file}:{line}:{col}: {message}\nhelp: {help}"))
}

/// Reads and validates a scenario file.
pub fn load(path: &Path) -> Result<Scenario, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read scenario", path, e))?;
    parse(&path.display().to_string(), &text)
}

/// Parses and validates scenario `text`; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Scenario, Error> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        let at = e.span().map_or(0, |s| s.start);
        located(
            file,
            text,
            at,
            e.message(),
            "see crates/lab/README.md (scenario format) for every key",
        )
    })?;
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(raw.duration_seconds) {
        return Err(located(
            file,
            text,
            0,
            "duration_seconds must be > 0",
            "e.g. 4500",
        ));
    }
    if !positive(raw.sample_interval_seconds) || !positive(raw.camera.interval_seconds) {
        return Err(located(
            file,
            text,
            0,
            "sample_interval_seconds and camera.interval_seconds must be > 0",
            "use seconds of scenario time, e.g. 15",
        ));
    }
    if raw.network.tcp_mtu_probing > 2 {
        return Err(located(
            file,
            text,
            0,
            &format!(
                "network.tcp_mtu_probing = {} is not a kernel value",
                raw.network.tcp_mtu_probing
            ),
            "0 (off), 1 (after a black hole is detected) or 2 (always), as in ip-sysctl.rst",
        ));
    }
    if !(0.0..100.0).contains(&raw.network.loss_percent) {
        return Err(located(
            file,
            text,
            0,
            &format!(
                "network.loss_percent = {} is outside 0 ..< 100",
                raw.network.loss_percent
            ),
            "a healthy lossy uplink is around 1; cut the link with a `link` event instead",
        ));
    }
    let mut events = Vec::new();
    for spanned in raw.events {
        let at = spanned.span().start;
        let e = spanned.into_inner();
        let err = |m: &str, h: &str| located(file, text, at, m, h);
        if !(e.at_seconds.is_finite() && (0.0..=raw.duration_seconds).contains(&e.at_seconds)) {
            return Err(err(
                &format!("at_seconds = {} is outside the timeline", e.at_seconds),
                &format!("use 0 ..= duration_seconds ({})", raw.duration_seconds),
            ));
        }
        let fields: [(&str, bool); 14] = [
            ("op", e.op.is_some()),
            ("node", e.node.is_some()),
            ("interface", e.interface.is_some()),
            ("mtu_bytes", e.mtu_bytes.is_some()),
            ("policy", e.policy.is_some()),
            ("link", e.link.is_some()),
            ("loss_percent", e.loss_percent.is_some()),
            ("delay_ms", e.delay_ms.is_some()),
            ("jitter_ms", e.jitter_ms.is_some()),
            ("up", e.up.is_some()),
            ("mbit", e.mbit.is_some()),
            ("running", e.running.is_some()),
            ("bytes", e.bytes.is_some()),
            ("label", true),
        ];
        let allowed: &[&str] = match e.action {
            ActionKind::SetMtu => &["node", "interface", "mtu_bytes"],
            ActionKind::Icmp => &["policy"],
            ActionKind::Link => &[
                "link",
                "loss_percent",
                "delay_ms",
                "jitter_ms",
                "up",
                "mtu_bytes",
            ],
            ActionKind::Rate => &["mbit"],
            ActionKind::S3 => &["running"],
            ActionKind::FillDisk => &["bytes"],
            ActionKind::FreeDisk => &[],
            ActionKind::Vpn => &["op"],
        };
        if let Some((extra, _)) = fields
            .iter()
            .find(|(k, set)| *set && *k != "label" && !allowed.contains(k))
        {
            return Err(err(
                &format!("`{extra}` does not apply to action {:?}", e.action.name()),
                &format!("this action takes: {}", allowed.join(", ")),
            ));
        }
        let need = |name: &str| {
            err(
                &format!("action {:?} needs `{name}`", e.action.name()),
                &format!("this action takes: {}", allowed.join(", ")),
            )
        };
        let action = match e.action {
            ActionKind::SetMtu => Action::SetMtu {
                node: e.node.ok_or_else(|| need("node"))?,
                interface: e.interface.clone().ok_or_else(|| need("interface"))?,
                mtu_bytes: e.mtu_bytes.ok_or_else(|| need("mtu_bytes"))?,
            },
            ActionKind::Icmp => Action::Icmp(e.policy.ok_or_else(|| need("policy"))?),
            ActionKind::Link => {
                let link = e.link.clone().ok_or_else(|| need("link"))?;
                if link != "lan" && link != "wan" {
                    return Err(err(
                        &format!("unknown link {link:?}"),
                        "links are \"lan\" and \"wan\"",
                    ));
                }
                Action::Link {
                    link,
                    loss_percent: e.loss_percent,
                    delay_ms: e.delay_ms,
                    jitter_ms: e.jitter_ms,
                    up: e.up,
                    mtu_bytes: e.mtu_bytes,
                }
            }
            ActionKind::Rate => Action::Rate(e.mbit),
            ActionKind::S3 => Action::S3 {
                running: e.running.ok_or_else(|| need("running"))?,
            },
            ActionKind::FillDisk => Action::FillDisk(e.bytes.ok_or_else(|| need("bytes"))?),
            ActionKind::FreeDisk => Action::FreeDisk,
            ActionKind::Vpn => {
                if raw.vpn.is_none() {
                    return Err(err(
                        "action \"vpn\" needs a tunnel",
                        "add a [vpn] table (kind = \"strongswan\")",
                    ));
                }
                Action::Vpn(e.op.ok_or_else(|| need("op"))?)
            }
        };
        let label = e
            .label
            .clone()
            .unwrap_or_else(|| e.action.name().to_owned());
        events.push(Event {
            at_seconds: e.at_seconds,
            phase: e.phase,
            label,
            action,
        });
    }
    events.sort_by(|a, b| a.at_seconds.total_cmp(&b.at_seconds));
    let mut asserts = Vec::new();
    for spanned in raw.asserts {
        let at = spanned.span().start;
        let a = spanned.into_inner();
        if a.min.is_none() && a.max.is_none() {
            return Err(located(
                file,
                text,
                at,
                "an assertion needs `min` or `max`",
                "e.g. max = 0",
            ));
        }
        asserts.push(a);
    }
    Ok(Scenario {
        name: raw.name,
        description: raw.description,
        duration_seconds: raw.duration_seconds,
        sample_interval_seconds: raw.sample_interval_seconds,
        drain_seconds: raw.drain_seconds,
        cause_kinds: raw.cause_kinds,
        wrong_cause_kinds: raw.wrong_cause_kinds,
        reopen_window_seconds: raw.reopen_window_seconds,
        agent_cap_net_raw: raw.agent_cap_net_raw,
        agent_remediation: raw.agent_remediation,
        bystander_tcp: raw.bystander_tcp,
        network: raw.network,
        camera: raw.camera,
        backlog: raw.backlog,
        disk: raw.disk,
        vpn: raw.vpn,
        events,
        asserts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse("s.toml", text).unwrap_err().to_string()
    }

    /// A shipped scenario that does not load is found here, not 15 minutes into a lab run.
    #[test]
    fn every_shipped_scenario_loads_with_a_fault_and_its_end() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let s = load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // A real-time run measures a fault and its end, or how a backlog drains.
            if s.name.ends_with("-realtime") {
                assert!(
                    s.fault_at() < s.revert_at() || s.backlog.chunks > 0,
                    "{}",
                    path.display()
                );
            }
            n += 1;
        }
        assert!(n >= 17, "{n} scenarios");
    }

    #[test]
    fn the_incident_scenario_parses() {
        let s =
            load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/incident-2025-11-12.toml"))
                .unwrap();
        assert_eq!(s.fault_at(), Some(900.0));
        assert_eq!(s.revert_at(), Some(3600.0));
        assert!(s.cause_kinds.iter().any(|k| k == "pmtu_blackhole"));
        assert!(matches!(
            s.events[0].action,
            Action::SetMtu {
                mtu_bytes: 9000,
                ..
            }
        ));
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = err("name = \"x\"\nduration_seconds = 10\n[network\n");
        assert!(e.starts_with("s.toml:3:"), "{e}");
        assert!(e.contains("help:"), "{e}");
    }

    #[test]
    fn unknown_keys_give_the_line_of_the_key() {
        let e = err(
            "name = \"x\"\nduration_seconds = 10\n\n[camera]\nchunk_bytes = 1\ninterval_seconds = 1\nfps = 3\n",
        );
        assert!(e.starts_with("s.toml:7:"), "{e}");
        assert!(e.contains("fps"), "{e}");
    }

    #[test]
    fn event_errors_point_at_the_event() {
        let text = "name = \"x\"\nduration_seconds = 10\n\n[[event]]\nat_seconds = 1\naction = \"set-mtu\"\nnode = \"site\"\ninterface = \"eno1\"\n";
        let e = err(text);
        assert!(
            e.starts_with("s.toml:4:1: action \"set-mtu\" needs `mtu_bytes`"),
            "{e}"
        );
        let e = err(
            "name = \"x\"\nduration_seconds = 10\n[[event]]\nat_seconds = 20\naction = \"free-disk\"\n",
        );
        assert!(
            e.starts_with("s.toml:3:") && e.contains("outside the timeline"),
            "{e}"
        );
        let e = err(
            "name = \"x\"\nduration_seconds = 10\n[[event]]\nat_seconds = 2\naction = \"icmp\"\npolicy = \"allow\"\nnode = \"gw\"\n",
        );
        assert!(e.contains("`node` does not apply"), "{e}");
        let e = err(
            "name = \"x\"\nduration_seconds = 10\n[[event]]\nat_seconds = 2\naction = \"reboot\"\n",
        );
        assert!(e.starts_with("s.toml:5:") && e.contains("reboot"), "{e}");
    }

    #[test]
    fn assertions_need_a_bound_and_a_known_metric() {
        let e = err("name = \"x\"\nduration_seconds = 10\n[[assert]]\nmetric = \"chunks_lost\"\n");
        assert!(
            e.starts_with("s.toml:3:") && e.contains("`min` or `max`"),
            "{e}"
        );
        let e =
            err("name = \"x\"\nduration_seconds = 10\n[[assert]]\nmetric = \"vibes\"\nmax = 1\n");
        assert!(e.starts_with("s.toml:4:") && e.contains("vibes"), "{e}");
    }
}
