//! The spool's upkeep, a task of its own beside the watcher and the uploader: the backlog
//! gauges after chunks come and go, the disk watermarks and the disk-full policy, removals
//! that could not be done at verification, the journal's reserve for a full disk, and
//! compaction of the journal's history.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::{DiskLevel, DiskWatch, Spool};

/// How often disk usage is sampled and verified files still here are removed.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(2);
/// Most often the backlog gauges are read from the journal after a change: the read sums
/// every pending row, so once per chunk would make a backlog's drain quadratic.
const BACKLOG_EVERY: Duration = Duration::from_millis(500);
/// How often the journal is compacted (and once at start).
const COMPACT_EVERY: Duration = Duration::from_secs(3600);
/// Shortest pause between compaction batches. The pause is at least
/// [`COMPACT_PAUSE_RATIO`] times the batch's own time, so compaction holds the journal a
/// tenth of the time at most and uploads starting or finishing meanwhile barely wait: a
/// journal past its retention (the first start after an upgrade, or after a long stop) is
/// compacted over minutes, not at the uploads' expense.
const COMPACT_PAUSE: Duration = Duration::from_millis(20);
const COMPACT_PAUSE_RATIO: u32 = 9;

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Spool {
    /// Runs the spool's upkeep until the task is dropped or aborted.
    pub async fn upkeep(self: Arc<Self>) {
        let _compact = AbortOnDrop(tokio::spawn(compact_journal(self.clone())));
        let settings = &self.settings;
        let mut disk = DiskWatch::new(
            settings.disk_warning_percent,
            settings.disk_critical_percent,
            settings.fill_rate_window,
        );
        let mut last_housekeeping: Option<Instant> = None;
        loop {
            let due = last_housekeeping.is_none_or(|t| t.elapsed() >= HOUSEKEEPING_EVERY);
            // Housekeeping reads the backlog itself: one sum over the pending rows a turn.
            if self.backlog_stale.swap(false, Ordering::Relaxed)
                && !due
                && let Err(e) = self.refresh_backlog()
            {
                tracing::error!(error = %e, "cannot read the backlog from the journal");
            }
            if due {
                last_housekeeping = Some(Instant::now());
                match self.housekeeping(&mut disk) {
                    Ok(status) if status.level == DiskLevel::Critical => {
                        tracing::error!(
                            used_percent = status.used_percent,
                            "spool disk above critical watermark"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "spool housekeeping failed"),
                }
                if let Err(e) = self.retry_removals() {
                    tracing::error!(error = %e, "spool: cannot retry removals");
                }
            }
            tokio::time::sleep(BACKLOG_EVERY).await;
        }
    }

    /// The backlog changed; upkeep reads it again within [`BACKLOG_EVERY`].
    pub(crate) fn backlog_changed(&self) {
        self.backlog_stale.store(true, Ordering::Relaxed);
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
                    if n < crate::COMPACT_BATCH_ROWS {
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
