//! `credentials_expiring`: the upload credentials could not be refreshed ahead of their
//! expiry. Uploads still flow on the current ones; once they expire every request is refused
//! (`auth_failure`). Critical in the last two minutes.

use super::Context;
use crate::settings::Settings;
use crate::{Evidence, Finding, Kind, Severity, Signal, Store};

/// Within this of expiry the incident is critical.
const CRITICAL_BEFORE_SECONDS: i64 = 120;

/// Finds a latest refresh report that failed.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let reports: Vec<(u64, bool, Option<i64>, Option<&str>)> = store
        .iter()
        .filter_map(|o| match &o.signal {
            Signal::CredentialsRefresh {
                ok,
                expires_in_seconds,
                error,
            } => Some((o.at_ms, *ok, *expires_in_seconds, error.as_deref())),
            _ => None,
        })
        .collect();
    let &(last_at, ok, expires_in, error) = reports.last()?;
    if ok {
        return None;
    }
    let onset = reports
        .iter()
        .rev()
        .take_while(|r| !r.1)
        .last()
        .map_or(last_at, |r| r.0);
    let elapsed = (ctx.now_ms.saturating_sub(last_at) / 1000) as i64;
    let left = expires_in.map(|s| s - elapsed);
    let severity = match left {
        Some(s) if s <= CRITICAL_BEFORE_SECONDS => Severity::Critical,
        Some(_) | None => Severity::Warning,
    };
    let when = match left {
        Some(s) if s > 0 => format!(
            "the current ones expire in {} s, at {}, and uploads stop then",
            s,
            ctx.hms(last_at + Settings::ms(expires_in.unwrap_or(0).max(0) as u64))
        ),
        Some(_) => "the current ones have expired: uploads are refused".to_owned(),
        None => "the current ones do not expire".to_owned(),
    };
    Some(Finding {
        kind: Kind::CredentialsExpiring,
        subject: "credentials".into(),
        severity,
        started_at_ms: onset,
        root_cause: format!(
            "the upload credentials cannot be refreshed since {} ({}); {when}",
            ctx.hms(onset),
            error.unwrap_or("no reason given")
        ),
        evidence: vec![Evidence::new(
            last_at,
            format!("refresh failed: {}", error.unwrap_or("no reason given")),
        )],
        fix: vec![
            "backhaul status".into(),
            "# the credentials line names the source; check it answers (the signing helper, the token exchange service, STS) and that its certificate or token is valid; the agent retries by itself".into(),
        ],
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    fn refresh(ok: bool, expires_in_seconds: Option<i64>) -> Signal {
        Signal::CredentialsRefresh {
            ok,
            expires_in_seconds,
            error: (!ok).then(|| "credential_process `aws_signing_helper` exited with 1".into()),
        }
    }

    #[test]
    fn a_failing_refresh_warns_turns_critical_near_expiry_and_a_success_closes() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", refresh(true, Some(3600)));
        assert!(run_rule(&tl.obs, "10:00:01", evaluate).is_none());
        tl.push("10:55:00", refresh(false, Some(300)));
        let f = run_rule(&tl.obs, "10:55:01", evaluate).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(
            f.root_cause.contains("aws_signing_helper"),
            "{}",
            f.root_cause
        );
        assert!(
            f.root_cause.contains("expire in 299 s, at 11:00:00"),
            "{}",
            f.root_cause
        );
        let f = run_rule(&tl.obs, "10:58:30", evaluate).unwrap();
        assert_eq!(f.severity, Severity::Critical);
        assert_eq!(f.started_at_ms, t("10:55:00"));
        tl.push("10:59:00", refresh(true, Some(3600)));
        assert!(run_rule(&tl.obs, "10:59:01", evaluate).is_none());
    }
}
