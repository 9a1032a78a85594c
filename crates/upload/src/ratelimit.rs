//! Upload bandwidth cap with a timetable, in the spirit of rclone's `--bwlimit`.
//!
//! Format: either one rate (`"40Mbit"`, `"5M"`, `"512k"`, `"off"`) or space-separated
//! `HH:MM,RATE` entries (`"08:00,20Mbit 18:00,off"`), optionally for one weekday
//! (`"Mon-08:00,20Mbit Sat-00:00,off"`, rclone's form); each entry holds until the next, and the
//! last one wraps around (past midnight, or past Sunday). An entry without a weekday holds on
//! every day; a weekday's entry at the same time replaces it on that day. Rates, as rclone
//! reads them: a bare number or `K`/`M`/`G`/`T` (either case) is KiB, MiB, GiB or TiB per
//! second, `B` bytes per second; `Kbit`/`Mbit`/`Gbit` (also `…/s` and `Kbps`, `Mbps`, `Gbps`)
//! are bits per second in powers of 1000, as network links are sold.
//!
//! Times are the site's wall clock, from the TZ database ([`SiteZone`]), looked up for the
//! instant each time the limit is read: "08:00" stays 08:00 across a daylight-saving change.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use time::{OffsetDateTime, UtcOffset};
use tokio::sync::Mutex;

/// Minutes in a week.
const WEEK_MINUTES: u32 = 7 * 24 * 60;
/// rclone's weekday names, Monday first (minute 0 of the week is Monday 00:00).
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// A parsed timetable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandwidthSchedule {
    /// (minute of the week, bytes per second or unlimited), sorted by minute.
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
        .map_err(|_| format!("`{s}` is not a rate like 40Mbit, 5M or 512k"))?;
    let bits = |per: f64| n * per / 8.0;
    let bytes_per_second = match unit.trim_end_matches("/s").to_ascii_lowercase().as_str() {
        "kbit" | "kbps" => bits(1e3),
        "mbit" | "mbps" => bits(1e6),
        "gbit" | "gbps" => bits(1e9),
        "b" => n,
        // rclone: a bare number is KiB/s.
        "" | "k" | "kib" => n * 1024.0,
        "m" | "mib" => n * 1024.0 * 1024.0,
        "g" | "gib" => n * 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => n * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "unknown rate unit `{unit}` in `{s}`; use Kbit, Mbit, Gbit (bits per second, also \
                 Mbit/s, Mbps) or B, K, M, G, T (bytes per second, as rclone)"
            ));
        }
    };
    if bytes_per_second < 1.0 {
        return Err(format!("rate `{s}` is below one byte per second"));
    }
    Ok(Some(bytes_per_second as u64))
}

/// `HH:MM` as a minute of the day.
fn minute_of_day(at: &str) -> Result<u32, String> {
    let (h, m) = at
        .split_once(':')
        .ok_or_else(|| format!("`{at}` is not HH:MM"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad hour in `{at}`"))?;
    let m: u32 = m.parse().map_err(|_| format!("bad minute in `{at}`"))?;
    if h > 23 || m > 59 {
        return Err(format!("`{at}` is not a time of day"));
    }
    Ok(h * 60 + m)
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
        // Minute of the week → rate, daily entries first, then each weekday's over them.
        let mut daily: BTreeMap<u32, Option<u64>> = BTreeMap::new();
        let mut weekly: BTreeMap<u32, Option<u64>> = BTreeMap::new();
        for item in s.split_whitespace() {
            let (at, rate) = item
                .split_once(',')
                .ok_or_else(|| format!("`{item}` is not HH:MM,RATE or Day-HH:MM,RATE"))?;
            let rate = parse_rate(rate)?;
            let (table, minutes) = match at.split_once('-') {
                Some((day, time)) => {
                    let d = WEEKDAYS
                        .iter()
                        .position(|w| w.eq_ignore_ascii_case(day))
                        .ok_or_else(|| {
                            format!("`{day}` is not a weekday; use {}", WEEKDAYS.join(", "))
                        })? as u32;
                    (&mut weekly, vec![d * 24 * 60 + minute_of_day(time)?])
                }
                None => {
                    let m = minute_of_day(at)?;
                    (&mut daily, (0..7).map(|d| d * 24 * 60 + m).collect())
                }
            };
            for m in minutes {
                if table.insert(m, rate).is_some() {
                    return Err(format!("two entries for the same time (`{at}`)"));
                }
            }
        }
        daily.extend(weekly);
        Ok(Self {
            entries: daily.into_iter().collect(),
        })
    }
}

impl BandwidthSchedule {
    /// Whether no entry limits anything.
    pub fn is_unlimited(&self) -> bool {
        self.entries.iter().all(|(_, r)| r.is_none())
    }

    /// The limit at a minute of the week (0 is Monday 00:00), bytes per second; `None` =
    /// unlimited.
    pub fn rate_at(&self, minute_of_week: u32) -> Option<u64> {
        let minute = minute_of_week % WEEK_MINUTES;
        self.entries
            .iter()
            .rev()
            .find(|(m, _)| *m <= minute)
            .or_else(|| self.entries.last())
            .and_then(|(_, r)| *r)
    }
}

/// How often the zone's rules are read again: a zone changed on the host (`timedatectl
/// set-timezone`) applies within this long, without a restart.
const ZONE_RELOAD: Duration = Duration::from_secs(60);

/// Which time zone the timetable's times are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneSource {
    /// The host's: `TZ` if set, else `/etc/localtime`.
    System,
    /// A TZ database name (`Europe/Berlin`) or POSIX TZ string.
    Named(String),
}

/// The site's time zone: its UTC offset at any instant, from the TZ database rules (reloaded
/// every [`ZONE_RELOAD`]), so daylight-saving changes move the offset when they happen rather
/// than at the next start.
#[derive(Debug)]
pub struct SiteZone {
    source: ZoneSource,
    loaded: std::sync::Mutex<Option<(tz::TimeZone, Instant)>>,
}

impl SiteZone {
    /// The zone from `source`, read at first use.
    pub fn new(source: ZoneSource) -> Self {
        Self {
            source,
            loaded: std::sync::Mutex::new(None),
        }
    }

    fn load(&self) -> Result<tz::TimeZone, tz::Error> {
        match &self.source {
            ZoneSource::System => tz::TimeZone::local(),
            ZoneSource::Named(name) => tz::TimeZone::from_posix_tz(name),
        }
    }

    /// The UTC offset at `at`. A zone that cannot be read counts as UTC, said once per reload.
    pub fn offset_at(&self, at: OffsetDateTime) -> UtcOffset {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = loaded
            .as_ref()
            .is_some_and(|(_, read)| read.elapsed() < ZONE_RELOAD);
        if !fresh {
            let zone = self.load().unwrap_or_else(|e| {
                tracing::warn!(zone = ?self.source, error = %e, "cannot read the time zone; the bandwidth timetable runs in UTC");
                tz::TimeZone::utc()
            });
            *loaded = Some((zone, Instant::now()));
        }
        loaded
            .as_ref()
            .and_then(|(zone, _)| zone.find_local_time_type(at.unix_timestamp()).ok())
            .and_then(|t| UtcOffset::from_whole_seconds(t.ut_offset()).ok())
            .unwrap_or(UtcOffset::UTC)
    }
}

/// A token bucket shared by every upload body, following the schedule.
#[derive(Debug)]
pub struct RateLimiter {
    schedule: Option<BandwidthSchedule>,
    zone: SiteZone,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// No limit.
    pub fn unlimited() -> Self {
        Self::new(None, SiteZone::new(ZoneSource::System))
    }

    /// A limiter; the timetable's times are in `zone`.
    pub fn new(schedule: Option<BandwidthSchedule>, zone: SiteZone) -> Self {
        Self {
            schedule,
            zone,
            bucket: Mutex::new((f64::INFINITY, Instant::now())),
        }
    }

    /// The limit now, bytes per second.
    pub fn current_rate(&self) -> Option<u64> {
        self.rate_at(OffsetDateTime::now_utc())
    }

    /// The limit at `at`, in bytes per second.
    pub fn rate_at(&self, at: OffsetDateTime) -> Option<u64> {
        let s = self.schedule.as_ref()?;
        let local = at.to_offset(self.zone.offset_at(at));
        let day = u32::from(local.weekday().number_days_from_monday());
        s.rate_at((day * 24 + u32::from(local.hour())) * 60 + u32::from(local.minute()))
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
        // rclone's own forms.
        assert_eq!(parse_rate("512k"), Ok(Some(512 * 1024)));
        assert_eq!(parse_rate("512"), Ok(Some(512 * 1024)));
        assert_eq!(parse_rate("10m"), Ok(Some(10 * 1024 * 1024)));
        assert_eq!(parse_rate("1000B"), Ok(Some(1000)));
        assert_eq!(parse_rate("40Mbit/s"), Ok(Some(5_000_000)));
        assert_eq!(parse_rate("40Mbps"), Ok(Some(5_000_000)));
        assert_eq!(parse_rate("800kbit/s"), Ok(Some(100_000)));
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

    #[test]
    fn weekday_timetables_as_rclone_writes_them() {
        let day = |d: u32, h: u32, m: u32| (d * 24 + h) * 60 + m;
        let s: BandwidthSchedule = "Mon-00:00,512k Fri-23:59,10M Sat-10:00,1M Sun-20:00,off"
            .parse()
            .unwrap();
        assert_eq!(s.rate_at(day(0, 0, 0)), Some(512 * 1024));
        assert_eq!(s.rate_at(day(4, 23, 58)), Some(512 * 1024));
        assert_eq!(s.rate_at(day(4, 23, 59)), Some(10 * 1024 * 1024));
        assert_eq!(s.rate_at(day(5, 12, 0)), Some(1024 * 1024));
        assert_eq!(s.rate_at(day(6, 21, 0)), None);
        // Daily entries hold on every day, and mix with a weekday's.
        let s: BandwidthSchedule = "08:00,20Mbit 18:00,off sat-08:00,off".parse().unwrap();
        assert_eq!(s.rate_at(day(2, 9, 0)), Some(2_500_000));
        assert_eq!(s.rate_at(day(5, 9, 0)), None);
        assert_eq!(s.rate_at(day(6, 9, 0)), Some(2_500_000));
        assert!("Moo-08:00,1M".parse::<BandwidthSchedule>().is_err());
        assert!(
            "Mon-08:00,1M mon-08:00,2M"
                .parse::<BandwidthSchedule>()
                .is_err()
        );
    }

    #[test]
    fn the_timetable_follows_daylight_saving_in_a_tz_database_zone() {
        use time::macros::datetime;
        // Berlin: CET (+1) until 2026-03-29 01:00 UTC, CEST (+2) after, CET again from
        // 2026-10-25 01:00 UTC. An offset read once at a winter start would put 08:00 at
        // 07:00 UTC all summer.
        let l = RateLimiter::new(
            Some("08:00,1M 18:00,off".parse().unwrap()),
            SiteZone::new(ZoneSource::Named("Europe/Berlin".into())),
        );
        let limited = Some(1024 * 1024);
        assert_eq!(
            l.rate_at(datetime!(2026-03-28 06:59 UTC)),
            None,
            "07:59 CET"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-03-28 07:00 UTC)),
            limited,
            "08:00 CET"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-03-29 05:59 UTC)),
            None,
            "07:59 CEST"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-03-29 06:00 UTC)),
            limited,
            "08:00 CEST"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-03-29 16:00 UTC)),
            None,
            "18:00 CEST"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-10-26 06:59 UTC)),
            None,
            "07:59 CET"
        );
        assert_eq!(
            l.rate_at(datetime!(2026-10-26 07:00 UTC)),
            limited,
            "08:00 CET"
        );
    }

    #[test]
    fn an_unreadable_zone_runs_the_timetable_in_utc() {
        use time::macros::datetime;
        let zone = SiteZone::new(ZoneSource::Named("Nowhere/Atlantis".into()));
        assert_eq!(
            zone.offset_at(datetime!(2026-07-01 12:00 UTC)),
            UtcOffset::UTC
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limits_to_the_rate() {
        let l = RateLimiter::new(
            Some("1M".parse().unwrap()),
            SiteZone::new(ZoneSource::Named("UTC".into())),
        );
        let t0 = tokio::time::Instant::now();
        // The 1 MiB burst is free; the next 4 MiB take 4 s at 1 MiB/s.
        for _ in 0..20 {
            l.acquire(256 * 1024).await;
        }
        let took = t0.elapsed().as_secs_f64();
        assert!((3.9..4.1).contains(&took), "{took}");
    }
}
