//! The durable journal: one SQLite file, WAL mode, `synchronous = FULL` (every commit is
//! fsynced before it returns). The schema is documented in `docs/specs/spool.md` and can be
//! read with the `sqlite3` CLI while the agent runs.
//!
//! `schema.rs` holds the tables and their migration; `transitions.rs` every step that changes a
//! chunk's state; this file the types, the handle and the reads.

mod reserve;
mod schema;
#[cfg(test)]
mod tests;
mod transitions;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::OpenCause;
use crate::{Error, Order, UnixMillis};
use reserve::Reserve;
pub(crate) use schema::create_private_dir;
use schema::{migrate, restrict, schema};

/// Below this many pages (4 MiB at the default page size) a legacy journal is not worth a
/// rewrite.
const RECLAIM_MIN_PAGES: i64 = 1024;

/// `spool_state` key: the newest mtime of any chunk ever claimed (freshness order).
const NEWEST_STARTED: &str = "newest_started_mtime_ns";

/// A set of states as an SQL list, `('discovered','uploading')`: every list of states in the
/// journal's SQL is written from [`ChunkState`] through one of these, never by hand.
#[derive(Clone, Copy)]
pub(crate) struct States(fn(ChunkState) -> bool);

impl std::fmt::Display for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("(")?;
        for (i, s) in ChunkState::ALL.iter().filter(|s| (self.0)(**s)).enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "'{}'", s.as_str())?;
        }
        f.write_str(")")
    }
}

/// Every state (the column's CHECK).
pub(crate) const ANY: States = States(|_| true);
/// States in which a chunk still waits for upload.
pub(crate) const PENDING: States = States(ChunkState::is_pending);
/// States whose chunk holds its object key (unique among them).
pub(crate) const LIVE: States = States(ChunkState::is_live);
/// States of finished chunks, whose rows compaction deletes after the retention.
pub(crate) const FINISHED: States = States(ChunkState::is_finished);
/// Just `verified`: the state a chunk is removed or retained from.
pub(crate) const VERIFIED: States = States(|s| s == ChunkState::Verified);
/// The row still describes the version that was claimed: key ?2, size ?3, mtime ?4, inode ?5,
/// ctime ?6.
const SAME_VERSION: &str =
    "AND object_key = ?2 AND size_bytes = ?3 AND mtime_ns = ?4 AND inode = ?5
     AND ctime_ns = ?6";

/// A chunk's journal state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Ready, not started.
    Discovered,
    /// A multipart upload is open (its id and completed parts are journaled).
    Uploading,
    /// The object is in the bucket and verified; the file may be removed.
    Verified,
    /// The file was deleted after verification.
    Removed,
    /// The file was moved to the retain directory after verification.
    Retained,
    /// The file vanished before it was uploaded (reported, not ours to lose).
    Gone,
    /// Deleted un-uploaded by the explicit disk-full policy.
    Dropped,
}

impl ChunkState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 7] = [
        Self::Discovered,
        Self::Uploading,
        Self::Verified,
        Self::Removed,
        Self::Retained,
        Self::Gone,
        Self::Dropped,
    ];

    /// The name stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovered => "discovered",
            Self::Uploading => "uploading",
            Self::Verified => "verified",
            Self::Removed => "removed",
            Self::Retained => "retained",
            Self::Gone => "gone",
            Self::Dropped => "dropped",
        }
    }

    /// Still waiting for its upload.
    pub fn is_pending(self) -> bool {
        match self {
            Self::Discovered | Self::Uploading => true,
            Self::Verified | Self::Removed | Self::Retained | Self::Gone | Self::Dropped => false,
        }
    }

    /// Holds its object key: pending, or verified with its file not yet handled.
    pub fn is_live(self) -> bool {
        self.is_pending() || self == Self::Verified
    }

    /// Done with: its row is kept for the retention only.
    pub fn is_finished(self) -> bool {
        !self.is_live()
    }

    /// The state named `s`; `None` for a name this agent does not know (a newer agent's
    /// journal, or a hand edit), which is never taken for another state.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// What identifies one version of a file: if any of these change, it is a different chunk.
///
/// This is the spool's one rule for "is this still the file that was uploaded": equality of
/// all four. An mtime that moved with size and inode unchanged is a rewrite in place as far
/// as anyone can tell, so it is a new version (uploaded again, never deleted unseen). The
/// status-change time catches what the mtime cannot: a writer that patches a file in place
/// and puts its mtime back (`touch -r`, `rsync --inplace -t`) still moves the ctime, which no
/// utime call can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix nanoseconds (within SQLite's 64-bit range: see
    /// [`crate::identity_of`]).
    pub mtime_ns: i128,
    /// Inode number.
    pub inode: u64,
    /// Status-change time, Unix nanoseconds; 0 in a row journaled before it was recorded.
    pub ctime_ns: i128,
}

impl FileIdentity {
    /// The same file as far as a journal row from before ctimes were recorded can tell.
    pub(crate) fn same_but_ctime(&self, other: &Self) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.inode == other.inode
    }
}

/// A chunk row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Row id.
    pub id: i64,
    /// Path relative to the spool directory.
    pub name: String,
    /// Camera (first directory of `name`, or the default camera).
    pub camera: String,
    /// Object key.
    pub key: String,
    /// The file version that was discovered.
    pub identity: FileIdentity,
    /// State.
    pub state: ChunkState,
    /// Open multipart upload id.
    pub upload_id: Option<String>,
    /// Verified object checksum.
    pub checksum: Option<String>,
    /// Upload attempts so far.
    pub attempts: u32,
    /// When the agent first saw it ready.
    pub discovered_at: UnixMillis,
}

/// One completed part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRecord {
    /// 1-based part number.
    pub number: u32,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
    /// ETag the server returned.
    pub etag: String,
    /// Base64 CRC32C of the part, as sent in `x-amz-checksum-crc32c`.
    pub crc32c: String,
}

/// A multipart upload that must be aborted (its chunk vanished or changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAbort {
    /// Upload id.
    pub upload_id: String,
    /// Object key.
    pub key: String,
}

/// What is waiting to be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Chunks.
    pub chunks: u64,
    /// Bytes.
    pub bytes: u64,
    /// Modification time of the oldest one, Unix nanoseconds.
    pub oldest_mtime_ns: Option<i128>,
}

/// The outcome of recording a ready file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upsert {
    /// First time seen; `Some(key)` when its rendered key was taken and it got another.
    New(i64, Option<String>),
    /// Already journaled with the same identity.
    Known(i64),
    /// Journaled with another identity: the row now describes the new file and starts over.
    Replaced(i64, Option<String>),
}

impl Upsert {
    /// A chunk to upload that was not pending before: a new file or a new version.
    pub(crate) fn is_new(&self) -> bool {
        match self {
            Self::New(..) | Self::Replaced(..) => true,
            Self::Known(_) => false,
        }
    }
}

/// A ready file to journal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready<'a> {
    pub name: &'a str,
    pub camera: &'a str,
    /// The rendered object key, before disambiguation.
    pub key: &'a str,
    pub identity: FileIdentity,
}

/// The chunk with this row id, on a connection or transaction.
fn chunk_with_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Chunk>> {
    conn.row_cached(
        &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE id = ?1"),
        [id],
        chunk_from_row,
    )
    .optional()
}

/// The chunk with this name, on a connection or transaction.
fn chunk_named(conn: &Connection, name: &str) -> rusqlite::Result<Option<Chunk>> {
    conn.row_cached(
        &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE name = ?1"),
        [name],
        chunk_from_row,
    )
    .optional()
}

/// Statements through SQLite's prepared-statement cache: the upload path runs the same few
/// for every chunk, and parsing them each time was a measurable share of a small chunk's cost.
trait Cached {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// How a commit reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sync {
    /// fsynced before the commit returns (`synchronous = FULL`): the agent acts on it next.
    Full,
    /// Written to the log, fsynced with the next full commit or checkpoint
    /// (`synchronous = NORMAL` in WAL mode): it survives the agent being killed, and a power
    /// cut loses at most steps the next start redoes (a claim's attempt count, `removed` after
    /// a verified chunk's file is gone).
    Relaxed,
}

/// Runs `f` on `conn` with commits as `sync` says, then back to full.
fn with_sync<T>(
    conn: &mut Connection,
    sync: Sync,
    f: impl FnOnce(&mut Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    if sync == Sync::Full {
        return f(conn);
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(Error::journal("relax sync"))?;
    let out = f(conn);
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(Error::journal("restore sync"))?;
    out
}

/// Opens the SQLite connection with the journal's settings, its tables and migrations.
fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    // Only takes effect on a new file (an older one is converted once by `reclaim`): lets
    // compaction hand freed pages back to the filesystem without rewriting the journal.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // WAL keeps readers (sqlite3 CLI, `backhaul status`) from blocking the agent;
    // synchronous=FULL fsyncs the WAL on every commit, which is the durability we promise.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    // After a checkpoint the log shrinks back to this, whatever a burst made it grow to.
    conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Waits for the outbox's connection. Write transactions begin IMMEDIATE for the same
    // reason: a deferred one that has read cannot take the write lock from another writer and
    // fails at once with "database is locked", busy timeout or not.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch(&schema())?;
    migrate(&conn)?;
    Ok(conn)
}

/// A file beside the journal: its path with `suffix` appended (`-wal`, `.lock`).
pub(crate) fn sibling(journal: &Path, suffix: &str) -> PathBuf {
    let mut p = journal.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The directory holding the journal (`.` for a bare file name).
pub(crate) fn dir_of(journal: &Path) -> &Path {
    journal
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Why the journal could not be opened, from what SQLite said and what the filesystem shows.
fn open_error(path: &Path, reserve: &Reserve, source: rusqlite::Error) -> Error {
    let dir = dir_of(path);
    let cause = match source.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            return Error::JournalCorrupt {
                path: path.to_owned(),
                source,
            };
        }
        _ if reserve.is_no_space(&source) => OpenCause::NoSpace,
        Some(rusqlite::ErrorCode::ReadOnly) => OpenCause::ReadOnly,
        _ if rustix::fs::statvfs(dir)
            .is_ok_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY)) =>
        {
            OpenCause::ReadOnly
        }
        _ if rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err() => {
            OpenCause::NotWritable
        }
        _ => OpenCause::Other,
    };
    Error::JournalOpen {
        path: path.to_owned(),
        cause,
        source,
    }
}

/// The journal handle. Statements are short; one connection behind a mutex is enough.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    conn: Mutex<Connection>,
    reserve: Reserve,
}

const CHUNK_COLUMNS: &str = "id, name, camera, object_key, size_bytes, mtime_ns, inode, state, \
                             upload_id, checksum, attempts, discovered_at, ctime_ns";

fn chunk_from_row(row: &Row<'_>) -> rusqlite::Result<Chunk> {
    let mtime: i64 = row.get(5)?;
    Ok(Chunk {
        id: row.get(0)?,
        name: row.get(1)?,
        camera: row.get(2)?,
        key: row.get(3)?,
        identity: FileIdentity {
            size: row.get::<_, i64>(4)? as u64,
            mtime_ns: i128::from(mtime),
            inode: row.get::<_, i64>(6)? as u64,
            ctime_ns: i128::from(row.get::<_, Option<i64>>(12)?.unwrap_or(0)),
        },
        state: {
            let name: String = row.get(7)?;
            ChunkState::parse(&name).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    7,
                    rusqlite::types::Type::Text,
                    format!("unknown chunk state `{name}` (a journal of a newer agent?)").into(),
                )
            })?
        },
        upload_id: row.get(8)?,
        checksum: row.get(9)?,
        attempts: row.get::<_, i64>(10)? as u32,
        discovered_at: row.get(11)?,
    })
}

/// SQLite stores 64-bit integers; nanosecond times fit until 2262 ([`crate::identity_of`]
/// clamps later ones, so a row and its file agree).
pub(crate) fn ns(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`: the file `0600` in a `0700` directory
    /// (it names every recording of the site).
    pub fn open(path: &Path) -> Result<Self, Error> {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let reserve = Reserve::beside(path);
        // Opening creates the log and its shared-memory index: on a full disk the reserve
        // kept by the last run is what makes room for them.
        let conn = loop {
            match open_connection(path) {
                Err(e) if reserve.is_no_space(&e) && reserve.release() => {}
                other => break other.map_err(|source| open_error(path, &reserve, source))?,
            }
        };
        for suffix in ["", "-wal", "-shm"] {
            restrict(&sibling(path, suffix), 0o600)?;
        }
        reserve.ensure();
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
            reserve,
        })
    }

    /// Takes the reserve for a full disk again if it was spent and there is room for it now;
    /// whether it is held.
    pub fn keep_reserve(&self) -> bool {
        self.reserve.ensure()
    }

    /// Runs a step that moves chunks towards their deletion (or records an upload in
    /// progress). On a full filesystem the reserve is given up a step at a time, the step
    /// tried again after each: these are the steps that free space again.
    fn freeing<T>(&self, op: &'static str, f: impl Fn() -> Result<T, Error>) -> Result<T, Error> {
        loop {
            match f() {
                Err(Error::Journal { source, .. })
                    if self.reserve.is_no_space(&source) && self.reserve.release() => {}
                other => return other.map_err(|e| self.no_space(op, e)),
            }
        }
    }

    /// A journal error that comes from a full filesystem, named as such.
    fn no_space(&self, op: &'static str, e: Error) -> Error {
        match e {
            Error::Journal { source, .. } if self.reserve.is_no_space(&source) => Error::NoSpace {
                path: self.path.clone(),
                op,
            },
            e => e,
        }
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One chunk by id.
    pub fn chunk(&self, id: i64) -> Result<Chunk, Error> {
        chunk_with_id(&self.conn(), id)
            .map_err(Error::journal("chunk"))?
            .ok_or(Error::UnknownChunk { id })
    }

    /// One chunk by name.
    pub fn chunk_by_name(&self, name: &str) -> Result<Option<Chunk>, Error> {
        chunk_named(&self.conn(), name).map_err(Error::journal("chunk by name"))
    }

    /// Chunks in a state, oldest first.
    pub fn chunks_in(&self, state: ChunkState) -> Result<Vec<Chunk>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {CHUNK_COLUMNS} FROM chunks WHERE state = ?1 ORDER BY mtime_ns, id"
            ))
            .map_err(Error::journal("chunks in state"))?;
        let rows = stmt
            .query_map([state.as_str()], chunk_from_row)
            .map_err(Error::journal("chunks in state"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("chunks in state"))
    }

    /// Completed parts of a chunk, by part number.
    pub fn parts(&self, id: i64) -> Result<Vec<PartRecord>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT part_number, offset_bytes, size_bytes, etag, crc32c FROM parts
                 WHERE chunk_id = ?1 ORDER BY part_number",
            )
            .map_err(Error::journal("parts"))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(PartRecord {
                    number: r.get(0)?,
                    offset: r.get::<_, i64>(1)? as u64,
                    size: r.get::<_, i64>(2)? as u64,
                    etag: r.get(3)?,
                    crc32c: r.get(4)?,
                })
            })
            .map_err(Error::journal("parts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("parts"))
    }

    /// Whether any live chunk other than `chunk` holds `key`.
    pub fn key_taken(&self, key: &str, chunk: &Chunk) -> Result<bool, Error> {
        self.conn()
            .row_cached(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM chunks WHERE object_key = ?1 AND id != ?2
                   AND state IN {LIVE})"
                ),
                params![key, chunk.id],
                |r| r.get(0),
            )
            .map_err(Error::journal("key taken"))
    }

    /// Every multipart upload id the journal knows: open on a chunk, or queued for abort.
    pub fn upload_ids(&self) -> Result<std::collections::HashSet<String>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT upload_id FROM chunks WHERE upload_id IS NOT NULL
                 UNION SELECT upload_id FROM aborts",
            )
            .map_err(Error::journal("upload ids"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(Error::journal("upload ids"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("upload ids"))
    }

    /// Multipart uploads waiting to be aborted.
    pub fn pending_aborts(&self) -> Result<Vec<PendingAbort>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT upload_id, object_key FROM aborts ORDER BY queued_at")
            .map_err(Error::journal("pending aborts"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(PendingAbort {
                    upload_id: r.get(0)?,
                    key: r.get(1)?,
                })
            })
            .map_err(Error::journal("pending aborts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("pending aborts"))
    }

    /// Chunks and bytes still to upload.
    pub fn backlog(&self) -> Result<Backlog, Error> {
        self.conn()
            .row_cached(
                &format!(
                    "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0), MIN(mtime_ns) FROM chunks
                 WHERE state IN {PENDING}"
                ),
                [],
                |r| {
                    Ok(Backlog {
                        chunks: r.get::<_, i64>(0)? as u64,
                        bytes: r.get::<_, i64>(1)? as u64,
                        oldest_mtime_ns: r.get::<_, Option<i64>>(2)?.map(i128::from),
                    })
                },
            )
            .map_err(Error::journal("backlog"))
    }

    /// Deletes up to `limit` finished rows (removed, retained, gone, dropped) that finished
    /// before `before`, oldest first, in one transaction; returns how many. Pending and
    /// verified rows are never touched: their state is still needed.
    pub fn compact(&self, before: UnixMillis, limit: usize) -> Result<usize, Error> {
        self.conn()
            .exec_cached(
                &format!(
                    "DELETE FROM chunks WHERE id IN (
                   SELECT id FROM chunks INDEXED BY chunks_finished
                   WHERE state IN {FINISHED} AND finished_at < ?1
                   ORDER BY finished_at LIMIT ?2)"
                ),
                params![before, limit as i64],
            )
            .map_err(Error::journal("compact"))
    }

    /// Gives the pages that compaction freed back to the filesystem. A journal created before
    /// incremental auto-vacuum existed is rewritten once, when most of it is free (after its
    /// first compaction the rows left are few, so the rewrite is quick).
    pub fn reclaim(&self) -> Result<(), Error> {
        let conn = self.conn();
        let pragma = |name: &str| -> Result<i64, Error> {
            conn.row_cached(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(Error::journal("reclaim"))
        };
        if pragma("auto_vacuum")? == 2 {
            // One page per step: it must be stepped to the end, not just started.
            let mut stmt = conn
                .prepare("PRAGMA incremental_vacuum")
                .map_err(Error::journal("reclaim: incremental vacuum"))?;
            let mut rows = stmt
                .query([])
                .map_err(Error::journal("reclaim: incremental vacuum"))?;
            while rows
                .next()
                .map_err(Error::journal("reclaim: incremental vacuum"))?
                .is_some()
            {}
        } else {
            let (free, pages) = (pragma("freelist_count")?, pragma("page_count")?);
            if pages >= RECLAIM_MIN_PAGES && free * 2 > pages {
                tracing::info!(path = ?self.path, pages, free,
                    "journal: rewriting it once with incremental auto-vacuum (most of it is free after compaction)");
                conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; VACUUM")
                    .map_err(Error::journal("reclaim: vacuum"))?;
            }
        }
        // The pages just freed went through the write-ahead log; truncate it too.
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(Error::journal("reclaim: checkpoint"))
    }

    /// The journal's size on disk: database pages plus the write-ahead log.
    pub fn size_bytes(&self) -> u64 {
        ["", "-wal"]
            .iter()
            .filter_map(|suffix| std::fs::metadata(sibling(&self.path, suffix)).ok())
            .map(|m| m.len())
            .sum()
    }
}
