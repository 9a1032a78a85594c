//! Proving that an object in the bucket holds exactly the file's bytes, before the file may be
//! deleted. Every PutObject and CompleteMultipartUpload is followed by a HeadObject: a size or
//! checksum that disagrees means the object is wrong. Whether an agreeing HeadObject also
//! proves the bytes depends on the store ([`StoreProfile`]): a CRC32C counts only where the
//! store refuses a wrong one (otherwise it may just echo ours), an ETag only where it is the MD5
//! of bytes the agent read. Where HeadObject proves nothing (or with `upload.verify =
//! "read-back"`) the object is read back a part at a time and its CRC32C compared with the
//! file's; with `upload.verify = "head"` it is instead left unproven and the file kept. Size
//! alone never proves anything.

use backhaul_spool::PartRecord;

use crate::Error;
use crate::chunk::{ChunkUploader, b64, hex_md5, is_md5_etag, multipart_etag};
use crate::config::VerifyMode;
use crate::integrity::{HeadProof, StoreProfile};
use crate::s3::ObjectHead;

/// What the object must be, from what the agent read from the file.
#[derive(Debug)]
pub(crate) enum Expected<'a> {
    /// One PutObject: the file's CRC32C (base64) and, where computed, its MD5.
    Single { crc: &'a str, md5: Option<[u8; 16]> },
    /// A multipart upload: its parts (ranges of the file, ETags the store gave, CRC32Cs of the
    /// file's bytes) and their composite CRC32C (`…-N`).
    Multipart {
        parts: &'a [PartRecord],
        composite: &'a str,
    },
}

/// The object is not (or not only) the file's bytes.
#[derive(Debug)]
pub(crate) struct Mismatch {
    /// What disagreed.
    pub detail: String,
    /// Whether an object is there at all (a wrong one this agent just made is deleted).
    pub present: bool,
}

/// What a HeadObject says about the object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It holds exactly the expected bytes.
    Proven(HeadProof),
    /// It cannot hold them.
    Wrong(String),
    /// The size is right; nothing the store returned tells more.
    Unproven(String),
}

/// Judges `head` against `expected` on a store with `profile`.
pub(crate) fn judge_head(
    profile: &StoreProfile,
    size: u64,
    head: &ObjectHead,
    expected: &Expected<'_>,
) -> Verdict {
    if head.size != size {
        return Verdict::Wrong(format!("size {} != {size}", head.size));
    }
    match expected {
        Expected::Single { crc, md5 } => {
            let stored = head.crc32c.as_deref().filter(|c| !c.contains('-'));
            if let Some(c) = stored
                && c != *crc
            {
                return Verdict::Wrong(format!("CRC32C {c} != {crc}"));
            }
            let md5 = md5.map(|m| hex_md5(&m));
            if let Some(m) = &md5
                && is_md5_etag(&head.etag)
                && head.etag != *m
            {
                return Verdict::Wrong(format!("ETag {} != MD5 {m}", head.etag));
            }
            if profile.put_checksum_validated && stored == Some(*crc) {
                Verdict::Proven(HeadProof::Crc32c)
            } else if md5.is_some_and(|m| head.etag == m) {
                Verdict::Proven(HeadProof::Md5Etag)
            } else {
                Verdict::Unproven(format!(
                    "HeadObject shows neither a CRC32C the store validated nor the file's MD5 as ETag (ETag {:?}, CRC32C {:?})",
                    head.etag, head.crc32c
                ))
            }
        }
        Expected::Multipart { parts, composite } => {
            let n = parts.len();
            let stored = head
                .crc32c
                .as_deref()
                .filter(|c| c.ends_with(&format!("-{n}")));
            if let Some(c) = stored
                && c != *composite
            {
                return Verdict::Wrong(format!("composite CRC32C {c} != {composite}"));
            }
            let etags: Vec<String> = parts.iter().map(|p| p.etag.clone()).collect();
            let etag = multipart_etag(&etags).filter(|_| is_multipart_md5_etag(&head.etag));
            if let Some(e) = &etag
                && head.etag != *e
            {
                return Verdict::Wrong(format!("ETag {} != {e}", head.etag));
            }
            // Part ETags are the agent's own MD5s only where they were compared with them
            // (MD5 ETags) or the store validated each part's CRC32C before computing them.
            if profile.part_checksum_validated && stored == Some(*composite) {
                Verdict::Proven(HeadProof::CompositeCrc32c)
            } else if etag.is_some() && (profile.md5_etags || profile.part_checksum_validated) {
                Verdict::Proven(HeadProof::MultipartEtag)
            } else {
                Verdict::Unproven(format!(
                    "HeadObject shows neither a composite CRC32C of validated parts nor a multipart ETag of the parts' MD5s (ETag {:?}, CRC32C {:?})",
                    head.etag, head.crc32c
                ))
            }
        }
    }
}

/// Whether `etag` has the shape of `md5(part MD5s)-N`; opaque multipart ETags compare with
/// nothing.
fn is_multipart_md5_etag(etag: &str) -> bool {
    etag.split_once('-').is_some_and(|(md5, n)| {
        is_md5_etag(md5) && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The ranges a single object is read back in: a part's size at a time, so memory stays at
/// one part per read.
fn ranges(size: u64, step: u64) -> Vec<(u64, u64)> {
    let step = step.max(1);
    (0..size.div_ceil(step))
        .map(|i| (i * step, step.min(size - i * step)))
        .collect()
}

impl ChunkUploader {
    /// HeadObject after `op`, then [`Self::prove`]; a missing object is a mismatch (a 200 alone
    /// proves nothing: some stores acknowledge and drop).
    pub(crate) async fn head_and_prove(
        &self,
        key: &str,
        size: u64,
        expected: &Expected<'_>,
        op: &str,
    ) -> Result<Result<(), Mismatch>, Error> {
        match self.head(key).await? {
            Some(head) => self.prove(key, size, &head, expected).await,
            None => Ok(Err(Mismatch {
                detail: format!("object missing after {op}"),
                present: false,
            })),
        }
    }

    /// Proves the object from its `head`, and by reading it back where the head proves nothing
    /// and the mode allows it (always with `read-back`). A weaker proof is never taken:
    /// under `head` an unprovable object is [`Error::Unproven`] and its file stays.
    pub(crate) async fn prove(
        &self,
        key: &str,
        size: u64,
        head: &ObjectHead,
        expected: &Expected<'_>,
    ) -> Result<Result<(), Mismatch>, Error> {
        let mode = self.integrity.mode();
        match judge_head(&self.integrity.profile(), size, head, expected) {
            Verdict::Wrong(detail) => {
                return Ok(Err(Mismatch {
                    detail,
                    present: true,
                }));
            }
            Verdict::Proven(_) if mode != VerifyMode::ReadBack => return Ok(Ok(())),
            Verdict::Unproven(why) if mode == VerifyMode::Head => {
                self.metrics.upload_unproven.inc();
                return Err(Error::Unproven {
                    key: key.to_owned(),
                    why,
                });
            }
            Verdict::Proven(_) | Verdict::Unproven(_) => {}
        }
        self.metrics.upload_read_backs.inc();
        self.read_back(key, size, expected).await
    }

    /// Reads the object back range by range (each part, or part-sized pieces of a single
    /// object) and compares CRC32Cs with the file's as read for the upload.
    async fn read_back(
        &self,
        key: &str,
        size: u64,
        expected: &Expected<'_>,
    ) -> Result<Result<(), Mismatch>, Error> {
        let ranges = match expected {
            Expected::Single { .. } => ranges(size, self.settings.part_size),
            Expected::Multipart { parts, .. } => parts.iter().map(|p| (p.offset, p.size)).collect(),
        };
        let mut crcs = Vec::with_capacity(ranges.len());
        for &(offset, len) in &ranges {
            let body = self
                .retrying(key, || self.client.get_range(key, offset, len))
                .await?;
            crcs.push(crc32c::crc32c(&body));
        }
        let wrong = |detail: String| {
            Ok(Err(Mismatch {
                detail: format!("read back: {detail}"),
                present: true,
            }))
        };
        match expected {
            Expected::Single { crc, .. } => {
                let whole = ranges.iter().zip(&crcs).fold(0, |acc, (&(_, len), &c)| {
                    crc32c::crc32c_combine(acc, c, len as usize)
                });
                if b64(whole) != *crc {
                    return wrong(format!("CRC32C {} != the file's {crc}", b64(whole)));
                }
            }
            Expected::Multipart { parts, .. } => {
                for (p, c) in parts.iter().zip(&crcs) {
                    if b64(*c) != p.crc32c {
                        return wrong(format!(
                            "part {} (bytes {}..{}) CRC32C {} != the file's {}",
                            p.number,
                            p.offset,
                            p.offset + p.size,
                            b64(*c),
                            p.crc32c
                        ));
                    }
                }
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests;
