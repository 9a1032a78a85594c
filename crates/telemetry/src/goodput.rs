use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest window any reader may ask for.
const MAX_WINDOW_SECONDS: u64 = 60;

/// Acknowledged bytes in one-second buckets, for goodput over sliding windows.
///
/// Bytes count when the server acknowledges them, not when they are written, so a path that
/// swallows large packets shows zero goodput even while sockets still accept data.
#[derive(Debug)]
pub struct Goodput {
    start: Instant,
    /// `(second since start, bytes)`, at most `MAX_WINDOW_SECONDS + 1` entries, oldest first.
    buckets: Mutex<Vec<(u64, u64)>>,
}

impl Default for Goodput {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Goodput {
    /// A meter whose clock starts at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            buckets: Mutex::new(Vec::new()),
        }
    }

    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    /// Records `bytes` acknowledged at `at`.
    pub fn record(&self, at: Instant, bytes: u64) {
        let sec = self.second(at);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        match buckets.last_mut() {
            Some((s, b)) if *s == sec => *b += bytes,
            _ => buckets.push((sec, bytes)),
        }
        let oldest = sec.saturating_sub(MAX_WINDOW_SECONDS);
        buckets.retain(|(s, _)| *s >= oldest);
    }

    /// Megabits per second over the last `window_seconds` complete and current seconds.
    ///
    /// Before the meter has run a full window, divides by the time it has run, so the first
    /// seconds after start do not read as a collapse.
    pub fn mbps(&self, now: Instant, window_seconds: u64) -> f64 {
        let window_seconds = window_seconds.clamp(1, MAX_WINDOW_SECONDS);
        let sec = self.second(now);
        let from = sec.saturating_sub(window_seconds - 1);
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bytes: u64 = buckets
            .iter()
            .filter(|(s, _)| *s >= from && *s <= sec)
            .map(|(_, b)| *b)
            .sum();
        let elapsed = now
            .saturating_duration_since(self.start)
            .max(Duration::from_secs(1));
        let span = elapsed.as_secs_f64().min(window_seconds as f64);
        bytes as f64 * 8.0 / 1e6 / span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_forget_old_bytes() {
        let t0 = Instant::now();
        let g = Goodput::new(t0);
        // 6.25 MB/s for 60 s is 50 Mbit/s.
        for s in 0..60 {
            g.record(t0 + Duration::from_secs(s), 6_250_000);
        }
        let now = t0 + Duration::from_millis(59_999);
        assert!((g.mbps(now, 10) - 50.0).abs() < 0.01, "{}", g.mbps(now, 10));
        assert!((g.mbps(now, 60) - 50.0).abs() < 0.01);
        // Twenty silent seconds later the 10 s window is empty, the 60 s one only partly.
        let later = t0 + Duration::from_secs(80);
        assert_eq!(g.mbps(later, 10), 0.0);
        assert!((g.mbps(later, 60) - 50.0 * 40.0 / 60.0).abs() < 1.0);
    }

    #[test]
    fn young_meter_divides_by_elapsed_time() {
        let t0 = Instant::now();
        let g = Goodput::new(t0);
        g.record(t0, 1_250_000);
        assert!((g.mbps(t0 + Duration::from_secs(2), 10) - 5.0).abs() < 0.01);
    }
}
