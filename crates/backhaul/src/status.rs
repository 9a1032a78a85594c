//! The running agent's own summary: what `/status` serves and `backhaul status` prints. The
//! monitor writes what it knows (incidents, interfaces, probes) into a [`StatusBoard`]; the
//! upload figures are read from the metrics at request time, so nothing is copied twice. The
//! status page (`GET /`, [`page`]) renders the same document, with charts of the last hour
//! ([`history`]).

pub mod chart;
pub mod history;
pub mod page;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use backhaul_telemetry::Metrics;
use serde::{Deserialize, Serialize};

use crate::probe::{TargetReport, now_ms};

/// The `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// `site.name`.
    pub site: String,
    /// Seconds since the agent started.
    pub uptime_seconds: u64,
    /// Whether the path monitor runs (the config has an `[inventory]`).
    pub monitoring: bool,
    /// How interface changes are seen: `rtnetlink`, `sysfs poll`, or `off`.
    pub link_watch: String,
    /// Open incidents, most severe first.
    pub incidents: Vec<IncidentStatus>,
    /// The inventory's interfaces, declared against current.
    pub interfaces: Vec<InterfaceStatus>,
    /// The latest probe cycle per target (`gateway`, `endpoint`).
    pub probes: Vec<ProbeStatus>,
    /// Upload, backlog and disk figures.
    pub upload: UploadStatus,
    /// ICMP fragmentation-needed messages received, and the latest next-hop MTU.
    pub frag_needed_total: u64,
    /// Next-hop MTU of the latest frag-needed (none yet: `None`).
    pub frag_needed_last_mtu_bytes: Option<u32>,
    /// Alerts queued in the outbox, not delivered yet (the webhook or Alertmanager is
    /// unreachable; they are retried and arrive with their original times).
    #[serde(default)]
    pub alerts_undelivered: u64,
    /// VPN: `up: <tunnels>`, `down: …`, or `not monitored: <why>` (no socket, no connection
    /// loaded, no `[inventory]`), with the flap count while monitored; never "healthy".
    pub vpn: String,
    /// strongSwan's CHILD_SAs: what carries the site's packets, its proposal and counters.
    #[serde(default)]
    pub vpn_children: Vec<VpnChildStatus>,
    /// The MSS new upload connections are clamped to and the path MTU it follows (`None`: not
    /// clamped; the interface MTU fits the path).
    #[serde(default)]
    pub mss_clamp: Option<crate::monitor::clamp::MssClamp>,
    /// `[remediation]`: its mode, why it is held, its latest action, the route MTU in force
    /// (`None`: the path monitor is off).
    #[serde(default)]
    pub remediation: Option<crate::monitor::remedy::RemediationStatus>,
}

/// One open incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentStatus {
    /// `pmtu_blackhole`, `mtu_drift`, ….
    pub kind: String,
    /// `warning` or `critical`.
    pub severity: String,
    /// What it is about (an interface, `gateway`, …).
    pub subject: String,
    /// Unix milliseconds of its onset.
    pub started_at_ms: u64,
    /// The root-cause sentence.
    pub root_cause: String,
    /// Fix commands.
    pub fix: Vec<String>,
    /// Runbook link.
    pub runbook: String,
    /// The evidence timeline (`HH:MM:SS what`), oldest first: link changes, probe results,
    /// stalls, as the rules saw them.
    #[serde(default)]
    pub evidence: Vec<String>,
}

/// One CHILD_SA of the site's VPN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpnChildStatus {
    /// IKE SA (connection) name.
    pub ike: String,
    /// CHILD_SA name.
    pub name: String,
    /// `INSTALLED`, `REKEYING`, ….
    pub state: String,
    /// The proposal and what it costs each packet: `ESP AES_GCM_16 over UDP: 62 B`.
    pub proposal: String,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
    /// Bytes decrypted.
    pub bytes_in: u64,
    /// Bytes encrypted.
    pub bytes_out: u64,
    /// Packets decrypted.
    pub packets_in: u64,
    /// Packets encrypted.
    pub packets_out: u64,
    /// Seconds since a packet came in (`None`: none yet).
    pub use_in_seconds: Option<u64>,
    /// Seconds since a packet went out.
    pub use_out_seconds: Option<u64>,
}

impl From<&backhaul_netprobe::ChildSa> for VpnChildStatus {
    fn from(c: &backhaul_netprobe::ChildSa) -> Self {
        Self {
            ike: c.ike.clone(),
            name: c.name.clone(),
            state: c.state.clone(),
            proposal: crate::monitor::tunnel::EspOverhead::of(c).describe(),
            remote_ts: c.remote_ts.clone(),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            packets_in: c.packets_in,
            packets_out: c.packets_out,
            use_in_seconds: c.use_in_seconds,
            use_out_seconds: c.use_out_seconds,
        }
    }
}

impl VpnChildStatus {
    /// `net INSTALLED (ESP AES_GCM_16 over UDP: 62 B) → 203.0.113.128/26: in 1.2 MB/10 pkts, last 3 s ago; out …`.
    pub fn line(&self) -> String {
        let last = |s: Option<u64>| s.map_or("never".to_owned(), |s| format!("last {s} s ago"));
        format!(
            "{}/{} {} ({}) → {}: in {} B/{} pkts, {}; out {} B/{} pkts, {}",
            self.ike,
            self.name,
            self.state,
            self.proposal,
            self.remote_ts.join(", "),
            self.bytes_in,
            self.packets_in,
            last(self.use_in_seconds),
            self.bytes_out,
            self.packets_out,
            last(self.use_out_seconds)
        )
    }
}

/// One inventory interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Name.
    pub name: String,
    /// Declared role.
    pub role: String,
    /// Declared MTU.
    pub declared_mtu_bytes: u32,
    /// Current MTU (`None` until seen, or when the interface does not exist).
    pub mtu_bytes: Option<u32>,
    /// Whether it is up (`None` until seen).
    pub up: Option<bool>,
}

/// The latest probe cycle toward one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    /// `gateway` or `endpoint`.
    pub target: String,
    /// Address probed.
    pub address: Option<String>,
    /// Unix milliseconds of the cycle.
    pub at_ms: u64,
    /// Whether the small probe was answered.
    pub small_ok: Option<bool>,
    /// Size of the full-size probes.
    pub large_size_bytes: u32,
    /// Whether the full-size probes were answered.
    pub large_ok: Option<bool>,
    /// Largest size that passed.
    pub path_mtu_bytes: Option<u32>,
    /// Why the probe could not run, if it could not.
    pub note: Option<String>,
}

/// Upload, backlog and disk figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// Goodput over the last 10 s, Mbit/s.
    pub goodput_mbps_10s: f64,
    /// Goodput over the last 60 s, Mbit/s.
    pub goodput_mbps_60s: f64,
    /// Chunks uploaded and verified since start.
    pub uploaded_chunks_total: u64,
    /// Chunks waiting.
    pub backlog_chunks: u64,
    /// Bytes waiting.
    pub backlog_bytes: u64,
    /// Age of the oldest waiting chunk.
    pub oldest_chunk_age_seconds: f64,
    /// The bandwidth limit in force now, bytes per second (`None`: unlimited).
    #[serde(default)]
    pub bandwidth_limit_bytes_per_second: Option<u64>,
    /// Spool filesystem usage.
    pub disk_used_percent: f64,
    /// Projected seconds until full (`None` when not filling, or not sampled yet).
    pub disk_full_projected_seconds: Option<f64>,
    /// What the store validates by itself and how in-transit corruption is caught, from the
    /// start-up probe (`None` until the store has answered it).
    #[serde(default)]
    pub store_integrity: Option<backhaul_upload::StoreProfile>,
    /// How uploaded objects are proven before their files are deleted (`upload.verify` and
    /// what it means on this store; `None` until the probe has run).
    #[serde(default)]
    pub verification: Option<backhaul_upload::Verification>,
    /// Where the credentials come from and when they expire (never a secret).
    #[serde(default)]
    pub credentials: Option<CredentialsView>,
    /// The store's clock minus this host's, from its latest answer (0 before one).
    #[serde(default)]
    pub clock_skew_seconds: f64,
}

/// The credentials in use, as `/status` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialsView {
    /// `upload.credentials`.
    pub setting: String,
    /// The source that gave the credentials in use (`None` until resolved).
    pub source: Option<String>,
    /// The access key id in use (not secret: it is in every request's signature).
    pub access_key_id: Option<String>,
    /// Seconds until they expire (`None`: long-lived, or not resolved).
    pub expires_in_seconds: Option<i64>,
    /// The latest refresh's error, until one succeeds.
    pub last_error: Option<String>,
}

impl CredentialsView {
    fn of(s: backhaul_upload::CredentialsStatus, now: std::time::SystemTime) -> Self {
        Self {
            setting: s.setting.to_owned(),
            expires_in_seconds: s.expires_in_seconds(now),
            source: s.source,
            access_key_id: s.access_key_id,
            last_error: s.last_error,
        }
    }

    /// One line for `backhaul status` and the page.
    pub fn line(&self) -> String {
        let mut line = match &self.source {
            Some(src) => format!("{src} ({} = \"{}\")", "upload.credentials", self.setting),
            None => format!(
                "not resolved yet (upload.credentials = \"{}\")",
                self.setting
            ),
        };
        if let Some(id) = &self.access_key_id {
            line.push_str(&format!(", key {id}"));
        }
        match self.expires_in_seconds {
            Some(s) if s >= 0 => line.push_str(&format!(", expire in {}", duration(s as u64))),
            Some(s) => line.push_str(&format!(", EXPIRED {} ago", duration(s.unsigned_abs()))),
            None if self.source.is_some() => line.push_str(", long-lived"),
            None => {}
        }
        if let Some(e) = &self.last_error {
            line.push_str(&format!("; refresh failing: {e}"));
        }
        line
    }
}

impl UploadStatus {
    /// What the start-up probe found the store checks, or that it has not run yet.
    pub fn store(&self) -> String {
        match (self.store_integrity, self.verification) {
            (Some(p), Some(v)) => format!("{}; {}", p.describe(), v.describe()),
            (Some(p), None) => p.describe(),
            (None, _) => "not probed yet (the bucket has not answered)".to_owned(),
        }
    }
}

/// A clock this far from the store's is worth a line in `backhaul status`.
const CLOCK_SKEW_SHOWN: f64 = 30.0;

/// What the monitor reports, shared with the metrics server.
#[derive(Debug)]
pub struct StatusBoard {
    started: Instant,
    site: String,
    monitor: Mutex<MonitorView>,
    integrity: Mutex<Option<std::sync::Arc<backhaul_upload::Integrity>>>,
    limiter: Mutex<Option<std::sync::Arc<backhaul_upload::RateLimiter>>>,
    credentials: Mutex<Option<std::sync::Arc<backhaul_upload::CredentialsProvider>>>,
    disk: Mutex<Option<backhaul_spool::DiskFeed>>,
    history: history::History,
}

/// The monitor's part of the status.
#[derive(Debug, Default, Clone)]
pub struct MonitorView {
    /// See [`Status::monitoring`].
    pub monitoring: bool,
    /// See [`Status::link_watch`].
    pub link_watch: &'static str,
    /// See [`Status::incidents`].
    pub incidents: Vec<IncidentStatus>,
    /// See [`Status::interfaces`].
    pub interfaces: Vec<InterfaceStatus>,
    /// By target name.
    pub probes: BTreeMap<&'static str, ProbeStatus>,
    /// The VPN line while the monitor watches strongSwan (empty until its first look).
    pub vpn: String,
    /// See [`Status::vpn_children`].
    pub vpn_children: Vec<VpnChildStatus>,
    /// See [`Status::mss_clamp`].
    pub mss_clamp: Option<crate::monitor::clamp::MssClamp>,
    /// See [`Status::remediation`].
    pub remediation: Option<crate::monitor::remedy::RemediationStatus>,
}

impl StatusBoard {
    /// A board for `site`, started now.
    pub fn new(site: String) -> Self {
        Self {
            started: Instant::now(),
            site,
            monitor: Mutex::new(MonitorView {
                link_watch: "off",
                ..MonitorView::default()
            }),
            integrity: Mutex::new(None),
            limiter: Mutex::new(None),
            credentials: Mutex::new(None),
            disk: Mutex::new(None),
            history: history::History::default(),
        }
    }

    /// The last hour of upload figures, for the status page's charts.
    pub fn history(&self) -> &history::History {
        &self.history
    }

    /// The status page now: the document, and the history with the current figures as its
    /// latest point (so the charts end where the numbers above them are).
    pub fn page(&self, metrics: &Metrics) -> String {
        let status = self.status(metrics);
        let now = Instant::now();
        let mut samples = self.history.samples();
        samples.push(history::Sample::of(metrics, now));
        page::render(&status, &samples, now, now_ms())
    }

    /// Where the uploader keeps what the store validates, read at request time.
    pub fn set_integrity(&self, integrity: std::sync::Arc<backhaul_upload::Integrity>) {
        *self.integrity.lock().unwrap_or_else(|p| p.into_inner()) = Some(integrity);
    }

    /// The uploads' bandwidth limiter, for the limit in force.
    pub fn set_limiter(&self, limiter: std::sync::Arc<backhaul_upload::RateLimiter>) {
        *self.limiter.lock().unwrap_or_else(|p| p.into_inner()) = Some(limiter);
    }

    /// The uploads' credentials, for their source and expiry.
    pub fn set_credentials(&self, creds: std::sync::Arc<backhaul_upload::CredentialsProvider>) {
        *self.credentials.lock().unwrap_or_else(|p| p.into_inner()) = Some(creds);
    }

    /// Where the spool publishes its disk readings.
    pub fn set_disk(&self, feed: backhaul_spool::DiskFeed) {
        *self.disk.lock().unwrap_or_else(|p| p.into_inner()) = Some(feed);
    }

    /// Changes the monitor's part.
    pub fn update(&self, f: impl FnOnce(&mut MonitorView)) {
        f(&mut self.monitor.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The document now.
    pub fn status(&self, metrics: &Metrics) -> Status {
        let m = self
            .monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let now = Instant::now();
        let frag_total = metrics.icmp_frag_needed.value();
        let disk = self
            .disk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|f| f.latest());
        let integrity = self
            .integrity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Status {
            site: self.site.clone(),
            uptime_seconds: self.started.elapsed().as_secs(),
            monitoring: m.monitoring,
            link_watch: m.link_watch.to_owned(),
            incidents: m.incidents,
            interfaces: m.interfaces,
            probes: m.probes.into_values().collect(),
            upload: UploadStatus {
                goodput_mbps_10s: metrics.goodput.mbps(now, 10),
                goodput_mbps_60s: metrics.goodput.mbps(now, 60),
                uploaded_chunks_total: metrics.uploaded_chunks.value(),
                backlog_chunks: metrics.backlog_chunks.value() as u64,
                backlog_bytes: metrics.backlog_bytes.value() as u64,
                oldest_chunk_age_seconds: metrics.oldest_chunk_age_seconds.value(),
                bandwidth_limit_bytes_per_second: self
                    .limiter
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .and_then(|l| l.current_rate()),
                disk_used_percent: disk.map_or(0.0, |d| d.used_percent),
                disk_full_projected_seconds: disk
                    .map(|d| d.seconds_to_full)
                    .filter(|s| s.is_finite()),
                store_integrity: integrity.as_ref().and_then(|i| i.probed()),
                verification: integrity.as_ref().and_then(|i| i.verification()),
                credentials: self
                    .credentials
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|c| CredentialsView::of(c.status(), std::time::SystemTime::now())),
                clock_skew_seconds: metrics.clock_skew_seconds.value(),
            },
            frag_needed_total: frag_total,
            frag_needed_last_mtu_bytes: (frag_total > 0)
                .then(|| metrics.icmp_frag_needed_last_mtu_bytes.value() as u32),
            alerts_undelivered: metrics.alerts_undelivered.value() as u64,
            vpn: if m.vpn.is_empty() {
                vpn_status(std::path::Path::new(backhaul_netprobe::VICI_SOCKET))
            } else {
                m.vpn
            },
            vpn_children: m.vpn_children,
            mss_clamp: m.mss_clamp,
            remediation: m.remediation,
        }
    }
}

/// The VPN line without the monitor (no `[inventory]`): never "healthy" while nothing reads
/// the tunnel's state.
fn vpn_status(vici: &std::path::Path) -> String {
    if vici.exists() {
        format!(
            "not monitored: strongSwan's VICI socket {} exists, but the path monitor is off \
             (no [inventory])",
            vici.display()
        )
    } else {
        format!(
            "not monitored: no strongSwan VICI socket at {}",
            vici.display()
        )
    }
}

impl From<&backhaul_diagnose::Incident> for IncidentStatus {
    fn from(i: &backhaul_diagnose::Incident) -> Self {
        Self {
            kind: i.kind.as_str().to_owned(),
            severity: i.severity.as_str().to_owned(),
            subject: i.subject.clone(),
            started_at_ms: i.started_at_ms,
            root_cause: i.root_cause.clone(),
            fix: i.fix.clone(),
            runbook: i.runbook.clone(),
            evidence: i
                .evidence
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        backhaul_diagnose::TimeBase::UNIX.hms(e.at_ms),
                        e.text
                    )
                })
                .collect(),
        }
    }
}

impl From<&TargetReport> for ProbeStatus {
    fn from(r: &TargetReport) -> Self {
        Self {
            target: r.name.to_owned(),
            address: r.addr.map(|a| a.to_string()),
            at_ms: now_ms(),
            small_ok: r.small_ok,
            large_size_bytes: r.large_size as u32,
            large_ok: r.large_ok,
            path_mtu_bytes: r.path_mtu.map(|m| m as u32),
            note: r.note.clone(),
        }
    }
}

impl Status {
    /// The host's frag-needed count and the latest next-hop MTU, one line (summary and page).
    pub fn frag_needed_line(&self) -> String {
        let last = self
            .frag_needed_last_mtu_bytes
            .map_or(String::new(), |m| format!(", latest next-hop MTU {m}"));
        format!(
            "ICMP fragmentation needed: {}{last}",
            self.frag_needed_total
        )
    }

    /// The upload connections' MSS clamp, one line, while the path is monitored.
    pub fn clamp_line(&self) -> Option<String> {
        self.monitoring.then(|| match &self.mss_clamp {
            Some(c) => format!(
                "upload connections: MSS clamped to {} (path MTU {} from {}{})",
                c.mss_bytes,
                c.path_mtu_bytes,
                c.source.as_str(),
                c.tunnel
                    .as_ref()
                    .map_or(String::new(), |t| format!(", inside {t}"))
            ),
            None => "upload connections: not clamped (the WAN MTU fits the path)".into(),
        })
    }

    /// What the agent may change on the site by itself and did, one line, while the path is
    /// monitored.
    pub fn remediation_line(&self) -> Option<String> {
        let r = self.remediation.as_ref()?;
        let mut line = format!("remediation: {}", r.mode);
        for part in [&r.held, &r.route_mtu, &r.last].into_iter().flatten() {
            line.push_str("; ");
            line.push_str(part);
        }
        Some(line)
    }

    /// The human summary `backhaul status` prints.
    pub fn human(&self) -> String {
        let mut out = Vec::new();
        let verdict = match self.incidents.first() {
            None if self.monitoring => "healthy".to_owned(),
            None => "uploading (path monitoring off: no [inventory])".to_owned(),
            Some(i) => format!("{} {}", i.severity.to_uppercase(), i.kind),
        };
        out.push(format!(
            "backhaul on {}: {verdict}, up {}",
            self.site,
            duration(self.uptime_seconds)
        ));
        for i in &self.incidents {
            out.push(format!(
                "incident {} ({}): {}",
                i.kind, i.severity, i.root_cause
            ));
            for f in &i.fix {
                out.push(format!("  fix: {f}"));
            }
            out.push(format!("  runbook: {}", i.runbook));
        }
        for i in &self.interfaces {
            let mtu = i.mtu_bytes.map_or("absent".to_owned(), |m| m.to_string());
            let state = match i.up {
                Some(true) => "up",
                Some(false) => "down",
                None => "unknown",
            };
            let drift = match i.mtu_bytes {
                Some(m) if m != i.declared_mtu_bytes => "  <- differs from declared",
                _ => "",
            };
            out.push(format!(
                "interface {} ({}): MTU {mtu}, declared {}, {state}{drift}",
                i.name, i.role, i.declared_mtu_bytes
            ));
        }
        if self.monitoring {
            out.push(format!("link watch: {}", self.link_watch));
        } else {
            out.push(format!(
                "path rules off: no [inventory] ({}); credentials, the store, the disk and \
                 goodput are watched",
                backhaul_diagnose::Kind::names(true)
            ));
        }
        for p in &self.probes {
            let addr = p.address.as_deref().unwrap_or("-");
            let yes_no = |b: Option<bool>| match b {
                Some(true) => "answered",
                Some(false) => "lost",
                None => "not sent",
            };
            let pmtu = p
                .path_mtu_bytes
                .map_or("unknown".to_owned(), |b| format!("{b} bytes"));
            let mut line = format!(
                "probe {} {addr}: small {}, {} bytes DF {}, path MTU {pmtu}",
                p.target,
                yes_no(p.small_ok),
                p.large_size_bytes,
                yes_no(p.large_ok)
            );
            if let Some(note) = &p.note {
                line.push_str(&format!(" ({note})"));
            }
            out.push(line);
        }
        let u = &self.upload;
        let limit = u
            .bandwidth_limit_bytes_per_second
            .map_or(String::new(), |b| {
                format!(
                    ", limited to {:.1} Mbit/s now (upload.bandwidth_limit)",
                    b as f64 * 8.0 / 1e6
                )
            });
        out.push(format!(
            "upload: {:.1} Mbit/s (10 s), {:.1} Mbit/s (60 s), {} uploaded{limit}",
            u.goodput_mbps_10s,
            u.goodput_mbps_60s,
            chunks(u.uploaded_chunks_total)
        ));
        let full = u
            .disk_full_projected_seconds
            .map_or("not filling".to_owned(), |s| {
                format!("full in {}", duration(s as u64))
            });
        // At the last minute's goodput, chunks recorded meanwhile not counted.
        let drain = match (u.backlog_bytes, u.goodput_mbps_60s) {
            (0, _) => String::new(),
            (b, g) if g > 0.0 => format!(
                ", about {} to drain at the last minute's goodput",
                duration((b as f64 * 8.0 / (g * 1e6)) as u64)
            ),
            _ => ", not draining (nothing acknowledged in the last minute)".to_owned(),
        };
        out.push(format!(
            "backlog: {} ({}), oldest {}{drain}; disk {:.0}% used, {full}",
            chunks(u.backlog_chunks),
            human_bytes(u.backlog_bytes),
            duration(u.oldest_chunk_age_seconds as u64),
            u.disk_used_percent
        ));
        out.push(format!("store: {}", u.store()));
        if let Some(c) = &u.credentials {
            out.push(format!("credentials: {}", c.line()));
        }
        let skew = u.clock_skew_seconds;
        if skew.abs() >= CLOCK_SKEW_SHOWN {
            out.push(format!(
                "clock: the store's is {skew:+.0} s from this host's (fix with chrony or systemd-timesyncd; the store refuses beyond 900 s)"
            ));
        }
        out.push(self.frag_needed_line());
        out.extend(self.clamp_line());
        out.extend(self.remediation_line());
        out.push(format!("vpn: {}", self.vpn));
        for c in &self.vpn_children {
            out.push(format!("  child sa: {}", c.line()));
        }
        if self.alerts_undelivered > 0 {
            out.push(format!(
                "alerts: {} not delivered yet (kept in the journal, retried)",
                self.alerts_undelivered
            ));
        }
        out.join("\n") + "\n"
    }
}

fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `1 chunk`, `3 chunks`.
pub fn chunks(n: u64) -> String {
    if n == 1 {
        "1 chunk".to_owned()
    } else {
        format!("{n} chunks")
    }
}

/// Bytes as a person writes them: `512 B`, `82.0 MB`, `1.1 GB`.
pub fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1_000_000_000 => format!("{:.1} GB", b as f64 / 1e9),
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.1} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vpn_is_never_reported_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("charon.vici");
        assert_eq!(
            vpn_status(&socket),
            format!(
                "not monitored: no strongSwan VICI socket at {}",
                socket.display()
            )
        );
        std::fs::write(&socket, b"").unwrap();
        assert!(
            vpn_status(&socket).starts_with("not monitored: strongSwan's VICI socket"),
            "{}",
            vpn_status(&socket)
        );
    }
}
