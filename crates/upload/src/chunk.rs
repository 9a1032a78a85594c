//! Uploading one chunk: a single PutObject for small chunks, otherwise a multipart upload that
//! resumes from the parts the journal and the server agree on, then verification.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use backhaul_spool::{Chunk, Claim, PartRecord, Spool, identity_of};
use backhaul_telemetry::Metrics;
use base64::Engine as _;
use md5::{Digest, Md5};
use tokio::task::JoinSet;

use crate::body::{FileBody, ReqBody, digest_range};
use crate::config::{MAX_PARTS, UploadSettings};
use crate::integrity::Integrity;
use crate::progress::{Deadline, Progress};
use crate::ratelimit::RateLimiter;
use crate::retry::Backoff;
use crate::s3::{ObjectHead, PutAck, S3Client};
use crate::verify::{Expected, Mismatch};
use crate::{Error, ErrorClass};

/// What a successful chunk upload proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The object key it is stored under (a disambiguated one if its own was taken).
    pub key: String,
    /// The checksum recorded in the journal (`crc32c:<base64>[-N]`).
    pub checksum: String,
    /// Bytes sent in this attempt (parts already on the server are not re-sent).
    pub bytes_sent: u64,
    /// Parts reused from before a restart.
    pub parts_resumed: u32,
}

/// Which request carries a byte range.
#[derive(Debug, Clone, Copy)]
enum Request<'a> {
    /// A whole small chunk.
    Put,
    /// One part of a multipart upload.
    Part { uid: &'a str, number: u32 },
}

/// A chunk whose key keeps being taken is not disambiguated forever.
const MAX_DISAMBIGUATIONS: u32 = 32;

/// Uploads chunks; shared by the pipeline's tasks.
#[derive(Debug)]
pub struct ChunkUploader {
    /// The bucket client.
    pub client: Arc<S3Client>,
    /// The spool (journal, paths).
    pub spool: Arc<Spool>,
    /// Settings.
    pub settings: UploadSettings,
    /// Shared bandwidth cap.
    pub limiter: Arc<RateLimiter>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// What the store validates by itself (shared with `/status`).
    pub integrity: Arc<Integrity>,
    /// Whether the store can be reached; pauses end when it answers again.
    pub health: Arc<crate::health::StoreHealth>,
    /// Where every upload error is counted and its class reported (the monitor subscribes).
    pub errors: crate::ErrorFeed,
}

/// A hex MD5, as stores put it in ETags.
pub(crate) fn hex_md5(md5: &[u8; 16]) -> String {
    crate::sigv4::hex(md5)
}

pub(crate) fn is_md5_etag(etag: &str) -> bool {
    etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn b64(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// The CRC32C-of-CRC32Cs S3 reports for a multipart object: `base64(crc32c(be(crc_1)..be(crc_n)))-n`.
pub fn composite_crc32c(part_crcs_b64: &[String]) -> Option<String> {
    let mut raw = Vec::with_capacity(part_crcs_b64.len() * 4);
    for c in part_crcs_b64 {
        raw.extend(base64::engine::general_purpose::STANDARD.decode(c).ok()?);
    }
    Some(format!(
        "{}-{}",
        b64(crc32c::crc32c(&raw)),
        part_crcs_b64.len()
    ))
}

/// The ETag S3-compatible stores give a multipart object whose part ETags are MD5s:
/// `hex(md5(md5_1 .. md5_n))-n`. `None` if a part ETag is not a hex MD5 (e.g. SSE-KMS).
pub fn multipart_etag(part_etags: &[String]) -> Option<String> {
    let mut h = Md5::new();
    for e in part_etags {
        if e.len() != 32 {
            return None;
        }
        let mut raw = [0u8; 16];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(e.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        h.update(raw);
    }
    Some(format!(
        "{}-{}",
        crate::sigv4::hex(&h.finalize()),
        part_etags.len()
    ))
}

/// `n` if `key` is `base` disambiguated as the `n`-th alternative (0 for `base` itself).
fn disambiguation_of(base: &str, key: &str) -> Option<u32> {
    if key == base {
        return Some(0);
    }
    let tilde = key.rfind('~')?;
    let digits: String = key[tilde + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n = digits.parse().ok().filter(|n| *n > 0)?;
    (backhaul_spool::disambiguate(base, n) == key).then_some(n)
}

impl ChunkUploader {
    fn backoff(&self) -> Backoff {
        Backoff {
            base: self.settings.retry_base,
            max: self.settings.retry_max,
        }
    }

    /// The file must still be the discovered version, both by descriptor and by name.
    fn still_same(&self, file: &File, path: &Path, chunk: &Chunk) -> Result<(), Error> {
        let by_fd = file.metadata().map(|m| identity_of(&m)).ok();
        let by_name = std::fs::symlink_metadata(path)
            .map(|m| identity_of(&m))
            .ok();
        if by_fd == Some(chunk.identity) && by_name == Some(chunk.identity) {
            Ok(())
        } else {
            Err(Error::Changed {
                path: path.to_owned(),
            })
        }
    }

    /// Uploads and verifies one chunk. The journal records progress as it goes. A key taken in
    /// the bucket by different content moves the chunk to a disambiguated key; nothing that
    /// is already in the bucket is ever overwritten.
    pub async fn upload(self: &Arc<Self>, claim: &Claim) -> Result<Verified, Error> {
        let claimed = claim.chunk();
        let path = claim.path().to_owned();
        let file = claim.file().map_err(|e| Error::Read {
            path: path.clone(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        })?;
        let size = claimed.identity.size;
        let (base, mut n) = self.base_key(claimed);
        let mut chunk = claimed.clone();
        loop {
            // A chunk whose multipart upload is journaled goes on as one (its finished parts
            // are kept) even if the threshold was raised since.
            let result = if size <= self.settings.multipart_threshold && chunk.upload_id.is_none() {
                self.single(&chunk, file, &path).await
            } else {
                self.multipart(&chunk, file, &path).await
            };
            match result {
                Err(Error::KeyTaken { .. }) if n < MAX_DISAMBIGUATIONS => {
                    let current = self.spool.chunk_by_name(&chunk.name)?.unwrap_or(chunk);
                    (chunk, n) = self.spool.rekey(&current, &base, n)?;
                }
                // A read error is often the file being truncated or replaced under us.
                Err(e @ (Error::Read { .. } | Error::Http { .. })) => {
                    self.still_same(file, &path, &chunk)?;
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// The key the template gives the chunk, and the `~N` its current key carries: a taken key
    /// is disambiguated from the template's key (`…/0815~2.mp4`), never from an already
    /// disambiguated one (`…/0815~1~1.mp4`). A key that is neither (the template changed since
    /// the chunk was journaled) is its own base.
    fn base_key(&self, chunk: &Chunk) -> (String, u32) {
        self.spool
            .template_key(chunk)
            .ok()
            .and_then(|base| disambiguation_of(&base, &chunk.key).map(|n| (base, n)))
            .unwrap_or_else(|| (chunk.key.clone(), 0))
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectHead>, Error> {
        self.retrying(key, || self.client.head_object(key)).await
    }

    async fn single(
        &self,
        chunk: &Chunk,
        file: &Arc<File>,
        path: &Path,
    ) -> Result<Verified, Error> {
        let size = chunk.identity.size;
        let profile = self.integrity.profile();
        if !profile.conditional_writes
            && let Some(head) = self.head(&chunk.key).await?
        {
            return self.already_there(chunk, file, path, &head, size).await;
        }
        let sent = self
            .send_range(
                &chunk.key,
                Request::Put,
                file,
                path,
                0,
                size,
                profile.put_md5(),
            )
            .await;
        let (_, crc, md5) = match sent {
            Ok(v) => v,
            Err(e) if e.class() == ErrorClass::Precondition => {
                let Some(head) = self.head(&chunk.key).await? else {
                    return Err(Error::KeyTaken {
                        key: chunk.key.clone(),
                    });
                };
                // The body went out before the store refused it.
                return self
                    .already_there(chunk, file, path, &head, size)
                    .await
                    .map(|v| Verified {
                        bytes_sent: size,
                        ..v
                    });
            }
            Err(e) => return Err(e),
        };
        self.still_same(file, path, chunk)?;
        let verified = Verified {
            key: chunk.key.clone(),
            checksum: format!("crc32c:{crc}"),
            bytes_sent: size,
            parts_resumed: 0,
        };
        let expected = Expected::Single { crc: &crc, md5 };
        match self
            .head_and_prove(&chunk.key, size, &expected, "PutObject")
            .await?
        {
            Ok(()) => Ok(verified),
            Err(m) => Err(self.discard(&chunk.key, m).await),
        }
    }

    /// An object already has the chunk's key. It is this chunk only if it holds exactly the
    /// file's bytes (a retry after an answer that was lost, or the same recording seen again),
    /// proven like a fresh upload: by HeadObject (MD5 ETag, single or multipart with our part
    /// size, or a CRC32C the store validated), or by reading it back. Otherwise the key is
    /// taken and the chunk goes elsewhere.
    async fn already_there(
        &self,
        chunk: &Chunk,
        file: &Arc<File>,
        path: &Path,
        head: &ObjectHead,
        part_size: u64,
    ) -> Result<Verified, Error> {
        let size = chunk.identity.size;
        let taken = || Error::KeyTaken {
            key: chunk.key.clone(),
        };
        if head.size != size {
            return Err(taken());
        }
        let mut crcs = Vec::new();
        let mut md5s = Vec::new();
        let mut ranges = Vec::new();
        let mut offset = 0;
        loop {
            let len = part_size.min(size - offset);
            let d = digest_range(file.clone(), offset, len, true)
                .await
                .map_err(|e| Error::Read {
                    path: path.to_owned(),
                    source: e,
                })?;
            crcs.push(b64(d.crc32c));
            md5s.push(d.md5);
            ranges.push((offset, len));
            offset += len;
            if offset >= size {
                break;
            }
        }
        let md5s: Vec<[u8; 16]> = md5s.into_iter().flatten().collect();
        let parts: Vec<PartRecord>;
        let composite;
        let (expected, checksum) = if crcs.len() == 1 && !head.etag.contains('-') {
            (
                Expected::Single {
                    crc: &crcs[0],
                    md5: md5s.first().copied(),
                },
                format!("crc32c:{}", crcs[0]),
            )
        } else {
            // The parts as this agent would have sent them; their "ETags" are the file's own
            // MD5s, so a matching multipart ETag proves the bytes.
            parts = ranges
                .iter()
                .zip(crcs.iter().zip(&md5s))
                .enumerate()
                .map(|(i, (&(offset, size), (crc, md5)))| PartRecord {
                    number: i as u32 + 1,
                    offset,
                    size,
                    etag: hex_md5(md5),
                    crc32c: crc.clone(),
                })
                .collect();
            composite = composite_crc32c(&crcs).unwrap_or_default();
            (
                Expected::Multipart {
                    parts: &parts,
                    composite: &composite,
                },
                format!("crc32c:{composite}"),
            )
        };
        if let Err(m) = self.prove(&chunk.key, size, head, &expected).await? {
            tracing::info!(chunk = ?chunk.name, key = ?chunk.key, detail = %m.detail,
                "the object already under this chunk's key holds other bytes; it is kept");
            return Err(taken());
        }
        self.still_same(file, path, chunk)?;
        tracing::info!(chunk = ?chunk.name, key = ?chunk.key,
            "the object already in the bucket holds exactly this chunk's bytes; verified, nothing sent");
        Ok(Verified {
            key: chunk.key.clone(),
            checksum,
            bytes_sent: 0,
            parts_resumed: 0,
        })
    }

    async fn multipart(
        self: &Arc<Self>,
        claimed: &Chunk,
        file: &Arc<File>,
        path: &Path,
    ) -> Result<Verified, Error> {
        let size = claimed.identity.size;
        // S3 allows 10 000 parts; grow the part size for (rare) huge chunks.
        let part_size = self.settings.part_size.max(size.div_ceil(MAX_PARTS));
        let n_parts = size.div_ceil(part_size) as u32;
        let mut chunk = claimed.clone();
        let mut done: Vec<PartRecord> = Vec::new();
        let mut resumed_from_journal = false;
        if let Some(uid) = chunk.upload_id.clone() {
            let jparts = self.spool.parts(&chunk)?;
            if jparts.len() as u32 == n_parts {
                // Killed after CompleteMultipartUpload but before the journal heard of it?
                match self.verify(&chunk, &jparts, n_parts).await {
                    Ok(Ok(v)) => {
                        return Ok(Verified {
                            bytes_sent: 0,
                            parts_resumed: n_parts,
                            ..v
                        });
                    }
                    // Reading back is not allowed and sending again would prove nothing more.
                    Err(e @ Error::Unproven { .. }) => return Err(e),
                    Ok(Err(_)) | Err(_) => {}
                }
            }
            match self
                .retrying(&chunk.key, || self.client.list_parts(&chunk.key, &uid))
                .await
            {
                Ok(server) => {
                    done = jparts
                        .into_iter()
                        .filter(|j| {
                            server.iter().any(|s| {
                                s.number == j.number
                                    && s.size == j.size
                                    && s.etag.as_ref().is_none_or(|e| *e == j.etag)
                            })
                        })
                        .collect();
                    resumed_from_journal = true;
                    tracing::info!(chunk = ?chunk.name, upload_id = %uid, parts_resumed = done.len(),
                        parts_total = n_parts, "resuming multipart upload");
                }
                Err(e) if e.is_no_such_upload() => {
                    chunk = self.spool.forget_upload(&chunk)?;
                }
                Err(e) => return Err(e),
            }
        }
        let parts_resumed = done.len() as u32;
        let uid = match chunk.upload_id.clone() {
            Some(u) => u,
            None => {
                if let Some(head) = self.head(&chunk.key).await? {
                    return self
                        .already_there(&chunk, file, path, &head, part_size)
                        .await;
                }
                let u = self
                    .retrying(&chunk.key, || self.client.create_multipart(&chunk.key))
                    .await?;
                chunk = self.spool.begin_multipart(&chunk, &u)?;
                u
            }
        };
        let todo: Vec<u32> = (1..=n_parts)
            .filter(|n| !done.iter().any(|d| d.number == *n))
            .collect();
        let uploaded = match self
            .upload_parts(&chunk, file, path, &uid, part_size, &todo)
            .await
        {
            Ok(parts) => parts,
            Err(e)
                if resumed_from_journal
                    && (e.is_no_such_upload() || e.class() == ErrorClass::Auth) =>
            {
                // The server lost the upload we journaled (some stores answer AccessDenied for
                // an unknown upload id): start a fresh one next attempt, abort the old one.
                tracing::warn!(chunk = ?chunk.name, error = %e, "journaled upload unusable; starting a new one");
                self.spool.forget_upload(&chunk)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let bytes_sent: u64 = uploaded.iter().map(|p| p.size).sum();
        done.extend(uploaded);
        done.sort_by_key(|p| p.number);
        self.still_same(file, path, &chunk)?;
        let mut upload_lost = false;
        match self
            .retrying(&chunk.key, || self.client.complete(&chunk.key, &uid, &done))
            .await
        {
            Ok(_) => {}
            Err(e) if e.is_no_such_upload() => {
                // Completed by an attempt whose answer we never saw? Verification decides.
                tracing::debug!(chunk = ?chunk.name, "upload unknown at completion; verifying object");
                upload_lost = true;
            }
            Err(e) if e.class() == ErrorClass::Precondition => {
                // Another object took the key since the HeadObject before this upload; ours
                // may still be it (a completion retried after a lost answer).
                if let Ok(Ok(v)) = self.verify(&chunk, &done, n_parts).await {
                    return Ok(Verified {
                        bytes_sent,
                        parts_resumed,
                        ..v
                    });
                }
                self.spool.forget_upload(&chunk)?;
                return Err(Error::KeyTaken {
                    key: chunk.key.clone(),
                });
            }
            // s3s-fs drops the upload id before assembling; a crash mid-completion leaves part
            // files that ListParts still shows but an id it refuses with AccessDenied.
            Err(e) if resumed_from_journal && e.class() == ErrorClass::Auth => {
                tracing::warn!(chunk = ?chunk.name, error = %e, "journaled upload refused at completion; starting a new one");
                self.spool.forget_upload(&chunk)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let v = match self.verify(&chunk, &done, n_parts).await {
            Ok(Ok(v)) => v,
            // Whose object this is nobody can tell: the completion that made it was not seen.
            Ok(Err(m)) if upload_lost => {
                self.spool.forget_upload(&chunk)?;
                return Err(Error::Verify {
                    key: chunk.key.clone(),
                    detail: m.detail,
                });
            }
            // Ours: this CompleteMultipartUpload created it under If-None-Match. It goes before
            // the retry, which starts a fresh upload under the same key.
            Ok(Err(m)) => {
                let e = self.discard(&chunk.key, m).await;
                self.spool.forget_upload(&chunk)?;
                return Err(e);
            }
            Err(e) if upload_lost => {
                self.spool.forget_upload(&chunk)?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        Ok(Verified {
            bytes_sent,
            parts_resumed,
            ..v
        })
    }

    /// Uploads the parts in `todo`, `parts_in_flight` at a time; each completed part is
    /// journaled before it counts.
    async fn upload_parts(
        self: &Arc<Self>,
        chunk: &Chunk,
        file: &Arc<File>,
        path: &Path,
        uid: &str,
        part_size: u64,
        todo: &[u32],
    ) -> Result<Vec<PartRecord>, Error> {
        let size = chunk.identity.size;
        let mut set: JoinSet<Result<PartRecord, Error>> = JoinSet::new();
        let mut queue = todo.iter().copied();
        let mut out = Vec::new();
        let mut first_err: Option<Error> = None;
        loop {
            while first_err.is_none() && set.len() < self.settings.parts_in_flight {
                let Some(n) = queue.next() else { break };
                let offset = u64::from(n - 1) * part_size;
                let len = part_size.min(size - offset);
                let this = self.clone();
                let (file, path, chunk, uid) =
                    (file.clone(), path.to_owned(), chunk.clone(), uid.to_owned());
                set.spawn(
                    async move { this.part(&chunk, &uid, &file, &path, n, offset, len).await },
                );
            }
            match set.join_next().await {
                None => break,
                Some(Ok(Ok(p))) => out.push(p),
                Some(Ok(Err(e))) => {
                    // Stop starting parts; let the ones in flight finish so their work is kept.
                    first_err.get_or_insert(e);
                }
                Some(Err(join)) => {
                    first_err.get_or_insert(Error::Protocol {
                        op: "UploadPart",
                        key: chunk.key.clone(),
                        detail: format!("part task failed: {join}"),
                    });
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Sends `len` bytes of `file` from `offset` as a PutObject or an UploadPart, with its
    /// CRC32C, retrying like any request; a stalled attempt is abandoned with its connection.
    /// With `with_md5` the range's MD5 goes along as Content-MD5 and must come back as the
    /// ETag; bytes the store got corrupted are sent again (a corrupted PutObject, which this
    /// agent just created under `If-None-Match`, is deleted first).
    /// Returns the ETag, the base64 CRC32C and the MD5 if computed.
    #[allow(clippy::too_many_arguments)]
    async fn send_range(
        &self,
        key: &str,
        request: Request<'_>,
        file: &Arc<File>,
        path: &Path,
        offset: u64,
        len: u64,
        with_md5: bool,
    ) -> Result<(PutAck, String, Option<[u8; 16]>), Error> {
        let digest = digest_range(file.clone(), offset, len, with_md5)
            .await
            .map_err(|e| Error::Read {
                path: path.to_owned(),
                source: e,
            })?;
        let crc = b64(digest.crc32c);
        let md5_b64 = digest
            .md5
            .map(|m| base64::engine::general_purpose::STANDARD.encode(m));
        let part = match request {
            Request::Put => 0,
            Request::Part { number, .. } => number,
        };
        let mut attempt = 0;
        loop {
            let progress = Arc::new(Progress::default());
            let body = ReqBody::File(FileBody::new(
                file.clone(),
                offset,
                len,
                progress.clone(),
                self.limiter.clone(),
                self.metrics.clone(),
            ));
            let deadline = Deadline::Stall {
                progress: &progress,
                stall: self.settings.stall_timeout,
                part,
            };
            let md5 = md5_b64.as_deref();
            let sent = match request {
                Request::Put => self.client.put_object(key, body, &crc, md5, deadline).await,
                Request::Part { uid, number } => self
                    .client
                    .upload_part(key, uid, number, body, &crc, md5, deadline)
                    .await
                    .map(|etag| PutAck { etag, crc32c: None }),
            };
            let sent = match (sent, digest.md5) {
                (Ok(ack), Some(m)) if is_md5_etag(&ack.etag) && ack.etag != hex_md5(&m) => {
                    self.metrics.corrupt_in_transit.inc();
                    if let Request::Put = request
                        && let Err(e) = self.client.delete_object(key).await
                    {
                        tracing::error!(key = ?key, error = %e,
                            "the store kept a corrupted copy of this chunk and it could not be deleted; the chunk goes to a disambiguated key");
                        return Err(Error::KeyTaken {
                            key: key.to_owned(),
                        });
                    }
                    Err(Error::Corrupt {
                        op: match request {
                            Request::Put => "PutObject",
                            Request::Part { .. } => "UploadPart",
                        },
                        key: key.to_owned(),
                        part,
                        sent: hex_md5(&m),
                        got: ack.etag,
                    })
                }
                (other, _) => other,
            };
            match sent {
                Ok(ack) => {
                    if !is_md5_etag(&ack.etag) {
                        self.integrity.etag_not_md5(key, &ack.etag, &self.metrics);
                    }
                    self.acknowledged(len);
                    return Ok((ack, crc, digest.md5));
                }
                // Dropped by the agent itself after a path change: go again at once on a fresh
                // connection; it is no failure of this part.
                Err(e) if e.class() == ErrorClass::Abandoned => self.count_error(&e),
                Err(e) => {
                    attempt += 1;
                    self.count_error(&e);
                    if !e.is_retryable() || attempt >= self.settings.part_attempts {
                        return Err(e);
                    }
                    // A store may keep the bytes of a PutObject it refused for their checksum
                    // (s3s-fs does). The key was free when this attempt began (If-None-Match),
                    // so what is there now is that refused attempt.
                    if let Request::Put = request
                        && e.class() == ErrorClass::Checksum
                        && let Err(de) = self.client.delete_object(key).await
                    {
                        self.count_error(&de);
                    }
                    self.pause(key, part, attempt, &e).await;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn part(
        &self,
        chunk: &Chunk,
        uid: &str,
        file: &Arc<File>,
        path: &Path,
        number: u32,
        offset: u64,
        len: u64,
    ) -> Result<PartRecord, Error> {
        let with_md5 = self.integrity.profile().part_md5();
        let (PutAck { etag, .. }, crc, _) = self
            .send_range(
                &chunk.key,
                Request::Part { uid, number },
                file,
                path,
                offset,
                len,
                with_md5,
            )
            .await?;
        let record = PartRecord {
            number,
            offset,
            size: len,
            etag,
            crc32c: crc,
        };
        let spool = self.spool.clone();
        let (rec, c, u) = (record.clone(), chunk.clone(), uid.to_owned());
        tokio::task::spawn_blocking(move || spool.record_part(&c, &u, &rec))
            .await
            .map_err(|e| Error::Protocol {
                op: "UploadPart",
                key: chunk.key.clone(),
                detail: e.to_string(),
            })??;
        Ok(record)
    }

    /// Checks the multipart object in the bucket against the parts sent: by HeadObject and,
    /// where that proves nothing, by reading it back ([`crate::verify`]).
    async fn verify(
        &self,
        chunk: &Chunk,
        parts: &[PartRecord],
        n_parts: u32,
    ) -> Result<Result<Verified, Mismatch>, Error> {
        if parts.len() as u32 != n_parts {
            return Ok(Err(Mismatch {
                detail: format!("{} of {n_parts} parts journaled", parts.len()),
                present: false,
            }));
        }
        let crcs: Vec<String> = parts.iter().map(|p| p.crc32c.clone()).collect();
        let Some(composite) = composite_crc32c(&crcs) else {
            return Ok(Err(Mismatch {
                detail: "journaled CRC32C unreadable".into(),
                present: false,
            }));
        };
        let expected = Expected::Multipart {
            parts,
            composite: &composite,
        };
        let proven = self
            .head_and_prove(
                &chunk.key,
                chunk.identity.size,
                &expected,
                "CompleteMultipartUpload",
            )
            .await?;
        Ok(proven.map(|()| Verified {
            key: chunk.key.clone(),
            checksum: format!("crc32c:{composite}"),
            bytes_sent: 0,
            parts_resumed: 0,
        }))
    }

    /// Deletes an object this agent just created and found wrong (so the retry can use the
    /// key again) and returns the verification error. If it cannot be deleted it stays, and
    /// the next attempt finds the key taken and moves the chunk to a disambiguated key.
    async fn discard(&self, key: &str, m: Mismatch) -> Error {
        if m.present {
            match self.retrying(key, || self.client.delete_object(key)).await {
                Ok(()) => tracing::warn!(key = ?key, detail = %m.detail,
                    "the object this agent just stored is not the file's bytes; deleted, the chunk is sent again"),
                Err(e) => tracing::error!(key = ?key, detail = %m.detail, error = %e,
                    "the object this agent just stored is not the file's bytes and could not be deleted; the chunk goes to a disambiguated key"),
            }
        }
        Error::Verify {
            key: key.to_owned(),
            detail: m.detail,
        }
    }

    /// Retries an idempotent request (HEAD, ListParts, Create, Complete) like a part.
    pub(crate) async fn retrying<T, F, Fut>(&self, key: &str, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.class() == ErrorClass::Abandoned => self.count_error(&e),
                Err(e) => {
                    attempt += 1;
                    self.count_error(&e);
                    if !e.is_retryable() || attempt >= self.settings.part_attempts {
                        return Err(e);
                    }
                    self.pause(key, 0, attempt, &e).await;
                }
            }
        }
    }

    fn acknowledged(&self, bytes: u64) {
        if self.health.answered() {
            self.metrics.store_recoveries.inc();
        }
        self.metrics.uploaded_bytes.add(bytes);
        self.metrics.uploaded_parts.inc();
        self.metrics.goodput.record(Instant::now(), bytes);
    }

    fn count_error(&self, e: &Error) {
        self.health.failed(e.class());
        self.errors.record(e.class());
        if matches!(e, Error::Stall { .. }) {
            self.metrics.stalls.inc();
        }
    }

    async fn pause(&self, key: &str, part: u32, attempt: u32, e: &Error) {
        self.metrics.retries.inc();
        let delay = self.backoff().delay(attempt);
        tracing::warn!(key = %key, part, attempt, class = e.class().as_str(), error = %e,
            retry_in_ms = delay.as_millis() as u64, "upload request failed; retrying");
        self.health.pause(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disambiguated_key_is_traced_back_to_its_base_once() {
        let base = "SITE/cam1/2025-11-12/0815.mp4";
        assert_eq!(disambiguation_of(base, base), Some(0));
        assert_eq!(
            disambiguation_of(base, "SITE/cam1/2025-11-12/0815~3.mp4"),
            Some(3)
        );
        assert_eq!(disambiguation_of("a/noext", "a/noext~12"), Some(12));
        // A key disambiguated twice, or another file's, is not this base's.
        assert_eq!(
            disambiguation_of(base, "SITE/cam1/2025-11-12/0815~1~1.mp4"),
            None
        );
        assert_eq!(
            disambiguation_of(base, "SITE/cam1/2025-11-12/0816~1.mp4"),
            None
        );
        assert_eq!(
            disambiguation_of(base, "SITE/cam1/2025-11-12/0815~0.mp4"),
            None
        );
    }

    #[test]
    fn composite_checksum_and_etag_follow_s3() {
        // Two parts "a" and "b": CRC32C values per RFC 3720 test vectors style, recomputed here.
        let p1 = b64(crc32c::crc32c(b"a"));
        let p2 = b64(crc32c::crc32c(b"b"));
        let mut raw = crc32c::crc32c(b"a").to_be_bytes().to_vec();
        raw.extend(crc32c::crc32c(b"b").to_be_bytes());
        assert_eq!(
            composite_crc32c(&[p1, p2]).unwrap(),
            format!("{}-2", b64(crc32c::crc32c(&raw)))
        );
        // md5("") twice.
        let e = "d41d8cd98f00b204e9800998ecf8427e".to_owned();
        let got = multipart_etag(&[e.clone(), e]).unwrap();
        let mut h = Md5::new();
        h.update([
            0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
            0x42, 0x7e,
        ]);
        h.update([
            0xd4, 0x1d, 0x8c, 0xd9, 0x8f, 0x00, 0xb2, 0x04, 0xe9, 0x80, 0x09, 0x98, 0xec, 0xf8,
            0x42, 0x7e,
        ]);
        assert_eq!(got, format!("{}-2", crate::sigv4::hex(&h.finalize())));
        assert_eq!(multipart_etag(&["not-md5".into()]), None);
    }
}
