//! Upload bandwidth cap with a time-of-day timetable, in the spirit of rclone's `--bwlimit`.
//!
//! Format: either one rate (`"40Mbit"`, `"5M"`, `"off"`) or space-separated `HH:MM,RATE`
//! entries (`"08:00,20Mbit 18:00,off"`); each entry holds until the next, and the last one
//! wraps past midnight. Rates: `Kbit`/`Mbit`/`Gbit` are bits per second (powers of 1000, as
//! network links are sold); `K`/`M`/`G` are KiB/MiB/GiB per second, as in rclone.

use std::time::Duration;

use tokio::time::Instant;

use time::{OffsetDateTime, UtcOffset};
use tokio::sync::Mutex;

/// A parsed timetable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthSchedule {
    /// (minute of day, bytes per second or unlimited), sorted by minute.
    entries: Vec<(u32, Option<u64>)>,
}

/// Parses one rate; `None` means unlimited.
pub fn parse_rate(s: &str) -> Result<Option<u64>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("off") || s == "0" {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a rate like 40Mbit or 5M"))?;
    let bytes_per_second = match unit {
        "Kbit" | "kbit" => n * 1e3 / 8.0,
        "Mbit" | "mbit" | "Mbps" => n * 1e6 / 8.0,
        "Gbit" | "gbit" | "Gbps" => n * 1e9 / 8.0,
        "" | "K" | "KiB" => n * 1024.0,
        "M" | "MiB" => n * 1024.0 * 1024.0,
        "G" | "GiB" => n * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown rate unit `{other}`; use Kbit, Mbit, Gbit, K, M or G"
            ));
        }
    };
    if bytes_per_second < 1.0 {
        return Err(format!("rate `{s}` is below one byte per second"));
    }
    Ok(Some(bytes_per_second as u64))
}

impl std::str::FromStr for BandwidthSchedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if !s.contains(',') {
            return Ok(Self {
                entries: vec![(0, parse_rate(s)?)],
            });
        }
        let mut entries = Vec::new();
        for item in s.split_whitespace() {
            let (at, rate) = item
                .split_once(',')
                .ok_or_else(|| format!("`{item}` is not HH:MM,RATE"))?;
            let (h, m) = at
                .split_once(':')
                .ok_or_else(|| format!("`{at}` is not HH:MM"))?;
            let h: u32 = h.parse().map_err(|_| format!("bad hour in `{at}`"))?;
            let m: u32 = m.parse().map_err(|_| format!("bad minute in `{at}`"))?;
            if h > 23 || m > 59 {
                return Err(format!("`{at}` is not a time of day"));
            }
            entries.push((h * 60 + m, parse_rate(rate)?));
        }
        entries.sort_by_key(|e| e.0);
        if entries.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err("two entries for the same time".into());
        }
        Ok(Self { entries })
    }
}

impl BandwidthSchedule {
    /// Whether no entry limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.entries.iter().all(|(_, r)| r.is_none())
    }

    /// The limit at a minute of the day (0..1440), bytes per second; `None` = unlimited.
    pub fn rate_at(&self, minute: u32) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|(m, _)| *m <= minute)
            .or_else(|| self.entries.last())
            .and_then(|(_, r)| *r)
    }
}

/// A token bucket shared by every upload body, following the schedule.
#[derive(Debug)]
pub struct RateLimiter {
    schedule: Option<BandwidthSchedule>,
    offset: UtcOffset,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(None, UtcOffset::UTC)
    }

    /// A limiter; `offset` is the site's UTC offset for the timetable.
    pub fn new(schedule: Option<BandwidthSchedule>, offset: UtcOffset) -> Self {
        Self {
            schedule,
            offset,
            bucket: Mutex::new((f64::INFINITY, Instant::now())),
        }
    }

    /// The limit now, bytes per second.
    pub fn current_rate(&self) -> Option<u64> {
        let s = self.schedule.as_ref()?;
        let now = OffsetDateTime::now_utc().to_offset(self.offset);
        s.rate_at(u32::from(now.hour()) * 60 + u32::from(now.minute()))
    }

    /// Waits until `n` bytes may be sent.
    pub async fn acquire(&self, n: u64) {
        let Some(rate) = self.current_rate() else {
            return;
        };
        let rate = rate as f64;
        // Holding the lock while sleeping queues senders fairly, in arrival order.
        let mut bucket = self.bucket.lock().await;
        let now = Instant::now();
        let burst = rate.max(256.0 * 1024.0);
        let (tokens, last) = *bucket;
        let mut tokens =
            (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(burst);
        tokens -= n as f64;
        if tokens < 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(-tokens / rate)).await;
            tokens = 0.0;
        }
        *bucket = (tokens, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_timetables() {
        assert_eq!(parse_rate("40Mbit"), Ok(Some(5_000_000)));
        assert_eq!(parse_rate("5M"), Ok(Some(5 * 1024 * 1024)));
        assert_eq!(parse_rate("off"), Ok(None));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("5Mb").is_err());
        let s: BandwidthSchedule = "08:00,20Mbit 18:00,off".parse().unwrap();
        assert_eq!(
            s.rate_at(7 * 60 + 59),
            None,
            "before the first entry the last one holds"
        );
        assert_eq!(s.rate_at(8 * 60), Some(2_500_000));
        assert_eq!(s.rate_at(17 * 60 + 59), Some(2_500_000));
        assert_eq!(s.rate_at(18 * 60), None);
        assert!("25:00,1M".parse::<BandwidthSchedule>().is_err());
        assert!("08:00,1M 08:00,2M".parse::<BandwidthSchedule>().is_err());
        let flat: BandwidthSchedule = "10Mbit".parse().unwrap();
        assert_eq!(flat.rate_at(3), Some(1_250_000));
    }

    #[tokio::test(start_paused = true)]
    async fn limits_to_the_rate() {
        let l = RateLimiter::new(Some("1M".parse().unwrap()), UtcOffset::UTC);
        let t0 = tokio::time::Instant::now();
        // The 1 MiB burst is free; the next 4 MiB take 4 s at 1 MiB/s.
        for _ in 0..20 {
            l.acquire(256 * 1024).await;
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((3.9..4.1).contains(&took), "{took}");
    }
}
