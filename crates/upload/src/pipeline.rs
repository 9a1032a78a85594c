//! The agent's upload loop: claims ready chunks from the spool in order, uploads up to
//! `chunks_in_flight` at once within the `in_flight_bytes` budget, reports each verified object to the spool (which removes the
//! file), backs failing chunks off, aborts orphaned multipart uploads, and keeps the backlog
//! and disk metrics current. Watching the spool directory is not its job: the binary runs
//! [`Spool::watch`] beside it (drain mode rescans through the same spool).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_spool::{Chunk, DiskWatch, Spool};
use backhaul_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::chunk::{ChunkUploader, Verified};
use crate::retry::Backoff;
use crate::{Error, ErrorClass};

/// How often disk and backlog metrics are refreshed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// Most often the backlog gauges are read from the journal on uploads and discoveries: the
/// read sums every pending row, so once per chunk would make a backlog's drain quadratic.
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// In `--drain` mode a chunk that failed this many times is reported as failed.
const DRAIN_MAX_ATTEMPTS: u32 = 6;
/// Longest idle wait between loop turns.
const TICK: Duration = Duration::from_secs(1);
/// How often the site prefix is listed for multipart uploads no journal row knows.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How often the journal is compacted (and once at start).
const COMPACT_EVERY: Duration = Duration::from_secs(3600);
/// Shortest pause between compaction batches. The pause is at least
/// [`COMPACT_PAUSE_RATIO`] times the batch's own time, so compaction holds the journal a
/// tenth of the time at most and uploads starting or finishing meanwhile barely wait: a
/// journal past its retention (the first start after an upgrade, or after a long stop) is
/// compacted over minutes, not at the uploads' expense.
const COMPACT_PAUSE: Duration = Duration::from_millis(20);
const COMPACT_PAUSE_RATIO: u32 = 9;

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
                metrics.errors.inc(e.class().as_str());
                // An error answer ends the pauses but is no recovery: the store that answers
                // 5xx is still failing uploads.
                if !matches!(e.class(), ErrorClass::Connection | ErrorClass::Timeout) {
                    health.answered();
                }
            }
            Err(_) => metrics.errors.inc(ErrorClass::Timeout.as_str()),
        }
    }
}

/// Deletes journal rows of chunks finished longer ago than the retention, a batch at a time
/// on a blocking thread, then hands the freed pages back; at start and every
/// [`COMPACT_EVERY`].
async fn compact_journal(spool: Arc<Spool>) {
    loop {
        let mut deleted = 0;
        let started = Instant::now();
        loop {
            let s = spool.clone();
            let batch = Instant::now();
            match tokio::task::spawn_blocking(move || s.compact_journal()).await {
                Ok(Ok(n)) => {
                    deleted += n;
                    if n < backhaul_spool::COMPACT_BATCH_ROWS {
                        break;
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "journal compaction failed; retried in an hour");
                    break;
                }
                Err(_) => return,
            }
            tokio::time::sleep(COMPACT_PAUSE.max(batch.elapsed() * COMPACT_PAUSE_RATIO)).await;
        }
        if deleted > 0 {
            let s = spool.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.reclaim_journal()).await {
                tracing::error!(error = %e, "journal: cannot give compacted pages back");
            }
            tracing::info!(
                rows = deleted,
                seconds = started.elapsed().as_secs_f64(),
                "journal compacted: rows of chunks finished before the retention deleted"
            );
        }
        tokio::time::sleep(COMPACT_EVERY).await;
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

/// A chunk being uploaded: its id, object key and the bytes of the in-flight budget it holds.
struct InFlight {
    id: i64,
    key: String,
    reserved: u64,
}

/// Backlog gauges that follow uploads and discoveries, at most every [`BACKLOG_EVERY`]; a
/// change in between is published on a later loop turn (at most a [`TICK`] later).
#[derive(Default)]
struct BacklogGauges {
    last: Option<Instant>,
    stale: bool,
}

impl BacklogGauges {
    fn changed(&mut self) {
        self.stale = true;
    }

    fn publish_if_due(&mut self, spool: &Spool) {
        if self.last.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            self.publish(spool);
        }
    }

    fn publish(&mut self, spool: &Spool) {
        if !self.stale {
            return;
        }
        self.last = Some(Instant::now());
        self.stale = false;
        if let Err(e) = spool.refresh_backlog() {
            tracing::error!(error = %e, "cannot read the backlog from the journal");
        }
    }
}

fn ids(in_flight: &[InFlight]) -> Vec<i64> {
    in_flight.iter().map(|f| f.id).collect()
}

struct Retry {
    attempts: u32,
    not_before: Instant,
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
            && crate::retry::transient(&self.metrics, 2, || client.create_bucket()).await?
                == crate::s3::Owned::Yes)
        {
            crate::retry::transient(&self.metrics, 2, || client.head_bucket()).await?;
        }
        if self.chunks.integrity.probed().is_none() {
            let prefix = self.spool.settings().key.site_prefix();
            let profile = crate::integrity::probe(
                client,
                &self.chunks.integrity,
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
                    self.metrics.errors.inc(e.class().as_str());
                    tracing::debug!(key = ?a.key, error = %e, "abort refused; upload already gone");
                    if let Err(e) = self.spool.abort_done(&a.upload_id) {
                        tracing::error!(error = %e, "journal: abort bookkeeping failed");
                    }
                }
                Err(e) => {
                    self.metrics.errors.inc(e.class().as_str());
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
                self.metrics.errors.inc(e.class().as_str());
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
                    self.metrics.errors.inc(e.class().as_str());
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
        let settings = self.spool.settings().clone();
        let mut report = RunReport::default();
        let mut disk = DiskWatch::new(
            settings.disk_warning_percent,
            settings.disk_critical_percent,
            settings.fill_rate_window,
        );
        let mut tasks: JoinSet<(Chunk, Result<Verified, Error>)> = JoinSet::new();
        let mut in_flight: Vec<InFlight> = Vec::new();
        let mut last_sweep: Option<Instant> = None;
        let mut listing_unsupported = false;
        let mut retries: HashMap<i64, Retry> = HashMap::new();
        let mut failed_out: Vec<i64> = Vec::new();
        let mut last_housekeeping: Option<Instant> = None;
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
        // Ends with this run on every path out of it, errors included.
        let _recheck = AbortOnDrop(tokio::spawn(recheck_store(
            self.chunks.client.clone(),
            self.chunks.health.clone(),
            self.metrics.clone(),
            self.chunks.settings.request_timeout,
        )));

        let _compact = AbortOnDrop(tokio::spawn(compact_journal(self.spool.clone())));

        // Whatever a previous run left half-done: verified-not-removed files, queued aborts.
        self.spool.scan_once()?;
        self.spool.retry_removals()?;
        self.abort_queued().await;

        self.ready.send_replace(true);
        let mut gauges = BacklogGauges::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            gauges.publish_if_due(&self.spool);
            self.metrics.uploader_heartbeat_seconds.set(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64()),
            );
            let now = Instant::now();
            if last_housekeeping.is_none_or(|t| now.duration_since(t) >= HOUSEKEEPING_EVERY) {
                last_housekeeping = Some(now);
                match self.spool.housekeeping(&mut disk, &ids(&in_flight)) {
                    Ok(status) if status.level == backhaul_spool::DiskLevel::Critical => {
                        tracing::error!(
                            used_percent = status.used_percent,
                            "spool disk above critical watermark"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "spool housekeeping failed"),
                }
                if let Err(e) = self.spool.retry_removals() {
                    tracing::error!(error = %e, "spool: cannot retry removals");
                }
                if mode == RunMode::Daemon {
                    self.abort_queued().await;
                }
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
                        self.metrics.errors.inc(e.class().as_str());
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
                let keys: Vec<String> = in_flight.iter().map(|f| f.key.clone()).collect();
                self.sweep_orphans(&keys, &mut listing_unsupported).await;
            }
            let max_in_flight = self.chunks.settings.chunks_in_flight;
            if bucket.ok && tasks.len() < max_in_flight {
                let mut skip = ids(&in_flight);
                skip.extend(
                    retries
                        .iter()
                        .filter(|(_, r)| r.not_before > now)
                        .map(|(id, _)| *id),
                );
                skip.extend(&failed_out);
                let budget = self.chunks.settings.in_flight_bytes;
                let mut reserved: u64 = in_flight.iter().map(|f| f.reserved).sum();
                let mut running = tasks.len();
                let claimed = self
                    .spool
                    .claim_many(&skip, max_in_flight - tasks.len(), |c| {
                        let want = self.reservation(c);
                        let fits = running == 0 || reserved + want <= budget;
                        if fits {
                            reserved += want;
                            running += 1;
                        }
                        fits
                    })?;
                for chunk in claimed {
                    in_flight.push(InFlight {
                        id: chunk.id,
                        key: chunk.key.clone(),
                        reserved: self.reservation(&chunk),
                    });
                    let up = self.chunks.clone();
                    tasks.spawn(async move {
                        let r = up.upload(&chunk).await;
                        (chunk, r)
                    });
                }
            }
            if mode == RunMode::Drain && tasks.is_empty() && bucket.ok {
                let scan = self.spool.scan_once()?;
                let waiting_retry = retries.keys().any(|id| !failed_out.contains(id));
                if scan.new_chunks == 0 && scan.waiting == 0 && !waiting_retry {
                    break;
                }
            }
            let next_retry = retries
                .values()
                .map(|r| r.not_before)
                .filter(|t| *t > now)
                .min()
                .map_or(TICK, |t| t.duration_since(now).min(TICK));
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
                            Err(e) => {
                                tracing::error!(error = %e, "upload task panicked");
                                in_flight.clear();
                            }
                        }
                    }
                    for (chunk, result) in &results {
                        in_flight.retain(|f| f.id != chunk.id);
                        if result.as_ref().is_err_and(|e| closes_the_gate(e.class())) {
                            bucket.ok = false;
                        }
                    }
                    self.finish(results, mode, &backoff, &mut retries, &mut failed_out, &mut report)?;
                    gauges.changed();
                }
                _ = self.spool.ready().notified() => gauges.changed(),
                Ok(()) = store_back.changed() => {
                    // Chunks waiting out a backoff waited for the store, and it answers now.
                    let waiting = retries.values().filter(|r| r.not_before > Instant::now()).count();
                    for r in retries.values_mut() {
                        r.not_before = Instant::now();
                    }
                    bucket.next_check = Instant::now();
                    tracing::info!(waiting, "the store answers again; retrying now instead of after the backoff");
                }
                _ = tokio::time::sleep(next_retry) => {}
                _ = shutdown.changed() => {}
            }
        }
        if mode == RunMode::Drain {
            for name in self.spool.skipped() {
                report.failed.push((
                    name,
                    "no safe object key can be made for it (see the log); it stays in the spool"
                        .into(),
                ));
            }
        }
        gauges.publish(&self.spool);
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
    /// ([`Spool::verified_many`]), each failure on its own.
    fn finish(
        &self,
        results: Vec<(Chunk, Result<Verified, Error>)>,
        mode: RunMode,
        backoff: &Backoff,
        retries: &mut HashMap<i64, Retry>,
        failed_out: &mut Vec<i64>,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        let mut verified = Vec::new();
        for (chunk, result) in results {
            match result {
                Ok(v) => verified.push((chunk, v)),
                Err(e) => self.failed(chunk, e, mode, backoff, retries, failed_out, report)?,
            }
        }
        if verified.is_empty() {
            return Ok(());
        }
        let batch: Vec<(Chunk, String)> = verified
            .iter()
            .map(|(chunk, v)| {
                let uploaded = Chunk {
                    key: v.key.clone(),
                    ..chunk.clone()
                };
                (uploaded, v.checksum.clone())
            })
            .collect();
        let outcomes = self.spool.verified_many(&batch)?;
        for ((chunk, v), outcome) in verified.into_iter().zip(outcomes) {
            match outcome {
                Ok(removal) => {
                    self.metrics.uploaded_chunks.inc();
                    report.chunks += 1;
                    report.bytes += chunk.identity.size;
                    report.bytes_sent += v.bytes_sent;
                    report.parts_resumed += u64::from(v.parts_resumed);
                    retries.remove(&chunk.id);
                    tracing::info!(chunk = ?chunk.name, key = ?v.key, bytes = chunk.identity.size,
                        checksum = %v.checksum, parts_resumed = v.parts_resumed, removal = ?removal,
                        "chunk uploaded and verified");
                }
                // The file changed while it was uploaded: the new version goes up next.
                Err(backhaul_spool::Error::Transition { .. }) => {
                    self.spool.changed(&chunk)?;
                    retries.remove(&chunk.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        chunk: Chunk,
        error: Error,
        mode: RunMode,
        backoff: &Backoff,
        retries: &mut HashMap<i64, Retry>,
        failed_out: &mut Vec<i64>,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        match error {
            Error::Changed { .. } | Error::Spool(backhaul_spool::Error::Transition { .. }) => {
                tracing::warn!(chunk = ?chunk.name, "chunk changed or vanished during upload; nothing deleted, the new version is uploaded");
                self.spool.changed(&chunk)?;
                retries.remove(&chunk.id);
            }
            e => {
                // Request failures were counted where they happened; these never are.
                if matches!(
                    e,
                    Error::Verify { .. } | Error::Unproven { .. } | Error::Spool(_)
                ) {
                    self.metrics.errors.inc(e.class().as_str());
                }
                if let Err(je) = self.spool.failed(&chunk, &e.to_string()) {
                    tracing::error!(error = %je, "journal: cannot record the chunk's last error");
                }
                let r = retries.entry(chunk.id).or_insert(Retry {
                    attempts: 0,
                    not_before: Instant::now(),
                });
                r.attempts += 1;
                // Credentials and missing buckets need a human; do not hammer the endpoint.
                let floor = if e.is_retryable() {
                    Duration::ZERO
                } else {
                    backoff.max.min(Duration::from_secs(10))
                };
                let delay = backoff.delay(r.attempts).max(floor);
                r.not_before = Instant::now() + delay;
                tracing::error!(chunk = ?chunk.name, class = e.class().as_str(), error = %e, attempts = r.attempts,
                    retry_in_s = delay.as_secs_f64(), "chunk upload failed; nothing deleted, will retry");
                let give_up = mode == RunMode::Drain
                    && (r.attempts >= DRAIN_MAX_ATTEMPTS || (!e.is_retryable() && r.attempts >= 2));
                if give_up {
                    failed_out.push(chunk.id);
                    report.failed.push((chunk.name.clone(), e.to_string()));
                }
            }
        }
        Ok(())
    }
}
