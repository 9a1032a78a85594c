use std::path::PathBuf;

/// Errors of the spool and its journal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The journal database could not be opened or migrated.
    #[error("cannot open the journal at {path}: {cause}")]
    JournalOpen {
        /// Journal file.
        path: PathBuf,
        /// What the filesystem shows.
        cause: OpenCause,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// Another process holds the spool (a second agent on the same spool or journal).
    #[error(
        "another backhaul ({}) owns the spool {spool}\n  help: stop it first (systemctl stop backhaul), or give this one its own spool.dir and spool.journal",
        pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"))
    )]
    Locked {
        /// The spool directory.
        spool: PathBuf,
        /// The process holding it, when the kernel says.
        pid: Option<u32>,
    },
    /// A journal write failed because its filesystem is full, with the reserve spent or not
    /// for this kind of step (new discoveries wait for space).
    #[error(
        "journal at {path}: `{op}` not recorded: the filesystem is full (ENOSPC)\n  help: free space on it; uploads and deletions go on, new chunks are journaled once there is room"
    )]
    NoSpace {
        /// Journal file.
        path: PathBuf,
        /// The step that was not recorded.
        op: &'static str,
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

/// Why the journal could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenCause {
    /// Its filesystem is full (ENOSPC) and no reserve was left to open it with.
    NoSpace,
    /// Its filesystem is mounted read-only, or the file is read-only.
    ReadOnly,
    /// This user may not write its directory.
    NotWritable,
    /// Something else: the source error says what.
    Other,
}

impl std::fmt::Display for OpenCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoSpace => {
                "its filesystem is full (ENOSPC)\n  help: free some space on it (the journal needs a few MiB); nothing in the spool was deleted"
            }
            Self::ReadOnly => {
                "its filesystem is read-only (EROFS)\n  help: remount it read-write or move `spool.journal` to a writable filesystem"
            }
            Self::NotWritable => {
                "its directory is not writable by this user\n  help: run the agent as the spool's owner (user `backhaul` on a packaged install) or fix the directory's owner and mode"
            }
            Self::Other => "check that its directory exists and is writable",
        })
    }
}

impl Error {
    pub(crate) fn journal(op: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Error::Journal { op, source }
    }
}
