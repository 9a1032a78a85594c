//! The run report: `summary.json` (figures, events, alerts, assertion results, wire counters),
//! `samples.json` (the time series) and `report.svg` (goodput, wire throughput, backlog and disk
//! over time with the fault shaded and every event and alert marked). Times are scenario seconds
//! from the start of the run.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::Error;
use crate::peers::{S3Server, Uploader};
use crate::probe::Alert;
use crate::scenario::{Assertion, Metric, Phase, Scenario};
use crate::wire::LinkCounters;

/// One sample of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Scenario seconds.
    pub t_seconds: f64,
    /// Chunks that left the spool (acknowledged by the store).
    pub delivered_chunks: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Chunks waiting in the spool.
    pub backlog_chunks: u64,
    /// Their bytes.
    pub backlog_bytes: u64,
    /// Spool filesystem use.
    pub disk_used_percent: f64,
    /// Delivered bytes since the previous sample, in Mbit/s of wall time.
    pub goodput_mbps: f64,
    /// Bytes the wire carried site → cloud since the previous sample (retransmissions
    /// included), in Mbit/s of wall time.
    pub wire_mbps: f64,
    /// Alerts received so far.
    pub alerts: u64,
    /// With `bystander_tcp`: bytes the other application's receiver got so far.
    #[serde(default)]
    pub bystander_bytes: Option<u64>,
}

/// A timeline event as it was applied.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedEvent {
    /// Scenario seconds when it was applied.
    pub at_seconds: f64,
    /// Its label.
    pub label: String,
    /// Fault boundary it marks.
    pub phase: Option<Phase>,
}

/// An alert, placed on the scenario clock.
#[derive(Debug, Clone, Serialize)]
pub struct AlertAt {
    /// Scenario seconds when the receiver got it.
    pub at_seconds: f64,
    /// Scenario seconds when the agent raised it (its `raised_at_unix_ms`), when the body says.
    #[serde(default)]
    pub raised_seconds: Option<f64>,
    /// Request path.
    pub path: String,
    /// Body.
    pub body: String,
}

/// An assertion and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct AssertResult {
    /// The assertion.
    #[serde(flatten)]
    pub assertion: Assertion,
    /// The measured value (`None`: not measured).
    pub value: Option<f64>,
    /// Whether it held.
    pub passed: bool,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Uploader under test.
    pub uploader: Uploader,
    /// S3 server used.
    pub s3: S3Server,
    /// Time scale of the run.
    pub time_scale: f64,
    /// Chunks the camera wrote.
    pub chunks_written: u64,
    /// Chunks the camera could not write because the spool disk was full.
    pub chunks_not_recorded: u64,
    /// Chunks found in the bucket at the end.
    pub chunks_in_bucket: u64,
    /// Chunks still in the spool at the end.
    pub chunks_left_in_spool: u64,
    /// Chunks neither in the bucket nor in the spool (must be 0).
    pub chunks_lost: u64,
    /// Their names.
    pub lost: Vec<String>,
    /// Bytes of chunks in the bucket with the right size.
    pub bytes_delivered: u64,
    /// Longest time with a backlog and no chunk delivered.
    pub longest_outage_seconds: Option<f64>,
    /// Longest time from the fault to the revert (the whole run without a fault) with a backlog
    /// and (almost) nothing crossing the WAN wire, at the sample interval's resolution: the
    /// upload outage as bytes see it, where a delivered chunk takes its whole transfer time
    /// to show.
    #[serde(default)]
    pub longest_wire_gap_seconds: Option<f64>,
    /// Mean WAN wire rate (Mbit/s, site → cloud) over samples with a backlog, before the fault
    /// and during it: what uploads carried while there was work.
    #[serde(default)]
    pub busy_wire_mbps: (Option<f64>, Option<f64>),
    /// With `bystander_tcp`: the longest stretch from the fault to the revert in which the
    /// other application's bulk TCP delivered nothing, at the sample interval's resolution.
    #[serde(default)]
    pub bystander_gap_seconds: Option<f64>,
    /// With a `[backlog]`: when the spool was first empty (scenario seconds from the start)
    /// and the goodput until then (Mbit/s of scenario time).
    #[serde(default)]
    pub backlog_drain: Option<(f64, f64)>,
    /// From the fault to the first alert.
    pub fault_to_first_alert_seconds: Option<f64>,
    /// From the fault to the first firing alert of a cause kind (the scenario's
    /// `cause_kinds`); `None` without cause kinds or without such an alert.
    pub fault_to_cause_alert_seconds: Option<f64>,
    /// From the revert to the first chunk delivered after it.
    pub revert_to_resume_seconds: Option<f64>,
    /// From the revert to the resolve of the cause's incidents (`cause_kinds`; every incident
    /// without them) after which none re-opens within `reopen_window_seconds`; `None`
    /// without a revert, without such alerts, when one never resolved for good, or when the
    /// run ended inside the window (unconfirmed). Consequences that outlive the
    /// cause — the disk warning while the backlog drains — are not the fault's resolution.
    pub revert_to_resolve_seconds: Option<f64>,
    /// Firing alerts received (escalations count; resolve messages do not).
    pub alerts_fired: u64,
    /// Longest time from an alert being raised to its arrival at the receiver (they wait in
    /// the agent's outbox while the receiver is unreachable); `None` without raise times.
    #[serde(default)]
    pub alert_delivery_max_seconds: Option<f64>,
    /// Firing alerts of one of the scenario's `wrong_cause_kinds`.
    pub wrong_cause_alerts: u64,
    /// Firing alerts that said uploads continue while the WAN had carried (almost) nothing
    /// for 10 s (wall) with a backlog waiting (the target is zero).
    #[serde(default)]
    pub false_flow_claims: u64,
    /// Firing alerts of other kinds than the cause's, from the fault until the reopen window
    /// after the revert passed (the target is zero).
    pub other_alerts: u64,
    /// Messages about the fault's cause (`cause_kinds`) from the fault until the reopen window
    /// after the revert: firing ones (opened, escalated, reminders, flapping) and resolved
    /// ones. One fault is one page and one resolve, however often its link flapped.
    #[serde(default)]
    pub cause_messages: (u64, u64),
    /// Largest backlog in chunks.
    pub peak_backlog_chunks: u64,
    /// Highest spool disk use.
    pub peak_disk_used_percent: f64,
    /// ICMP frag-needed the gateway generated.
    pub frag_needed_sent: u64,
    /// Fault start and end (scenario seconds).
    pub fault_seconds: (Option<f64>, Option<f64>),
    /// Events as applied.
    pub events: Vec<AppliedEvent>,
    /// Alerts received.
    pub alerts: Vec<AlertAt>,
    /// Assertion outcomes.
    pub asserts: Vec<AssertResult>,
    /// Final wire counters.
    pub wire: BTreeMap<String, LinkCounters>,
    /// The time series.
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// What the runner measured.
pub struct Inputs<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// Uploader.
    pub uploader: Uploader,
    /// S3 server.
    pub s3: S3Server,
    /// Time scale.
    pub time_scale: f64,
    /// Samples.
    pub samples: Vec<Sample>,
    /// Applied events.
    pub events: Vec<AppliedEvent>,
    /// Alerts as received.
    pub alerts: Vec<Alert>,
    /// Wall clock of scenario time 0.
    pub start_unix_ms: u64,
    /// Chunks written.
    pub chunks_written: u64,
    /// Chunks the camera could not write (disk full).
    pub chunks_not_recorded: u64,
    /// Chunks in the bucket.
    pub chunks_in_bucket: u64,
    /// Chunks left in the spool.
    pub chunks_left_in_spool: u64,
    /// Names of lost chunks.
    pub lost: Vec<String>,
    /// Bytes delivered.
    pub bytes_delivered: u64,
    /// ICMP frag-needed generated by the gateway.
    pub frag_needed_sent: u64,
    /// Wire counters.
    pub wire: BTreeMap<String, LinkCounters>,
}

/// Longest stretch with a backlog and no delivery.
fn longest_outage(samples: &[Sample]) -> Option<f64> {
    let first = samples.first()?;
    let mut since = first.t_seconds;
    let mut delivered = first.delivered_chunks;
    let mut longest: f64 = 0.0;
    for s in samples {
        if s.delivered_chunks > delivered || s.backlog_chunks == 0 {
            since = s.t_seconds;
            delivered = s.delivered_chunks;
        } else {
            longest = longest.max(s.t_seconds - since);
        }
    }
    Some(longest)
}

/// Below this the WAN carries nothing but probes and retransmissions that do not get through.
const WIRE_IDLE_MBPS: f64 = 1.0;

/// Longest stretch in `[from, to]` with a backlog and the WAN wire below [`WIRE_IDLE_MBPS`].
fn longest_wire_gap(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let mut start: Option<f64> = None;
    let mut prev = from;
    let mut longest: f64 = 0.0;
    let window = samples
        .iter()
        .filter(|s| s.t_seconds > from && s.t_seconds <= to);
    for s in window {
        if s.backlog_chunks > 0 && s.wire_mbps < WIRE_IDLE_MBPS {
            // A sample's rate covers the interval since the previous one.
            let from = *start.get_or_insert(prev);
            longest = longest.max(s.t_seconds - from);
        } else {
            start = None;
        }
        prev = s.t_seconds;
    }
    Some(longest)
}

/// Longest stretch in `[from, to]` in which the bystander's receiver got nothing; `None`
/// without a bystander.
fn bystander_gap(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let mut last: Option<(f64, u64)> = None;
    let mut longest: f64 = 0.0;
    let mut seen = false;
    for s in samples.iter().filter(|s| s.t_seconds <= to) {
        let Some(bytes) = s.bystander_bytes else {
            continue;
        };
        seen = true;
        match last {
            Some((since, b)) if b == bytes => {
                if s.t_seconds > from {
                    longest = longest.max(s.t_seconds - since.max(from));
                }
            }
            _ => last = Some((s.t_seconds, bytes)),
        }
    }
    seen.then_some(longest)
}

/// Mean WAN wire rate over samples with a backlog in `[from, to)`.
fn busy_wire_mbps(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let busy: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_seconds >= from && s.t_seconds < to && s.backlog_chunks > 0)
        .map(|s| s.wire_mbps)
        .collect();
    (!busy.is_empty()).then(|| busy.iter().sum::<f64>() / busy.len() as f64)
}

fn resume_after(samples: &[Sample], revert: f64) -> Option<f64> {
    let at_revert = samples
        .iter()
        .take_while(|s| s.t_seconds <= revert)
        .last()?;
    samples
        .iter()
        .find(|s| s.t_seconds > revert && s.delivered_chunks > at_revert.delivered_chunks)
        .map(|s| s.t_seconds - revert)
}

/// Computes the summary figures and evaluates the assertions.
pub fn summarize(i: Inputs<'_>) -> Summary {
    let scale = i.time_scale;
    let fault = i
        .events
        .iter()
        .find(|e| e.phase == Some(Phase::Fault))
        .map(|e| e.at_seconds);
    let revert = i
        .events
        .iter()
        .rev()
        .find(|e| e.phase == Some(Phase::Revert))
        .map(|e| e.at_seconds);
    let alerts: Vec<AlertAt> = i
        .alerts
        .into_iter()
        .map(|a| {
            let since_start =
                |unix_ms: u64| unix_ms.saturating_sub(i.start_unix_ms) as f64 / 1000.0 / scale;
            let raised = serde_json::from_str::<serde_json::Value>(&a.body)
                .ok()
                .and_then(|v| v["raised_at_unix_ms"].as_u64());
            AlertAt {
                at_seconds: since_start(a.received_unix_ms),
                raised_seconds: raised.map(since_start),
                path: a.path,
                body: a.body,
            }
        })
        .collect();
    let fault_to_first_alert = fault.and_then(|f| {
        alerts
            .iter()
            .map(|a| a.raised_seconds.unwrap_or(a.at_seconds))
            .filter(|t| *t >= f)
            .min_by(f64::total_cmp)
            .map(|t| t - f)
    });
    let alert_delivery_max = alerts
        .iter()
        .filter_map(|a| a.raised_seconds.map(|r| a.at_seconds - r))
        .max_by(f64::total_cmp);
    let run_end = i.samples.last().map_or(0.0, |s| s.t_seconds);
    let judged: Vec<Judged> = alerts.iter().map(Judged::of).collect();
    let causes = &i.scenario.cause_kinds;
    let is_cause = |j: &Judged| causes.contains(&j.kind);
    let fault_to_cause_alert = fault.and_then(|f| {
        judged
            .iter()
            .filter(|j| j.at >= f && j.firing && is_cause(j))
            .map(|j| j.at - f)
            .next()
    });
    let firing: Vec<&Judged> = judged.iter().filter(|j| j.firing).collect();
    let wrong_cause_alerts = firing
        .iter()
        .filter(|j| i.scenario.wrong_cause_kinds.contains(&j.kind))
        .count() as u64;
    let window = i.scenario.reopen_window_seconds;
    let other_alerts = fault.map_or(0, |f| {
        let until = revert.map_or(f64::INFINITY, |r| r + window);
        firing
            .iter()
            .filter(|j| j.at >= f && j.at <= until && !is_cause(j))
            .count() as u64
    });
    let cause_messages = fault.map_or((0, 0), |f| {
        let until = revert.map_or(f64::INFINITY, |r| r + window);
        let about: Vec<&Judged> = judged
            .iter()
            .filter(|j| j.at >= f && j.at <= until && is_cause(j))
            .collect();
        let firing = about.iter().filter(|j| j.firing).count() as u64;
        (firing, about.len() as u64 - firing)
    });
    let mut summary = Summary {
        scenario: i.scenario.name.clone(),
        uploader: i.uploader,
        s3: i.s3,
        time_scale: scale,
        chunks_written: i.chunks_written,
        chunks_not_recorded: i.chunks_not_recorded,
        chunks_in_bucket: i.chunks_in_bucket,
        chunks_left_in_spool: i.chunks_left_in_spool,
        chunks_lost: i.lost.len() as u64,
        lost: i.lost,
        bytes_delivered: i.bytes_delivered,
        longest_outage_seconds: longest_outage(&i.samples),
        longest_wire_gap_seconds: longest_wire_gap(
            &i.samples,
            fault.unwrap_or(0.0),
            revert.unwrap_or(f64::INFINITY),
        ),
        busy_wire_mbps: (
            fault.and_then(|f| busy_wire_mbps(&i.samples, 0.0, f)),
            fault.and_then(|f| busy_wire_mbps(&i.samples, f, revert.unwrap_or(f64::INFINITY))),
        ),
        bystander_gap_seconds: bystander_gap(
            &i.samples,
            fault.unwrap_or(0.0),
            revert.unwrap_or(f64::INFINITY),
        ),
        backlog_drain: (i.scenario.backlog.chunks > 0)
            .then(|| backlog_drain(&i.samples))
            .flatten(),
        fault_to_first_alert_seconds: fault_to_first_alert,
        fault_to_cause_alert_seconds: fault_to_cause_alert,
        revert_to_resume_seconds: revert.and_then(|r| resume_after(&i.samples, r)),
        revert_to_resolve_seconds: fault.zip(revert).and_then(|(f, r)| {
            let cause: Vec<&Judged> = judged
                .iter()
                .filter(|j| causes.is_empty() || is_cause(j))
                .collect();
            confirmed_resolve(&cause, f, r, window, run_end)
        }),
        other_alerts,
        cause_messages,
        false_flow_claims: false_flow_claims(&judged, &i.samples, scale),
        alerts_fired: firing.len() as u64,
        alert_delivery_max_seconds: alert_delivery_max,
        wrong_cause_alerts,
        peak_backlog_chunks: i
            .samples
            .iter()
            .map(|s| s.backlog_chunks)
            .max()
            .unwrap_or(0),
        peak_disk_used_percent: i
            .samples
            .iter()
            .map(|s| s.disk_used_percent)
            .fold(0.0, f64::max),
        frag_needed_sent: i.frag_needed_sent,
        fault_seconds: (fault, revert),
        events: i.events,
        alerts,
        asserts: Vec::new(),
        wire: i.wire,
        samples: i.samples,
    };
    summary.asserts = i
        .scenario
        .asserts
        .iter()
        .map(|a| {
            let value = metric(&summary, a.metric);
            let passed = value.is_some_and(|v| {
                a.min.is_none_or(|min| v >= min) && a.max.is_none_or(|max| v <= max)
            });
            AssertResult {
                assertion: a.clone(),
                value,
                passed,
            }
        })
        .collect();
    summary
}

/// What the report reads from an alert: its structured fields (backhaul's JSON shape), never
/// words of its body. A body of another shape is a firing alert of kind `unknown`, its own
/// incident.
#[derive(Debug, Clone, PartialEq)]
struct Judged {
    at: f64,
    firing: bool,
    kind: String,
    incident: String,
    /// The alert says uploads go on (the agent's words, from its structured `root_cause`).
    claims_flow: bool,
}

impl Judged {
    fn of(a: &AlertAt) -> Self {
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap_or_default();
        Self {
            // When the agent raised it: what the fault's detection is measured by. Delivery
            // (an alert raised during a cut waits in the outbox) is its own figure.
            at: a.raised_seconds.unwrap_or(a.at_seconds),
            firing: v["status"] != "resolved",
            kind: v["kind"].as_str().unwrap_or("unknown").to_owned(),
            incident: v["id"]
                .as_str()
                .map_or_else(|| a.body.clone(), str::to_owned),
            claims_flow: v["root_cause"]
                .as_str()
                .is_some_and(|c| c.contains("uploads continue")),
        }
    }
}

/// Wall seconds without upload data on the WAN after which a claim that uploads continue is
/// false.
const CLAIM_IDLE_WALL_SECONDS: f64 = 10.0;

/// Firing alerts that say uploads continue while the WAN carried (almost) nothing for the
/// [`CLAIM_IDLE_WALL_SECONDS`] before with a backlog waiting: claims the wire contradicts.
fn false_flow_claims(judged: &[Judged], samples: &[Sample], scale: f64) -> u64 {
    let window = CLAIM_IDLE_WALL_SECONDS / scale;
    judged
        .iter()
        .filter(|j| j.firing && j.claims_flow)
        .filter(|j| {
            let before: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.t_seconds <= j.at && s.t_seconds >= j.at - window)
                .collect();
            !before.is_empty()
                && before
                    .iter()
                    .all(|s| s.backlog_chunks > 0 && s.wire_mbps < WIRE_IDLE_MBPS)
        })
        .count() as u64
}

/// Seconds from `revert` to the resolve that really ended the fault: a moment at or after the
/// revert when no `cause` incident that fired since `fault` is open (the revert itself, if
/// all had closed before), after which no `cause` alert fires again within `window`. A
/// re-open inside the window rejects that resolve and the next one is tried. `None` when
/// nothing fired, an incident never resolved for good, or the run ended before the window
/// after the resolve passed (unconfirmed).
fn confirmed_resolve(
    cause: &[&Judged],
    fault: f64,
    revert: f64,
    window: f64,
    run_end: f64,
) -> Option<f64> {
    let mut open = std::collections::BTreeSet::new();
    let (mut any, mut past_revert) = (false, false);
    let mut candidates = Vec::new();
    for j in cause.iter().filter(|j| j.at >= fault) {
        if !past_revert && j.at >= revert {
            past_revert = true;
            if any && open.is_empty() {
                candidates.push(revert);
            }
        }
        if j.firing {
            any = true;
            open.insert(j.incident.as_str());
        } else {
            open.remove(j.incident.as_str());
        }
        if j.at >= revert && open.is_empty() {
            candidates.push(j.at);
        }
    }
    if !past_revert && any && open.is_empty() {
        candidates.push(revert);
    }
    candidates.into_iter().find_map(|c| {
        let reopened = cause
            .iter()
            .any(|j| j.firing && j.at > c && j.at <= c + window);
        (!reopened && c + window <= run_end).then_some(c - revert)
    })
}

/// The first sample after the start with nothing left in the spool, and the goodput until
/// then: how fast a backlog present at the start drained.
fn backlog_drain(samples: &[Sample]) -> Option<(f64, f64)> {
    samples
        .iter()
        .find(|s| s.t_seconds > 0.0 && s.backlog_chunks == 0 && s.delivered_chunks > 0)
        .map(|s| {
            (
                s.t_seconds,
                s.delivered_bytes as f64 * 8.0 / 1e6 / s.t_seconds,
            )
        })
}

/// The value of a summary figure.
pub fn metric(s: &Summary, m: Metric) -> Option<f64> {
    match m {
        Metric::ChunksLost => Some(s.chunks_lost as f64),
        Metric::BytesDelivered => Some(s.bytes_delivered as f64),
        Metric::LongestOutageSeconds => s.longest_outage_seconds,
        Metric::LongestWireGapSeconds => s.longest_wire_gap_seconds,
        Metric::FaultToFirstAlertSeconds => s.fault_to_first_alert_seconds,
        Metric::FaultToCauseAlertSeconds => s.fault_to_cause_alert_seconds,
        Metric::RevertToResumeSeconds => s.revert_to_resume_seconds,
        Metric::PeakBacklogChunks => Some(s.peak_backlog_chunks as f64),
        Metric::AlertsFired => Some(s.alerts_fired as f64),
        Metric::WrongCauseAlerts => Some(s.wrong_cause_alerts as f64),
        Metric::RevertToResolveSeconds => s.revert_to_resolve_seconds,
        Metric::OtherAlerts => Some(s.other_alerts as f64),
        Metric::CauseFiringMessages => Some(s.cause_messages.0 as f64),
        Metric::CauseResolvedMessages => Some(s.cause_messages.1 as f64),
        Metric::FalseFlowClaims => Some(s.false_flow_claims as f64),
        Metric::BacklogDrainSeconds => s.backlog_drain.map(|(t, _)| t),
        Metric::BacklogDrainMbps => s.backlog_drain.map(|(_, r)| r),
        Metric::BystanderGapSeconds => s.bystander_gap_seconds,
    }
}

/// A few lines for the terminal.
pub fn text(s: &Summary) -> String {
    let opt = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.0} s"));
    // Alert latencies have real-time targets of a few seconds.
    let tenths = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1} s"));
    let mbps = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("{v:.1} Mbit/s"));
    let mut t = format!(
        "{} with {:?} ({:?} S3, time scale {}):\n  chunks written {} (not recorded, disk full: {}), \
         in bucket {}, left in spool {}, LOST {}\n  bytes delivered {}\n  longest upload outage {} (chunks), {} (wire)\n  WAN while busy: {} before the fault, {} during it\n  fault → first alert {}\n  \
         fault → alert naming the cause {}\n  alerts fired {} (naming a wrong cause: {}, of other kinds: {}), raised → received at most {}\n  \
         messages about the cause: {} firing, {} resolved\n  \
         alerts saying uploads continue while the WAN carried nothing for 10 s: {}\n  \
         revert → uploads resume {}\n  revert → incidents resolved {}\n  peak backlog {} chunks, peak disk {:.0} %\n  gateway \
         frag-needed sent {}\n",
        s.scenario,
        s.uploader,
        s.s3,
        s.time_scale,
        s.chunks_written,
        s.chunks_not_recorded,
        s.chunks_in_bucket,
        s.chunks_left_in_spool,
        s.chunks_lost,
        s.bytes_delivered,
        opt(s.longest_outage_seconds),
        opt(s.longest_wire_gap_seconds),
        mbps(s.busy_wire_mbps.0),
        mbps(s.busy_wire_mbps.1),
        tenths(s.fault_to_first_alert_seconds),
        tenths(s.fault_to_cause_alert_seconds),
        s.alerts_fired,
        s.wrong_cause_alerts,
        s.other_alerts,
        tenths(s.alert_delivery_max_seconds),
        s.cause_messages.0,
        s.cause_messages.1,
        s.false_flow_claims,
        opt(s.revert_to_resume_seconds),
        tenths(s.revert_to_resolve_seconds),
        s.peak_backlog_chunks,
        s.peak_disk_used_percent,
        s.frag_needed_sent,
    );
    for (link, c) in &s.wire {
        let c = c.total();
        if c.dropped_oversize > 0 {
            t.push_str(&format!(
                "  wire {link}: dropped oversize {} (ESP {}, TCP {}, ICMP {}, other {})\n",
                c.dropped_oversize,
                c.dropped_oversize_esp,
                c.dropped_oversize_tcp,
                c.dropped_oversize_icmp,
                c.dropped_oversize
                    - c.dropped_oversize_esp
                    - c.dropped_oversize_tcp
                    - c.dropped_oversize_icmp
            ));
        }
    }
    if let Some(gap) = s.bystander_gap_seconds {
        t.push_str(&format!(
            "  another application's bulk TCP: longest stretch in the fault with nothing received {gap:.0} s\n"
        ));
    }
    if let Some((secs, rate)) = s.backlog_drain {
        t.push_str(&format!(
            "  backlog present at the start drained after {secs:.1} s at {rate:.1} Mbit/s goodput\n"
        ));
    }
    for a in &s.asserts {
        let verdict = if a.passed { "ok" } else { "FAILED" };
        t.push_str(&format!(
            "  assert {:?} min {:?} max {:?}: {:?} {verdict}\n",
            a.assertion.metric, a.assertion.min, a.assertion.max, a.value
        ));
    }
    t
}

/// Writes `summary.json`, `samples.json` and `report.svg` into `dir`.
pub fn write(s: &Summary, dir: &Path) -> Result<(), Error> {
    let json = |name: &str, v: &dyn erased::Json| -> Result<(), Error> {
        let path = dir.join(name);
        let text = v.to_json().map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|e| Error::io("write", &path, e))
    };
    json("summary.json", s)?;
    json("samples.json", &s.samples)?;
    plot(s, &dir.join("report.svg"))
}

mod erased {
    /// Serialize without generics in the closure above.
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec_pretty(self)
        }
    }
}

/// Draws the report picture.
pub fn plot(s: &Summary, path: &Path) -> Result<(), Error> {
    let err = |e: &dyn std::fmt::Display| Error::Plot {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!(
        "{} — {:?} (time scale {}): lost {}, longest outage {}, revert→resume {}",
        s.scenario,
        s.uploader,
        s.time_scale,
        s.chunks_lost,
        s.longest_outage_seconds
            .map_or("—".into(), |v| format!("{:.0} min", v / 60.0)),
        s.revert_to_resume_seconds
            .map_or("—".into(), |v| format!("{v:.0} s")),
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((3, 1));
    let minutes = |t: f64| t / 60.0;
    let t_max = s
        .samples
        .last()
        .map_or(1.0, |x| minutes(x.t_seconds))
        .max(1.0);
    type Series<'a> = Vec<(&'a str, RGBColor, Box<dyn Fn(&Sample) -> f64>)>;
    let charts: [(&str, Series<'_>); 3] = [
        (
            "Mbit/s",
            vec![
                (
                    "goodput (chunks delivered)",
                    BLUE,
                    Box::new(|x: &Sample| x.goodput_mbps),
                ),
                (
                    "wire site→cloud",
                    RGBColor(150, 150, 150),
                    Box::new(|x: &Sample| x.wire_mbps),
                ),
            ],
        ),
        (
            "backlog (chunks)",
            vec![(
                "backlog",
                RED,
                Box::new(|x: &Sample| x.backlog_chunks as f64),
            )],
        ),
        (
            "disk used %",
            vec![(
                "spool disk",
                RGBColor(0, 128, 0),
                Box::new(|x: &Sample| x.disk_used_percent),
            )],
        ),
    ];
    for (panel, (label, series)) in panels.iter().zip(charts) {
        let y_max = s
            .samples
            .iter()
            .flat_map(|x| series.iter().map(move |(_, _, f)| f(x)))
            .fold(1.0_f64, f64::max)
            * 1.15;
        let y_max = if label.starts_with("disk") {
            100.0
        } else {
            y_max
        };
        let mut chart = ChartBuilder::on(panel)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..t_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_desc(label)
            .light_line_style(WHITE)
            .draw()
            .map_err(|e| err(&e))?;
        if let (Some(f), r) = s.fault_seconds {
            let end = r.map_or(t_max, minutes);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(minutes(f), 0.0), (end, y_max)],
                    RGBColor(255, 200, 200).mix(0.4).filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        for e in &s.events {
            let x = minutes(e.at_seconds);
            chart
                .draw_series(LineSeries::new(vec![(x, 0.0), (x, y_max)], BLACK.mix(0.6)))
                .map_err(|e| err(&e))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    e.label.clone(),
                    (x, y_max * 0.95),
                    ("sans-serif", 11),
                )))
                .map_err(|e| err(&e))?;
        }
        for a in &s.alerts {
            let x = minutes(a.at_seconds);
            chart
                .draw_series(std::iter::once(TriangleMarker::new(
                    (x, y_max * 0.85),
                    6,
                    MAGENTA.filled(),
                )))
                .map_err(|e| err(&e))?;
        }
        for (name, color, f) in series {
            chart
                .draw_series(LineSeries::new(
                    s.samples.iter().map(|x| (minutes(x.t_seconds), f(x))),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK.mix(0.3))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(at_seconds: f64, id: &str, status: &str) -> AlertAt {
        AlertAt {
            raised_seconds: None,
            at_seconds,
            path: "/alerts".into(),
            body: format!(r#"{{"id":"{id}","kind":"{id}","status":"{status}"}}"#),
        }
    }

    fn at(t_seconds: f64, backlog_chunks: u64, wire_mbps: f64) -> Sample {
        Sample {
            t_seconds,
            delivered_chunks: 0,
            delivered_bytes: 0,
            backlog_chunks,
            backlog_bytes: 0,
            disk_used_percent: 0.0,
            goodput_mbps: 0.0,
            wire_mbps,
            alerts: 0,
            bystander_bytes: None,
        }
    }

    #[test]
    fn a_claim_that_uploads_continue_is_false_when_the_wire_was_idle_with_a_backlog() {
        let claim = |at_seconds: f64| {
            let mut a = alert(at_seconds, "pmtu_blackhole", "firing");
            a.body = r#"{"id":"h","kind":"pmtu_blackhole","status":"firing","root_cause":"…; uploads continue on connections clamped to MSS 1398"}"#.into();
            Judged::of(&a)
        };
        let mut samples: Vec<Sample> = (0..30).map(|t| at(f64::from(t), 1, 40.0)).collect();
        // Nothing on the wire from 10 s on, with a chunk waiting.
        for s in &mut samples[10..] {
            s.wire_mbps = 0.2;
        }
        assert_eq!(
            false_flow_claims(&[claim(8.0)], &samples, 1.0),
            0,
            "flowing"
        );
        assert_eq!(
            false_flow_claims(&[claim(25.0)], &samples, 1.0),
            1,
            "15 s idle"
        );
        // Idle with no backlog is no contradiction.
        for s in &mut samples[10..] {
            s.backlog_chunks = 0;
        }
        assert_eq!(
            false_flow_claims(&[claim(25.0)], &samples, 1.0),
            0,
            "nothing to send"
        );
    }

    #[test]
    fn the_bystander_gap_is_the_longest_stretch_in_the_fault_with_nothing_received() {
        let with = |t: f64, bytes: u64| Sample {
            bystander_bytes: Some(bytes),
            ..at(t, 0, 0.0)
        };
        let samples = [
            with(0.0, 0),
            with(1.0, 100),
            with(2.0, 100),
            with(3.0, 100),
            with(4.0, 100),
            with(5.0, 200),
            with(6.0, 200),
            with(7.0, 300),
        ];
        // Nothing new in the samples at 2, 3 and 4, as the wire gap counts idle samples: 3 s;
        // the fault starts at 2, so 2 s of it count.
        assert_eq!(bystander_gap(&samples, 2.0, 10.0), Some(2.0));
        assert_eq!(bystander_gap(&samples, 0.0, 10.0), Some(3.0));
        assert_eq!(bystander_gap(&samples, 5.0, 10.0), Some(1.0));
        assert_eq!(bystander_gap(&[at(1.0, 0, 0.0)], 0.0, 10.0), None);
    }

    /// An alert raised during a cut and delivered when the link is back counts from when the
    /// agent raised it.
    #[test]
    fn detection_is_measured_when_the_agent_raised_the_alert() {
        let mut late = alert(260.0, "uplink_down", "firing");
        late.raised_seconds = Some(131.5);
        let j = Judged::of(&late);
        assert_eq!(j.at, 131.5);
        assert!(j.firing);
        assert_eq!(Judged::of(&alert(260.0, "uplink_down", "firing")).at, 260.0);
    }

    /// The wire gap counts from the sample before the first idle one (a sample's rate covers
    /// the interval up to it), only while there is a backlog.
    #[test]
    fn the_wire_gap_is_the_longest_busy_stretch_with_nothing_on_the_wan() {
        let samples = [
            at(0.0, 1, 45.0),
            at(1.0, 1, 0.2),
            at(2.0, 1, 0.0),
            at(3.0, 1, 40.0),
            at(4.0, 0, 0.0),
            at(5.0, 0, 0.0),
            at(6.0, 1, 0.1),
            at(7.0, 1, 47.0),
        ];
        assert_eq!(longest_wire_gap(&samples, 0.0, 10.0), Some(2.0));
        assert_eq!(
            longest_wire_gap(&samples, 2.0, 10.0),
            Some(1.0),
            "from the fault on"
        );
        assert_eq!(
            busy_wire_mbps(&samples, 0.0, 3.0),
            Some((45.0 + 0.2 + 0.0) / 3.0)
        );
        assert_eq!(
            busy_wire_mbps(&samples, 4.0, 6.0),
            None,
            "idle: nothing to carry"
        );
    }

    fn judged(alerts: &[AlertAt]) -> Vec<Judged> {
        alerts.iter().map(Judged::of).collect()
    }

    /// revert → resolved over the cause kind `pmtu_blackhole` (plus `mtu_drift` where named),
    /// a 600 s window, a run that lasted long enough.
    fn resolved(alerts: &[AlertAt], kinds: &[&str]) -> Option<f64> {
        let all = judged(alerts);
        let cause: Vec<&Judged> = all
            .iter()
            .filter(|j| kinds.contains(&j.kind.as_str()))
            .collect();
        confirmed_resolve(&cause, 900.0, 3600.0, 600.0, 9000.0)
    }

    #[test]
    fn resolve_time_waits_for_the_last_open_incident() {
        let alerts = [
            alert(905.0, "mtu_drift", "firing"),
            alert(1016.0, "pmtu_blackhole", "firing"),
            alert(1205.0, "pmtu_blackhole", "firing"),
            alert(3604.0, "mtu_drift", "resolved"),
            alert(3607.0, "pmtu_blackhole", "resolved"),
        ];
        assert_eq!(
            resolved(&alerts, &["mtu_drift", "pmtu_blackhole"]),
            Some(7.0)
        );
    }

    /// The 2 runs of issue #11: resolved 0.1 s after the revert, re-opened 1.8 s later and
    /// left open. That resolve is not one.
    #[test]
    fn a_resolve_followed_by_a_reopen_is_not_a_resolve() {
        let reopened = [
            alert(1016.0, "pmtu_blackhole", "firing"),
            alert(3600.1, "pmtu_blackhole", "resolved"),
            alert(3601.9, "pmtu_blackhole", "firing"),
        ];
        assert_eq!(resolved(&reopened, &["pmtu_blackhole"]), None);
        let settled = [
            alert(1016.0, "pmtu_blackhole", "firing"),
            alert(3600.1, "pmtu_blackhole", "resolved"),
            alert(3601.9, "pmtu_blackhole", "firing"),
            alert(3720.0, "pmtu_blackhole", "resolved"),
        ];
        assert_eq!(resolved(&settled, &["pmtu_blackhole"]), Some(120.0));
        // A run that ends inside the window cannot confirm the resolve.
        let all = judged(&settled);
        let cause: Vec<&Judged> = all.iter().collect();
        assert_eq!(
            confirmed_resolve(&cause, 900.0, 3600.0, 600.0, 4000.0),
            None
        );
    }

    #[test]
    fn resolve_time_is_blank_when_nothing_fired_or_something_never_resolved() {
        assert_eq!(resolved(&[], &["pmtu_blackhole"]), None);
        let stuck = [
            alert(905.0, "mtu_drift", "firing"),
            alert(1016.0, "pmtu_blackhole", "firing"),
            alert(3604.0, "mtu_drift", "resolved"),
        ];
        assert_eq!(resolved(&stuck, &["mtu_drift", "pmtu_blackhole"]), None);
        // Alerts before the fault belong to something else.
        let before = [alert(10.0, "disk_pressure", "firing")];
        assert_eq!(resolved(&before, &["disk_pressure"]), None);
    }

    #[test]
    fn incidents_resolved_before_the_revert_count_as_zero() {
        let alerts = [
            alert(905.0, "uplink_degraded", "firing"),
            alert(1500.0, "uplink_degraded", "resolved"),
        ];
        assert_eq!(resolved(&alerts, &["uplink_degraded"]), Some(0.0));
    }

    /// Every body links `runbook-pmtud.md`: a word match on "MTU" took any alert for the
    /// cause. Only the structured kind counts, and a resolve never names a cause.
    #[test]
    fn the_cause_is_read_from_the_kind_not_from_words_of_the_body() {
        let drift = AlertAt {
            raised_seconds: None,
            at_seconds: 905.0,
            path: "/alerts".into(),
            body: r#"{"id":"a","kind":"mtu_drift","status":"firing","runbook":"docs/runbook-pmtud.md","root_cause":"eno1 MTU changed 1500 -> 9000"}"#.into(),
        };
        let j = Judged::of(&drift);
        assert_eq!(j.kind, "mtu_drift");
        assert!(j.firing);
        let other = Judged::of(&AlertAt {
            raised_seconds: None,
            at_seconds: 1.0,
            path: "/".into(),
            body: "uploads failing".into(),
        });
        assert_eq!(other.kind, "unknown");
        assert!(other.firing);
        assert!(!Judged::of(&alert(3700.0, "pmtu_blackhole", "resolved")).firing);
    }
}
