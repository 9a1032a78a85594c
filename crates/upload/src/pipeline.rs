//! The agent's upload loop: takes ready chunks from the spool in order, uploads up to
//! `chunks_in_flight` at once, deletes each file only after its object is verified, backs
//! failing chunks off, aborts orphaned multipart uploads, and keeps the backlog and disk
//! metrics current.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backhaul_spool::{Chunk, ChunkState, DiskWatch, Readiness, Removal, Spool};
use backhaul_telemetry::Metrics;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Error;
use crate::chunk::{ChunkUploader, Verified};
use crate::retry::Backoff;

/// How often disk and backlog metrics are refreshed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// In `--drain` mode a chunk that failed this many times is reported as failed.
const DRAIN_MAX_ATTEMPTS: u32 = 6;
/// Longest idle wait between loop turns.
const TICK: Duration = Duration::from_secs(1);

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
    /// Chunks that could not be uploaded (drain mode), with the last error.
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

fn bucket_help(e: &Error) -> &'static str {
    match e.class() {
        "no_such_bucket" => "create the bucket or fix upload.bucket",
        "auth" | "credentials" => {
            "check the credentials: upload.credentials, AWS_* variables, the shared profile"
        }
        "connection" | "timeout" | "tls" => "check the endpoint and the network path to it",
        _ => "see the error; chunks stay in the spool until it is fixed",
    }
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
}

impl Uploader {
    /// An uploader over a chunk uploader (which carries client, spool and settings).
    pub fn new(chunks: Arc<ChunkUploader>) -> Self {
        Self {
            spool: chunks.spool.clone(),
            metrics: chunks.metrics.clone(),
            chunks,
        }
    }

    /// Checks the bucket (creating it if configured). Errors are clear but not fatal for the
    /// daemon: chunks stay in the spool and are retried.
    pub async fn preflight(&self) -> Result<(), Error> {
        let client = &self.chunks.client;
        // A bucket just created or already ours needs no second round trip; every extra
        // request at start is one more chance for a flaky link to delay the first upload.
        if self.chunks.settings.create_bucket
            && client.create_bucket().await? == crate::s3::Owned::Yes
        {
            return Ok(());
        }
        client.head_bucket().await
    }

    async fn abort_orphans(&self) {
        let Ok(aborts) = self.spool.journal().pending_aborts() else {
            return;
        };
        for a in aborts {
            match self.chunks.client.abort(&a.key, &a.upload_id).await {
                Ok(()) => {
                    tracing::info!(key = %a.key, upload_id = %a.upload_id, "aborted orphaned multipart upload");
                    if let Err(e) = self.spool.journal().abort_done(&a.upload_id) {
                        tracing::error!(error = %e, "journal: abort bookkeeping failed");
                    }
                }
                // Some stores refuse an abort of an upload they already dropped.
                Err(e) if matches!(e.class(), "auth" | "client_4xx") => {
                    tracing::debug!(key = %a.key, error = %e, "abort refused; upload already gone");
                    if let Err(e) = self.spool.journal().abort_done(&a.upload_id) {
                        tracing::error!(error = %e, "journal: abort bookkeeping failed");
                    }
                }
                Err(e) => {
                    tracing::debug!(key = %a.key, error = %e, "abort failed; will retry");
                    return;
                }
            }
        }
    }

    fn remove(&self, chunk: &Chunk) {
        match self.spool.remove_verified(chunk) {
            Ok(Removal::Changed) => {
                tracing::warn!(chunk = %chunk.name, "file changed after verification; kept, will upload the new version")
            }
            Ok(r) => tracing::debug!(chunk = %chunk.name, outcome = ?r, "chunk file handled"),
            Err(e) => {
                tracing::error!(chunk = %chunk.name, error = %e, "could not remove verified chunk; will retry")
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
        let mut readiness = Readiness::new(settings.settle);
        let mut disk = DiskWatch::new(
            settings.disk_warning_percent,
            settings.disk_critical_percent,
            settings.fill_rate_window,
        );
        let mut tasks: JoinSet<(Chunk, Result<Verified, Error>)> = JoinSet::new();
        let mut in_flight: Vec<i64> = Vec::new();
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

        // Whatever a previous run left half-done: verified-not-removed files, orphan uploads.
        self.spool.scan_once(&mut readiness)?;
        for c in self.spool.journal().chunks_in(ChunkState::Verified)? {
            self.remove(&c);
        }
        self.abort_orphans().await;

        let watch_shutdown = shutdown.clone();
        let watcher = async {
            if mode == RunMode::Daemon {
                self.spool.watch(watch_shutdown).await
            } else {
                std::future::pending().await
            }
        };
        tokio::pin!(watcher);

        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            if last_housekeeping.is_none_or(|t| now.duration_since(t) >= HOUSEKEEPING_EVERY) {
                last_housekeeping = Some(now);
                match self.spool.housekeeping(&mut disk, &in_flight) {
                    Ok(status) if status.level == backhaul_spool::DiskLevel::Critical => {
                        tracing::error!(
                            used_percent = status.used_percent,
                            "spool disk above critical watermark"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "spool housekeeping failed"),
                }
                if mode == RunMode::Daemon {
                    self.abort_orphans().await;
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
                        self.metrics.errors.inc(e.class());
                        bucket.failures += 1;
                        bucket.next_check = Instant::now() + backoff.ceiling(bucket.failures);
                        tracing::error!(bucket = %self.chunks.client.bucket(), class = e.class(), error = %e,
                            help = bucket_help(&e), "bucket not usable; uploads wait, nothing is deleted");
                        let give_up = bucket.failures >= DRAIN_MAX_ATTEMPTS
                            || (!e.is_retryable() && bucket.failures >= 2);
                        if mode == RunMode::Drain && give_up {
                            for c in self
                                .spool
                                .journal()
                                .chunks_in(ChunkState::Discovered)?
                                .into_iter()
                                .chain(self.spool.journal().chunks_in(ChunkState::Uploading)?)
                            {
                                report
                                    .failed
                                    .push((c.name, format!("{e} ({})", bucket_help(&e))));
                            }
                            break;
                        }
                    }
                }
            }
            while bucket.ok && tasks.len() < self.chunks.settings.chunks_in_flight {
                let mut skip = in_flight.clone();
                skip.extend(
                    retries
                        .iter()
                        .filter(|(_, r)| r.not_before > now)
                        .map(|(id, _)| *id),
                );
                skip.extend(&failed_out);
                let Some(chunk) = self.spool.journal().next_pending(settings.order, &skip)? else {
                    break;
                };
                self.spool
                    .journal()
                    .start_attempt(chunk.id, backhaul_spool::now_millis())?;
                in_flight.push(chunk.id);
                let up = self.chunks.clone();
                tasks.spawn(async move {
                    let r = up.upload(&chunk).await;
                    (chunk, r)
                });
            }
            if mode == RunMode::Drain && tasks.is_empty() && bucket.ok {
                let scan = self.spool.scan_once(&mut readiness)?;
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
                    let (chunk, result) = match joined {
                        Ok(v) => v,
                        Err(e) => {
                            tracing::error!(error = %e, "upload task panicked");
                            in_flight.clear();
                            continue;
                        }
                    };
                    in_flight.retain(|id| *id != chunk.id);
                    if result.as_ref().is_err_and(|e| matches!(e.class(), "auth" | "no_such_bucket" | "credentials")) {
                        bucket.ok = false;
                    }
                    self.finish(chunk, result, mode, &backoff, &mut retries, &mut failed_out, &mut report)?;
                    if let Err(e) = self.spool.refresh_backlog() {
                        tracing::error!(error = %e, "cannot read the backlog from the journal");
                    }
                }
                _ = self.spool.ready().notified() => {
                    if let Err(e) = self.spool.refresh_backlog() {
                        tracing::error!(error = %e, "cannot read the backlog from the journal");
                    }
                }
                _ = tokio::time::sleep(next_retry) => {}
                r = &mut watcher => {
                    r?;
                }
                _ = shutdown.changed() => {}
            }
        }
        // Parts in flight are abandoned; what completed is journaled and resumes next start.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        report.elapsed = started.elapsed();
        Ok(report)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        chunk: Chunk,
        result: Result<Verified, Error>,
        mode: RunMode,
        backoff: &Backoff,
        retries: &mut HashMap<i64, Retry>,
        failed_out: &mut Vec<i64>,
        report: &mut RunReport,
    ) -> Result<(), Error> {
        match result {
            Ok(v) => {
                self.spool.journal().mark_verified(
                    chunk.id,
                    &v.checksum,
                    backhaul_spool::now_millis(),
                )?;
                self.metrics.uploaded_chunks.inc();
                report.chunks += 1;
                report.bytes += chunk.identity.size;
                report.bytes_sent += v.bytes_sent;
                report.parts_resumed += u64::from(v.parts_resumed);
                retries.remove(&chunk.id);
                tracing::info!(chunk = %chunk.name, key = %chunk.key, bytes = chunk.identity.size,
                    checksum = %v.checksum, parts_resumed = v.parts_resumed, "chunk uploaded and verified");
                let verified = self.spool.journal().chunk(chunk.id)?;
                self.remove(&verified);
            }
            Err(Error::Changed { path }) => {
                tracing::warn!(chunk = %chunk.name, path = %path.display(), "chunk changed or vanished during upload");
                self.spool.recheck(&chunk)?;
                retries.remove(&chunk.id);
            }
            Err(e) => {
                // Request failures were counted where they happened; these two never are.
                if matches!(e, Error::Verify { .. } | Error::Spool(_)) {
                    self.metrics.errors.inc(e.class());
                }
                if let Err(je) = self.spool.journal().note_error(chunk.id, &e.to_string()) {
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
                tracing::error!(chunk = %chunk.name, class = e.class(), error = %e, attempts = r.attempts,
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
