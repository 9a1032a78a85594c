//! The spool: where chunks wait on local disk until they are safely in the bucket, and the
//! owner of every chunk's lifecycle.
//!
//! Owns: finding chunks in the spool directory (inotify plus a periodic rescan, one watcher
//! with one readiness tracker), deciding when a chunk is ready (renamed in, or unchanged for
//! the settle time, and in either case open for writing by nobody), the durable SQLite journal
//! (private: uploaders go through the claim/ack methods of [`Spool`] in `claim.rs`, and a
//! [`Claim`] holds a chunk's opened file and keeps it in flight; which chunks are in flight or
//! backing off is the spool's to know), unique object keys, the upload order, the disk
//! watermarks, the upkeep beside the uploader (`upkeep.rs`), journal recovery and compaction
//! (a journal bounded by `journal_retention_days`, not by history), its reserve for a full
//! disk, one agent per spool (`lock.rs`), the durable outbox of alerts (in the journal's
//! file, so an alert survives the outage and the restart it reports), and the only code
//! allowed to delete a chunk file.
//!
//! Does not own: talking to S3 (`backhaul-upload`), serving metrics (the binary), or judging
//! what a full disk means for the site (`backhaul-diagnose`).
//!
//! # Guarantees (see `docs/specs/spool.md`)
//!
//! * A chunk file is removed only after [`Spool::verified`], and only if the file on disk is
//!   still the version that was uploaded ([`FileIdentity`] equality, the one rule for "same
//!   file") and no process holds it open for writing. `clippy.toml` bans
//!   `std::fs::remove_file` elsewhere.
//! * Every state change is one SQLite transaction in WAL mode with `synchronous = FULL`, and
//!   checks the state it starts from: a step taken on a chunk that changed meanwhile is
//!   refused ([`Error::Transition`]).
//! * No two live chunks share an object key.
//! * An un-uploaded chunk is deleted only under the explicit `disk_full_policy = "drop-oldest"`
//!   and is then counted in `backhaul_chunks_dropped_total`.
//!
//! # On-disk states
//!
//! `discovered` → `uploading` (upload id and completed parts recorded) → `verified` →
//! `removed` (or `retained`). Side exits: `gone` (the file vanished before it was uploaded) and
//! `dropped` (deleted by the disk-full policy). A chunk whose file changes before it is verified
//! goes back to `discovered` and its multipart upload is queued for abort.

mod claim;
mod compact;
mod config;
mod disk;
mod error;
mod flight;
mod journal;
mod key;
mod lock;
mod outbox;
mod pattern;
mod ready;
mod recover;
mod remove;
mod scan;
pub mod synthetic;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
mod upkeep;
mod watch;
mod writers;

pub use compact::COMPACT_BATCH_ROWS;
pub use config::{
    AfterUpload, DEFAULT_DISK_CRITICAL_PERCENT, DEFAULT_DISK_WARNING_PERCENT, DEFAULT_IGNORE,
    DEFAULT_JOURNAL_RETENTION_DAYS, DEFAULT_KEY_TEMPLATE, DEFAULT_RESCAN_INTERVAL_SECONDS,
    DEFAULT_SETTLE_SECONDS, DiskFullPolicy, Order, SpoolConfig, SpoolSettings,
};
pub use disk::{DiskFeed, DiskLevel, DiskStatus, DiskWatch};
pub use error::{Error, OpenCause};
pub use flight::{AfterFailure, Claim};
pub use journal::{Backlog, Chunk, ChunkState, FileIdentity, PartRecord, PendingAbort};
pub use key::{KeyTemplate, MAX_KEY_BYTES, disambiguate};
pub use lock::SpoolLock;
pub use outbox::{Destination, MessageStatus, Outbox, OutboxMessage};
pub use pattern::Pattern;
pub use ready::Readiness;
pub use recover::{Recovered, journal_is_healthy, recover_journal};
pub use remove::Removal;
pub use scan::{ScanEntry, identity_of};
pub use watch::{ScanReport, Skip, Spool, now_millis};

/// Milliseconds since the Unix epoch; the journal's timestamps.
pub type UnixMillis = i64;
