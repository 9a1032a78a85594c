use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::Error;

/// How long a history the fill rate is computed over.
const FILL_WINDOW: Duration = Duration::from_secs(60);

/// Watermark level of the spool filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskLevel {
    /// Below the warning watermark.
    Ok,
    /// At or above warning.
    Warning,
    /// At or above critical.
    Critical,
}

/// One reading of the spool filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskStatus {
    /// Filesystem size in bytes.
    pub total_bytes: u64,
    /// Bytes available to unprivileged writers.
    pub available_bytes: u64,
    /// Usage in percent, as `df` computes it (used / (used + available)).
    pub used_percent: f64,
    /// Growth in bytes per second over the last minute (negative when draining).
    pub fill_bytes_per_second: f64,
    /// Seconds until full at that rate; +Inf when not filling.
    pub seconds_to_full: f64,
    /// Watermark level.
    pub level: DiskLevel,
}

/// Samples the spool filesystem and projects when it fills.
#[derive(Debug)]
pub struct DiskWatch {
    warning_percent: f64,
    critical_percent: f64,
    history: VecDeque<(Instant, f64)>,
}

impl DiskWatch {
    /// A watch with the given watermarks.
    pub fn new(warning_percent: f64, critical_percent: f64) -> Self {
        Self {
            warning_percent,
            critical_percent,
            history: VecDeque::new(),
        }
    }

    /// Reads `statvfs` of `dir` and updates the projection.
    pub fn sample(&mut self, dir: &Path, now: Instant) -> Result<DiskStatus, Error> {
        let st = rustix::fs::statvfs(dir).map_err(|e| Error::Statvfs {
            path: dir.to_owned(),
            source: e.into(),
        })?;
        let frsize = st.f_frsize.max(1);
        let total = st.f_blocks * frsize;
        let free = st.f_bfree * frsize;
        let avail = st.f_bavail * frsize;
        Ok(self.observe(total, total.saturating_sub(free), avail, now))
    }

    /// Updates the projection from raw numbers (unit-testable without a filesystem).
    pub fn observe(&mut self, total: u64, used: u64, avail: u64, now: Instant) -> DiskStatus {
        let denom = (used + avail).max(1) as f64;
        let used_percent = used as f64 * 100.0 / denom;
        self.history.push_back((now, used as f64));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > FILL_WINDOW)
        {
            self.history.pop_front();
        }
        let rate = match (self.history.front(), self.history.back()) {
            (Some((t0, u0)), Some((t1, u1))) if t1 > t0 => {
                (u1 - u0) / t1.saturating_duration_since(*t0).as_secs_f64()
            }
            _ => 0.0,
        };
        let seconds_to_full = if rate > 0.0 {
            avail as f64 / rate
        } else {
            f64::INFINITY
        };
        let level = if used_percent >= self.critical_percent {
            DiskLevel::Critical
        } else if used_percent >= self.warning_percent {
            DiskLevel::Warning
        } else {
            DiskLevel::Ok
        };
        DiskStatus {
            total_bytes: total,
            available_bytes: avail,
            used_percent,
            fill_bytes_per_second: rate,
            seconds_to_full,
            level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_time_to_full_from_fill_rate() {
        let mut w = DiskWatch::new(85.0, 95.0);
        let t0 = Instant::now();
        // 100 GB disk at 52 %, filling 2.5 % per minute as on 2025-11-12.
        let gb = 1_000_000_000u64;
        let s0 = w.observe(100 * gb, 52 * gb, 48 * gb, t0);
        assert_eq!(s0.level, DiskLevel::Ok);
        assert!(s0.seconds_to_full.is_infinite());
        let s1 = w.observe(
            100 * gb,
            54_500_000_000,
            45_500_000_000,
            t0 + Duration::from_secs(60),
        );
        assert!((s1.fill_bytes_per_second - 2.5 * gb as f64 / 60.0).abs() < 1.0);
        // 45.5 % left at 2.5 %/min is 18.2 minutes.
        assert!(
            (s1.seconds_to_full - 18.2 * 60.0).abs() < 1.0,
            "{}",
            s1.seconds_to_full
        );
        let s2 = w.observe(100 * gb, 91 * gb, 9 * gb, t0 + Duration::from_secs(90));
        assert_eq!(s2.level, DiskLevel::Warning);
        let s3 = w.observe(100 * gb, 96 * gb, 4 * gb, t0 + Duration::from_secs(100));
        assert_eq!(s3.level, DiskLevel::Critical);
    }

    #[test]
    fn samples_a_real_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskWatch::new(85.0, 95.0)
            .sample(d.path(), Instant::now())
            .unwrap();
        assert!(s.total_bytes > 0);
        assert!((0.0..=100.0).contains(&s.used_percent));
    }
}
