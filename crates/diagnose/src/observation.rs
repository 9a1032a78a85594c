//! What producers tell the engine: one timestamped [`Signal`] per [`Observation`].

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A signal and when it was seen (ms since the caller's epoch, see [`crate::TimeBase`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// When the signal was seen.
    pub at_ms: u64,
    /// What was seen.
    pub signal: Signal,
}

impl Observation {
    /// `signal` seen at `at_ms`.
    pub fn new(at_ms: u64, signal: Signal) -> Self {
        Self { at_ms, signal }
    }
}

/// Where a probe was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The inventory's gateway (first hop).
    Gateway,
    /// The upload endpoint.
    Endpoint,
}

impl Target {
    /// `gateway` or `endpoint`, as used in texts and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Gateway => "gateway",
            Target::Endpoint => "endpoint",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// State of the site's VPN tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VpnState {
    /// Established.
    Up,
    /// Configured but not established.
    Down,
    /// No VPN to monitor (no strongSwan): "not monitored", never "healthy".
    Absent,
}

/// Class of an upload failure, as `backhaul-upload`'s `Error::class()` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadErrorClass {
    /// 401/403: credentials rejected.
    Auth,
    /// The store refuses our requests' time (`RequestTimeTooSkewed`): the host's clock is off.
    ClockSkew,
    /// No credentials found.
    Credentials,
    /// The bucket does not exist.
    NoSuchBucket,
    /// TCP connect failed or the connection broke.
    Connection,
    /// No response in time.
    Timeout,
    /// The socket took no body bytes for the stall timeout.
    Stall,
    /// HTTP 5xx from the store.
    #[serde(rename = "server_5xx")]
    Server5xx,
    /// 503 SlowDown: throttled, not broken.
    SlowDown,
    /// TLS handshake failed.
    Tls,
    /// Any other class (protocol, checksum, verify, …): not used by the rules.
    Other,
}

impl UploadErrorClass {
    /// The class of a metric label, for test timelines; the agent maps its typed
    /// `backhaul_upload::ErrorClass` instead, so no caller decides by comparing strings.
    #[cfg(test)]
    pub(crate) fn from_class(class: &str) -> Self {
        match class {
            "auth" => Self::Auth,
            "clock_skew" => Self::ClockSkew,
            "credentials" => Self::Credentials,
            "no_such_bucket" => Self::NoSuchBucket,
            "connection" => Self::Connection,
            "timeout" => Self::Timeout,
            "stall" => Self::Stall,
            "server_5xx" => Self::Server5xx,
            "slow_down" => Self::SlowDown,
            "tls" => Self::Tls,
            _ => Self::Other,
        }
    }

    /// The class string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::ClockSkew => "clock_skew",
            Self::Credentials => "credentials",
            Self::NoSuchBucket => "no_such_bucket",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::Stall => "stall",
            Self::Server5xx => "server_5xx",
            Self::SlowDown => "slow_down",
            Self::Tls => "tls",
            Self::Other => "other",
        }
    }

    /// Whether this class means the store refuses us (credentials, clock or bucket), not the
    /// network.
    pub fn is_auth(self) -> bool {
        matches!(
            self,
            Self::Auth | Self::ClockSkew | Self::Credentials | Self::NoSuchBucket
        )
    }

    /// Whether this class means the endpoint could not be reached or did not serve us.
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            Self::Connection | Self::Timeout | Self::Server5xx | Self::Tls
        )
    }
}

impl Signal {
    /// Whether this is `TCP_INFO` of a connection stuck in retransmission timeout: resending
    /// and nothing acknowledged since the previous sample.
    pub fn tcp_stuck(&self) -> bool {
        matches!(self, Signal::TcpInfo { retransmits, bytes_acked_delta: 0, .. } if *retransmits > 0)
    }
}

/// Follows full-size probes per target to say when the path carries full-size packets again:
/// a pass at a size at least as large as the failures before it toward the same target, once
/// those failures were evidence that the path lost full-size packets — `large_probe_failures`
/// in a row, or one that the prober's path-MTU search confirmed with a smaller size. Evidence
/// from before that moment (stalls, `TCP_INFO` of connections that lost segments then) says
/// nothing about the path now. A probe lost at random on a lossy uplink and the next one
/// passing is not a recovery: nothing had changed. Path-MTU search probes are not `Probe`
/// observations, so a search that finds a smaller size passing is never mistaken for one.
#[derive(Debug, Clone, Copy)]
pub struct PathRecovery {
    small_probe_max_bytes: u32,
    large_probe_failures: u32,
    failing: [Failing; 2],
}

/// Full-size probes failing toward one target since its last pass.
#[derive(Debug, Clone, Copy, Default)]
struct Failing {
    /// The smallest size that failed.
    size: Option<u32>,
    /// Failures in a row.
    count: u32,
    /// A path-MTU search found a smaller size passing.
    confirmed: bool,
}

impl PathRecovery {
    /// A tracker with the rules' thresholds ([`crate::Settings::small_probe_max_bytes`] and
    /// [`crate::Settings::large_probe_failures`]).
    pub fn new(small_probe_max_bytes: u32, large_probe_failures: u32) -> Self {
        Self {
            small_probe_max_bytes,
            large_probe_failures,
            failing: [Failing::default(); 2],
        }
    }

    /// Feeds one signal; true when it is the recovery.
    pub fn observe(&mut self, signal: &Signal) -> bool {
        match *signal {
            Signal::Probe {
                target,
                size_bytes,
                ok,
                ..
            } if size_bytes > self.small_probe_max_bytes => {
                let slot = &mut self.failing[target as usize];
                match (slot.size, ok) {
                    (_, false) => {
                        slot.size = Some(slot.size.map_or(size_bytes, |f| f.min(size_bytes)));
                        slot.count += 1;
                        false
                    }
                    (Some(failed), true) if size_bytes >= failed => {
                        let proven = slot.count >= self.large_probe_failures || slot.confirmed;
                        *slot = Failing::default();
                        proven
                    }
                    _ => false,
                }
            }
            Signal::PathMtu { target, bytes } => {
                let slot = &mut self.failing[target as usize];
                if slot.size.is_some_and(|f| bytes < f) {
                    slot.confirmed = true;
                }
                false
            }
            _ => false,
        }
    }
}

fn default_fill_window_seconds() -> u64 {
    300
}

/// One thing a producer saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Signal {
    /// An interface's current MTU, reported at start and by the polling fallback.
    LinkMtu {
        /// Interface.
        ifname: String,
        /// Its MTU now.
        mtu_bytes: u32,
    },
    /// An interface's MTU changed (rtnetlink `RTM_NEWLINK`).
    LinkMtuChanged {
        /// Interface.
        ifname: String,
        /// MTU before.
        old_bytes: u32,
        /// MTU after.
        new_bytes: u32,
    },
    /// An interface's operational state (reported at start and on change).
    LinkState {
        /// Interface.
        ifname: String,
        /// Whether it is up with carrier.
        up: bool,
    },
    /// One probe toward the gateway or the endpoint: small and full-size probes run side by
    /// side, so "small passes, large fails" is explicit.
    Probe {
        /// Where it went.
        target: Target,
        /// IP packet size.
        size_bytes: u32,
        /// Sent with Don't Fragment.
        df: bool,
        /// Whether an answer came back.
        ok: bool,
        /// Round-trip time when `ok`.
        rtt_ms: Option<f64>,
    },
    /// Result of a PLPMTUD-style search: the largest packet that passed toward `target`.
    PathMtu {
        /// Where the search probed.
        target: Target,
        /// Largest size that passed.
        bytes: u32,
    },
    /// ICMP "fragmentation needed" (type 3 code 4) or an `IP_RECVERR` `EMSGSIZE` report.
    FragNeeded {
        /// The router that sent it.
        from: IpAddr,
        /// The next-hop MTU it reported.
        next_hop_mtu: u32,
    },
    /// Upload goodput over the last 10 s, reported while there is something to upload.
    UploadGoodput {
        /// Mbit/s of payload the store acknowledged.
        mbps_10s: f64,
    },
    /// The upload stall watchdog fired: no body byte left for the stall timeout.
    UploadStall {
        /// How long nothing moved.
        stalled_seconds: u64,
    },
    /// A request to the store succeeded after upload requests could not reach it: the end of
    /// an outage, seconds before the first part of the backlog is acknowledged.
    StoreAnswered,
    /// An upload request failed.
    UploadError {
        /// Its class.
        class: UploadErrorClass,
    },
    /// Spool disk usage and, when it is filling, the time until it is full.
    Disk {
        /// Percent of the filesystem used.
        used_percent: f64,
        /// Seconds until full at the current fill rate; `None` when not filling.
        seconds_to_full: Option<u64>,
        /// The window the fill rate looks back over: that long after an upload outage ends,
        /// the projection still carries the outage's growth.
        #[serde(default = "default_fill_window_seconds")]
        fill_window_seconds: u64,
    },
    /// VPN tunnel state and the number of flaps since the agent started.
    Vpn {
        /// State now.
        state: VpnState,
        /// Flaps counted since start (monotonic).
        flaps: u32,
    },
    /// The kernel's TCP MTU probing (`net.ipv4.tcp_mtu_probing`) shrank the segments of
    /// connections that were losing full-size ones (`TcpExt: TCPMTUPSuccess` grew).
    KernelMtuProbing {
        /// Successes since the previous report.
        successes: u64,
    },
    /// The MSS the agent clamps its own upload connections to (`None`: not clamped), sent
    /// when it changes. Uploads that flow under it do not make a path that drops large
    /// packets healthy: everything else on the site still loses them.
    UploadMssClamp {
        /// `TCP_MAXSEG` of new upload connections.
        mss_bytes: Option<u32>,
        /// The tunnel whose overhead it includes (`ESP AES_GCM_16 over UDP: 62 B`), if the
        /// uploads ride one.
        tunnel: Option<String>,
    },
    /// The VPN's CHILD_SAs encrypted `bytes_out` in `seconds` and got (almost) nothing back:
    /// what goes into the tunnel does not come out at the far end.
    VpnOneWay {
        /// Bytes encrypted meanwhile.
        bytes_out: u64,
        /// Over how long.
        seconds: u64,
    },
    /// Upload connections stuck resending full-size segments made the agent step its clamp
    /// down, whatever the probes measured: the disagreement is evidence about the path.
    ClampStuck {
        /// The segment size the stuck connections resent.
        stuck_mss: u32,
        /// The clamp's new MSS.
        next_mss: u32,
        /// The path MTU the clamp followed before (a measurement), if any.
        measured_path_mtu: Option<u32>,
    },
    /// The agent changed the site's network by itself (`[remediation]`), or tried to.
    Remediation {
        /// The interface acted on.
        ifname: String,
        /// What was done, as a person would say it (`ip link set dev eno1 mtu 1500`).
        action: String,
        /// Why it failed, when it did.
        error: Option<String>,
        /// Whether this took an earlier remediation off again.
        undo: bool,
    },
    /// A guarded `backhaul netplan apply` held its lock when an interface changed: the change
    /// came through it, under this ticket.
    GuardedApply {
        /// The ticket the apply declared, if it came from one.
        ticket: Option<String>,
        /// The apply's run id.
        run_id: String,
    },
    /// The store's clock minus this host's, from the `Date` of its answers.
    ClockSkew {
        /// Seconds (positive: the store is ahead).
        seconds: i64,
    },
    /// How refreshing the upload credentials went: reported when it changes, and every
    /// minute while it fails.
    CredentialsRefresh {
        /// Whether the latest refresh succeeded.
        ok: bool,
        /// Seconds until the credentials in use expire (`None`: long-lived or none).
        expires_in_seconds: Option<i64>,
        /// Why the latest refresh failed.
        error: Option<String>,
    },
    /// `TCP_INFO` of an upload connection.
    TcpInfo {
        /// `tcpi_snd_mss`.
        snd_mss: u32,
        /// `tcpi_pmtu`.
        pmtu: u32,
        /// `tcpi_retransmits` (current consecutive retransmissions).
        retransmits: u32,
        /// Bytes newly acknowledged since the previous sample.
        bytes_acked_delta: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_stuck_only_when_resending_with_nothing_acknowledged() {
        let info = |retransmits, bytes_acked_delta| Signal::TcpInfo {
            snd_mss: 8948,
            pmtu: 9000,
            retransmits,
            bytes_acked_delta,
        };
        assert!(info(2, 0).tcp_stuck());
        assert!(!info(2, 1448).tcp_stuck());
        assert!(!info(0, 0).tcp_stuck());
        assert!(
            !Signal::UploadStall {
                stalled_seconds: 15
            }
            .tcp_stuck()
        );
    }

    #[test]
    fn the_path_recovers_when_full_size_passes_again_toward_the_same_target() {
        let probe = |target, size_bytes, ok| Signal::Probe {
            target,
            size_bytes,
            df: true,
            ok,
            rtt_ms: None,
        };
        let mut r = PathRecovery::new(576, 3);
        assert!(
            !r.observe(&probe(Target::Endpoint, 1500, true)),
            "never failed"
        );
        assert!(!r.observe(&probe(Target::Endpoint, 1500, false)));
        assert!(!r.observe(&probe(Target::Endpoint, 84, true)), "small");
        assert!(
            !r.observe(&probe(Target::Gateway, 1500, true)),
            "other target"
        );
        assert!(
            !r.observe(&probe(Target::Endpoint, 1400, true)),
            "smaller size"
        );
        // The search confirmed that full-size packets are lost, not one probe.
        assert!(!r.observe(&Signal::PathMtu {
            target: Target::Endpoint,
            bytes: 1400
        }));
        assert!(r.observe(&probe(Target::Endpoint, 1500, true)));
        assert!(!r.observe(&probe(Target::Endpoint, 1500, true)), "once");
    }

    #[test]
    fn a_probe_lost_at_random_then_passing_is_not_a_recovery() {
        let probe = |ok| Signal::Probe {
            target: Target::Gateway,
            size_bytes: 1500,
            df: true,
            ok,
            rtt_ms: None,
        };
        let mut r = PathRecovery::new(576, 3);
        assert!(!r.observe(&probe(false)));
        assert!(!r.observe(&probe(true)), "one loss on a lossy uplink");
        for _ in 0..3 {
            assert!(!r.observe(&probe(false)));
        }
        assert!(
            r.observe(&probe(true)),
            "three in a row: the path lost them"
        );
    }
}
