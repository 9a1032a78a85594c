//! Where an upload error goes once it is known: the `backhaul_upload_errors_total{class}`
//! counter for dashboards, and a typed feed for whoever reacts to the classes (the monitor's
//! rules), so no reader has to turn a counter's string label back into a class.

use std::sync::Arc;

use backhaul_telemetry::Metrics;
use tokio::sync::broadcast;

use crate::ErrorClass;

/// How many errors wait for a slow subscriber; older ones are skipped, and the subscriber is
/// told how many (an outage fails requests faster than any rule needs to count them).
const BACKLOG: usize = 256;

/// Counts each upload error and hands its class to every subscriber.
#[derive(Debug, Clone)]
pub struct ErrorFeed {
    metrics: Arc<Metrics>,
    tx: broadcast::Sender<ErrorClass>,
}

impl ErrorFeed {
    /// A feed counting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            tx: broadcast::Sender::new(BACKLOG),
        }
    }

    /// One failed request (or chunk) of `class`.
    pub fn record(&self, class: ErrorClass) {
        self.metrics.errors.inc(class.as_str());
        // No subscriber (a drain run, a test) is no error: the counter has it.
        if self.tx.send(class).is_err() {
            tracing::trace!(class = class.as_str(), "no one follows upload errors");
        }
    }

    /// The classes recorded from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ErrorClass> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_is_counted_and_reaches_every_subscriber_in_order() {
        let metrics = Arc::new(Metrics::default());
        let feed = ErrorFeed::new(metrics.clone());
        feed.record(ErrorClass::Auth);
        let (mut a, mut b) = (feed.subscribe(), feed.subscribe());
        feed.record(ErrorClass::Stall);
        feed.record(ErrorClass::Server5xx);
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.try_recv().ok(), Some(ErrorClass::Stall));
            assert_eq!(rx.try_recv().ok(), Some(ErrorClass::Server5xx));
            assert!(rx.try_recv().is_err());
        }
        assert_eq!(metrics.errors.value("auth"), 1);
        assert_eq!(metrics.errors.value("stall"), 1);
        assert_eq!(metrics.errors.total(), 3);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
        let feed = ErrorFeed::new(Arc::new(Metrics::default()));
        let mut rx = feed.subscribe();
        for _ in 0..BACKLOG + 5 {
            feed.record(ErrorClass::Timeout);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(5))
        ));
        assert_eq!(rx.try_recv().ok(), Some(ErrorClass::Timeout));
    }
}
