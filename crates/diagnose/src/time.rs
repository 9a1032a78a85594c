//! Mapping the caller's millisecond timestamps to UTC wall-clock text, without a clock.

/// Maps the engine's timestamps (milliseconds since an epoch the caller chose) to UTC.
///
/// `unix_ms_at_zero` is the Unix time in milliseconds of timestamp 0. An agent that passes
/// Unix milliseconds directly uses [`TimeBase::UNIX`]; one that counts from a monotonic start
/// passes the Unix time it started at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeBase {
    /// Unix time (ms) of timestamp 0.
    pub unix_ms_at_zero: u64,
}

impl TimeBase {
    /// Timestamps are Unix milliseconds.
    pub const UNIX: TimeBase = TimeBase { unix_ms_at_zero: 0 };

    /// A time base whose timestamp 0 is `unix_ms_at_zero`.
    pub fn new(unix_ms_at_zero: u64) -> Self {
        Self { unix_ms_at_zero }
    }

    /// Unix milliseconds of `at_ms`.
    pub fn unix_ms(&self, at_ms: u64) -> u64 {
        self.unix_ms_at_zero.saturating_add(at_ms)
    }

    /// `HH:MM:SS` (UTC) of `at_ms`, as used in root-cause sentences and evidence lines.
    pub fn hms(&self, at_ms: u64) -> String {
        let secs = self.unix_ms(at_ms) / 1000;
        let day = secs % 86_400;
        format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
    }

    /// RFC 3339 UTC timestamp (`2025-11-12T08:15:03Z`) of `at_ms`, for alert payloads.
    pub fn rfc3339(&self, at_ms: u64) -> String {
        let secs = self.unix_ms(at_ms) / 1000;
        let (y, m, d) = civil_from_days(secs / 86_400);
        format!("{y:04}-{m:02}-{d:02}T{}Z", self.hms(at_ms))
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days` for the
/// non-negative days a `u64` Unix time can have.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_wall_clock() {
        // 2025-11-12T08:15:03Z
        let unix_ms = 1_762_935_303_000;
        assert_eq!(TimeBase::UNIX.hms(unix_ms), "08:15:03");
        assert_eq!(TimeBase::UNIX.rfc3339(unix_ms), "2025-11-12T08:15:03Z");
        let base = TimeBase::new(unix_ms - 3_000);
        assert_eq!(base.hms(3_000), "08:15:03");
        assert_eq!(TimeBase::UNIX.rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            TimeBase::UNIX.rfc3339(951_782_400_000),
            "2000-02-29T00:00:00Z"
        );
    }
}
