//! `disk_pressure`: the spool disk is filling. Warning past the warning watermark or when full
//! within two hours; critical past the critical watermark or when full within 30 minutes —
//! the point where the backlog an outage builds is about to be lost.

use super::{Context, fmt_duration, latest_disk};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store};

/// Finds a spool disk that is full or filling fast.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let s = ctx.settings;
    let level = |used: f64, ttf: Option<u64>| {
        let soon = |limit| ttf.is_some_and(|t| t < limit);
        if used >= s.disk_critical_percent || soon(s.disk_critical_time_to_full_seconds) {
            Some(Severity::Critical)
        } else if used >= s.disk_warning_percent || soon(s.disk_warning_time_to_full_seconds) {
            Some(Severity::Warning)
        } else {
            None
        }
    };
    let (at, used, ttf) = latest_disk(store, ctx)?;
    let severity = level(used, ttf)?;
    // The pressure began with the earliest report of the current unbroken run.
    let mut onset = at;
    for o in store.iter().rev() {
        if let Signal::Disk {
            used_percent,
            seconds_to_full,
            ..
        } = o.signal
        {
            if o.at_ms > at {
                continue;
            }
            if level(used_percent, seconds_to_full).is_none() {
                break;
            }
            onset = o.at_ms;
        }
    }
    let full = ttf.map_or("not filling".into(), |t| {
        format!("full in {} at the current fill rate", fmt_duration(t))
    });
    let text = format!("spool disk {used:.0}% used, {full}");
    Some(Finding {
        kind: Kind::DiskPressure,
        subject: "spool".into(),
        severity,
        started_at_ms: onset,
        root_cause: text.clone(),
        evidence: vec![
            Evidence::new(onset, "spool disk pressure began"),
            Evidence::new(at, text),
        ],
        fix: vec![
            "# fix whatever stops uploads (see the other open incidents); chunks are kept \
             until uploaded. Or free space on the spool filesystem, or raise its size:"
                .into(),
            "backhaul status".into(),
        ],
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn time_to_full_drives_severity() {
        let mut tl = Timeline::new();
        tl.push("08:00:00", disk(52.0, None));
        assert!(run_rule(&tl.obs, "08:00:01", evaluate).is_none());
        tl.push("08:01:00", disk(60.0, Some(3 * 3600)));
        assert!(run_rule(&tl.obs, "08:01:01", evaluate).is_none());
        tl.push("08:02:00", disk(61.0, Some(3600)));
        let f = run_rule(&tl.obs, "08:02:01", evaluate).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        tl.push("08:03:00", disk(70.0, Some(720)));
        let f = run_rule(&tl.obs, "08:03:01", evaluate).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.started_at_ms, t("08:02:00"));
        assert_eq!(
            f.root_cause,
            "spool disk 70% used, full in 12 min at the current fill rate"
        );
    }
}
