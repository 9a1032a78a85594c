//! Space the journal keeps for itself on a full disk.
//!
//! With the journal on the spool's filesystem (the default layout) a camera that fills the
//! disk would leave the journal no room to record the very steps that free space again (a
//! chunk verified, its file removed), and the agent would stop with the disk full. So the
//! journal holds a preallocated file beside itself and gives it up, a step at a time, when a
//! commit that moves a chunk towards deletion fails for space; the commit is retried after
//! each step in the space it freed. New discoveries never take the reserve: they wait for space (the next rescan finds
//! the files again), so the reserve is spent only on steps that free more than it holds. The
//! reserve is taken again once the filesystem has room for it with a margin.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Enough for the write-ahead log to grow to its limit (4 MiB) and the database to take a few
/// thousand new rows.
pub(crate) const RESERVE_BYTES: u64 = 8 * 1024 * 1024;
/// What one release gives up.
const RESERVE_STEP: u64 = 1024 * 1024;

/// Below this many free bytes an I/O error of SQLite is taken for a full filesystem: SQLite
/// reports `SQLITE_FULL` for a failed `write`, but an I/O error for a shared-memory or fsync
/// failure that has the same cause.
const NEARLY_FULL_BYTES: u64 = 256 * 1024;

/// The reserve file and whether the journal holds it.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    dir: PathBuf,
    held: AtomicBool,
}

impl Reserve {
    /// The reserve beside the journal at `journal` (`<journal>.reserve`); holds it if the file
    /// is already there (kept from an earlier run).
    pub(crate) fn beside(journal: &Path) -> Self {
        let path = super::sibling(journal, ".reserve");
        let held = std::fs::metadata(&path).is_ok_and(|m| m.len() >= RESERVE_BYTES);
        let dir = super::dir_of(journal).to_owned();
        Self {
            path,
            dir,
            held: AtomicBool::new(held),
        }
    }

    /// Whether the reserve is held now.
    pub(crate) fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Gives up one [`RESERVE_STEP`] of the reserve; `true` if there was some left (the
    /// caller may retry what failed). A step at a time, so a camera writing into the space
    /// freed can take at most one step of it before the journal does.
    pub(crate) fn release(&self) -> bool {
        let len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if len == 0 {
            self.held.store(false, Ordering::Relaxed);
            return false;
        }
        let shrunk = len.saturating_sub(RESERVE_STEP);
        let released = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .and_then(|f| f.set_len(shrunk));
        self.held.store(false, Ordering::Relaxed);
        match released {
            Ok(()) => {
                tracing::warn!(path = ?self.path, left_bytes = shrunk,
                    "journal: the filesystem is full; gave up part of the journal's reserve so uploads can still be recorded and their files deleted");
                true
            }
            Err(e) => {
                tracing::error!(path = ?self.path, error = %e, "journal: cannot release its reserve");
                false
            }
        }
    }

    /// Takes the reserve (again) when the filesystem has room for it and as much again, so
    /// taking it never fills the disk by itself. Returns whether it is held.
    pub(crate) fn ensure(&self) -> bool {
        if self.held() {
            return true;
        }
        if available_bytes(&self.dir).is_none_or(|free| free < RESERVE_BYTES * 3) {
            return false;
        }
        match allocate(&self.path) {
            Ok(()) => {
                self.held.store(true, Ordering::Relaxed);
                tracing::info!(path = ?self.path, bytes = RESERVE_BYTES, "journal: reserve for a full disk taken");
                true
            }
            Err(e) => {
                tracing::warn!(path = ?self.path, error = %e,
                    "journal: cannot take its reserve for a full disk; it is tried again later");
                false
            }
        }
    }

    /// Whether `e` means the journal's filesystem is out of space.
    pub(crate) fn is_no_space(&self, e: &rusqlite::Error) -> bool {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => true,
            Some(rusqlite::ErrorCode::SystemIoFailure | rusqlite::ErrorCode::CannotOpen) => {
                available_bytes(&self.dir).is_some_and(|free| free < NEARLY_FULL_BYTES)
            }
            _ => false,
        }
    }
}

/// Bytes of `dir`'s filesystem available to this user.
fn available_bytes(dir: &Path) -> Option<u64> {
    rustix::fs::statvfs(dir)
        .ok()
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
}

/// Creates the reserve with its blocks allocated (not a sparse file, which would free
/// nothing), durable before it counts.
fn allocate(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, RESERVE_BYTES)
    {
        if e != rustix::io::Errno::OPNOTSUPP {
            return Err(e.into());
        }
        // Filesystems without fallocate: write the blocks out.
        use std::io::Write as _;
        let block = vec![0u8; 1024 * 1024];
        f.set_len(0)?;
        let mut w = &f;
        for _ in 0..RESERVE_BYTES / block.len() as u64 {
            w.write_all(&block)?;
        }
    }
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_taken_released_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal.sqlite");
        let r = Reserve::beside(&journal);
        assert!(!r.held());
        assert!(r.ensure(), "a filesystem with room takes the reserve");
        let file = dir.path().join("journal.sqlite.reserve");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.len(), RESERVE_BYTES);
        use std::os::unix::fs::MetadataExt as _;
        assert!(
            meta.blocks() * 512 >= RESERVE_BYTES,
            "allocated, not sparse"
        );
        assert!(Reserve::beside(&journal).held(), "kept across restarts");
        assert!(r.release());
        assert_eq!(
            std::fs::metadata(&file).unwrap().len(),
            RESERVE_BYTES - RESERVE_STEP,
            "a step at a time"
        );
        assert!(!r.held());
        while r.release() {}
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        assert!(!r.release(), "nothing left to give");
        assert!(r.ensure());
        assert_eq!(std::fs::metadata(&file).unwrap().len(), RESERVE_BYTES);
    }
}
