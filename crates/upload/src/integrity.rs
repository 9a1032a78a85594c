//! What the store guarantees by itself, found out once at start: whether it refuses a taken
//! key under `If-None-Match: *` (conditional writes), whether it refuses a PutObject or an
//! UploadPart whose `x-amz-checksum-crc32c` does not match the bytes, and whether its ETags
//! are MD5s of the stored bytes. Where it does not validate checksums but gives MD5 ETags,
//! every part's MD5 is computed locally and compared with the ETag the store returns, so
//! corruption in transit is found before anything is marked verified. From the profile and
//! `upload.verify` follows how each object is proven ([`Verification`]); where HeadObject
//! proves nothing, the object is read back.

use std::sync::RwLock;

use base64::Engine as _;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use backhaul_telemetry::Metrics;

use crate::body::ReqBody;
use crate::config::VerifyMode;
use crate::progress::Deadline;
use crate::s3::S3Client;
use crate::{Error, ErrorClass, ErrorFeed};

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProfile {
    /// A second PutObject of a key under `If-None-Match: *` was refused with 412.
    pub conditional_writes: bool,
    /// A PutObject with a wrong CRC32C was refused.
    pub put_checksum_validated: bool,
    /// An UploadPart with a wrong CRC32C was refused.
    pub part_checksum_validated: bool,
    /// The ETag of a plain PutObject is the MD5 of the stored bytes, computed by the store (the
    /// probe sends no Content-MD5). Not so on SSE-KMS-style gateways; and turned off for the
    /// rest of the run the first time an ETag of another shape arrives.
    #[serde(default)]
    pub md5_etags: bool,
}

/// What a HeadObject can prove on a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadProof {
    /// The object's CRC32C, which the store computed over what it stored: it refuses a
    /// PutObject whose CRC32C header does not match the bytes.
    Crc32c,
    /// The composite CRC32C of a multipart object whose parts' CRC32Cs the store validated.
    CompositeCrc32c,
    /// The ETag is the MD5 the agent computed while reading the file.
    Md5Etag,
    /// The ETag is `md5(part MD5s)-N` of parts whose ETags were the agent's own MD5s.
    MultipartEtag,
}

impl HeadProof {
    fn describe(self) -> &'static str {
        match self {
            Self::Crc32c => "HeadObject: size and the CRC32C the store validated",
            Self::CompositeCrc32c => {
                "HeadObject: size and the composite CRC32C of parts the store validated"
            }
            Self::Md5Etag => "HeadObject: size and the ETag, the MD5 of the file",
            Self::MultipartEtag => "HeadObject: size and the multipart ETag of the parts' MD5s",
        }
    }
}

/// How objects of one kind are proven before their files may be deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Proof {
    /// By HeadObject.
    Head(HeadProof),
    /// By reading the object back and comparing its CRC32C with the file's.
    ReadBack,
    /// Not at all (`upload.verify = "head"` on a store whose HeadObject proves nothing): the
    /// files stay in the spool.
    Unproven,
}

impl Proof {
    /// The `mode` label of `backhaul_upload_verify_mode`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Head(_) => "head",
            Self::ReadBack => "read-back",
            Self::Unproven => "none",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Head(h) => h.describe(),
            Self::ReadBack => "read back: the object's CRC32C compared with the file's",
            Self::Unproven => {
                "NOT PROVEN: HeadObject proves nothing on this store and upload.verify = \"head\" forbids reading back; files stay in the spool"
            }
        }
    }

    fn choose(mode: VerifyMode, head: Option<HeadProof>) -> Self {
        match (mode, head) {
            (VerifyMode::ReadBack, _) => Self::ReadBack,
            (VerifyMode::Auto | VerifyMode::Head, Some(h)) => Self::Head(h),
            (VerifyMode::Auto, None) => Self::ReadBack,
            (VerifyMode::Head, None) => Self::Unproven,
        }
    }
}

/// The verification in effect: the configured mode and what it means on this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    /// `upload.verify`.
    pub mode: VerifyMode,
    /// How a PutObject is proven.
    pub put_object: Proof,
    /// How a multipart upload is proven.
    pub multipart: Proof,
}

impl Verification {
    /// What `mode` means on a store with `profile`.
    pub fn of(mode: VerifyMode, profile: &StoreProfile) -> Self {
        Self {
            mode,
            put_object: Proof::choose(mode, profile.put_proof()),
            multipart: Proof::choose(mode, profile.multipart_proof()),
        }
    }

    /// One line for the log and `/status`.
    pub fn describe(&self) -> String {
        format!(
            "verify = \"{}\": PutObject by {}; multipart by {}",
            self.mode.as_str(),
            self.put_object.describe(),
            self.multipart.describe()
        )
    }
}

impl StoreProfile {
    /// Until the probe has run: assume nothing.
    pub const UNKNOWN: Self = Self {
        conditional_writes: false,
        put_checksum_validated: false,
        part_checksum_validated: false,
        md5_etags: false,
    };

    /// Whether a PutObject carries its MD5, to be compared with the ETag: only where the
    /// store does not validate the CRC32C and its ETags are MD5s (elsewhere the MD5 would
    /// prove nothing and cost a hash of every byte).
    pub fn put_md5(&self) -> bool {
        !self.put_checksum_validated && self.md5_etags
    }

    /// [`Self::put_md5`] for UploadPart.
    pub fn part_md5(&self) -> bool {
        !self.part_checksum_validated && self.md5_etags
    }

    /// Whether parts and objects carry a local MD5 that is compared with the store's ETag.
    pub fn md5_checked(&self) -> bool {
        self.put_md5() || self.part_md5()
    }

    /// What a HeadObject after a PutObject can prove on this store.
    pub fn put_proof(&self) -> Option<HeadProof> {
        if self.put_checksum_validated {
            Some(HeadProof::Crc32c)
        } else if self.md5_etags {
            Some(HeadProof::Md5Etag)
        } else {
            None
        }
    }

    /// What a HeadObject after a CompleteMultipartUpload can prove on this store.
    pub fn multipart_proof(&self) -> Option<HeadProof> {
        if self.part_checksum_validated {
            Some(HeadProof::CompositeCrc32c)
        } else if self.md5_etags {
            Some(HeadProof::MultipartEtag)
        } else {
            None
        }
    }

    /// One line for the log and `/status`.
    pub fn describe(&self) -> String {
        let integrity = match (
            self.put_checksum_validated && self.part_checksum_validated,
            self.md5_checked(),
        ) {
            (true, _) => "the store validates CRC32C on every request",
            (false, true) => {
                "the store does not validate CRC32C on every request: each part's MD5 is compared with its ETag"
            }
            (false, false) => {
                "the store does not validate CRC32C on every request and its ETags are not MD5s: corruption in transit is only found by reading back"
            }
        };
        let writes = if self.conditional_writes {
            "a taken key is refused by the store (If-None-Match)"
        } else {
            "the store ignores If-None-Match: each key is checked with HeadObject before writing"
        };
        format!("{integrity}; {writes}")
    }
}

/// The profile and the verification mode, shared by every upload task and `/status`.
#[derive(Debug)]
pub struct Integrity {
    mode: VerifyMode,
    profile: RwLock<Option<StoreProfile>>,
}

impl Integrity {
    /// Before the probe, with `upload.verify = mode`.
    pub fn new(mode: VerifyMode) -> Self {
        Self {
            mode,
            profile: RwLock::new(None),
        }
    }

    /// `upload.verify`.
    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// The probed profile, or the cautious one before the probe.
    pub fn profile(&self) -> StoreProfile {
        self.probed().unwrap_or(StoreProfile::UNKNOWN)
    }

    /// The probed profile, `None` before the probe ran.
    pub fn probed(&self) -> Option<StoreProfile> {
        *self.profile.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The verification in effect, `None` before the probe ran.
    pub fn verification(&self) -> Option<Verification> {
        self.probed().map(|p| Verification::of(self.mode, &p))
    }

    fn set(&self, p: StoreProfile, metrics: &Metrics) {
        *self.profile.write().unwrap_or_else(|p| p.into_inner()) = Some(p);
        self.publish(metrics);
    }

    /// An ETag that is not an MD5 arrived for a plain object or part (a gateway started
    /// encrypting, a proxy rewrites them): from now on ETags prove nothing, and what relied
    /// on them is proven by reading back (or not at all under `verify = "head"`). Said once.
    pub(crate) fn etag_not_md5(&self, key: &str, etag: &str, metrics: &Metrics) {
        let mut guard = self.profile.write().unwrap_or_else(|p| p.into_inner());
        let Some(p) = guard.as_mut().filter(|p| p.md5_etags) else {
            return;
        };
        p.md5_etags = false;
        let v = Verification::of(self.mode, p);
        drop(guard);
        self.publish(metrics);
        tracing::warn!(key = ?key, etag = %etag, verification = %v.describe(),
            "the store's ETags are no longer MD5s of the bytes; they prove nothing from now on");
    }

    fn publish(&self, metrics: &Metrics) {
        if let Some(v) = self.verification() {
            metrics.set_verify_modes(&[
                ("put_object", v.put_object.label()),
                ("multipart", v.multipart.label()),
            ]);
        }
    }
}

/// A checksum that is certainly wrong for the probe's body.
const WRONG_CRC32C: &str = "AAAAAA==";
const PROBE_BODY: &[u8] = b"backhaul integrity probe";

fn crc_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(data).to_be_bytes())
}

const PROBE_ATTEMPTS: u32 = 8;

async fn answered<T, F, Fut>(errors: &ErrorFeed, f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    crate::retry::transient(errors, PROBE_ATTEMPTS, f).await
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
    errors: &ErrorFeed,
    metrics: &Metrics,
    prefix: &str,
    timeout: std::time::Duration,
) -> Result<StoreProfile, Error> {
    let tag = format!("{:016x}", fastrand::u64(..));
    let scratch = |what: &str| format!("{prefix}{SCRATCH_DIR}{tag}-{what}");
    let deadline = || Deadline::Total(timeout);
    let body = || ReqBody::bytes(bytes::Bytes::from_static(PROBE_BODY));
    let good = crc_b64(PROBE_BODY);

    // A killed probe leaves its scratch objects behind; nothing else ever deletes them.
    sweep_scratch(client, errors, prefix).await;

    let key = scratch("conditional");
    // A first write whose answer was lost comes back as 412 on its retry; either way the
    // scratch object now exists.
    match answered(errors, || {
        client.put_object(&key, body(), &good, None, deadline())
    })
    .await
    {
        Err(e) if e.class() != ErrorClass::Precondition => return Err(e),
        _ => {}
    }
    let second = answered(errors, || {
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

    // The probe sends no Content-MD5, so an ETag equal to the body's MD5 was computed by the
    // store over what it stored.
    let body_md5 = crate::sigv4::hex(&Md5::digest(PROBE_BODY));
    let md5_etags = answered(errors, || client.head_object(&key))
        .await?
        .is_some_and(|h| h.etag == body_md5);

    let bad_key = scratch("put-checksum");
    let put = answered(errors, || {
        client.put_object(&bad_key, body(), WRONG_CRC32C, None, deadline())
    })
    .await;
    let put_checksum_validated = refused_for_checksum(&put);

    let part_key = scratch("part-checksum");
    let uid = answered(errors, || client.create_multipart(&part_key)).await?;
    let part = answered(errors, || {
        client.upload_part(&part_key, &uid, 1, body(), WRONG_CRC32C, None, deadline())
    })
    .await;
    let part_checksum_validated = refused_for_checksum(&part);
    if let Err(e) = answered(errors, || client.abort(&part_key, &uid)).await {
        errors.record(e.class());
        tracing::warn!(key = ?part_key, error = %e, "integrity probe: could not abort its scratch upload");
    }
    // Some stores keep the bytes of a refused PutObject; both scratch objects go.
    for k in [&key, &bad_key] {
        if let Err(e) = answered(errors, || client.delete_object(k)).await {
            errors.record(e.class());
            tracing::warn!(key = ?k, error = %e,
                "integrity probe: could not delete its scratch object (no s3:DeleteObject?); a lifecycle rule on the prefix's .backhaul-probe/ can expire it");
        }
    }
    let profile = StoreProfile {
        conditional_writes,
        put_checksum_validated,
        part_checksum_validated,
        md5_etags,
    };
    integrity.set(profile, metrics);
    Ok(profile)
}

/// Deletes every object under the probe's scratch directory: those of probes killed before
/// they cleaned up. Failures are logged; they cost storage, never a recording.
async fn sweep_scratch(client: &S3Client, errors: &ErrorFeed, prefix: &str) {
    let dir = format!("{prefix}{SCRATCH_DIR}");
    let keys = match answered(errors, || client.list_objects(&dir)).await {
        Ok(k) => k,
        Err(e) => {
            errors.record(e.class());
            tracing::warn!(prefix = ?dir, error = %e,
                "integrity probe: cannot list leftover scratch objects (no s3:ListBucket?); a lifecycle rule on the prefix can expire them");
            return;
        }
    };
    for k in keys.iter().filter(|k| is_scratch(prefix, k)) {
        match answered(errors, || client.delete_object(k)).await {
            Ok(()) => {
                tracing::info!(key = ?k, "integrity probe: deleted a scratch object a killed probe left")
            }
            Err(e) => {
                errors.record(e.class());
                tracing::warn!(key = ?k, error = %e, "integrity probe: could not delete a leftover scratch object");
            }
        }
    }
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
