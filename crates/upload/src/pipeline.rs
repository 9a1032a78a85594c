//! The agent's upload loop: claims ready chunks from the spool in order, uploads up to
//! `chunks_in_flight` at once within the `in_flight_bytes` budget, reports each verified
//! object to the spool (which removes the file), tells it how long a failed chunk backs off,
//! and aborts orphaned multipart uploads. Which chunks are in flight or backing off is the
//! spool's to know ([`backhaul_spool::Claim`]); watching the spool directory is not this
//! loop's job either: the binary runs [`Spool::watch`] beside it (drain mode rescans through
//! the same spool), and the spool's upkeep (disk, backlog gauges, compaction) runs beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_spool::{AfterFailure, Chunk, Claim, Spool};
use backhaul_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::chunk::{ChunkUploader, Verified};
use crate::retry::Backoff;
use crate::{Error, ErrorClass};

/// How often queued multipart aborts are retried (daemon).
const ABORTS_EVERY: Duration = Duration::from_secs(2);
/// In `--drain` mode a chunk that failed this many times is reported as failed.
const DRAIN_MAX_ATTEMPTS: u32 = 6;
/// Longest idle wait between loop turns.
const TICK: Duration = Duration::from_secs(1);
/// How often the site prefix is listed for multipart uploads no journal row knows.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Daemon (watch forever) or drain (upload what is there, then exit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Watch the spool until shutdown.
    Daemon,
    /// Upload everything ready, then return.
    Drain,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Chunks uploaded and verified.
    pub chunks: u64,
    /// Bytes of those chunks.
    pub bytes: u64,
    /// Bytes sent in this run (retries and re-sent parts included).
    pub bytes_sent: u64,
    /// Parts reused from an earlier run.
    pub parts_resumed: u64,
    /// Chunks that could not be uploaded (drain mode), with the last error; files skipped for
    /// want of a safe object key are here too.
    pub failed: Vec<(String, String)>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Uploads start only once the bucket answers; re-checked after auth or bucket errors.
struct BucketGate {
    ok: bool,
    next_check: Instant,
    failures: u32,
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// While the store is down, asks it HeadBucket every [`crate::health::RECHECK`] (jittered) and
/// marks it up on any answer, errors included: an answer means it can be reached. A recheck
/// that fails is a failed request to the store like any other and is counted by class.
async fn recheck_store(
    client: Arc<crate::s3::S3Client>,
    health: Arc<crate::health::StoreHealth>,
    metrics: Arc<Metrics>,
    errors: crate::ErrorFeed,
    request_timeout: Duration,
) {
    loop {
        tokio::time::sleep(crate::health::StoreHealth::recheck_delay()).await;
        if !health.is_down() {
            continue;
        }
        let limit = request_timeout.min(crate::health::RECHECK * 5);
        match tokio::time::timeout(limit, client.head_bucket()).await {
            Ok(Ok(())) => {
                if health.answered() {
                    metrics.store_recoveries.inc();
                }
            }
            Ok(Err(e)) => {
                errors.record(e.class());
                // An error answer ends the pauses but is no recovery: the store that answers
                // 5xx is still failing uploads.
                if !matches!(e.class(), ErrorClass::Connection | ErrorClass::Timeout) {
                    health.answered();
                }
            }
            Err(_) => errors.record(ErrorClass::Timeout),
        }
    }
}

fn bucket_help(e: &Error) -> &'static str {
    match e.class() {
        ErrorClass::NoSuchBucket => "create the bucket or fix upload.bucket",
        ErrorClass::Auth | ErrorClass::Credentials => {
            "check the credentials: upload.credentials, AWS_* variables, the shared profile"
        }
        ErrorClass::ClockSkew => {
            "fix this host's clock (chrony or systemd-timesyncd; `chronyc tracking`, `timedatectl status`); the credentials are not the problem"
        }
        ErrorClass::Connection | ErrorClass::Timeout | ErrorClass::Tls => {
            "check the endpoint and the network path to it"
        }
        ErrorClass::SlowDown
        | ErrorClass::NoSuchUpload
        | ErrorClass::Precondition
        | ErrorClass::NotImplemented
        | ErrorClass::Checksum
        | ErrorClass::Server5xx
        | ErrorClass::Client4xx
        | ErrorClass::Stall
        | ErrorClass::Abandoned
        | ErrorClass::Resigned
        | ErrorClass::Protocol
        | ErrorClass::LocalIo
        | ErrorClass::ChunkChanged
        | ErrorClass::Verify
        | ErrorClass::Corrupt
        | ErrorClass::Unproven
        | ErrorClass::KeyTaken
        | ErrorClass::Config => "see the error; chunks stay in the spool until it is fixed",
    }
}

/// Classes after which no request can succeed until an operator acts (credentials, bucket,
/// clock): uploads wait behind the bucket gate instead of failing chunk by chunk.
fn closes_the_gate(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Auth
            | ErrorClass::NoSuchBucket
            | ErrorClass::Credentials
            | ErrorClass::ClockSkew
    )
}

/// The upload loop.
#[derive(Debug)]
pub struct Uploader {
    chunks: Arc<ChunkUploader>,
    spool: Arc<Spool>,
    metrics: Arc<Metrics>,
    /// True once the first scan is done and the loop turns ([`Uploader::ready`]).
    ready: watch::Sender<bool>,
}

impl Uploader {
    /// An uploader over a chunk uploader (which carries client, spool and settings).
    pub fn new(chunks: Arc<ChunkUploader>) -> Self {
        Self {
            spool: chunks.spool.clone(),
            metrics: chunks.metrics.clone(),
            chunks,
            ready: watch::channel(false).0,
        }
    }

    /// Turns true once [`Uploader::run`] has scanned the spool and finished what a previous
    /// run left half-done: the agent is ready (systemd's `READY=1`).
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Checks the bucket (creating it if configured), then, once per process, what the store
    /// validates by itself ([`crate::integrity`]). Errors are clear but not fatal for the
    /// daemon: chunks stay in the spool and are retried.
    pub async fn preflight(&self) -> Result<(), Error> {
        let client = &self.chunks.client;
        // A bucket just created or already ours needs no second round trip; every extra
        // request at start is one more chance for a flaky link to delay the first upload.
        if !(self.chunks.settings.create_bucket
            && crate::retry::transient(&self.chunks.errors, 2, || client.create_bucket()).await?
                == crate::s3::Owned::Yes)
        {
            crate::retry::transient(&self.chunks.errors, 2, || client.head_bucket()).await?;
        }
        if self.chunks.integrity.probed().is_none() {
            let prefix = self.spool.settings().key.site_prefix();
            let profile = crate::integrity::probe(
                client,
                &self.chunks.integrity,
                &self.chunks.errors,
                &self.metrics,
                &prefix,
                self.chunks.settings.request_timeout,
            )
            .await?;
            let verification =
                crate::integrity::Verification::of(self.chunks.integrity.mode(), &profile);
            tracing::info!(bucket = %client.bucket(), conditional_writes = profile.conditional_writes,
                put_checksum_validated = profile.put_checksum_validated,
                part_checksum_validated = profile.part_checksum_validated,
                md5_etags = profile.md5_etags,
                "store integrity: {}; {}", profile.describe(), verification.describe());
            if [verification.put_object, verification.multipart]
                .contains(&crate::integrity::Proof::Unproven)
            {
                tracing::error!(bucket = %client.bucket(),
                    "upload.verify = \"head\", and HeadObject proves nothing on this store: objects it cannot prove stay unproven and their files stay in the spool (backhaul_upload_unproven_total); set upload.verify = \"auto\" to read them back");
            }
        }
        Ok(())
    }

    async fn abort_queued(&self) {
        let Ok(aborts) = self.spool.pending_aborts() else {
            return;
        };
        for a in aborts {
            match self.chunks.client.abort(&a.key, &a.upload_id).await {
                Ok(()) => {
                    tracing::info!(key = ?a.key, upload_id = %a.upload_id, "aborted orphaned multipart upload");
                    if let Err(e) = self.spool.abort_done(&a.upload_id) {
                        tracing::error!(error = %e, "journal: abort bookkeeping failed");
                    }
                }
                // Some stores refuse an abort of an upload they already dropped.
                Err(e) if matches!(e.class(), ErrorClass::Auth | ErrorClass::Client4xx) => {
                    self.chunks.errors.record(e.class());
                    tracing::debug!(key = ?a.key, error = %e, "abort refused; upload already gone");
                    if let Err(e) = self.spool.abort_done(&a.upload_id) {
                        tracing::error!(error = %e, "journal: abort bookkeeping failed");
                    }
                }
                Err(e) => {
                    self.chunks.errors.record(e.class());
                    tracing::debug!(key = ?a.key, error = %e, "abort failed; will retry");
                    return;
                }
            }
        }
    }

    /// Lists the site prefix's open multipart uploads and aborts those no journal row knows
    /// (created just before a crash, never journaled) once they are older than
    /// `orphan_upload_age`; uploads on keys in flight are left alone, since their id may not
    /// be journaled yet. A store that cannot list uploads is said once and skipped.
    async fn sweep_orphans(&self, in_flight_keys: &[String], listing_unsupported: &mut bool) {
        if *listing_unsupported {
            return;
        }
        let prefix = self.spool.settings().key.site_prefix();
        let open = match self.chunks.client.list_multipart_uploads(&prefix).await {
            Ok(v) => v,
            // An answer about the store, not a failed request: not counted as an error.
            Err(e) if e.class() == ErrorClass::NotImplemented => {
                tracing::info!(error = %e, "the store cannot list multipart uploads; orphans are aborted only when the journal knows them");
                *listing_unsupported = true;
                return;
            }
            Err(e) => {
                self.chunks.errors.record(e.class());
                tracing::warn!(error = %e, "cannot list multipart uploads; orphan sweep skipped");
                return;
            }
        };
        let known = match self.spool.upload_ids() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "journal: cannot read upload ids; orphan sweep skipped");
                return;
            }
        };
        let cutoff = time::OffsetDateTime::now_utc() - self.chunks.settings.orphan_upload_age;
        for u in open {
            if known.contains(&u.upload_id)
                || in_flight_keys.contains(&u.key)
                || crate::integrity::is_scratch(&prefix, &u.key)
                || u.initiated.is_some_and(|t| t > cutoff)
            {
                continue;
            }
            match self.chunks.client.abort(&u.key, &u.upload_id).await {
                Ok(()) => {
                    self.metrics.orphan_uploads_aborted.inc();
                    tracing::info!(key = ?u.key, upload_id = %u.upload_id,
                        "aborted a multipart upload no journal row knows (created before a crash)");
                }
                Err(e) => {
                    self.chunks.errors.record(e.class());
                    tracing::warn!(key = ?u.key, error = %e, "could not abort orphaned multipart upload");
                }
            }
        }
    }

    /// Runs until shutdown (daemon) or until the spool is empty (drain).
    pub async fn run(
        &self,
        mode: RunMode,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunReport, Error> {
        let started = Instant::now();
        let mut report = RunReport::default();
        let mut tasks: JoinSet<(Claim, Result<Verified, Error>)> = JoinSet::new();
        let mut last_sweep: Option<Instant> = None;
        let mut listing_unsupported = false;
        let mut last_aborts: Option<Instant> = None;
        let backoff = Backoff {
            base: self.chunks.settings.retry_base,
            max: self.chunks.settings.retry_max,
        };
        let mut bucket = BucketGate {
            ok: false,
            next_check: Instant::now(),
            failures: 0,
        };

        let mut store_back = self.chunks.health.subscribe();
        // Both end with this run on every path out of it, errors included.
        let _recheck = AbortOnDrop(tokio::spawn(recheck_store(
            self.chunks.client.clone(),
            self.chunks.health.clone(),
            self.metrics.clone(),
            self.chunks.errors.clone(),
            self.chunks.settings.request_timeout,
        )));
        let _upkeep = AbortOnDrop(tokio::spawn(self.spool.clone().upkeep()));
        let _fresh = AbortOnDrop(tokio::spawn(
            self.chunks
                .client
                .credentials()
                .clone()
                .keep_fresh(self.chunks.client.transport().clone(), shutdown.clone()),
        ));

        // Whatever a previous run left half-done: verified-not-removed files, queued aborts.
        self.spool.scan_once()?;
        self.spool.retry_removals()?;
        self.abort_queued().await;

        self.ready.send_replace(true);
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.metrics.uploader_heartbeat_seconds.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            let now = Instant::now();
            if mode == RunMode::Daemon
                && last_aborts.is_none_or(|t| now.duration_since(t) >= ABORTS_EVERY)
            {
                last_aborts = Some(now);
                self.abort_queued().await;
            }
            if !bucket.ok && now >= bucket.next_check {
                match self.preflight().await {
                    Ok(()) => {
                        bucket = BucketGate {
                            ok: true,
                            next_check: now,
                            failures: 0,
                        };
                    }
                    Err(e) => {
                        self.chunks.errors.record(e.class());
                        self.chunks.health.failed(e.class());
                        bucket.failures += 1;
                        bucket.next_check = Instant::now() + backoff.ceiling(bucket.failures);
                        tracing::error!(bucket = %self.chunks.client.bucket(), class = e.class().as_str(), error = %e,
                            help = bucket_help(&e), "bucket not usable; uploads wait, nothing is deleted");
                        let give_up = bucket.failures >= DRAIN_MAX_ATTEMPTS
                            || (!e.is_retryable() && bucket.failures >= 2);
                        if mode == RunMode::Drain && give_up {
                            for c in self.spool.pending()? {
                                report
                                    .failed
                                    .push((c.name, format!("{e} ({})", bucket_help(&e))));
                            }
                            break;
                        }
                    }
                }
            }
            if bucket.ok && last_sweep.is_none_or(|t| now.duration_since(t) >= ORPHAN_SWEEP_EVERY) {
                last_sweep = Some(now);
                let keys: Vec<String> = self.spool.in_flight().into_iter().map(|c| c.key).collect();
                self.sweep_orphans(&keys, &mut listing_unsupported).await;
            }
            let max_in_flight = self.chunks.settings.chunks_in_flight;
            if bucket.ok && tasks.len() < max_in_flight {
                let budget = self.chunks.settings.in_flight_bytes;
                let mut reserved: u64 = self
                    .spool
                    .in_flight()
                    .iter()
                    .map(|c| self.reservation(c))
                    .sum();
                let mut running = tasks.len();
                let claimed = self.spool.claim_many(max_in_flight - tasks.len(), |c| {
                    let want = self.reservation(c);
                    let fits = running == 0 || reserved + want <= budget;
                    if fits {
                        reserved += want;
                        running += 1;
                    }
                    fits
                })?;
                for claim in claimed {
                    let up = self.chunks.clone();
                    tasks.spawn(async move {
                        let r = up.upload(&claim).await;
                        (claim, r)
                    });
                }
            }
            if mode == RunMode::Drain && tasks.is_empty() && bucket.ok {
                let scan = self.spool.scan_once()?;
                if scan.new_chunks == 0 && scan.waiting == 0 && !self.spool.retrying() {
                    break;
                }
            }
            let next_retry = self
                .spool
                .next_retry()
                .map_or(TICK, |t| t.saturating_duration_since(now).min(TICK));
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    // Everything else that finished meanwhile goes with it: one journal commit
                    // for the group instead of one per chunk.
                    let mut done = vec![joined];
                    while let Some(more) = tasks.try_join_next() {
                        done.push(more);
                    }
                    let mut results = Vec::with_capacity(done.len());
                    for joined in done {
                        match joined {
                            Ok(v) => results.push(v),
                            // Its claim went with the task: the chunk is claimed again.
                            Err(e) => tracing::error!(error = %e, "upload task panicked"),
                        }
                    }
                    for (_, result) in &results {
                        if result.as_ref().is_err_and(|e| closes_the_gate(e.class())) {
                            bucket.ok = false;
                        }
                    }
                    self.finish(results, mode, &backoff, &mut report)?;
                }
                _ = self.spool.ready().notified() => {}
                Ok(()) = store_back.changed() => {
                    // Chunks waiting out a backoff waited for the store, and it answers now.
                    let waiting = self.spool.retry_now();
                    bucket.next_check = Instant::now();
                    tracing::info!(waiting, "the store answers again; retrying now instead of after the backoff");
                }
                _ = tokio::time::sleep(next_retry) => {}
                _ = shutdown.changed() => {}
            }
        }
        if mode == RunMode::Drain {
            for (name, why) in self.spool.skipped() {
                report.failed.push((name, why.describe().into()));
            }
        }
        if let Err(e) = self.spool.refresh_backlog() {
            tracing::error!(error = %e, "cannot read the backlog from the journal");
        }
        // Parts in flight are abandoned; what completed is journaled and resumes next start.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// The bytes of the in-flight budget a chunk holds while it uploads: its size, at most
    /// the parts it can have in flight.
    fn reservation(&self, chunk: &Chunk) -> u64 {
        let s = &self.chunks.settings;
        chunk
            .identity
            .size
            .min(s.part_size.saturating_mul(s.parts_in_flight as u64))
            .max(1)
    }

    /// Settles the chunks that finished together: the verified ones in one journal commit
    /// ([`Spool::verified_many`]), each failure on its own. Their claims end here.
    fn finish(
        &self,
        results: Vec<(Claim, Result<Verified, Error>)>,
        mode: RunMode,
        backoff: &Backoff,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let mut verified = Vec::new();
        for (claim, result) in results {
            match result {
                Ok(v) => verified.push((claim, v)),
                Err(e) => self.failed(claim, e, mode, backoff, report),
            }
        }
        if verified.is_empty() {
            return Ok(());
        }
        let batch: Vec<(Chunk, String)> = verified
            .iter()
            .map(|(claim, v)| {
                let uploaded = Chunk {
                    key: v.key.clone(),
                    ..claim.chunk().clone()
                };
                (uploaded, v.checksum.clone())
            })
            .collect();
        let outcomes = match self.spool.verified_many(&batch) {
            Ok(o) => o,
            // Nothing is deleted unrecorded: the files stay and the next attempt finds their
            // objects in the bucket (sending nothing) once the journal has room again.
            Err(e @ backhaul_spool::Error::NoSpace { .. }) => {
                tracing::error!(error = %e, chunks = verified.len(),
                    "uploaded and verified, but the journal cannot record it; the files stay and are checked again shortly");
                for (claim, _) in verified {
                    self.spool.failed(claim, &e.to_string(), |n| {
                        AfterFailure::RetryIn(backoff.delay(n))
                    });
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        for ((claim, v), outcome) in verified.into_iter().zip(outcomes) {
            let chunk = claim.chunk();
            match outcome {
                Ok(removal) => {
                    self.metrics.uploaded_chunks.inc();
                    report.chunks += 1;
                    report.bytes += chunk.identity.size;
                    report.bytes_sent += v.bytes_sent;
                    report.parts_resumed += u64::from(v.parts_resumed);
                    tracing::info!(chunk = ?chunk.name, key = ?v.key, bytes = chunk.identity.size,
                        checksum = %v.checksum, parts_resumed = v.parts_resumed, removal = ?removal,
                        "chunk uploaded and verified");
                }
                // The file changed while it was uploaded: the new version goes up next.
                Err(backhaul_spool::Error::Transition { .. }) => self.changed(chunk),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Tells the spool a claimed chunk's file changed or vanished. Not recorded (a full
    /// filesystem) is not fatal: the next scan sees the file as it is.
    fn changed(&self, chunk: &Chunk) {
        if let Err(e) = self.spool.changed(chunk) {
            tracing::warn!(chunk = ?chunk.name, error = %e, "journal: the change is not recorded now; the next scan finds the file as it is");
        }
    }

    /// A chunk's attempt failed: the spool keeps the error and backs the chunk off for as
    /// long as this says (a drain gives up on it after [`DRAIN_MAX_ATTEMPTS`]).
    fn failed(
        &self,
        claim: Claim,
        error: Error,
        mode: RunMode,
        backoff: &Backoff,
        report: &mut RunReport,
    ) {
        let name = claim.chunk().name.clone();
        if let Error::Changed { .. } | Error::Spool(backhaul_spool::Error::Transition { .. }) =
            error
        {
            tracing::warn!(chunk = ?name, "chunk changed or vanished during upload; nothing deleted, the new version is uploaded");
            self.changed(claim.chunk());
            return;
        }
        // Request failures were counted where they happened; these never are.
        if matches!(
            error,
            Error::Verify { .. } | Error::Unproven { .. } | Error::Spool(_)
        ) {
            self.chunks.errors.record(error.class());
        }
        // Credentials and missing buckets need a human; do not hammer the endpoint.
        let floor = if error.is_retryable() {
            Duration::ZERO
        } else {
            backoff.max.min(Duration::from_secs(10))
        };
        let (attempts, after) = self.spool.failed(claim, &error.to_string(), |n| {
            let give_up = mode == RunMode::Drain
                && (n >= DRAIN_MAX_ATTEMPTS || (!error.is_retryable() && n >= 2));
            if give_up {
                AfterFailure::GiveUp
            } else {
                AfterFailure::RetryIn(backoff.delay(n).max(floor))
            }
        });
        match after {
            AfterFailure::RetryIn(delay) => {
                tracing::error!(chunk = ?name, class = error.class().as_str(), error = %error, attempts,
                    retry_in_s = delay.as_secs_f64(), "chunk upload failed; nothing deleted, will retry");
            }
            AfterFailure::GiveUp => {
                tracing::error!(chunk = ?name, class = error.class().as_str(), error = %error, attempts,
                    "chunk upload failed; nothing deleted, given up for this drain");
                report.failed.push((name, error.to_string()));
            }
        }
    }
}
