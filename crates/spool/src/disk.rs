use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::Error;

/// Less room than this is a full disk: no camera chunk fits any more, so time-to-full is 0.
pub const FULL_BELOW_BYTES: u64 = 16 * 1024 * 1024;
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
    /// Growth in bytes per second of the spool's low-water mark over the fill-rate window
    /// (negative when draining; 0 until the window is half full).
    pub fill_bytes_per_second: f64,
    /// Seconds until full at that rate; +Inf when not filling.
    pub seconds_to_full: f64,
    /// The fill-rate window the projection looks back over: for this long after an upload
    /// outage ends, the projection still carries the outage's growth.
    pub fill_window: Duration,
    /// Watermark level.
    pub level: DiskLevel,
}

/// The latest disk reading, for readers outside the uploader (the monitor's rules, `/status`).
/// `None` until the spool has sampled the disk: a reading that does not exist yet is not
/// "0 % used, full in 0 s".
#[derive(Debug, Clone, Default)]
pub struct DiskFeed(Arc<Mutex<Option<DiskStatus>>>);

impl DiskFeed {
    /// The newest reading, if the disk was sampled at all.
    pub fn latest(&self) -> Option<DiskStatus> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn publish(&self, status: DiskStatus) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    }
}

/// Samples the spool filesystem and projects when it fills.
///
/// Cameras write in bursts: a whole chunk lands, then its upload removes it. The projection
/// therefore follows the low-water mark — the least usage at the start of the window against
/// the least usage at its end — so a healthy spool that empties between chunks projects
/// nothing, while one whose uploads stopped rises a chunk per camera interval.
#[derive(Debug)]
pub struct DiskWatch {
    warning_percent: f64,
    critical_percent: f64,
    window: Duration,
    history: VecDeque<(Instant, f64)>,
}

impl DiskWatch {
    /// A watch with the given watermarks and fill-rate window.
    pub fn new(warning_percent: f64, critical_percent: f64, window: Duration) -> Self {
        Self {
            warning_percent,
            critical_percent,
            window,
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

    /// Bytes per second the low-water mark moved from the first fifth of the window to the
    /// last; 0 until the history spans half the window.
    fn low_water_rate(&self, now: Instant) -> f64 {
        let Some(&(start, _)) = self.history.front() else {
            return 0.0;
        };
        if now.saturating_duration_since(start) < self.window / 2 {
            return 0.0;
        }
        let edge = self.window / 5;
        let trough = |range: &mut dyn Iterator<Item = &(Instant, f64)>| {
            range.copied().min_by(|a, b| a.1.total_cmp(&b.1))
        };
        let old = trough(
            &mut self
                .history
                .iter()
                .take_while(|(t, _)| t.saturating_duration_since(start) <= edge),
        );
        let new = trough(
            &mut self
                .history
                .iter()
                .filter(|(t, _)| now.saturating_duration_since(*t) <= edge),
        );
        match (old, new) {
            (Some((t0, u0)), Some((t1, u1))) if t1 > t0 => {
                (u1 - u0) / t1.saturating_duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// Updates the projection from raw numbers (unit-testable without a filesystem).
    pub fn observe(&mut self, total: u64, used: u64, avail: u64, now: Instant) -> DiskStatus {
        let denom = (used + avail).max(1) as f64;
        let used_percent = used as f64 * 100.0 / denom;
        self.history.push_back((now, used as f64));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window)
        {
            self.history.pop_front();
        }
        let rate = self.low_water_rate(now);
        let seconds_to_full = if avail < FULL_BELOW_BYTES {
            // Already full for a camera, whatever the trend says.
            0.0
        } else if rate > 0.0 {
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
            fill_window: self.window,
            level,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;
    const WINDOW: Duration = Duration::from_secs(300);

    #[test]
    fn projects_time_to_full_from_fill_rate() {
        let mut w = DiskWatch::new(85.0, 95.0, WINDOW);
        let t0 = Instant::now();
        // 100 GB disk from 52 %, filling 2.5 % per minute as on 2025-11-12, sampled every 10 s.
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let used = |secs: u64| 52 * GB + secs * 2_500_000_000 / 60;
        let s0 = w.observe(100 * GB, used(0), 100 * GB - used(0), at(0));
        assert_eq!(s0.level, DiskLevel::Ok);
        assert!(s0.seconds_to_full.is_infinite());
        let mut last = s0;
        for secs in (10..=300).step_by(10) {
            last = w.observe(100 * GB, used(secs), 100 * GB - used(secs), at(secs));
            if secs < 150 {
                assert!(
                    last.seconds_to_full.is_infinite(),
                    "{secs} s: too little history"
                );
            }
        }
        assert!(
            (last.fill_bytes_per_second - 2.5 * GB as f64 / 60.0).abs() < 1.0,
            "{last:?}"
        );
        // 64.5 % used after 5 min; 35.5 % left at 2.5 %/min is 14.2 minutes.
        assert!(
            (last.seconds_to_full - 14.2 * 60.0).abs() < 1.0,
            "{}",
            last.seconds_to_full
        );
        let s2 = w.observe(100 * GB, 91 * GB, 9 * GB, at(310));
        assert_eq!(s2.level, DiskLevel::Warning);
        let s3 = w.observe(100 * GB, 96 * GB, 4 * GB, at(320));
        assert_eq!(s3.level, DiskLevel::Critical);
    }

    /// An 82 MB chunk every 2 minutes, uploaded within 15 s: the disk goes up and down but does
    /// not fill, whenever in the cycle it is sampled.
    #[test]
    fn chunk_bursts_that_uploads_remove_project_nothing() {
        let mut w = DiskWatch::new(85.0, 95.0, WINDOW);
        let t0 = Instant::now();
        let base = 2_400_000_000u64;
        for secs in 0..=1200u64 {
            let in_flight = if secs % 120 < 15 { 82_000_000 } else { 0 };
            let used = base + in_flight;
            let s = w.observe(
                4_600_000_000,
                used,
                4_600_000_000 - used,
                t0 + Duration::from_secs(secs),
            );
            assert!(
                s.seconds_to_full.is_infinite() || s.seconds_to_full > 86_400.0,
                "{secs} s: {s:?}"
            );
        }
    }

    /// The same camera with uploads stopped: the low-water mark rises a chunk per interval.
    #[test]
    fn chunks_that_stay_project_the_camera_rate() {
        let mut w = DiskWatch::new(85.0, 95.0, WINDOW);
        let t0 = Instant::now();
        let mut last = None;
        for secs in 0..=600u64 {
            let used = 2_400_000_000 + (secs / 120 + 1) * 82_000_000;
            last = Some(w.observe(
                4_600_000_000,
                used,
                4_600_000_000 - used,
                t0 + Duration::from_secs(secs),
            ));
        }
        let rate = last.unwrap().fill_bytes_per_second;
        let camera = 82_000_000.0 / 120.0;
        assert!(
            (rate - camera).abs() < camera * 0.35,
            "rate {rate} vs camera {camera}"
        );
    }

    #[test]
    fn samples_a_real_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let s = DiskWatch::new(85.0, 95.0, WINDOW)
            .sample(d.path(), Instant::now())
            .unwrap();
        assert!(s.total_bytes > 0);
        assert!((0.0..=100.0).contains(&s.used_percent));
    }

    #[test]
    fn a_full_disk_is_zero_seconds_from_full() {
        let mut w = DiskWatch::new(85.0, 95.0, Duration::from_secs(300));
        // 99.99 % used and steady: no fill rate, but no room either.
        let s = w.observe(1 << 40, (1 << 40) - (1 << 20), 1 << 20, Instant::now());
        assert_eq!(s.seconds_to_full, 0.0);
        assert_eq!(s.level, DiskLevel::Critical);
    }
}
