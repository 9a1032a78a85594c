//! Helpers for tests of this crate and its users: temporary spools and chunk writers.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backhaul_telemetry::Metrics;

use crate::{Spool, SpoolConfig};

/// A spool in a temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempSpool {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The spool (one per directory: it holds the spool's lock; uploaders share it).
    pub spool: Arc<Spool>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

impl TempSpool {
    /// A spool with default settings except `settle_seconds = 0`, for site `SITE-TEST`.
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A spool whose config `tweak` may change first.
    pub fn with(tweak: impl FnOnce(&mut SpoolConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let mut cfg = SpoolConfig::with_dir(&spool_dir);
        cfg.settle_seconds = 0;
        tweak(&mut cfg);
        let settings = cfg
            .validate("SITE-TEST")
            .unwrap_or_else(|e| panic!("config: {e:?}"));
        let metrics = Arc::new(Metrics::default());
        let spool = Arc::new(
            Spool::open(settings, metrics.clone()).unwrap_or_else(|e| panic!("open: {e}")),
        );
        Self {
            dir,
            spool,
            metrics,
        }
    }

    /// The spool directory.
    pub fn path(&self) -> &Path {
        &self.spool.settings().dir
    }

    /// Writes a chunk the way cameras do: to `NAME.part`, then renamed into place.
    pub fn write_chunk(&self, name: &str, data: &[u8]) -> PathBuf {
        write_chunk(self.path(), name, data)
    }
}

impl Default for TempSpool {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `data` to `dir/name.part`, fsyncs, and renames it to `dir/name`.
pub fn write_chunk(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    use std::io::Write as _;
    let dest = dir.join(name);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir: {e}"));
    }
    let tmp = dest.with_file_name(format!(
        "{}.part",
        dest.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("create: {e}"));
    f.write_all(data).unwrap_or_else(|e| panic!("write: {e}"));
    f.sync_all().unwrap_or_else(|e| panic!("sync: {e}"));
    std::fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("rename: {e}"));
    dest
}

/// Deterministic pseudo-random bytes; see [`crate::synthetic::chunk_bytes`].
pub fn pattern_bytes(seed: u64, len: usize) -> Vec<u8> {
    crate::synthetic::chunk_bytes(seed, len)
}
