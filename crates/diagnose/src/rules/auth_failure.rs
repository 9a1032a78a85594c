//! `auth_failure`: the store refuses us — credentials rejected or missing, or the bucket does
//! not exist. Uploads stop until an operator acts (the uploader's bucket gate retries rarely),
//! so it stays open until uploads flow again.

use super::{Context, disk_escalation, last_flowing};
use crate::{Evidence, Finding, Kind, Severity, Signal, Store, UploadErrorClass};

/// Picks up changed credentials (the agent reads them at start).
const RESTART: &str = "systemctl restart backhaul";

/// Finds credential and bucket refusals not followed by a successful upload.
pub fn evaluate(store: &Store, ctx: &Context<'_>) -> Option<Finding> {
    let since = last_flowing(store).map_or(0, |at| at + 1);
    let errors: Vec<(u64, UploadErrorClass)> = store
        .since(since)
        .filter_map(|o| match o.signal {
            Signal::UploadError { class } if class.is_auth() => Some((o.at_ms, class)),
            _ => None,
        })
        .collect();
    let &(onset, _) = errors.first()?;
    let &(last_at, class) = errors.last()?;
    let (what, fix): (&str, &[&str]) = match class {
        UploadErrorClass::NoSuchBucket => (
            "the bucket does not exist",
            &[
                "# create the bucket, or correct upload.bucket in the config; then:",
                RESTART,
            ],
        ),
        UploadErrorClass::Credentials => (
            "no credentials were found",
            &[
                "# give the agent credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in a \
                 drop-in, a profile in /var/lib/backhaul/.aws, or the instance role); then:",
                RESTART,
            ],
        ),
        UploadErrorClass::ClockSkew => (
            "the store refuses our requests because this host's clock is off by more than 15 minutes",
            &[
                "chronyc tracking",
                "timedatectl status",
                "# fix the system clock, not the credentials: enable NTP (chrony or \
                 systemd-timesyncd)",
            ],
        ),
        UploadErrorClass::Auth
        | UploadErrorClass::Connection
        | UploadErrorClass::Timeout
        | UploadErrorClass::Stall
        | UploadErrorClass::Server5xx
        | UploadErrorClass::SlowDown
        | UploadErrorClass::Tls
        | UploadErrorClass::Other => (
            "the store rejects our credentials",
            &[
                "# check the access key, its expiry and its policy (s3:PutObject, \
                 s3:AbortMultipartUpload, s3:ListMultipartUploadParts); then:",
                RESTART,
            ],
        ),
    };
    let mut evidence = vec![Evidence::new(
        onset,
        format!("upload refused ({})", errors[0].1.as_str()),
    )];
    if errors.len() > 1 {
        evidence.push(Evidence::new(
            last_at,
            format!("{} refusals, the latest {}", errors.len(), class.as_str()),
        ));
    }
    let (severity, disk) = disk_escalation(store, ctx, Severity::Warning);
    evidence.extend(disk);
    evidence.sort();
    Some(Finding {
        kind: Kind::AuthFailure,
        subject: "credentials".into(),
        severity,
        started_at_ms: onset,
        root_cause: format!(
            "{what} ({}) since {}; uploads paused, chunks kept in the spool",
            class.as_str(),
            ctx.hms(onset)
        ),
        evidence,
        fix: fix.iter().map(|l| (*l).to_owned()).collect(),
        change: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::*;

    #[test]
    fn refusal_opens_and_a_successful_upload_closes() {
        let mut tl = Timeline::new();
        tl.push("10:00:00", rate(40.0));
        tl.push("10:01:00", upload_error("auth"));
        let f = run_rule(&tl.obs, "10:01:01", evaluate).unwrap();
        assert_eq!(
            f.root_cause,
            "the store rejects our credentials (auth) since 10:01:00; uploads paused, chunks \
             kept in the spool"
        );
        tl.push("10:05:00", rate(40.0));
        assert!(run_rule(&tl.obs, "10:05:01", evaluate).is_none());
    }

    /// A clock two years off used to read as "check the credentials".
    #[test]
    fn a_skewed_clock_is_reported_as_a_clock_problem() {
        let mut tl = Timeline::new();
        tl.push("10:01:00", upload_error("clock_skew"));
        let f = run_rule(&tl.obs, "10:01:01", evaluate).unwrap();
        assert!(f.root_cause.contains("clock"), "{}", f.root_cause);
        assert!(f.fix[0].contains("chronyc"), "{:?}", f.fix);
        assert!(!f.fix[0].contains("access key"), "{:?}", f.fix);
    }
}
