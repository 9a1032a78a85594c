//! `clock_skew`: this host's clock is minutes from the store's. Signatures carry the time and
//! S3 refuses them past 15 minutes; this fires at 5, while uploads still flow, so NTP is
//! fixed before every request is refused (then `auth_failure` names the clock).

use super::Context;
use crate::{Evidence, Finding, Kind, Severity, Signal, Store};

/// A skew this large opens the incident.
pub const CLOCK_SKEW_WARNING_SECONDS: i64 = 300;

/// Finds a latest skew reading of [`CLOCK_SKEW_WARNING_SECONDS`] or more.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let readings: Vec<(u64, i64)> = store
        .iter()
        .filter_map(|o| match o.signal {
            Signal::ClockSkew { seconds } => Some((o.at_ms, seconds)),
            _ => None,
        })
        .collect();
    let &(last_at, seconds) = readings.last()?;
    if seconds.abs() < CLOCK_SKEW_WARNING_SECONDS {
        return None;
    }
    // The run of large readings up to now: when the clock went off, as far as the store knows.
    let onset = readings
        .iter()
        .rev()
        .take_while(|(_, s)| s.abs() >= CLOCK_SKEW_WARNING_SECONDS)
        .last()
        .map_or(last_at, |&(at, _)| at);
    let (whose, by) = if seconds > 0 {
        ("behind", seconds)
    } else {
        ("ahead of", -seconds)
    };
    Some(Finding {
        kind: Kind::ClockSkew,
        subject: "clock".into(),
        severity: Severity::Warning,
        started_at_ms: onset,
        root_cause: format!(
            "this host's clock is {by} s {whose} the store's (since {}); the store refuses every request past 900 s",
            ctx.hms(onset)
        ),
        evidence: vec![Evidence::new(
            last_at,
            format!("store Date {seconds:+} s from this host's clock"),
        )],
        fix: vec![
            "chronyc tracking".into(),
            "timedatectl status".into(),
            "# turn NTP on (chrony, or systemd-timesyncd: timedatectl set-ntp true) and check the NTP servers are reachable".into(),
        ],
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn skew(seconds: i64) -> Signal {
        Signal::ClockSkew { seconds }
    }

    #[test]
    fn five_minutes_off_opens_and_a_fixed_clock_closes() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", skew(2));
        assert!(run_rule(&tl.obs, "10:00:01", evaluate).is_none());
        tl.push("10:01:00", skew(-400));
        tl.push("10:02:00", skew(-410));
        let f = run_rule(&tl.obs, "10:02:01", evaluate).unwrap();
        assert_eq!(f.started_at_ms, t("10:01:00"));
        assert!(
            f.root_cause
                .starts_with("this host's clock is 410 s ahead of the store's"),
            "{}",
            f.root_cause
        );
        assert_eq!(f.fix[0], "chronyc tracking");
        tl.push("10:03:00", skew(1));
        assert!(run_rule(&tl.obs, "10:03:01", evaluate).is_none());
    }
}
