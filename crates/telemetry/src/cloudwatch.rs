//! What CloudWatch receives from a snapshot: one datum per series, labels as dimensions and
//! counters as the change since the last publish.
//!
//! CloudWatch aggregates what it is sent (`Sum` over a period, alarms on a rate), so a
//! cumulative counter sent as a value makes every statistic but `Maximum` meaningless and
//! resets to zero at each restart. Labels go into dimensions, not names, so that a dashboard
//! can select `class = stall` or sum over every class without knowing each name.

use std::collections::HashMap;

use crate::{Sample, SampleKind, Snapshot};

/// One value for CloudWatch: `PutMetricData`'s `MetricDatum`, or one metric of an EMF line.
#[derive(Debug, Clone, PartialEq)]
pub struct Datum {
    /// Metric name without the `backhaul_` prefix, and without `_total` for counters (the value
    /// is a per-interval change, not a total).
    pub name: String,
    /// A CloudWatch standard unit.
    pub unit: &'static str,
    /// The sample's labels; the encoders add the `site` dimension first.
    pub dimensions: Vec<(&'static str, String)>,
    /// The value: for counters, the change since the last publish that reached CloudWatch.
    pub value: f64,
}

type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// The counter values last delivered to one CloudWatch sink.
///
/// Each sink (the EMF file, `PutMetricData`) keeps its own: a publish that fails does not
/// [`advance`](Self::advance), so the next one carries both intervals' change and nothing is
/// lost to a CloudWatch outage.
#[derive(Debug, Clone, Default)]
pub struct CounterDeltas {
    delivered: HashMap<SeriesKey, f64>,
}

impl CounterDeltas {
    /// The data for `snapshot`, finite values only (CloudWatch rejects the others). Every
    /// counter counts from zero at the agent's start (the kernel's too: the monitor adds only
    /// what it sees change), so a series not delivered before sends all it holds.
    pub fn data(&self, snapshot: &Snapshot) -> Vec<Datum> {
        snapshot
            .samples
            .iter()
            .filter(|s| s.value.is_finite())
            .map(|s| Datum {
                name: name(s),
                unit: unit(s),
                dimensions: s.labels.clone(),
                value: match s.kind {
                    SampleKind::Gauge => s.value,
                    SampleKind::Counter => {
                        s.value - self.delivered.get(&key(s)).copied().unwrap_or(0.0)
                    }
                },
            })
            .collect()
    }

    /// Records that `snapshot`'s counters reached CloudWatch.
    pub fn advance(&mut self, snapshot: &Snapshot) {
        for s in &snapshot.samples {
            if s.kind == SampleKind::Counter && s.value.is_finite() {
                self.delivered.insert(key(s), s.value);
            }
        }
    }
}

fn key(s: &Sample) -> SeriesKey {
    (s.name, s.labels.clone())
}

fn name(s: &Sample) -> String {
    let short = s.name.trim_start_matches("backhaul_");
    match s.kind {
        SampleKind::Counter => short.trim_end_matches("_total").to_owned(),
        SampleKind::Gauge => short.to_owned(),
    }
}

fn unit(s: &Sample) -> &'static str {
    let n = s.name.trim_end_matches("_total");
    if n.ends_with("_bytes") {
        "Bytes"
    } else if n.ends_with("_seconds") {
        "Seconds"
    } else if n.ends_with("_percent") {
        "Percent"
    } else if n.ends_with("_mbps") {
        "Megabits/Second"
    } else {
        match s.kind {
            SampleKind::Counter => "Count",
            SampleKind::Gauge => "None",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use std::time::Instant;

    fn find<'a>(data: &'a [Datum], name: &str, dims: &[(&str, &str)]) -> Option<&'a Datum> {
        data.iter().find(|d| {
            d.name == name
                && d.dimensions.len() == dims.len()
                && dims
                    .iter()
                    .all(|(k, v)| d.dimensions.iter().any(|(dk, dv)| dk == k && dv == v))
        })
    }

    #[test]
    fn counters_are_sent_as_the_change_since_the_last_delivered_publish() {
        let m = Metrics::default();
        m.uploaded_bytes.add(1000);
        let mut deltas = CounterDeltas::default();
        let start = m.snapshot(Instant::now());
        assert_eq!(
            find(&deltas.data(&start), "uploaded_bytes", &[])
                .unwrap()
                .value,
            1000.0,
            "the first publish sends everything since the start"
        );
        deltas.advance(&start);
        m.uploaded_bytes.add(24);
        m.errors.inc("stall");
        m.disk_used_percent.set(42.5);

        let data = deltas.data(&m.snapshot(Instant::now()));
        let bytes = find(&data, "uploaded_bytes", &[]).unwrap();
        assert_eq!((bytes.value, bytes.unit), (24.0, "Bytes"));
        let stall = find(&data, "upload_errors", &[("class", "stall")]).unwrap();
        assert_eq!(
            (stall.value, stall.unit),
            (1.0, "Count"),
            "a label is a dimension"
        );
        let used = find(&data, "spool_disk_used_percent", &[]).unwrap();
        assert_eq!((used.value, used.unit), (42.5, "Percent"), "gauges as read");

        // A publish that failed does not advance: the next carries both intervals.
        m.uploaded_bytes.add(6);
        let second = m.snapshot(Instant::now());
        assert_eq!(
            find(&deltas.data(&second), "uploaded_bytes", &[])
                .unwrap()
                .value,
            30.0
        );
        deltas.advance(&second);
        let third = deltas.data(&m.snapshot(Instant::now()));
        assert_eq!(find(&third, "uploaded_bytes", &[]).unwrap().value, 0.0);
        assert_eq!(
            find(&third, "upload_errors", &[("class", "stall")])
                .unwrap()
                .value,
            0.0
        );
    }

    #[test]
    fn non_finite_gauges_are_left_out() {
        let m = Metrics::default();
        m.disk_full_projected_seconds.set(f64::INFINITY);
        let data = CounterDeltas::default().data(&m.snapshot(Instant::now()));
        assert!(find(&data, "spool_disk_full_projected_seconds", &[]).is_none());
        assert!(find(&data, "upload_goodput_mbps", &[("window", "10s")]).is_some());
    }
}
