//! What the store guarantees by itself, found out once at start: whether it refuses a taken
//! key under `If-None-Match: *` (conditional writes), and whether it refuses a PutObject or
//! an UploadPart whose `x-amz-checksum-crc32c` does not match the bytes. Where it does not
//! validate checksums, every part's MD5 is computed locally and compared with the ETag the
//! store returns, so corruption in transit is found before anything is marked verified.

use std::sync::RwLock;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use backhaul_telemetry::Metrics;

use crate::body::ReqBody;
use crate::progress::Deadline;
use crate::s3::S3Client;
use crate::{Error, ErrorClass};

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProfile {
    /// A second PutObject of a key under `If-None-Match: *` was refused with 412.
    pub conditional_writes: bool,
    /// A PutObject with a wrong CRC32C was refused.
    pub put_checksum_validated: bool,
    /// An UploadPart with a wrong CRC32C was refused.
    pub part_checksum_validated: bool,
}

impl StoreProfile {
    /// Until the probe has run: assume nothing.
    pub const UNKNOWN: Self = Self {
        conditional_writes: false,
        put_checksum_validated: false,
        part_checksum_validated: false,
    };

    /// Whether parts and objects carry a local MD5 that is compared with the store's ETag.
    pub fn md5_checked(&self) -> bool {
        !(self.put_checksum_validated && self.part_checksum_validated)
    }

    /// One line for the log and `/status`.
    pub fn describe(&self) -> String {
        let integrity = if self.md5_checked() {
            "the store does not validate CRC32C on every request: each part's MD5 is compared with its ETag"
        } else {
            "the store validates CRC32C on every request"
        };
        let writes = if self.conditional_writes {
            "a taken key is refused by the store (If-None-Match)"
        } else {
            "the store ignores If-None-Match: each key is checked with HeadObject before writing"
        };
        format!("{integrity}; {writes}")
    }
}

/// The profile, shared by every upload task.
#[derive(Debug)]
pub struct Integrity {
    profile: RwLock<Option<StoreProfile>>,
}

impl Default for Integrity {
    fn default() -> Self {
        Self {
            profile: RwLock::new(None),
        }
    }
}

impl Integrity {
    /// The probed profile, or the cautious one before the probe.
    pub fn profile(&self) -> StoreProfile {
        self.probed().unwrap_or(StoreProfile::UNKNOWN)
    }

    /// The probed profile, `None` before the probe ran.
    pub fn probed(&self) -> Option<StoreProfile> {
        *self.profile.read().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, p: StoreProfile) {
        *self.profile.write().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }
}

/// A checksum that is certainly wrong for the probe's body.
const WRONG_CRC32C: &str = "AAAAAA==";
const PROBE_BODY: &[u8] = b"backhaul integrity probe";

fn crc_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(data).to_be_bytes())
}

const PROBE_ATTEMPTS: u32 = 8;

async fn answered<T, F, Fut>(metrics: &Metrics, f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    crate::retry::transient(metrics, PROBE_ATTEMPTS, f).await
}

/// Whether a request refused for its checksum failed the way a validating store fails.
fn refused_for_checksum<T>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(e) if matches!(e.class(), ErrorClass::Checksum | ErrorClass::Client4xx))
}

/// Where under the site's key prefix the probe writes its scratch objects.
const SCRATCH_DIR: &str = ".backhaul-probe/";

/// Whether `key` is one of the probe's scratch objects under `prefix` (the orphan sweep
/// leaves the probe's own multipart upload to the probe).
pub(crate) fn is_scratch(prefix: &str, key: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with(SCRATCH_DIR))
}

/// Runs the probe under `prefix` (the site's key prefix) with scratch keys it deletes again,
/// and stores the result. Errors that are not answers (connection, auth) are returned; the
/// caller tries again later and keeps the cautious profile meanwhile.
pub async fn probe(
    client: &S3Client,
    integrity: &Integrity,
    metrics: &Metrics,
    prefix: &str,
    timeout: std::time::Duration,
) -> Result<StoreProfile, Error> {
    let tag = format!("{:016x}", fastrand::u64(..));
    let scratch = |what: &str| format!("{prefix}{SCRATCH_DIR}{tag}-{what}");
    let deadline = || Deadline::Total(timeout);
    let body = || ReqBody::bytes(bytes::Bytes::from_static(PROBE_BODY));
    let good = crc_b64(PROBE_BODY);

    let key = scratch("conditional");
    // A first write whose answer was lost comes back as 412 on its retry; either way the
    // scratch object now exists.
    match answered(metrics, || {
        client.put_object(&key, body(), &good, None, deadline())
    })
    .await
    {
        Err(e) if e.class() != ErrorClass::Precondition => return Err(e),
        _ => {}
    }
    let second = answered(metrics, || {
        client.put_object(&key, body(), &good, None, deadline())
    })
    .await;
    let conditional_writes = match second {
        Ok(_) => false,
        Err(e) if e.class() == ErrorClass::Precondition => true,
        Err(e)
            if matches!(
                e.class(),
                ErrorClass::Client4xx | ErrorClass::NotImplemented
            ) =>
        {
            false
        }
        Err(e) => return Err(e),
    };

    let bad_key = scratch("put-checksum");
    let put = answered(metrics, || {
        client.put_object(&bad_key, body(), WRONG_CRC32C, None, deadline())
    })
    .await;
    let put_checksum_validated = refused_for_checksum(&put);

    let part_key = scratch("part-checksum");
    let uid = answered(metrics, || client.create_multipart(&part_key)).await?;
    let part = answered(metrics, || {
        client.upload_part(&part_key, &uid, 1, body(), WRONG_CRC32C, None, deadline())
    })
    .await;
    let part_checksum_validated = refused_for_checksum(&part);
    if let Err(e) = answered(metrics, || client.abort(&part_key, &uid)).await {
        metrics.errors.inc(e.class().as_str());
        tracing::warn!(key = ?part_key, error = %e, "integrity probe: could not abort its scratch upload");
    }
    // Some stores keep the bytes of a refused PutObject; both scratch objects go.
    for k in [&key, &bad_key] {
        if let Err(e) = answered(metrics, || client.delete_object(k)).await {
            metrics.errors.inc(e.class().as_str());
            tracing::warn!(key = ?k, error = %e,
                "integrity probe: could not delete its scratch object (no s3:DeleteObject?); a lifecycle rule on the prefix's .backhaul-probe/ can expire it");
        }
    }
    let profile = StoreProfile {
        conditional_writes,
        put_checksum_validated,
        part_checksum_validated,
    };
    integrity.set(profile);
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a key template that has no fixed prefix the scratch objects sit at the bucket's
    /// top level; a `contains("/.backhaul-probe/")` test missed those.
    #[test]
    fn scratch_objects_are_recognised_under_any_prefix_and_only_there() {
        assert!(is_scratch(
            "SITE-2847/",
            "SITE-2847/.backhaul-probe/00ab-put"
        ));
        assert!(is_scratch("", ".backhaul-probe/00ab-part"));
        assert!(!is_scratch(
            "SITE-2847/",
            "SITE-2847/cam1/.backhaul-probe/x"
        ));
        assert!(!is_scratch("SITE-2847/", "OTHER/.backhaul-probe/x"));
    }
}
