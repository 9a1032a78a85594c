use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backhaul_telemetry::Metrics;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc, watch};

use crate::flight::Flights;
use crate::journal::{Journal, Ready, Upsert};
use crate::remove::drop_unuploaded;
use crate::scan::{self, Skipped, ignored};
use crate::writers::{Writers, open_for_writing};
use crate::{
    Chunk, ChunkState, DiskFeed, DiskFullPolicy, DiskStatus, DiskWatch, Error, Readiness,
    ScanEntry, SpoolLock, SpoolSettings, UnixMillis,
};

/// How often files that are not yet settled are looked at again.
const SETTLE_POLL: Duration = Duration::from_secs(1);
/// Most files a scan journals in one commit: the journal's lock is held for the group, and
/// uploads that finish meanwhile wait for it.
const SCAN_COMMIT_FILES: usize = 256;

/// The spool: directory, journal, the one readiness tracker, and the signal that new chunks
/// are ready. It owns every chunk's lifecycle; uploaders go through its claim/ack methods
/// (`claim.rs`).
#[derive(Debug)]
pub struct Spool {
    pub(crate) settings: SpoolSettings,
    pub(crate) journal: Journal,
    pub(crate) metrics: Arc<Metrics>,
    ready: Notify,
    readiness: Mutex<Readiness>,
    /// Names already warned about (unusable, unsafe key), so a rescan does not repeat it.
    warned: Mutex<HashSet<String>>,
    /// Files that stay in the spool because they cannot become an object, and why.
    skipped: Mutex<BTreeMap<String, Skip>>,
    /// Said once: the kernel will not tell whether files are open for writing.
    writers_unknown: AtomicBool,
    /// Ready files could not be journaled because the filesystem is full; they are scanned
    /// again once there is room.
    discovery_deferred: AtomicBool,
    disk: DiskFeed,
    /// Held while the spool is open: one agent per spool.
    _lock: SpoolLock,
    /// Chunks out on upload, backing off or given up on, in this process.
    pub(crate) flights: Arc<Mutex<Flights>>,
    /// The backlog gauges are behind the journal (upkeep reads it again).
    pub(crate) backlog_stale: AtomicBool,
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

/// Why a file in the spool cannot be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No safe object key can be made for it (see the log).
    UnsafeKey,
    /// Its name is not UTF-8, which an object key must be.
    NotUtf8,
}

impl Skip {
    /// What to tell the operator.
    pub fn describe(self) -> &'static str {
        match self {
            Self::UnsafeKey => {
                "no safe object key can be made for it (see the log); it stays in the spool"
            }
            Self::NotUtf8 => {
                "its name is not UTF-8 and cannot become an object key; it stays in the spool (rename it)"
            }
        }
    }
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
    /// Opens the spool: the directory must exist; the journal is created if needed. Refused
    /// with [`Error::Locked`] while another process has it open.
    pub fn open(settings: SpoolSettings, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let lock = Self::check_dir(&settings).and_then(|()| SpoolLock::acquire(&settings))?;
        Self::open_locked(settings, metrics, lock)
    }

    fn check_dir(settings: &SpoolSettings) -> Result<(), Error> {
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
        Ok(())
    }

    /// [`Self::open`] with the spool's lock already taken (journal recovery takes it before
    /// it moves the old journal aside).
    pub(crate) fn open_locked(
        settings: SpoolSettings,
        metrics: Arc<Metrics>,
        lock: SpoolLock,
    ) -> Result<Self, Error> {
        let journal = Journal::open(&settings.journal)?;
        Ok(Self {
            readiness: Mutex::new(Readiness::new(settings.settle)),
            settings,
            journal,
            metrics,
            ready: Notify::new(),
            warned: Mutex::new(HashSet::new()),
            skipped: Mutex::new(BTreeMap::new()),
            writers_unknown: AtomicBool::new(false),
            discovery_deferred: AtomicBool::new(false),
            disk: DiskFeed::default(),
            _lock: lock,
            flights: Arc::default(),
            backlog_stale: AtomicBool::new(true),
        })
    }

    /// The latest disk reading, shared: the uploader's housekeeping samples, others read.
    pub fn disk_feed(&self) -> DiskFeed {
        self.disk.clone()
    }

    pub(crate) fn readiness(&self) -> MutexGuard<'_, Readiness> {
        self.readiness.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True the first time `name` is seen for `why`.
    fn first_warning(&self, why: &str, name: &str) -> bool {
        self.warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{why}\0{name}"))
    }

    /// Files the spool cannot upload, by name, with the reason (they stay in place;
    /// `--drain` reports them as not uploaded).
    pub fn skipped(&self) -> Vec<(String, Skip)> {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, why)| (n.clone(), *why))
            .collect()
    }

    fn skip(&self, name: &str, why: Skip) {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), why);
    }

    /// Whether a writer still holds `path` open. When the kernel cannot say, the settle timer
    /// decides alone (said once).
    pub(crate) fn being_written(&self, path: &Path) -> bool {
        match open_for_writing(path) {
            Writers::None => false,
            Writers::Open => true,
            Writers::Unknown(e) => {
                if !self.writers_unknown.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, path = ?path,
                        "cannot ask the kernel whether chunks are still open for writing (file \
                         leases need the files' owner or CAP_LEASE, and a local filesystem); \
                         readiness relies on settle_seconds alone");
                }
                false
            }
        }
    }

    /// The validated settings.
    pub fn settings(&self) -> &SpoolSettings {
        &self.settings
    }

    /// Signalled whenever new chunks are journaled.
    pub fn ready(&self) -> &Notify {
        &self.ready
    }

    /// Absolute path of a chunk's file.
    pub fn path_of(&self, chunk: &Chunk) -> PathBuf {
        self.settings.dir.join(&chunk.name)
    }

    /// Journals a file the uploader found changed (no readiness wait: it was ready before).
    pub(crate) fn journal_entry_now(&self, e: &ScanEntry) -> Result<(), Error> {
        self.journal_entry(e).map(|_| ())
    }

    fn journal_entry(&self, e: &ScanEntry) -> Result<Option<Upsert>, Error> {
        Ok(self.journal_entries(&[e])?.pop().flatten())
    }

    /// The object key the key template gives a file, before any disambiguation.
    pub(crate) fn key_of(&self, e: &ScanEntry) -> Result<String, Error> {
        let camera = e.camera.as_deref().unwrap_or(&self.settings.default_camera);
        self.settings
            .key
            .render(camera, e.below_camera(), e.identity.mtime_ns)
    }

    /// Journals files that are ready together, in one commit; `None` for a file with no
    /// safe key (skipped, said once).
    fn journal_entries(&self, entries: &[&ScanEntry]) -> Result<Vec<Option<Upsert>>, Error> {
        let mut keyed = Vec::with_capacity(entries.len());
        for e in entries {
            let camera = e.camera.as_deref().unwrap_or(&self.settings.default_camera);
            match self.key_of(e) {
                Ok(k) => keyed.push(Some((camera, k))),
                Err(err) => {
                    if self.first_warning("unsafe key", &e.name) {
                        tracing::error!(chunk = ?e.name, error = %err,
                            "chunk skipped: no safe object key; it stays in the spool (fix spool.key_template or the name)");
                    }
                    self.skip(&e.name, Skip::UnsafeKey);
                    keyed.push(None);
                }
            }
        }
        let (at, ready): (Vec<usize>, Vec<Ready<'_>>) = entries
            .iter()
            .zip(&keyed)
            .enumerate()
            .filter_map(|(i, (e, k))| {
                k.as_ref().map(|(camera, key)| {
                    let ready = Ready {
                        name: &e.name,
                        camera,
                        key,
                        identity: e.identity,
                    };
                    (i, ready)
                })
            })
            .unzip();
        let outcomes = self.journal.upsert_ready_many(&ready, now_millis())?;
        let mut out = vec![None; entries.len()];
        for ((i, f), up) in at.into_iter().zip(&ready).zip(outcomes) {
            if f.identity.size == 0 {
                tracing::warn!(chunk = ?f.name, "zero-byte chunk; uploading it as an empty object");
            }
            if let Upsert::Replaced(_, _) = &up {
                self.metrics.changed_chunks.inc();
                tracing::warn!(chunk = ?f.name, "chunk changed after discovery or upload; it is uploaded again as a new version");
            }
            if let Upsert::New(_, Some(alt)) | Upsert::Replaced(_, Some(alt)) = &up {
                self.metrics.key_collisions.inc();
                tracing::warn!(chunk = ?f.name, key = ?f.key, stored_as = ?alt,
                    "another chunk in the spool has this object key; stored under a disambiguated key");
            }
            out[i] = Some(up);
        }
        if out.iter().flatten().any(Upsert::is_new) {
            self.backlog_changed();
        }
        Ok(out)
    }

    /// Whether a file that looks ready may be journaled now: nobody holds it open for writing.
    /// One still being written waits, however old its mtime.
    fn ready_now(&self, readiness: &mut Readiness, e: &ScanEntry, now: Instant) -> bool {
        if !readiness.check(&e.name, e.identity, mtime_age(e.identity.mtime_ns), now) {
            return false;
        }
        if self.being_written(&self.settings.dir.join(&e.name)) {
            readiness.still_written(&e.name, e.identity, now);
            return false;
        }
        true
    }

    /// One full scan: journals ready files, tracks unsettled ones, and marks pending chunks
    /// whose files vanished as `gone`.
    pub fn scan_once(&self) -> Result<ScanReport, Error> {
        let mut skipped = Vec::new();
        let entries = scan::scan(&self.settings.dir, &self.settings.ignore, &mut skipped)?;
        for s in skipped {
            match s {
                Skipped::Symlink(n) => tracing::debug!(name = ?n, "symlink in spool not followed"),
                Skipped::NotUtf8(n) => {
                    if self.first_warning("not utf-8", &n) {
                        tracing::warn!(name = ?n, "file name is not UTF-8 and cannot become an object key; skipped (rename it)");
                    }
                    self.skip(&n, Skip::NotUtf8);
                }
                Skipped::Special(n) => tracing::debug!(name = ?n, "special file skipped"),
            }
        }
        let mut readiness = self.readiness();
        let mut report = ScanReport::default();
        let now = Instant::now();
        let mut present = std::collections::HashSet::new();
        let mut ready = Vec::new();
        for e in &entries {
            present.insert(e.name.as_str());
            if self.is_known(e)? {
                readiness.forget(&e.name);
                continue;
            }
            if self.ready_now(&mut readiness, e, now) {
                ready.push(e);
            } else {
                report.waiting += 1;
            }
        }
        // A backlog found at start is journaled a group per commit, not a commit (an fsync)
        // per file; groups keep the journal free for the uploads in between.
        for (i, group) in ready.chunks(SCAN_COMMIT_FILES).enumerate() {
            match self.journal_entries(group) {
                Ok(outcomes) => {
                    report.new_chunks += outcomes.iter().flatten().filter(|u| u.is_new()).count();
                }
                // The files stay where they are and wait for room, like unsettled ones.
                Err(e @ Error::NoSpace { .. }) => {
                    self.discovery_failed(&e);
                    report.waiting += ready.len() - i * SCAN_COMMIT_FILES;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        for state in [ChunkState::Discovered, ChunkState::Uploading] {
            for c in self.journal.chunks_in(state)? {
                if !present.contains(c.name.as_str()) && !self.path_of(&c).exists() {
                    tracing::error!(chunk = ?c.name, "chunk vanished before upload; not ours to lose, reported");
                    self.metrics.changed_chunks.inc();
                    self.journal.finish(&c, ChunkState::Gone, now_millis())?;
                    self.backlog_changed();
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
        Ok(self
            .journal
            .chunk_by_name(&e.name)?
            .is_some_and(|c| c.identity == e.identity))
    }

    /// Looks at one path reported by inotify.
    fn check_path(&self, path: &Path, renamed: bool) -> Result<bool, Error> {
        let mut readiness = self.readiness();
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
        if self.ready_now(&mut readiness, &entry, Instant::now()) {
            return Ok(self.journal_entry(&entry)?.is_some_and(|u| u.is_new()));
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
        let mut rescan = tokio::time::interval(self.settings.rescan_interval);
        let mut settle = tokio::time::interval(SETTLE_POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                _ = rescan.tick() => {
                    self.discovered(self.scan_once().map(|_| false));
                }
                _ = settle.tick() => {
                    let mut any = false;
                    let waiting = self.readiness().waiting();
                    for name in waiting {
                        any |= self.discovered(self.check_path(&self.settings.dir.join(&name), false));
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
                            self.discovered(self.scan_once().map(|_| false));
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
                        any |= self.discovered(self.check_path(p, true));
                    } else if matches!(
                        ev.kind,
                        EventKind::Create(_)
                            | EventKind::Access(AccessKind::Close(AccessMode::Write))
                            | EventKind::Modify(_)
                    ) {
                        for p in &ev.paths {
                            if p.is_dir() {
                                // Files may have landed before the new directory's watch.
                                self.discovered(self.scan_once().map(|_| false));
                            } else {
                                any |= self.discovered(self.check_path(p, false));
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

    /// The outcome of a discovery step in the watcher: a failure is said and the watch goes
    /// on (the next rescan tries again), so the agent never stops over a file it could not
    /// journal.
    fn discovered(&self, outcome: Result<bool, Error>) -> bool {
        outcome.unwrap_or_else(|e| {
            self.discovery_failed(&e);
            false
        })
    }

    /// Says why discovery failed; a full filesystem once per episode, since it lasts.
    fn discovery_failed(&self, e: &Error) {
        match e {
            Error::NoSpace { .. } => {
                if !self.discovery_deferred.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e,
                        "spool: the filesystem is full; new chunks are journaled once uploads have freed space (nothing is lost: they stay in the spool)");
                }
            }
            e => {
                tracing::error!(error = %e, "spool: discovery failed; the next rescan tries again")
            }
        }
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
    /// un-uploaded chunks not in flight until usage is below critical.
    pub fn housekeeping(&self, disk: &mut DiskWatch) -> Result<DiskStatus, Error> {
        let busy: Vec<i64> = self.in_flight().iter().map(|c| c.id).collect();
        // The reserve is taken again only with room to spare, so once it is held the files
        // that waited for space can be journaled.
        if self.journal.keep_reserve() && self.discovery_deferred.swap(false, Ordering::Relaxed) {
            tracing::info!("spool: space is back; journaling the chunks that waited for it");
            self.discovered(self.scan_once().map(|_| false));
        }
        self.refresh_backlog()?;
        self.metrics
            .journal_size_bytes
            .set(self.journal.size_bytes() as f64);
        let mut status = disk.sample(&self.settings.dir, Instant::now())?;
        self.disk.publish(status);
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
                    .finish(&victim, ChunkState::Dropped, now_millis())?;
                self.metrics.dropped_chunks.inc();
                self.backlog_changed();
                tracing::error!(chunk = ?victim.name, used_percent = status.used_percent,
                    "disk critical: dropped un-uploaded chunk (disk_full_policy = drop-oldest)");
                status = disk.sample(&self.settings.dir, Instant::now())?;
                self.disk.publish(status);
            }
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::test_util::TempSpool;
    use crate::{ChunkState, DiskFullPolicy, DiskWatch};

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
        spool.spool.scan_once().unwrap();
        spool
    }

    /// A backlog larger than one commit's group is journaled whole, each file once.
    #[test]
    fn a_scan_journals_a_backlog_of_several_commit_groups() {
        let spool = TempSpool::new();
        let n = super::SCAN_COMMIT_FILES * 2 + 3;
        for i in 0..n {
            spool.write_chunk(&format!("cam1/c{i}.mp4"), b"video");
        }
        assert_eq!(spool.spool.scan_once().unwrap().new_chunks, n);
        assert_eq!(spool.spool.backlog().unwrap().chunks, n as u64);
        assert_eq!(spool.spool.scan_once().unwrap().new_chunks, 0);
    }

    #[test]
    fn keep_policy_never_deletes_unuploaded_chunks() {
        let spool = full_spool(DiskFullPolicy::Keep);
        let status = spool
            .spool
            .housekeeping(&mut DiskWatch::new(0.0, 0.0, Duration::from_secs(300)))
            .unwrap();
        assert_eq!(status.level, crate::DiskLevel::Critical);
        assert_eq!(spool.spool.backlog().unwrap().chunks, 3);
        assert!(spool.path().join("c0.mp4").exists());
        assert_eq!(spool.metrics.dropped_chunks.value(), 0);
        assert_eq!(spool.metrics.backlog_chunks.value(), 3.0);
    }

    #[test]
    fn drop_oldest_deletes_only_idle_chunks_and_counts_them() {
        let spool = full_spool(DiskFullPolicy::DropOldest);
        let busy = spool.spool.claim().unwrap().unwrap();
        spool
            .spool
            .housekeeping(&mut DiskWatch::new(0.0, 0.0, Duration::from_secs(300)))
            .unwrap();
        assert_eq!(spool.metrics.dropped_chunks.value(), 2);
        assert!(
            spool.path().join(&busy.chunk().name).exists(),
            "a chunk being uploaded is never dropped"
        );
        for c in ["c0.mp4", "c1.mp4", "c2.mp4"] {
            let row = spool.spool.chunk_by_name(c).unwrap().unwrap();
            if c == busy.chunk().name {
                continue;
            }
            assert!(!spool.path().join(c).exists(), "{c}");
            assert_eq!(row.state, ChunkState::Dropped, "{c}");
        }
    }
}
