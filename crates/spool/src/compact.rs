//! Keeps the journal bounded by the retention, not by history: rows of finished chunks
//! (removed, retained, gone, dropped) older than `journal_retention_days` are deleted in
//! small batches, and the pages they held go back to the filesystem. Pending and verified rows
//! are never touched; what must outlive the rows (the newest mtime ever started) lives in
//! its own table.

use crate::{Error, Spool, now_millis};

/// Rows deleted per transaction. A batch takes a few milliseconds, so a claim or an
/// acknowledgement waiting for the journal never waits longer than that.
pub const COMPACT_BATCH_ROWS: usize = 250;

impl Spool {
    /// Deletes one batch of finished rows older than the retention; returns how many. A full
    /// batch ([`COMPACT_BATCH_ROWS`]) means more may be left.
    pub fn compact_journal(&self) -> Result<usize, Error> {
        let retention =
            i64::try_from(self.settings.journal_retention.as_millis()).unwrap_or(i64::MAX);
        let n = self
            .journal
            .compact(now_millis().saturating_sub(retention), COMPACT_BATCH_ROWS)?;
        self.metrics.journal_compacted_rows.add(n as u64);
        Ok(n)
    }

    /// Gives the pages compaction freed back to the filesystem and updates the size gauge.
    pub fn reclaim_journal(&self) -> Result<(), Error> {
        self.journal.reclaim()?;
        self.metrics
            .journal_size_bytes
            .set(self.journal.size_bytes() as f64);
        Ok(())
    }
}
