//! The spool: where chunks wait on local disk until they are safely in the bucket.
//!
//! Owns: finding chunks in the spool directory (inotify plus a periodic rescan), deciding when a
//! chunk is ready (renamed in, or unchanged for the settle time), the durable SQLite journal of
//! each chunk's state and completed multipart parts, the upload order, object keys, the disk
//! watermarks, and the only code allowed to delete a chunk file.
//!
//! Does not own: talking to S3 (`backhaul-upload`), serving metrics (the binary), or judging
//! what a full disk means for the site (`backhaul-diagnose`).
//!
//! # Guarantees (see `docs/specs/spool.md`)
//!
//! * A chunk file is removed only by [`Spool::remove_verified`], which refuses unless the
//!   journal says the chunk is `verified` and the file on disk is still the one that was
//!   uploaded (same size, mtime and inode). `clippy.toml` bans `std::fs::remove_file` elsewhere.
//! * Every state change is one SQLite transaction in WAL mode with `synchronous = FULL`, so a
//!   state that was reported is on disk before the caller acts on it.
//! * An un-uploaded chunk is deleted only under the explicit `disk_full_policy = "drop-oldest"`
//!   and is then counted in `backhaul_chunks_dropped_total`.
//!
//! # On-disk states
//!
//! `discovered` → `uploading` (upload id and completed parts recorded) → `verified` →
//! `removed` (or `retained`). Side exits: `gone` (the file vanished before it was uploaded) and
//! `dropped` (deleted by the disk-full policy). A chunk whose file changes before it is verified
//! goes back to `discovered` and its multipart upload is queued for abort.

mod config;
mod disk;
mod error;
mod journal;
mod key;
mod pattern;
mod ready;
mod remove;
mod scan;
pub mod synthetic;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
mod watch;

pub use config::{
    AfterUpload, DEFAULT_DISK_CRITICAL_PERCENT, DEFAULT_DISK_WARNING_PERCENT, DEFAULT_IGNORE,
    DEFAULT_KEY_TEMPLATE, DEFAULT_RESCAN_INTERVAL_SECONDS, DEFAULT_SETTLE_SECONDS, DiskFullPolicy,
    Order, SpoolConfig, SpoolSettings,
};
pub use disk::{DiskLevel, DiskStatus, DiskWatch};
pub use error::Error;
pub use journal::{Backlog, Chunk, ChunkState, FileIdentity, Journal, PartRecord, PendingAbort};
pub use key::KeyTemplate;
pub use pattern::Pattern;
pub use ready::Readiness;
pub use remove::Removal;
pub use scan::{ScanEntry, identity_of};
pub use watch::{ScanReport, Spool, now_millis};

/// Milliseconds since the Unix epoch; the journal's timestamps.
pub type UnixMillis = i64;
