use std::time::Duration;

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): the pause before attempt `n` is uniform in `[0, min(max, base * 2^n))`, which
/// spreads a fleet's retries instead of synchronising them after a shared outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Pause scale of the first retry.
    pub base: Duration,
    /// Cap.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the pause before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// A random pause for retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(3), Duration::from_secs(4));
        assert_eq!(b.ceiling(30), Duration::from_secs(60));
        for a in 0..10 {
            assert!(b.delay(a) <= b.ceiling(a));
        }
    }
}
