use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::Goodput;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The current count.
    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down; stored as `f64` bits.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Replaces the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The current value.
    pub fn value(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A counter family with one label (for example `class` of an upload error).
#[derive(Debug, Default)]
pub struct LabeledCounter {
    values: Mutex<BTreeMap<String, u64>>,
}

impl LabeledCounter {
    /// Adds one to the series with this label value.
    pub fn inc(&self, label: &str) {
        self.add(label, 1);
    }

    /// Adds `n` to the series with this label value.
    pub fn add(&self, label: &str, n: u64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *values.entry(label.to_owned()).or_default() += n;
    }

    /// The count for one label value (0 when never seen).
    pub fn value(&self, label: &str) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.get(label).copied().unwrap_or(0)
    }

    /// The sum over all label values.
    pub fn total(&self) -> u64 {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.values().sum()
    }

    /// Every label value with its count, in label order.
    pub fn series(&self) -> Vec<(String, u64)> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Every metric the agent exports. One instance per agent, shared by `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Bytes of parts and objects the server acknowledged.
    pub uploaded_bytes: Counter,
    /// Parts (or single-request objects) the server acknowledged.
    pub uploaded_parts: Counter,
    /// Chunks uploaded and verified in the bucket.
    pub uploaded_chunks: Counter,
    /// Body bytes handed to the socket, including attempts that later failed.
    pub sent_bytes: Counter,
    /// Failed requests by error class.
    pub errors: LabeledCounter,
    /// Changes the agent made to the site's network by itself (`[remediation]`), by action
    /// (`restore_declared`, `route_mtu`, `undo_route_mtu`).
    pub remediations: LabeledCounter,
    /// Remediations that failed, by action.
    pub remediation_failures: LabeledCounter,
    /// Remediations not made because something held them (`netplan_pending`), by reason.
    pub remediation_held: LabeledCounter,
    /// Request attempts that were retried.
    pub retries: Counter,
    /// Part attempts abandoned because no byte was acknowledged within the stall timeout.
    pub stalls: Counter,
    /// Times a request to the store succeeded after upload requests could not reach it
    /// (connection refused or broken, no answer in time): the end of an outage, seen at once
    /// rather than when the first part is acknowledged.
    pub store_recoveries: Counter,
    /// Un-uploaded chunks deleted because the disk was full (only with an explicit policy).
    pub dropped_chunks: Counter,
    /// Chunks whose file changed or vanished while they were being uploaded.
    pub changed_chunks: Counter,
    /// Chunks stored under a disambiguated key because their own key was taken (by another
    /// chunk in the spool, or by a different object already in the bucket).
    pub key_collisions: Counter,
    /// Parts or objects the store acknowledged with an ETag that is not the MD5 of what was
    /// sent (corrupted in transit on a store that does not validate checksums); re-sent.
    pub corrupt_in_transit: Counter,
    /// Chunks stored but not proven (`upload.verify = "head"` on a store whose HeadObject
    /// proves nothing): kept in the spool, never deleted. Worth an alert.
    pub upload_unproven: Counter,
    /// Objects proven by reading them back (the store's HeadObject proved nothing, or
    /// `upload.verify = "read-back"`).
    pub upload_read_backs: Counter,
    /// How objects are proven, as `(request, mode)`: `request` is `put_object` or
    /// `multipart`, `mode` `head`, `read-back` or `none`; exported as
    /// `backhaul_upload_verify_mode`.
    pub upload_verify_modes: Mutex<Vec<(&'static str, &'static str)>>,
    /// Multipart uploads under the site prefix that no journal row knew, aborted.
    pub orphan_uploads_aborted: Counter,
    /// Alerts queued in the outbox and not delivered yet.
    pub alerts_undelivered: Gauge,
    /// Finished chunks' journal rows deleted by compaction (older than the retention).
    pub journal_compacted_rows: Counter,
    /// The journal's size on disk (database plus write-ahead log).
    pub journal_size_bytes: Gauge,
    /// Chunks waiting to be uploaded.
    pub backlog_chunks: Gauge,
    /// Bytes waiting to be uploaded.
    pub backlog_bytes: Gauge,
    /// Age of the oldest chunk not yet uploaded, in seconds (0 when none).
    pub oldest_chunk_age_seconds: Gauge,
    /// Spool filesystem usage in percent.
    pub disk_used_percent: Gauge,
    /// Projected seconds until the spool filesystem is full (+Inf when not filling).
    pub disk_full_projected_seconds: Gauge,
    /// Acknowledged upload bytes over sliding windows.
    pub goodput: Goodput,
    /// ICMP "fragmentation needed" messages the host received (any socket's packets).
    pub icmp_frag_needed: Counter,
    /// Next-hop MTU of the latest frag-needed (0 until one arrives).
    pub icmp_frag_needed_last_mtu_bytes: Gauge,
    /// Growth of the kernel's `Icmp: InDestUnreachs` since the agent started.
    pub kernel_icmp_in_dest_unreachs: Counter,
    /// Growth of the kernel's `Ip: FragFails` since the agent started.
    pub kernel_ip_frag_fails: Counter,
    /// Growth of the kernel's `TcpExt: TCPMTUPFail` since the agent started.
    pub kernel_tcp_mtup_fail: Counter,
    /// Growth of the kernel's `TcpExt: TCPMTUPSuccess` since the agent started.
    pub kernel_tcp_mtup_success: Counter,
    /// Largest `tcpi_snd_mss` among open upload connections (0 when none is open).
    pub upload_tcp_snd_mss_bytes: Gauge,
    /// Smallest `tcpi_pmtu` among open upload connections (0 when none is open).
    pub upload_tcp_pmtu_bytes: Gauge,
    /// When the uploader's loop last turned (seconds since the epoch): the watchdog's and an
    /// alert rule's way to tell a wedged agent from a quiet one.
    pub uploader_heartbeat_seconds: Gauge,
    /// When the path monitor's loop last turned (0 without an `[inventory]`).
    pub monitor_heartbeat_seconds: Gauge,
    /// The MSS new upload connections are clamped to (`TCP_MAXSEG` before connect); 0 when
    /// they are not clamped.
    pub upload_mss_clamp_bytes: Gauge,
    /// Largest smoothed RTT among open upload connections.
    pub upload_tcp_rtt_seconds: Gauge,
    /// TCP retransmissions on upload connections (`tcpi_total_retrans` growth).
    pub upload_tcp_retransmits: Counter,
    /// 1 while strongSwan has an established IKE SA, 0 otherwise (also when not monitored).
    pub vpn_up: Gauge,
    /// Established tunnels that dropped since the agent started.
    pub vpn_flaps: Counter,
    /// 1 while a CHILD_SA is installed (the tunnel carries packets), 0 otherwise.
    pub vpn_child_sa_up: Gauge,
    /// Bytes through the tunnel's CHILD_SAs, by `direction` (`in` decrypted, `out` encrypted).
    pub vpn_bytes: LabeledCounter,
    /// Open incidents; exported as `backhaul_incident_active`.
    pub incidents: Mutex<Vec<ActiveIncident>>,
    /// When the credentials in use expire, in seconds since the epoch (+Inf: long-lived; 0:
    /// none yet); exported as `backhaul_credentials_expiry_seconds`, the time left.
    pub credentials_expires_at_seconds: Gauge,
    /// Credential refreshes by `result` (`ok`, `error`).
    pub credentials_refreshes: LabeledCounter,
    /// The store's clock minus this host's, in seconds, from the `Date` of its latest answer.
    pub clock_skew_seconds: Gauge,
    /// Answers whose `Date` set [`Metrics::clock_skew_seconds`] (not exported: it tells a
    /// reading of 0 from none).
    pub clock_skew_answers: Counter,
}

impl Metrics {
    /// Replaces the verification modes in effect (`(request, mode)` pairs).
    pub fn set_verify_modes(&self, modes: &[(&'static str, &'static str)]) {
        *self
            .upload_verify_modes
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = modes.to_vec();
    }
}

/// One open incident as `backhaul_incident_active` labels it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveIncident {
    /// `pmtu_blackhole`, …
    pub kind: String,
    /// `warning`, …
    pub severity: String,
    /// The change it follows (a ticket or `eno1 mtu 1500→9000`); empty when none is known.
    /// A fleet dashboard counts sites per change by it.
    pub change: String,
}

/// Whether a sample is a counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    /// Monotonic.
    Counter,
    /// Point-in-time.
    Gauge,
}

/// One exported series at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Prometheus metric name (with unit suffix).
    pub name: &'static str,
    /// One-line description.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: SampleKind,
    /// Label pairs.
    pub labels: Vec<(&'static str, String)>,
    /// Value.
    pub value: f64,
}

/// All samples of a [`Metrics`] at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The samples, grouped by name in a fixed order.
    pub samples: Vec<Sample>,
}

impl Snapshot {
    /// The first sample with this name and these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|s| s.value)
    }
}

impl Metrics {
    /// Reads every metric. Goodput windows are evaluated at `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        use SampleKind::{Counter as C, Gauge as G};
        let mut samples = Vec::new();
        let mut push = |name, help, kind, labels: Vec<(&'static str, String)>, value: f64| {
            samples.push(Sample {
                name,
                help,
                kind,
                labels,
                value,
            });
        };
        for (window, secs) in [("10s", 10), ("60s", 60)] {
            push(
                "backhaul_upload_goodput_mbps",
                "Acknowledged upload goodput in megabits per second over a sliding window.",
                G,
                vec![("window", window.to_owned())],
                self.goodput.mbps(now, secs),
            );
        }
        let counters: [(&'static str, &'static str, &Counter); 22] = [
            (
                "backhaul_uploaded_bytes_total",
                "Bytes acknowledged by the object store.",
                &self.uploaded_bytes,
            ),
            (
                "backhaul_uploaded_parts_total",
                "Parts acknowledged by the object store.",
                &self.uploaded_parts,
            ),
            (
                "backhaul_uploaded_chunks_total",
                "Chunks uploaded and verified.",
                &self.uploaded_chunks,
            ),
            (
                "backhaul_upload_sent_bytes_total",
                "Body bytes written to upload sockets, retries included.",
                &self.sent_bytes,
            ),
            (
                "backhaul_upload_retries_total",
                "Upload request attempts that were retried.",
                &self.retries,
            ),
            (
                "backhaul_upload_stalls_total",
                "Part attempts abandoned after the stall timeout.",
                &self.stalls,
            ),
            (
                "backhaul_store_recoveries_total",
                "Times the store answered a request again after it could not be reached.",
                &self.store_recoveries,
            ),
            (
                "backhaul_chunks_dropped_total",
                "Un-uploaded chunks deleted by the disk-full policy.",
                &self.dropped_chunks,
            ),
            (
                "backhaul_chunks_changed_total",
                "Chunks that changed or vanished while uploading.",
                &self.changed_chunks,
            ),
            (
                "backhaul_key_collisions_total",
                "Chunks stored under a disambiguated key because their own key was taken.",
                &self.key_collisions,
            ),
            (
                "backhaul_upload_corrupt_in_transit_total",
                "Parts or objects whose store ETag was not the MD5 of what was sent; re-sent.",
                &self.corrupt_in_transit,
            ),
            (
                "backhaul_upload_unproven_total",
                "Chunks stored but not proven (upload.verify = head and HeadObject proves nothing); kept in the spool.",
                &self.upload_unproven,
            ),
            (
                "backhaul_upload_read_backs_total",
                "Objects proven by reading them back and comparing CRC32C with the file's.",
                &self.upload_read_backs,
            ),
            (
                "backhaul_journal_compacted_rows_total",
                "Journal rows of finished chunks deleted after the retention.",
                &self.journal_compacted_rows,
            ),
            (
                "backhaul_orphan_uploads_aborted_total",
                "Multipart uploads under the site prefix unknown to the journal, aborted.",
                &self.orphan_uploads_aborted,
            ),
            (
                "backhaul_icmp_frag_needed_total",
                "ICMP fragmentation-needed messages received by the host (any socket).",
                &self.icmp_frag_needed,
            ),
            (
                "backhaul_kernel_icmp_in_dest_unreachs_total",
                "Kernel Icmp InDestUnreachs growth since the agent started.",
                &self.kernel_icmp_in_dest_unreachs,
            ),
            (
                "backhaul_kernel_ip_frag_fails_total",
                "Kernel Ip FragFails growth since the agent started (DF packets too big to send).",
                &self.kernel_ip_frag_fails,
            ),
            (
                "backhaul_kernel_tcp_mtup_fail_total",
                "Kernel TcpExt TCPMTUPFail growth since the agent started.",
                &self.kernel_tcp_mtup_fail,
            ),
            (
                "backhaul_kernel_tcp_mtup_success_total",
                "Kernel TcpExt TCPMTUPSuccess growth since the agent started.",
                &self.kernel_tcp_mtup_success,
            ),
            (
                "backhaul_vpn_flaps_total",
                "Established VPN tunnels (strongSwan IKE SAs) that dropped.",
                &self.vpn_flaps,
            ),
            (
                "backhaul_upload_tcp_retransmits_total",
                "TCP retransmissions on upload connections (TCP_INFO total_retrans).",
                &self.upload_tcp_retransmits,
            ),
        ];
        for (name, help, c) in counters {
            push(name, help, C, Vec::new(), c.value() as f64);
        }
        for (class, n) in self.errors.series() {
            push(
                "backhaul_upload_errors_total",
                "Failed upload requests by error class.",
                C,
                vec![("class", class)],
                n as f64,
            );
        }
        let labeled: [(&'static str, &'static str, &'static str, &LabeledCounter); 5] = [
            (
                "backhaul_credentials_refreshes_total",
                "Credential refreshes by result (ok, error).",
                "result",
                &self.credentials_refreshes,
            ),
            (
                "backhaul_vpn_bytes_total",
                "Bytes through strongSwan's CHILD_SAs, by direction (in: decrypted, out: encrypted).",
                "direction",
                &self.vpn_bytes,
            ),
            (
                "backhaul_remediations_total",
                "Changes the agent made to the site's network by itself ([remediation]), by action.",
                "action",
                &self.remediations,
            ),
            (
                "backhaul_remediation_failures_total",
                "Remediations that failed, by action.",
                "action",
                &self.remediation_failures,
            ),
            (
                "backhaul_remediation_held_total",
                "Remediations not made because something held them, by reason.",
                "reason",
                &self.remediation_held,
            ),
        ];
        for (name, help, label, c) in labeled {
            for (value, n) in c.series() {
                push(name, help, C, vec![(label, value)], n as f64);
            }
        }
        let expires_at = self.credentials_expires_at_seconds.value();
        if expires_at > 0.0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            push(
                "backhaul_credentials_expiry_seconds",
                "Seconds until the AWS credentials in use expire (+Inf: long-lived).",
                G,
                Vec::new(),
                expires_at - now,
            );
        }
        let gauges: [(&'static str, &'static str, &Gauge); 17] = [
            (
                "backhaul_clock_skew_seconds",
                "The object store's clock minus this host's, from the Date of its latest answer.",
                &self.clock_skew_seconds,
            ),
            (
                "backhaul_vpn_child_sa_up",
                "1 while strongSwan has a CHILD_SA installed (0 also when not monitored).",
                &self.vpn_child_sa_up,
            ),
            (
                "backhaul_alerts_undelivered",
                "Alerts queued in the durable outbox and not delivered yet.",
                &self.alerts_undelivered,
            ),
            (
                "backhaul_journal_size_bytes",
                "Size of the spool journal on disk (database and write-ahead log).",
                &self.journal_size_bytes,
            ),
            (
                "backhaul_backlog_chunks",
                "Chunks waiting to be uploaded.",
                &self.backlog_chunks,
            ),
            (
                "backhaul_backlog_bytes",
                "Bytes waiting to be uploaded.",
                &self.backlog_bytes,
            ),
            (
                "backhaul_oldest_chunk_age_seconds",
                "Age of the oldest chunk not yet uploaded.",
                &self.oldest_chunk_age_seconds,
            ),
            (
                "backhaul_spool_disk_used_percent",
                "Spool filesystem usage in percent.",
                &self.disk_used_percent,
            ),
            (
                "backhaul_spool_disk_full_projected_seconds",
                "Projected seconds until the spool filesystem is full.",
                &self.disk_full_projected_seconds,
            ),
            (
                "backhaul_icmp_frag_needed_last_mtu_bytes",
                "Next-hop MTU reported by the latest ICMP fragmentation-needed.",
                &self.icmp_frag_needed_last_mtu_bytes,
            ),
            (
                "backhaul_upload_tcp_snd_mss_bytes",
                "Largest send MSS among open upload connections (TCP_INFO snd_mss).",
                &self.upload_tcp_snd_mss_bytes,
            ),
            (
                "backhaul_upload_tcp_pmtu_bytes",
                "Smallest path MTU among open upload connections (TCP_INFO pmtu).",
                &self.upload_tcp_pmtu_bytes,
            ),
            (
                "backhaul_vpn_up",
                "1 while strongSwan has an established IKE SA (0 also when not monitored).",
                &self.vpn_up,
            ),
            (
                "backhaul_uploader_heartbeat_timestamp_seconds",
                "When the uploader's loop last turned (seconds since the epoch).",
                &self.uploader_heartbeat_seconds,
            ),
            (
                "backhaul_monitor_heartbeat_timestamp_seconds",
                "When the path monitor's loop last turned (0 without an [inventory]).",
                &self.monitor_heartbeat_seconds,
            ),
            (
                "backhaul_upload_mss_clamp_bytes",
                "MSS new upload connections are clamped to from the known path MTU (0: not clamped).",
                &self.upload_mss_clamp_bytes,
            ),
            (
                "backhaul_upload_tcp_rtt_seconds",
                "Largest smoothed RTT among open upload connections (TCP_INFO rtt).",
                &self.upload_tcp_rtt_seconds,
            ),
        ];
        for (name, help, g) in gauges {
            push(name, help, G, Vec::new(), g.value());
        }
        let modes = self
            .upload_verify_modes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (request, mode) in modes {
            push(
                "backhaul_upload_verify_mode",
                "How uploaded objects are proven before their files are deleted (1 for the mode in effect per request kind).",
                G,
                vec![("request", request.to_owned()), ("mode", mode.to_owned())],
                1.0,
            );
        }
        let incidents = self
            .incidents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for i in incidents {
            push(
                "backhaul_incident_active",
                "Open incidents by kind, severity and the change they follow (1 while open).",
                G,
                vec![
                    ("kind", i.kind),
                    ("severity", i.severity),
                    ("change", i.change),
                ],
                1.0,
            );
        }
        Snapshot { samples }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_carries_every_family_with_labels() {
        let m = Metrics::default();
        m.uploaded_bytes.add(10);
        m.errors.inc("server_5xx");
        m.errors.inc("server_5xx");
        m.errors.inc("stall");
        m.disk_used_percent.set(42.5);
        let s = m.snapshot(Instant::now());
        assert_eq!(s.value("backhaul_uploaded_bytes_total", &[]), Some(10.0));
        assert_eq!(
            s.value("backhaul_upload_errors_total", &[("class", "server_5xx")]),
            Some(2.0)
        );
        assert_eq!(
            s.value("backhaul_upload_errors_total", &[("class", "stall")]),
            Some(1.0)
        );
        assert_eq!(s.value("backhaul_spool_disk_used_percent", &[]), Some(42.5));
        m.icmp_frag_needed.inc();
        m.icmp_frag_needed_last_mtu_bytes.set(1500.0);
        m.upload_tcp_snd_mss_bytes.set(8948.0);
        let s = m.snapshot(Instant::now());
        assert_eq!(s.value("backhaul_icmp_frag_needed_total", &[]), Some(1.0));
        assert_eq!(
            s.value("backhaul_icmp_frag_needed_last_mtu_bytes", &[]),
            Some(1500.0)
        );
        assert_eq!(
            s.value("backhaul_upload_tcp_snd_mss_bytes", &[]),
            Some(8948.0)
        );
        assert_eq!(
            s.value("backhaul_kernel_ip_frag_fails_total", &[]),
            Some(0.0)
        );
        assert_eq!(
            s.value("backhaul_upload_goodput_mbps", &[("window", "60s")]),
            Some(0.0)
        );
        assert_eq!(m.errors.total(), 3);
        assert_eq!(s.value("backhaul_incident_active", &[]), None);
        *m.incidents.lock().unwrap() = vec![ActiveIncident {
            kind: "pmtu_blackhole".into(),
            severity: "critical".into(),
            change: "NET-4521".into(),
        }];
        let s = m.snapshot(Instant::now());
        assert_eq!(
            s.value(
                "backhaul_incident_active",
                &[
                    ("kind", "pmtu_blackhole"),
                    ("severity", "critical"),
                    ("change", "NET-4521")
                ]
            ),
            Some(1.0)
        );
    }
}
