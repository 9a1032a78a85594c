//! Recovery from a corrupt journal: the journal is moved aside (never deleted) and a fresh
//! one is built from what is in the spool. What the old journal knew that is lost with it is
//! recovered elsewhere: a chunk already in the bucket is recognised by its content when it is
//! uploaded again (HeadObject and MD5, nothing overwritten, nothing sent twice for an
//! identical object), and multipart uploads it had open are aborted by the orphan sweep.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_telemetry::Metrics;

use crate::journal::{Journal, sibling};
use crate::{Error, Spool, SpoolLock, SpoolSettings};

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Where the old journal (and its `-wal`/`-shm`) now is; `None` if there was none.
    pub moved_to: Option<PathBuf>,
    /// Chunks in the spool journaled again.
    pub chunks: usize,
    /// Files not yet settled (they are journaled when the agent runs).
    pub waiting: usize,
}

/// Whether the journal at `path` opens as a healthy one.
pub fn journal_is_healthy(path: &Path) -> Result<bool, Error> {
    if !path.exists() {
        return Ok(true);
    }
    match Journal::open(path) {
        Ok(_) => Ok(true),
        Err(Error::JournalCorrupt { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Moves the journal aside as `<journal>.corrupt-<unix ms>` and rebuilds it from the spool.
/// The agent must not be running (the caller says so).
/// Refused with [`Error::Locked`] while an agent has the spool open.
pub fn recover_journal(settings: SpoolSettings, metrics: Arc<Metrics>) -> Result<Recovered, Error> {
    let lock = SpoolLock::acquire(&settings)?;
    let journal = settings.journal.clone();
    let moved_to = if journal.exists() {
        let stamp = crate::now_millis();
        let aside = sibling(&journal, &format!(".corrupt-{stamp}"));
        for suffix in ["", "-wal", "-shm"] {
            let (from, to) = (sibling(&journal, suffix), sibling(&aside, suffix));
            match std::fs::rename(&from, &to) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::ChunkIo {
                        path: from,
                        action: "move the corrupt journal aside",
                        source: e,
                    });
                }
                _ => {}
            }
        }
        Some(aside)
    } else {
        None
    };
    let spool = Spool::open_locked(settings, metrics, lock)?;
    let report = spool.scan_once()?;
    Ok(Recovered {
        moved_to,
        chunks: report.new_chunks,
        waiting: report.waiting,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpoolConfig;

    #[test]
    fn a_corrupt_journal_is_moved_aside_and_rebuilt_from_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        crate::test_util::write_chunk(&spool_dir, "cam1/a.mp4", b"video a");
        crate::test_util::write_chunk(&spool_dir, "cam2/b.mp4", b"video b");
        let mut cfg = SpoolConfig::with_dir(&spool_dir);
        cfg.settle_seconds = 0;
        let settings = cfg.validate("S").unwrap();
        std::fs::create_dir_all(settings.journal.parent().unwrap()).unwrap();
        std::fs::write(&settings.journal, vec![0x42; 4096]).unwrap();
        assert!(!journal_is_healthy(&settings.journal).unwrap());

        let r = recover_journal(settings.clone(), Arc::new(Metrics::default())).unwrap();
        let aside = r.moved_to.unwrap();
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            vec![0x42; 4096],
            "kept as it was"
        );
        assert_eq!(r.chunks, 2);
        assert!(journal_is_healthy(&settings.journal).unwrap());
        assert!(spool_dir.join("cam1/a.mp4").exists() && spool_dir.join("cam2/b.mp4").exists());
    }
}
