use std::path::PathBuf;

/// Errors of the spool and its journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal database could not be opened or migrated.
    #[error("cannot open the journal at {path}; check that its directory exists and is writable")]
    JournalOpen {
        /// Journal file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The journal file is not a SQLite database any more (a torn or overwritten header).
    #[error(
        "the journal at {path} is corrupt\n  help: stop the agent and run `backhaul journal recover --config <site.toml>`: it moves the journal aside (nothing is deleted) and rebuilds it from the spool; chunks still in the spool are uploaded again, and an object already in the bucket is recognised, not overwritten"
    )]
    JournalCorrupt {
        /// Journal file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// A chunk's state changed under a step that assumed the earlier state (its file changed,
    /// or it was finished meanwhile); the step was not applied.
    #[error(
        "journal refused `{op}` for chunk {name}: it is `{state}` now (changed or finished meanwhile)"
    )]
    Transition {
        /// Chunk path relative to the spool.
        name: String,
        /// The refused step.
        op: &'static str,
        /// Its state now.
        state: String,
    },
    /// A journal statement failed.
    #[error("journal operation `{op}` failed")]
    Journal {
        /// What was being done.
        op: &'static str,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The spool directory is missing or unreadable.
    #[error("spool directory {path} is not usable; create it or fix `spool.dir`")]
    SpoolDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The inotify watch could not be set up.
    #[error("cannot watch spool directory {path} (falling back needs `rescan_interval_seconds`)")]
    Watch {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: notify::Error,
    },
    /// A chunk file could not be read, moved or removed.
    #[error("chunk file {path}: {action} failed")]
    ChunkIo {
        /// File.
        path: PathBuf,
        /// What was attempted.
        action: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The spool filesystem could not be measured.
    #[error("cannot read filesystem usage of {path}")]
    Statvfs {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The object key template is invalid.
    #[error("invalid key template `{template}`: {reason}")]
    KeyTemplate {
        /// The template.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// A rendered object key would escape its prefix or be empty.
    #[error("chunk {name} would get the unsafe object key `{key}`: {reason}")]
    UnsafeKey {
        /// Chunk path relative to the spool.
        name: String,
        /// Rendered key.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A delete was requested for a chunk the journal does not show as verified.
    #[error("refusing to delete chunk {name}: the journal has it as `{state}`, not `verified`")]
    NotVerified {
        /// Chunk path relative to the spool.
        name: String,
        /// Its journal state.
        state: String,
    },
    /// The journal refers to a chunk id it does not hold.
    #[error("journal has no chunk with id {id}")]
    UnknownChunk {
        /// Row id.
        id: i64,
    },
}

impl Error {
    pub(crate) fn journal(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Error::Journal { op, source }
    }
}
