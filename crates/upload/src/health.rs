//! Whether the store can be reached, so that uploads waiting out a backoff go again as soon as
//! it answers instead of up to `retry_max_seconds` later.
//!
//! A request that cannot reach the store (connection refused or broken, no answer in time)
//! marks it down. While it is down the pipeline asks it a cheap question (HeadBucket) every
//! [`RECHECK`] with jitter; the first answer, or any request that succeeds, marks it up and wakes
//! every pause. Full-jitter backoff still spaces out retries against a store that answers with
//! errors (5xx, throttling): an answer is what ends a pause early, never an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::ErrorClass;

/// Mean pause between rechecks of a store that is down; each is drawn from half to one and a
/// half times this, so a fleet whose store comes back does not return in lockstep.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Shared by the chunk uploader's requests and the pipeline's recheck.
#[derive(Debug)]
pub struct StoreHealth {
    down: AtomicBool,
    /// Bumped every time the store answers after being down; pauses wait on it.
    back: watch::Sender<u64>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self {
            down: AtomicBool::new(false),
            back: watch::channel(0).0,
        }
    }
}

impl StoreHealth {
    /// A request failed with `class`; only "could not reach it" marks the store down.
    pub fn failed(&self, class: ErrorClass) {
        if matches!(class, ErrorClass::Connection | ErrorClass::Timeout) {
            self.down.store(true, Ordering::Relaxed);
        }
    }

    /// The store answered: if it was down, wake everything that waits for it. True when it
    /// was down, so a caller whose request succeeded can report the recovery.
    pub fn answered(&self) -> bool {
        let was_down = self.down.swap(false, Ordering::Relaxed);
        if was_down {
            self.back.send_modify(|n| *n += 1);
        }
        was_down
    }

    /// Whether the last word about the store was that it cannot be reached.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A receiver whose `changed()` completes the next time the store answers after being
    /// down.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.back.subscribe()
    }

    /// Sleeps `delay`, or less if the store comes back meanwhile.
    pub async fn pause(&self, delay: Duration) {
        let mut back = self.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = back.changed() => {}
        }
    }

    /// The next recheck's delay: [`RECHECK`] with ±50 % jitter.
    pub fn recheck_delay() -> Duration {
        RECHECK.mul_f64(0.5 + fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_ends_when_the_store_answers_and_only_then() {
        let health = std::sync::Arc::new(StoreHealth::default());
        health.failed(ErrorClass::Server5xx);
        assert!(!health.is_down(), "an error is an answer");
        health.failed(ErrorClass::Connection);
        assert!(health.is_down());
        let waiting = {
            let health = health.clone();
            tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                health.pause(Duration::from_secs(3600)).await;
                started.elapsed()
            })
        };
        // The task may not be waiting yet when the store first answers: go down and up again
        // until it has seen one.
        while !waiting.is_finished() {
            health.failed(ErrorClass::Timeout);
            assert!(health.answered(), "it was down");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let waited = waiting.await.unwrap();
        assert!(waited < Duration::from_secs(3600), "{waited:?}");
        assert!(!health.is_down());
        // Already up: answering again wakes nobody.
        let before = *health.subscribe().borrow();
        assert!(!health.answered(), "it was up");
        assert_eq!(*health.subscribe().borrow(), before);
    }
}
