use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backhaul_telemetry::Metrics;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc, watch};

use crate::journal::Upsert;
use crate::remove::{drop_unuploaded, remove_verified};
use crate::scan::{self, Skipped, ignored};
use crate::{
    AfterUpload, Chunk, ChunkState, DiskFullPolicy, DiskStatus, DiskWatch, Error, Journal,
    Readiness, Removal, ScanEntry, SpoolSettings, UnixMillis,
};

/// How often files that are not yet settled are looked at again.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// The spool: directory, journal, and the signal that new chunks are ready.
#[derive(Debug)]
pub struct Spool {
    settings: SpoolSettings,
    journal: Journal,
    metrics: Arc<Metrics>,
    ready: Notify,
}

/// Wall-clock milliseconds since the epoch.
pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn mtime_age(mtime_ns: i128) -> Option<Duration> {
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_nanos() as i128;
    let age = now_ns - mtime_ns;
    (age >= 0).then(|| Duration::from_nanos(age as u64))
}

/// What one scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    /// Chunks newly journaled (or restarted because they changed).
    pub new_chunks: usize,
    /// Files seen but not yet settled.
    pub waiting: usize,
    /// Pending chunks whose files vanished.
    pub gone: usize,
}

impl Spool {
    /// Opens the spool: the directory must exist; the journal is created if needed.
    pub fn open(settings: SpoolSettings, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let meta = std::fs::metadata(&settings.dir).map_err(|e| Error::SpoolDir {
            path: settings.dir.clone(),
            source: e,
        })?;
        if !meta.is_dir() {
            return Err(Error::SpoolDir {
                path: settings.dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        std::fs::read_dir(&settings.dir).map_err(|e| Error::SpoolDir {
            path: settings.dir.clone(),
            source: e,
        })?;
        let journal = Journal::open(&settings.journal)?;
        Ok(Self {
            settings,
            journal,
            metrics,
            ready: Notify::new(),
        })
    }

    /// The validated settings.
    pub fn settings(&self) -> &SpoolSettings {
        &self.settings
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Signalled whenever new chunks are journaled.
    pub fn ready(&self) -> &Notify {
        &self.ready
    }

    /// Absolute path of a chunk's file.
    pub fn path_of(&self, chunk: &Chunk) -> PathBuf {
        self.settings.dir.join(&chunk.name)
    }

    fn journal_entry(&self, e: &ScanEntry) -> Result<Option<Upsert>, Error> {
        let camera = e.camera.as_deref().unwrap_or(&self.settings.default_camera);
        let key = match self
            .settings
            .key
            .render(camera, &e.file_name, e.identity.mtime_ns)
        {
            Ok(k) => k,
            Err(err) => {
                tracing::error!(chunk = %e.name, error = %err, "chunk skipped: unsafe object key");
                return Ok(None);
            }
        };
        if e.identity.size == 0 {
            tracing::warn!(chunk = %e.name, "zero-byte chunk; uploading it as an empty object");
        }
        let up = self
            .journal
            .upsert_ready(&e.name, camera, &key, e.identity, now_millis())?;
        if let Upsert::Replaced(_) = up {
            self.metrics.changed_chunks.inc();
            tracing::warn!(chunk = %e.name, "chunk changed after discovery; it starts over");
        }
        Ok(Some(up))
    }

    /// One full scan: journals ready files, tracks unsettled ones, and marks pending chunks
    /// whose files vanished as `gone`.
    pub fn scan_once(&self, readiness: &mut Readiness) -> Result<ScanReport, Error> {
        let mut skipped = Vec::new();
        let entries = scan::scan(&self.settings.dir, &self.settings.ignore, &mut skipped)?;
        for s in skipped {
            match s {
                Skipped::Symlink(n) => tracing::debug!(name = %n, "symlink in spool not followed"),
                Skipped::NotUtf8(n) => tracing::warn!(name = %n, "non-UTF-8 name skipped"),
                Skipped::Special(n) => tracing::debug!(name = %n, "special file skipped"),
            }
        }
        let mut report = ScanReport::default();
        let now = Instant::now();
        let mut present = std::collections::HashSet::new();
        for e in &entries {
            present.insert(e.name.as_str());
            if self.is_known(e)? {
                readiness.forget(&e.name);
                continue;
            }
            if readiness.check(&e.name, e.identity, mtime_age(e.identity.mtime_ns), now) {
                if let Some(Upsert::New(_) | Upsert::Replaced(_)) = self.journal_entry(e)? {
                    report.new_chunks += 1;
                }
            } else {
                report.waiting += 1;
            }
        }
        for state in [ChunkState::Discovered, ChunkState::Uploading] {
            for c in self.journal.chunks_in(state)? {
                if !present.contains(c.name.as_str()) && !self.path_of(&c).exists() {
                    tracing::error!(chunk = %c.name, "chunk vanished before upload; not ours to lose, reported");
                    self.metrics.changed_chunks.inc();
                    self.journal.finish(c.id, ChunkState::Gone, now_millis())?;
                    report.gone += 1;
                }
            }
        }
        if report.new_chunks > 0 {
            self.ready.notify_waiters();
            self.ready.notify_one();
        }
        Ok(report)
    }

    fn is_known(&self, e: &ScanEntry) -> Result<bool, Error> {
        Ok(match self.journal.chunk_by_name(&e.name)? {
            Some(c) if c.identity == e.identity => true,
            // A verified chunk whose removal is still pending is handled by the uploader.
            Some(c) if c.state == ChunkState::Verified => c.identity.size == e.identity.size,
            _ => false,
        })
    }

    /// Looks at one path reported by inotify.
    fn check_path(
        &self,
        path: &Path,
        readiness: &mut Readiness,
        renamed: bool,
    ) -> Result<bool, Error> {
        let Ok(rel) = path.strip_prefix(&self.settings.dir) else {
            return Ok(false);
        };
        let Some((camera, file_name, name)) = scan::split_name(rel) else {
            return Ok(false);
        };
        if ignored(&name, &self.settings.ignore) {
            return Ok(false);
        }
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            readiness.forget(&name);
            return Ok(false);
        };
        if !meta.file_type().is_file() {
            return Ok(false);
        }
        let entry = ScanEntry {
            name,
            camera,
            file_name,
            identity: scan::identity_of(&meta),
        };
        if self.is_known(&entry)? {
            return Ok(false);
        }
        if renamed {
            readiness.mark_renamed(&entry.name);
        }
        if readiness.check(
            &entry.name,
            entry.identity,
            mtime_age(entry.identity.mtime_ns),
            Instant::now(),
        ) {
            return Ok(matches!(
                self.journal_entry(&entry)?,
                Some(Upsert::New(_) | Upsert::Replaced(_))
            ));
        }
        Ok(false)
    }

    /// Watches the spool until `shutdown` turns true: inotify for prompt discovery, a settle
    /// poll for files still being written, and a full rescan every `rescan_interval` in case
    /// inotify missed anything (queue overflow, a directory created before its watch).
    pub async fn watch(&self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let (tx, mut rx) = mpsc::unbounded_channel::<notify::Result<Event>>();
        let mut watcher = notify::recommended_watcher(move |ev| {
            // The receiver only goes away at shutdown.
            tx.send(ev).ok();
        })
        .map_err(|e| Error::Watch {
            path: self.settings.dir.clone(),
            source: e,
        })?;
        watcher
            .watch(&self.settings.dir, RecursiveMode::Recursive)
            .map_err(|e| Error::Watch {
                path: self.settings.dir.clone(),
                source: e,
            })?;
        let mut readiness = Readiness::new(self.settings.settle);
        let mut rescan = tokio::time::interval(self.settings.rescan_interval);
        let mut settle = tokio::time::interval(SETTLE_POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = rescan.tick() => {
                    if let Err(e) = self.scan_once(&mut readiness) {
                        tracing::error!(error = %e, "spool rescan failed");
                    }
                }
                _ = settle.tick() => {
                    let mut any = false;
                    for name in readiness.waiting() {
                        any |= self.check_path(&self.settings.dir.join(&name), &mut readiness, false)?;
                    }
                    if any {
                        self.ready.notify_one();
                    }
                }
                Some(ev) = rx.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            tracing::warn!(error = %e, "inotify error; rescanning");
                            self.scan_once(&mut readiness)?;
                            continue;
                        }
                    };
                    let renamed_to = match ev.kind {
                        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev.paths.first(),
                        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.get(1),
                        _ => None,
                    };
                    let mut any = false;
                    if let Some(p) = renamed_to {
                        any |= self.check_path(p, &mut readiness, true)?;
                    } else if matches!(
                        ev.kind,
                        EventKind::Create(_)
                            | EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Modify(_)
                    ) {
                        for p in &ev.paths {
                            if p.is_dir() {
                                // Files may have landed before the new directory's watch.
                                self.scan_once(&mut readiness)?;
                            } else {
                                any |= self.check_path(p, &mut readiness, false)?;
                            }
                        }
                    }
                    if any {
                        self.ready.notify_one();
                    }
                }
            }
        }
    }

    /// Deletes (or retains) a verified chunk's file and records that in the journal.
    pub fn remove_verified(&self, chunk: &Chunk) -> Result<Removal, Error> {
        let retain = match self.settings.after_upload {
            AfterUpload::Retain => self.settings.retain_dir.as_deref(),
            AfterUpload::Delete => None,
        };
        let outcome = remove_verified(&self.path_of(chunk), chunk, retain)?;
        let state = match outcome {
            Removal::Retained => ChunkState::Retained,
            Removal::Deleted | Removal::AlreadyGone => ChunkState::Removed,
            Removal::Changed => return Ok(outcome),
        };
        self.journal.finish(chunk.id, state, now_millis())?;
        Ok(outcome)
    }

    /// Updates the backlog gauges from the journal (cheap; called whenever a chunk changes).
    pub fn refresh_backlog(&self) -> Result<(), Error> {
        let backlog = self.journal.backlog()?;
        self.metrics.backlog_chunks.set(backlog.chunks as f64);
        self.metrics.backlog_bytes.set(backlog.bytes as f64);
        let age = backlog
            .oldest_mtime_ns
            .and_then(mtime_age)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.oldest_chunk_age_seconds.set(age);
        Ok(())
    }

    /// Updates backlog and disk metrics; under `drop-oldest` at critical, deletes the oldest
    /// un-uploaded chunks not in `busy` until usage is below critical.
    pub fn housekeeping(&self, disk: &mut DiskWatch, busy: &[i64]) -> Result<DiskStatus, Error> {
        self.refresh_backlog()?;
        let mut status = disk.sample(&self.settings.dir, Instant::now())?;
        self.metrics.disk_used_percent.set(status.used_percent);
        self.metrics
            .disk_full_projected_seconds
            .set(status.seconds_to_full);
        if self.settings.disk_full_policy == DiskFullPolicy::DropOldest {
            while status.used_percent >= self.settings.disk_critical_percent {
                let Some(victim) = self
                    .journal
                    .chunks_in(ChunkState::Discovered)?
                    .into_iter()
                    .find(|c| !busy.contains(&c.id))
                else {
                    break;
                };
                drop_unuploaded(&self.path_of(&victim))?;
                self.journal
                    .finish(victim.id, ChunkState::Dropped, now_millis())?;
                self.metrics.dropped_chunks.inc();
                tracing::error!(chunk = %victim.name, used_percent = status.used_percent,
                    "disk critical: dropped un-uploaded chunk (disk_full_policy = drop-oldest)");
                status = disk.sample(&self.settings.dir, Instant::now())?;
            }
        }
        Ok(status)
    }
}

impl Spool {
    /// Re-reads a chunk's file after the uploader saw it change or vanish: a vanished file is
    /// `gone` (reported), a changed one starts over as a new version.
    pub fn recheck(&self, chunk: &Chunk) -> Result<(), Error> {
        let path = self.path_of(chunk);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::error!(chunk = %chunk.name, "chunk vanished while uploading; reported, nothing to upload");
                self.metrics.changed_chunks.inc();
                self.journal
                    .finish(chunk.id, ChunkState::Gone, now_millis())
            }
            Err(e) => Err(Error::ChunkIo {
                path,
                action: "stat",
                source: e,
            }),
            Ok(meta) if meta.file_type().is_file() => {
                let entry = ScanEntry {
                    name: chunk.name.clone(),
                    camera: (chunk.camera != self.settings.default_camera
                        || chunk.name.contains('/'))
                    .then(|| chunk.camera.clone()),
                    file_name: chunk
                        .name
                        .rsplit('/')
                        .next()
                        .unwrap_or(&chunk.name)
                        .to_owned(),
                    identity: scan::identity_of(&meta),
                };
                if entry.identity != chunk.identity {
                    self.journal_entry(&entry)?;
                }
                Ok(())
            }
            Ok(_) => {
                self.metrics.changed_chunks.inc();
                self.journal
                    .finish(chunk.id, ChunkState::Gone, now_millis())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::test_util::TempSpool;
    use crate::{ChunkState, DiskFullPolicy, DiskWatch, Readiness};

    /// A critical watermark of 0 % makes any real filesystem "full", so the policy is exercised
    /// on a real statvfs without filling a disk.
    fn full_spool(policy: DiskFullPolicy) -> TempSpool {
        let spool = TempSpool::with(|c| {
            c.disk_warning_percent = 0.0;
            c.disk_critical_percent = 0.0;
            c.disk_full_policy = policy;
        });
        for i in 0..3 {
            spool.write_chunk(&format!("c{i}.mp4"), b"video");
        }
        spool
            .spool
            .scan_once(&mut Readiness::new(Duration::ZERO))
            .unwrap();
        spool
    }

    #[test]
    fn keep_policy_never_deletes_unuploaded_chunks() {
        let spool = full_spool(DiskFullPolicy::Keep);
        let status = spool
            .spool
            .housekeeping(&mut DiskWatch::new(0.0, 0.0, Duration::from_secs(300)), &[])
            .unwrap();
        assert_eq!(status.level, crate::DiskLevel::Critical);
        assert_eq!(spool.spool.journal().backlog().unwrap().chunks, 3);
        assert!(spool.path().join("c0.mp4").exists());
        assert_eq!(spool.metrics.dropped_chunks.value(), 0);
        assert_eq!(spool.metrics.backlog_chunks.value(), 3.0);
    }

    #[test]
    fn drop_oldest_deletes_only_idle_chunks_and_counts_them() {
        let spool = full_spool(DiskFullPolicy::DropOldest);
        let busy = spool
            .spool
            .journal()
            .chunk_by_name("c1.mp4")
            .unwrap()
            .unwrap()
            .id;
        spool
            .spool
            .housekeeping(
                &mut DiskWatch::new(0.0, 0.0, Duration::from_secs(300)),
                &[busy],
            )
            .unwrap();
        assert_eq!(spool.metrics.dropped_chunks.value(), 2);
        assert!(
            spool.path().join("c1.mp4").exists(),
            "a chunk being uploaded is never dropped"
        );
        assert!(!spool.path().join("c0.mp4").exists());
        let c0 = spool
            .spool
            .journal()
            .chunk_by_name("c0.mp4")
            .unwrap()
            .unwrap();
        assert_eq!(c0.state, ChunkState::Dropped);
    }
}
