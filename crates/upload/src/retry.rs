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

/// Runs one request of the start-up checks (bucket, integrity probe), retrying what a flaky
/// path or a busy store causes up to `attempts` more times (each counted like any upload
/// error); any other answer, a refusal included, is returned as it is.
pub(crate) async fn transient<T, F, Fut>(
    errors: &crate::ErrorFeed,
    attempts: u32,
    mut f: F,
) -> Result<T, crate::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::Error>>,
{
    let backoff = Backoff {
        base: Duration::from_millis(200),
        max: Duration::from_secs(5),
    };
    let mut attempt = 0;
    loop {
        match f().await {
            Err(e) if attempt < attempts && e.is_transient() => {
                errors.record(e.class());
                attempt += 1;
                tokio::time::sleep(backoff.delay(attempt)).await;
            }
            other => return other,
        }
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
