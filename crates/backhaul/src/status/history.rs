//! The last hour of upload figures, kept in memory for the status page's charts.
//!
//! One sample every [`SAMPLE_EVERY`] for [`WINDOW`], so [`CAPACITY`] = 360 samples. Ten seconds
//! because it is the shortest goodput window the metrics keep (`Goodput::mbps(now, 10)`): each
//! sample's goodput covers exactly the time since the previous one, so no burst falls between
//! two samples and none is counted twice. It is also the page's refresh interval, and 360
//! samples of five numbers are about 15 KiB, however long the agent runs. The history starts
//! empty at every start: it is a view for a person at the site, not a record (Prometheus keeps
//! that).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backhaul_telemetry::Metrics;
use tokio::sync::watch;

use super::StatusBoard;

/// How often the sampler takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Samples kept: one hour at one sample every ten seconds.
pub const CAPACITY: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize;

/// The upload figures at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When it was taken.
    pub at: Instant,
    /// Goodput over the last 10 s, Mbit/s.
    pub goodput_mbps: f64,
    /// Chunks waiting.
    pub backlog_chunks: f64,
    /// Bytes waiting.
    pub backlog_bytes: f64,
    /// Spool filesystem usage, percent.
    pub disk_used_percent: f64,
}

impl Sample {
    /// The figures in `metrics` at `now`.
    pub fn of(metrics: &Metrics, now: Instant) -> Self {
        Self {
            at: now,
            goodput_mbps: metrics.goodput.mbps(now, SAMPLE_EVERY.as_secs()),
            backlog_chunks: metrics.backlog_chunks.value(),
            backlog_bytes: metrics.backlog_bytes.value(),
            disk_used_percent: metrics.disk_used_percent.value(),
        }
    }
}

/// A ring of at most [`CAPACITY`] samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Appends `sample`, dropping the oldest once full.
    pub fn record(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == CAPACITY {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }
}

/// Samples `metrics` into the board's history at once and then every [`SAMPLE_EVERY`], until
/// `shutdown`.
pub async fn sample(
    board: Arc<StatusBoard>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    // A stalled runtime should not be followed by a burst of samples of the same moment.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        board.history().record(Sample::of(&metrics, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, i: u64) -> Sample {
        Sample {
            at: t0 + Duration::from_secs(i * 10),
            goodput_mbps: i as f64,
            backlog_chunks: 0.0,
            backlog_bytes: 0.0,
            disk_used_percent: 0.0,
        }
    }

    #[test]
    fn one_hour_of_ten_second_samples_is_kept() {
        assert_eq!(CAPACITY, 360);
        let (h, t0) = (History::default(), Instant::now());
        for i in 0..400 {
            h.record(at(t0, i));
        }
        let s = h.samples();
        assert_eq!(s.len(), 360);
        assert_eq!(s[0].goodput_mbps, 40.0, "the oldest 40 are dropped");
        assert_eq!(s[359].goodput_mbps, 399.0);
    }

    #[test]
    fn a_sample_reads_the_metrics() {
        let m = Metrics::default();
        m.backlog_chunks.set(14.0);
        m.backlog_bytes.set(1.1e9);
        m.disk_used_percent.set(42.5);
        let s = Sample::of(&m, Instant::now());
        assert_eq!(
            (s.backlog_chunks, s.backlog_bytes, s.disk_used_percent),
            (14.0, 1.1e9, 42.5)
        );
        assert_eq!(s.goodput_mbps, 0.0);
    }
}
