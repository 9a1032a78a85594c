//! The durable journal: one SQLite file, WAL mode, `synchronous = FULL` (every commit is
//! fsynced before it returns). The schema is documented in `docs/specs/spool.md` and can be
//! read with the `sqlite3` CLI while the agent runs.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{Error, Order, UnixMillis};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS chunks (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    camera          TEXT    NOT NULL,
    object_key      TEXT    NOT NULL,
    size_bytes      INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                      ('discovered','uploading','verified','removed','retained','gone','dropped')),
    upload_id       TEXT,
    checksum        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    discovered_at   INTEGER NOT NULL,
    started_at      INTEGER,
    verified_at     INTEGER,
    finished_at     INTEGER
);
CREATE INDEX IF NOT EXISTS chunks_state ON chunks (state, mtime_ns);
CREATE TABLE IF NOT EXISTS parts (
    chunk_id        INTEGER NOT NULL REFERENCES chunks (id) ON DELETE CASCADE,
    part_number     INTEGER NOT NULL,
    offset_bytes    INTEGER NOT NULL,
    size_bytes      INTEGER NOT NULL,
    etag            TEXT    NOT NULL,
    crc32c          TEXT    NOT NULL,
    completed_at    INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, part_number)
);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY,
    destination     TEXT    NOT NULL,
    incident        TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    body            BLOB    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT
);
CREATE TABLE IF NOT EXISTS aborts (
    upload_id       TEXT    PRIMARY KEY,
    object_key      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    queued_at       INTEGER NOT NULL
);
";

/// Version 2: no two live chunks (discovered, uploading, verified) share an object key.
const LIVE_KEY_INDEX: &str =
    "CREATE UNIQUE INDEX IF NOT EXISTS chunks_live_key ON chunks (object_key)
    WHERE state IN ('discovered','uploading','verified')";
/// Version 3: every statement of the upload path uses an index, so its cost follows the
/// backlog, not the history; finished rows can be found by age for compaction; state that
/// must outlive the rows it came from lives in `spool_state`.
const HISTORY_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS chunks_upload_id ON chunks (upload_id) WHERE upload_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_finished ON chunks (finished_at)
    WHERE state IN ('removed','retained','gone','dropped');
CREATE TABLE IF NOT EXISTS spool_state (
    key             TEXT    PRIMARY KEY,
    value           INTEGER NOT NULL
) WITHOUT ROWID;
";
const SCHEMA_VERSION: i64 = 3;

/// Below this many pages (4 MiB at the default page size) a legacy journal is not worth a
/// rewrite.
const RECLAIM_MIN_PAGES: i64 = 1024;

/// `spool_state` key: the newest mtime of any chunk ever claimed (freshness order).
const NEWEST_STARTED: &str = "newest_started_mtime_ns";

/// States in which a chunk still waits for upload.
const PENDING: &str = "('discovered','uploading')";
/// The row still describes the version that was claimed: key ?2, size ?3, mtime ?4, inode ?5.
const SAME_VERSION: &str =
    "AND object_key = ?2 AND size_bytes = ?3 AND mtime_ns = ?4 AND inode = ?5";

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

    fn parse(s: &str) -> Self {
        match s {
            "uploading" => Self::Uploading,
            "verified" => Self::Verified,
            "removed" => Self::Removed,
            "retained" => Self::Retained,
            "gone" => Self::Gone,
            "dropped" => Self::Dropped,
            _ => Self::Discovered,
        }
    }
}

/// What identifies one version of a file: if any of these change, it is a different chunk.
///
/// This is the spool's one rule for "is this still the file that was uploaded": equality of
/// all three. An mtime that moved with size and inode unchanged is a rewrite in place as far
/// as anyone can tell, so it is a new version (uploaded again, never deleted unseen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, Unix nanoseconds.
    pub mtime_ns: i128,
    /// Inode number.
    pub inode: u64,
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

/// A ready file to journal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready<'a> {
    pub name: &'a str,
    pub camera: &'a str,
    /// The rendered object key, before disambiguation.
    pub key: &'a str,
    pub identity: FileIdentity,
}

/// The rendered key if no other live chunk holds it, else its first free disambiguation;
/// the second value is `Some` when the key had to change.
fn free_key(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    own: Option<i64>,
) -> rusqlite::Result<(String, Option<String>)> {
    let taken = |k: &str| -> rusqlite::Result<bool> {
        tx.row_cached(
            "SELECT EXISTS (SELECT 1 FROM chunks WHERE object_key = ?1 AND id IS NOT ?2
               AND state IN ('discovered','uploading','verified'))",
            params![k, own],
            |r| r.get(0),
        )
    };
    if !taken(key)? {
        return Ok((key.to_owned(), None));
    }
    let (alt, _) = crate::key::first_free(key, 0, taken)?;
    Ok((alt.clone(), Some(alt)))
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

/// One file of [`Journal::upsert_ready_many`], inside its transaction.
fn upsert_in(
    tx: &rusqlite::Transaction<'_>,
    f: &Ready<'_>,
    now: UnixMillis,
) -> Result<Upsert, Error> {
    let existing = chunk_named(tx, f.name).map_err(Error::journal("upsert: select"))?;
    if let Some(c) = &existing
        && c.identity == f.identity
    {
        return Ok(Upsert::Known(c.id));
    }
    let own = existing.as_ref().map(|c| c.id);
    let key = free_key(tx, f.key, own).map_err(Error::journal("upsert: free key"))?;
    let row = params![
        f.name,
        f.camera,
        key.0,
        f.identity.size as i64,
        ns(f.identity.mtime_ns),
        f.identity.inode as i64,
        now
    ];
    let outcome = match existing {
        Some(c) => {
            if let Some(upload_id) = &c.upload_id {
                tx.exec_cached(
                    "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
                     VALUES (?1, ?2, 'file changed', ?3)",
                    params![upload_id, c.key, now],
                )
                .map_err(Error::journal("upsert: queue abort"))?;
            }
            tx.exec_cached("DELETE FROM parts WHERE chunk_id = ?1", [c.id])
                .map_err(Error::journal("upsert: clear parts"))?;
            tx.exec_cached(
                "UPDATE chunks SET camera = ?2, object_key = ?3, size_bytes = ?4, mtime_ns = ?5,
                   inode = ?6, state = 'discovered', upload_id = NULL, checksum = NULL,
                   attempts = 0, last_error = NULL, discovered_at = ?7, started_at = NULL,
                   verified_at = NULL, finished_at = NULL
                 WHERE name = ?1",
                row,
            )
            .map_err(Error::journal("upsert: replace"))?;
            Upsert::Replaced(c.id, key.1)
        }
        None => {
            tx.exec_cached(
                "INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode,
                                     state, discovered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'discovered', ?7)",
                row,
            )
            .map_err(Error::journal("upsert: insert"))?;
            Upsert::New(tx.last_insert_rowid(), key.1)
        }
    };
    Ok(outcome)
}

/// Brings an older journal to [`SCHEMA_VERSION`]. A version-1 journal may hold live chunks
/// that share a key (the collision version 2 prevents): all but the first get a
/// disambiguated key before the unique index is built. Every step is idempotent, so a crash
/// in the middle is repaired by the next open.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.row_cached("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 2 {
        let dupes: Vec<(i64, String)> = {
            let mut stmt = conn.prepare(
                "SELECT id, object_key FROM chunks c WHERE state IN ('discovered','uploading','verified')
                   AND EXISTS (SELECT 1 FROM chunks o WHERE o.object_key = c.object_key AND o.id < c.id
                     AND o.state IN ('discovered','uploading','verified'))",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        for (id, key) in dupes {
            let (alt, _) = crate::key::first_free(&key, 0, |k| {
                conn.row_cached(
                    "SELECT EXISTS (SELECT 1 FROM chunks WHERE object_key = ?1)",
                    [k],
                    |r| r.get(0),
                )
            })?;
            conn.exec_cached(
                "UPDATE chunks SET object_key = ?2 WHERE id = ?1",
                params![id, alt],
            )?;
        }
        conn.execute_batch(LIVE_KEY_INDEX)?;
    }
    conn.execute_batch(HISTORY_INDEXES)?;
    conn.exec_cached(
        "INSERT OR IGNORE INTO spool_state (key, value)
         SELECT ?1, MAX(mtime_ns) FROM chunks WHERE started_at IS NOT NULL HAVING COUNT(*) > 0",
        [NEWEST_STARTED],
    )?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
}

/// Creates `dir` (and parents) and makes it `0700` if this agent created it.
fn create_private_dir(dir: &Path) -> Result<(), Error> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::SpoolDir {
        path: dir.to_owned(),
        source: e,
    })?;
    restrict(dir, 0o700)
}

/// Sets `mode` on an existing file; a missing one (no WAL yet) is fine.
fn restrict(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::ChunkIo {
            path: path.to_owned(),
            action: "restrict permissions of",
            source: e,
        }),
        _ => Ok(()),
    }
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

/// The journal handle. Statements are short; one connection behind a mutex is enough.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const CHUNK_COLUMNS: &str = "id, name, camera, object_key, size_bytes, mtime_ns, inode, state, \
                             upload_id, checksum, attempts, discovered_at";

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
        },
        state: ChunkState::parse(&row.get::<_, String>(7)?),
        upload_id: row.get(8)?,
        checksum: row.get(9)?,
        attempts: row.get::<_, i64>(10)? as u32,
        discovered_at: row.get(11)?,
    })
}

/// SQLite stores 64-bit integers; nanosecond mtimes fit until 2262.
fn ns(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// One chunk of `state`, not in `busy`, first by `mtime_ns` ascending or descending. The
/// statement is the same whatever `busy` holds (so it stays prepared): it reads at most one
/// index entry more than there are busy chunks, and only the chosen chunk's row.
fn first_in_state(
    conn: &Connection,
    state: ChunkState,
    busy: &[i64],
    newest: bool,
) -> rusqlite::Result<Option<Chunk>> {
    let sql = if newest {
        "SELECT id FROM chunks WHERE state = ?1 ORDER BY mtime_ns DESC, id DESC LIMIT ?2"
    } else {
        "SELECT id FROM chunks WHERE state = ?1 ORDER BY mtime_ns ASC, id ASC LIMIT ?2"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![state.as_str(), busy.len() as i64 + 1])?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if !busy.contains(&id) {
            return chunk_with_id(conn, id);
        }
    }
    Ok(None)
}

/// [`Journal::next_pending`] on a connection or transaction. Each query walks the
/// `(state, mtime_ns)` index from one end, so its cost does not grow with finished rows.
fn next_pending(conn: &Connection, order: Order, busy: &[i64]) -> rusqlite::Result<Option<Chunk>> {
    let oldest = match first_in_state(conn, ChunkState::Uploading, busy, false)? {
        Some(open) => Some(open),
        None => first_in_state(conn, ChunkState::Discovered, busy, false)?,
    };
    if order == Order::Fifo {
        return Ok(oldest);
    }
    let newest = [
        first_in_state(conn, ChunkState::Discovered, busy, true)?,
        first_in_state(conn, ChunkState::Uploading, busy, true)?,
    ]
    .into_iter()
    .flatten()
    .max_by_key(|c| (c.identity.mtime_ns, c.id));
    let Some(newest) = newest else {
        return Ok(None);
    };
    let newest_started: Option<i64> = conn
        .row_cached(
            "SELECT value FROM spool_state WHERE key = ?1",
            [NEWEST_STARTED],
            |r| r.get(0),
        )
        .optional()?;
    let live = newest_started.is_none_or(|started| i128::from(started) < newest.identity.mtime_ns);
    Ok(if live && newest.state == ChunkState::Discovered {
        Some(newest)
    } else {
        oldest
    })
}

impl Journal {
    /// Opens (creating if needed) the journal at `path`: the file `0600` in a `0700` directory
    /// (it names every recording of the site).
    pub fn open(path: &Path) -> Result<Self, Error> {
        let open_err = |source: rusqlite::Error| match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                Error::JournalCorrupt {
                    path: path.to_owned(),
                    source,
                }
            }
            _ => Error::JournalOpen {
                path: path.to_owned(),
                source,
            },
        };
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // Only takes effect on a new file (an older one is converted once by `reclaim`): lets
        // compaction hand freed pages back to the filesystem without rewriting the journal.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(open_err)?;
        // WAL keeps readers (sqlite3 CLI, `backhaul status`) from blocking the agent;
        // synchronous=FULL fsyncs the WAL on every commit, which is the durability we promise.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // After a checkpoint the log shrinks back to this, whatever a burst made it grow to.
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(SCHEMA).map_err(open_err)?;
        migrate(&conn).map_err(open_err)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            restrict(Path::new(&p), 0o600)?;
        }
        Ok(Self {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a ready file. A known name with a different identity that was still pending has
    /// its multipart upload queued for abort and starts over; a finished one (removed, gone…)
    /// is a new chunk that reuses the name. A key another live chunk holds is disambiguated
    /// ([`crate::key::disambiguate`]); `Upsert` says which key was given.
    #[cfg(test)]
    pub fn upsert_ready(
        &self,
        name: &str,
        camera: &str,
        key: &str,
        id: FileIdentity,
        now: UnixMillis,
    ) -> Result<Upsert, Error> {
        let ready = [Ready {
            name,
            camera,
            key,
            identity: id,
        }];
        Ok(self.upsert_ready_many(&ready, now)?.remove(0))
    }

    /// [`Self::upsert_ready`] for many files in one commit, in order (a later file sees the
    /// keys the earlier ones took). As durable as one commit each: nothing is uploaded before
    /// it returns, and a crash before it leaves the files to the next scan.
    pub fn upsert_ready_many(
        &self,
        files: &[Ready<'_>],
        now: UnixMillis,
    ) -> Result<Vec<Upsert>, Error> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(Error::journal("upsert: begin"))?;
        let mut out = Vec::with_capacity(files.len());
        for f in files {
            out.push(upsert_in(&tx, f, now)?);
        }
        tx.commit().map_err(Error::journal("upsert: commit"))?;
        Ok(out)
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

    /// The next pending chunk to upload, skipping ids in `busy`.
    ///
    /// `freshness`: the newest pending chunk if it is newer than every chunk ever started
    /// (live data), otherwise the oldest. `fifo`: the oldest. Open uploads come first in
    /// either order: they hold server-side parts and their bytes are half-spent.
    #[cfg(test)]
    pub fn next_pending(&self, order: Order, busy: &[i64]) -> Result<Option<Chunk>, Error> {
        let conn = self.conn();
        next_pending(&conn, order, busy).map_err(Error::journal("next pending"))
    }

    /// Takes the next pending chunk (see [`Self::next_pending`]) and counts the attempt.
    pub fn claim(
        &self,
        order: Order,
        skip: &[i64],
        now: UnixMillis,
    ) -> Result<Option<Chunk>, Error> {
        Ok(self.claim_many(order, skip, 1, now, |_| true)?.pop())
    }

    /// Takes up to `n` pending chunks in upload order, as [`Self::claim`] would one after the
    /// other, in one transaction: one commit instead of `n`. Stops early at the first chunk
    /// `admit` refuses (it is left unclaimed).
    pub fn claim_many(
        &self,
        order: Order,
        skip: &[i64],
        n: usize,
        now: UnixMillis,
        mut admit: impl FnMut(&Chunk) -> bool,
    ) -> Result<Vec<Chunk>, Error> {
        let mut conn = self.conn();
        // A claim only counts an attempt: one lost to a power cut is claimed again.
        with_sync(&mut conn, Sync::Relaxed, |conn| {
            let tx = conn.transaction().map_err(Error::journal("claim: begin"))?;
            let mut busy = skip.to_vec();
            let mut claimed = Vec::new();
            while claimed.len() < n {
                let Some(mut chunk) = next_pending(&tx, order, &busy)
                    .map_err(Error::journal("claim: next pending"))?
                else {
                    break;
                };
                if !admit(&chunk) {
                    break;
                }
                tx.exec_cached(
                    "UPDATE chunks SET attempts = attempts + 1, started_at = COALESCE(started_at, ?2)
                     WHERE id = ?1",
                    params![chunk.id, now],
                )
                .map_err(Error::journal("claim"))?;
                tx.exec_cached(
                    "INSERT INTO spool_state (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
                    params![NEWEST_STARTED, ns(chunk.identity.mtime_ns)],
                )
                .map_err(Error::journal("claim: newest started"))?;
                chunk.attempts += 1;
                busy.push(chunk.id);
                claimed.push(chunk);
            }
            tx.commit().map_err(Error::journal("claim: commit"))?;
            Ok(claimed)
        })
    }

    /// Records the multipart upload id of a chunk (state `uploading`). Refused unless the row
    /// still describes this version of the file, under this key, with no upload open.
    pub fn begin_multipart(&self, chunk: &Chunk, upload_id: &str) -> Result<(), Error> {
        let n = self
            .conn()
            .exec_cached(
                &format!(
                    "UPDATE chunks SET state = 'uploading', upload_id = ?6
                     WHERE id = ?1 AND state IN {PENDING} AND upload_id IS NULL {SAME_VERSION}"
                ),
                params![
                    chunk.id,
                    chunk.key,
                    chunk.identity.size as i64,
                    ns(chunk.identity.mtime_ns),
                    chunk.identity.inode as i64,
                    upload_id
                ],
            )
            .map_err(Error::journal("begin multipart"))?;
        self.transitioned(n, chunk, "begin multipart")
    }

    /// Records one completed part of upload `upload_id`; refused if the chunk no longer has
    /// that upload open (it changed, or the upload was forgotten meanwhile).
    pub fn record_part(
        &self,
        chunk: &Chunk,
        upload_id: &str,
        part: &PartRecord,
        now: UnixMillis,
    ) -> Result<(), Error> {
        let n = self
            .conn()
            .exec_cached(
                "INSERT OR REPLACE INTO parts
                   (chunk_id, part_number, offset_bytes, size_bytes, etag, crc32c, completed_at)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
                 WHERE EXISTS (SELECT 1 FROM chunks WHERE id = ?1 AND state = 'uploading'
                                 AND upload_id = ?8)",
                params![
                    chunk.id,
                    part.number,
                    part.offset as i64,
                    part.size as i64,
                    part.etag,
                    part.crc32c,
                    now,
                    upload_id
                ],
            )
            .map_err(Error::journal("record part"))?;
        self.transitioned(n, chunk, "record part")
    }

    /// Turns "no row changed" into a refused transition naming the state the chunk is in now.
    fn transitioned(&self, changed: usize, chunk: &Chunk, op: &'static str) -> Result<(), Error> {
        if changed > 0 {
            return Ok(());
        }
        let now = self
            .chunk(chunk.id)
            .map(|c| c.state.as_str())
            .unwrap_or("missing");
        Err(Error::Transition {
            name: chunk.name.clone(),
            op,
            state: now.to_owned(),
        })
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

    /// Drops a pending chunk's upload id and parts (the server lost or refuses the upload) and
    /// queues the old upload for abort.
    pub fn forget_upload(&self, chunk: &Chunk) -> Result<(), Error> {
        self.transition_dropping_parts(chunk, "forget upload", |tx, chunk| {
            // The store may still hold parts of the old upload; abort it so they do not linger.
            tx.exec_cached(
                &format!(
                    "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
                     SELECT upload_id, object_key, 'upload lost or refused', ?2 FROM chunks
                     WHERE id = ?1 AND upload_id IS NOT NULL AND state IN {PENDING}"
                ),
                params![chunk.id, crate::now_millis()],
            )?;
            tx.exec_cached(
                &format!(
                    "UPDATE chunks SET state = 'discovered', upload_id = NULL
                     WHERE id = ?1 AND state IN {PENDING}"
                ),
                [chunk.id],
            )
        })
    }

    /// One transition in one transaction: `step` returns the rows it changed; when it changed
    /// the chunk, the chunk's journaled parts go with it (they belonged to the upload that
    /// ended). No row changed is a refused transition.
    fn transition_dropping_parts(
        &self,
        chunk: &Chunk,
        op: &'static str,
        step: impl Fn(&rusqlite::Transaction<'_>, &Chunk) -> rusqlite::Result<usize>,
    ) -> Result<(), Error> {
        self.transitions_dropping_parts(std::slice::from_ref(chunk), op, Sync::Full, step)?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// [`Self::transition_dropping_parts`] for several chunks in one transaction (one commit,
    /// one fsync), each refused or applied on its own.
    fn transitions_dropping_parts(
        &self,
        chunks: &[Chunk],
        op: &'static str,
        sync: Sync,
        step: impl Fn(&rusqlite::Transaction<'_>, &Chunk) -> rusqlite::Result<usize>,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut conn = self.conn();
        let changed = with_sync(&mut conn, sync, |conn| {
            let tx = conn.transaction().map_err(Error::journal(op))?;
            let mut changed = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                let n = step(&tx, chunk).map_err(Error::journal(op))?;
                if n > 0 {
                    tx.exec_cached("DELETE FROM parts WHERE chunk_id = ?1", [chunk.id])
                        .map_err(Error::journal(op))?;
                }
                changed.push(n);
            }
            tx.commit().map_err(Error::journal(op))?;
            Ok(changed)
        })?;
        drop(conn);
        Ok(chunks
            .iter()
            .zip(changed)
            .map(|(chunk, n)| self.transitioned(n, chunk, op))
            .collect())
    }

    /// Gives a pending chunk with no open upload another object key (its own was taken in the
    /// bucket). The unique index refuses a key another live chunk holds.
    pub fn rekey(&self, chunk: &Chunk, key: &str) -> Result<(), Error> {
        let n = self
            .conn()
            .exec_cached(
                &format!(
                    "UPDATE chunks SET object_key = ?2 WHERE id = ?1 AND state IN {PENDING}
                       AND upload_id IS NULL"
                ),
                params![chunk.id, key],
            )
            .map_err(Error::journal("rekey"))?;
        self.transitioned(n, chunk, "rekey")
    }

    /// Whether any live chunk other than `chunk` holds `key`.
    pub fn key_taken(&self, key: &str, chunk: &Chunk) -> Result<bool, Error> {
        self.conn()
            .row_cached(
                "SELECT EXISTS (SELECT 1 FROM chunks WHERE object_key = ?1 AND id != ?2
                   AND state IN ('discovered','uploading','verified'))",
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

    /// Stores the last error seen for a chunk (for `backhaul status` and sqlite3 readers).
    pub fn note_error(&self, id: i64, error: &str) -> Result<(), Error> {
        self.conn()
            .exec_cached(
                "UPDATE chunks SET last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map_err(Error::journal("note error"))?;
        Ok(())
    }

    /// Marks a chunk verified in the bucket with the given object checksum (see
    /// [`Self::mark_verified_many`]).
    #[cfg(test)]
    pub fn mark_verified(
        &self,
        chunk: &Chunk,
        checksum: &str,
        now: UnixMillis,
    ) -> Result<(), Error> {
        self.mark_verified_many(&[(chunk.clone(), checksum.to_owned())], now)?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Marks chunks verified in the bucket, each with its object checksum, in one commit.
    /// Each is refused unless its row is still pending and describes the version of the file
    /// that was uploaded, under the key it was uploaded to: a file that changed meanwhile is
    /// never marked verified.
    pub fn mark_verified_many(
        &self,
        verified: &[(Chunk, String)],
        now: UnixMillis,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let chunks: Vec<Chunk> = verified.iter().map(|(c, _)| c.clone()).collect();
        let checksum = |chunk: &Chunk| {
            verified
                .iter()
                .find(|(c, _)| c.id == chunk.id)
                .map(|(_, sum)| sum.as_str())
        };
        self.transitions_dropping_parts(&chunks, "mark verified", Sync::Full, |tx, chunk| {
            tx.exec_cached(
                &format!(
                    "UPDATE chunks SET state = 'verified', checksum = ?6, verified_at = ?7,
                       upload_id = NULL, last_error = NULL
                     WHERE id = ?1 AND state IN {PENDING} {SAME_VERSION}"
                ),
                params![
                    chunk.id,
                    chunk.key,
                    chunk.identity.size as i64,
                    ns(chunk.identity.mtime_ns),
                    chunk.identity.inode as i64,
                    checksum(chunk),
                    now
                ],
            )
        })
    }

    /// Moves a chunk to a final state, queueing its open multipart upload, if any, for abort.
    /// `removed`/`retained` need `verified`; `gone`/`dropped` need a pending state.
    pub fn finish(&self, chunk: &Chunk, state: ChunkState, now: UnixMillis) -> Result<(), Error> {
        self.finish_many(std::slice::from_ref(chunk), state, now)?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// [`Self::finish`] for several chunks in one commit.
    pub fn finish_many(
        &self,
        chunks: &[Chunk],
        state: ChunkState,
        now: UnixMillis,
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let from = match state {
            ChunkState::Removed | ChunkState::Retained => "('verified')",
            _ => PENDING,
        };
        // A verified chunk whose file is gone is finished again by the next start.
        let sync = match state {
            ChunkState::Removed | ChunkState::Retained => Sync::Relaxed,
            _ => Sync::Full,
        };
        self.transitions_dropping_parts(chunks, "finish", sync, |tx, chunk| {
            tx.exec_cached(
                &format!(
                    "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
                     SELECT upload_id, object_key, ?2, ?3 FROM chunks
                     WHERE id = ?1 AND upload_id IS NOT NULL AND state IN {from}"
                ),
                params![chunk.id, format!("chunk {}", state.as_str()), now],
            )?;
            tx.exec_cached(
                &format!(
                    "UPDATE chunks SET state = ?2, finished_at = ?3, upload_id = NULL
                     WHERE id = ?1 AND state IN {from}"
                ),
                params![chunk.id, state.as_str(), now],
            )
        })
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

    /// Forgets an abort once the server confirmed it (or no longer knows the upload).
    pub fn abort_done(&self, upload_id: &str) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM aborts WHERE upload_id = ?1", [upload_id])
            .map_err(Error::journal("abort done"))?;
        Ok(())
    }

    /// Chunks and bytes still to upload.
    pub fn backlog(&self) -> Result<Backlog, Error> {
        self.conn()
            .row_cached(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0), MIN(mtime_ns) FROM chunks
                 WHERE state IN ('discovered','uploading')",
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
                "DELETE FROM chunks WHERE id IN (
                   SELECT id FROM chunks INDEXED BY chunks_finished
                   WHERE state IN ('removed','retained','gone','dropped') AND finished_at < ?1
                   ORDER BY finished_at LIMIT ?2)",
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
            .filter_map(|suffix| {
                let mut p = self.path.as_os_str().to_owned();
                p.push(suffix);
                std::fs::metadata(Path::new(&p)).ok()
            })
            .map(|m| m.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(size: u64, mtime_ns: i128) -> FileIdentity {
        FileIdentity {
            size,
            mtime_ns,
            inode: 7,
        }
    }

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(&dir.path().join("j.sqlite")).unwrap();
        (dir, j)
    }

    fn new(j: &Journal, name: &str, key: &str, id: FileIdentity) -> Chunk {
        let Upsert::New(row, _) = j.upsert_ready(name, "c", key, id, 0).unwrap() else {
            panic!("{name}: expected new");
        };
        j.chunk(row).unwrap()
    }

    fn part(n: u32) -> PartRecord {
        PartRecord {
            number: n,
            offset: 0,
            size: 5,
            etag: "\"e\"".into(),
            crc32c: "c".into(),
        }
    }

    #[test]
    fn state_survives_reopen_with_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let j = Journal::open(&path).unwrap();
            let c = new(&j, "cam1/a.mp4", "k/a", ident(10, 1));
            j.begin_multipart(&c, "up-1").unwrap();
            j.record_part(&c, "up-1", &part(1), 6).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let c = j.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
        assert_eq!(c.state, ChunkState::Uploading);
        assert_eq!(c.upload_id.as_deref(), Some("up-1"));
        assert_eq!(j.parts(c.id).unwrap().len(), 1);
        assert_eq!(j.backlog().unwrap().chunks, 1);
    }

    #[test]
    fn journal_is_private_to_the_agent() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/j.sqlite");
        let _j = Journal::open(&path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("state")), 0o700);
    }

    #[test]
    fn corrupt_header_is_named_as_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(matches!(err, Error::JournalCorrupt { .. }), "{err:?}");
        assert!(
            err.to_string().contains("backhaul journal recover"),
            "{err}"
        );
    }

    #[test]
    fn changed_file_restarts_and_queues_abort() {
        let (_d, j) = journal();
        let c = new(&j, "a", "k", ident(10, 1));
        j.begin_multipart(&c, "up-1").unwrap();
        assert_eq!(
            j.upsert_ready("a", "c", "k", ident(10, 1), 1).unwrap(),
            Upsert::Known(c.id)
        );
        assert_eq!(
            j.upsert_ready("a", "c", "k", ident(11, 2), 2).unwrap(),
            Upsert::Replaced(c.id, None)
        );
        let now = j.chunk(c.id).unwrap();
        assert_eq!(now.state, ChunkState::Discovered);
        assert_eq!(now.upload_id, None);
        assert_eq!(
            j.pending_aborts().unwrap(),
            vec![PendingAbort {
                upload_id: "up-1".into(),
                key: "k".into()
            }]
        );
        j.abort_done("up-1").unwrap();
        assert!(j.pending_aborts().unwrap().is_empty());
    }

    #[test]
    fn steps_on_a_version_that_changed_are_refused() {
        let (_d, j) = journal();
        let old = new(&j, "a", "k", ident(10, 1));
        j.begin_multipart(&old, "up-1").unwrap();
        j.upsert_ready("a", "c", "k", ident(20, 2), 2).unwrap();
        // The upload of the old version must not land on the new one.
        let refused = j.record_part(&old, "up-1", &part(1), 3).unwrap_err();
        assert!(matches!(refused, Error::Transition { .. }), "{refused:?}");
        assert!(j.parts(old.id).unwrap().is_empty());
        let refused = j.mark_verified(&old, "crc32c:x", 3).unwrap_err();
        assert!(matches!(refused, Error::Transition { .. }), "{refused:?}");
        assert_eq!(j.chunk(old.id).unwrap().state, ChunkState::Discovered);
        // Nothing unverified may be marked removed.
        let fresh = j.chunk(old.id).unwrap();
        assert!(j.finish(&fresh, ChunkState::Removed, 4).is_err());
        j.mark_verified(&fresh, "crc32c:y", 5).unwrap();
        j.finish(&fresh, ChunkState::Removed, 6).unwrap();
        assert!(j.finish(&fresh, ChunkState::Gone, 7).is_err());
    }

    #[test]
    fn live_chunks_never_share_a_key() {
        let (_d, j) = journal();
        let a = new(&j, "cam5/a/same.mp4", "S/cam5/same.mp4", ident(1, 1));
        let Upsert::New(b, Some(alt)) = j
            .upsert_ready("cam5/b/same.mp4", "c", "S/cam5/same.mp4", ident(2, 2), 0)
            .unwrap()
        else {
            panic!("expected a disambiguated key");
        };
        assert_eq!(alt, "S/cam5/same~1.mp4");
        assert_eq!(j.chunk(b).unwrap().key, alt);
        // A rekey onto a live chunk's key is refused by the index.
        let b = j.chunk(b).unwrap();
        assert!(j.rekey(&b, &a.key).is_err());
        // Once the first is finished its key is free for a new recording again (the bucket
        // check decides whether the object may be written there).
        j.mark_verified(&a, "x", 1).unwrap();
        j.finish(&j.chunk(a.id).unwrap(), ChunkState::Removed, 2)
            .unwrap();
        assert_eq!(
            j.upsert_ready("cam5/c/same.mp4", "c", "S/cam5/same.mp4", ident(3, 3), 3)
                .unwrap(),
            Upsert::New(b.id + 1, None)
        );
    }

    /// Files journaled in one commit are taken in order: the second of two with the same key
    /// sees the first's, and a name already known keeps its row.
    #[test]
    fn a_group_of_ready_files_is_journaled_in_order_in_one_commit() {
        let (_d, j) = journal();
        let known = new(&j, "cam1/known.mp4", "S/known.mp4", ident(1, 1));
        let file = |name, key, n| Ready {
            name,
            camera: "c",
            key,
            identity: ident(n, n as i128),
        };
        let got = j
            .upsert_ready_many(
                &[
                    file("cam1/a/same.mp4", "S/same.mp4", 2),
                    file("cam1/known.mp4", "S/known.mp4", 1),
                    file("cam1/b/same.mp4", "S/same.mp4", 3),
                ],
                4,
            )
            .unwrap();
        let [
            Upsert::New(a, None),
            Upsert::Known(k),
            Upsert::New(b, Some(alt)),
        ] = got.as_slice()
        else {
            panic!("{got:?}");
        };
        assert_eq!(*k, known.id);
        assert_eq!(j.chunk(*a).unwrap().key, "S/same.mp4");
        assert_eq!(alt, "S/same~1.mp4");
        assert_eq!(j.chunk(*b).unwrap().key, *alt);
        assert!(j.upsert_ready_many(&[], 5).unwrap().is_empty());
    }

    #[test]
    fn version_1_journal_with_shared_keys_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.execute_batch(
                "INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode, state, discovered_at)
                 VALUES ('c/a/x', 'c', 'S/c/x', 1, 1, 1, 'discovered', 0),
                        ('c/b/x', 'c', 'S/c/x', 1, 1, 2, 'discovered', 0);
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let a = j.chunk_by_name("c/a/x").unwrap().unwrap();
        let b = j.chunk_by_name("c/b/x").unwrap().unwrap();
        assert_eq!(a.key, "S/c/x");
        assert_eq!(b.key, "S/c/x~1");
    }

    #[test]
    fn freshness_takes_live_chunk_then_drains_oldest() {
        let (_d, j) = journal();
        for (i, name) in ["old1", "old2", "old3"].iter().enumerate() {
            j.upsert_ready(name, "c", name, ident(1, i as i128 + 1), 0)
                .unwrap();
        }
        // Nothing started yet: the newest is live.
        let first = j.claim(Order::Freshness, &[], 1).unwrap().unwrap();
        assert_eq!(first.name, "old3");
        assert_eq!(first.attempts, 1);
        j.mark_verified(&first, "x", 2).unwrap();
        // Backlog drains oldest first behind it.
        let next = j.claim(Order::Freshness, &[], 3).unwrap().unwrap();
        assert_eq!(next.name, "old1");
        // A new recording jumps the queue.
        j.upsert_ready("live", "c", "live", ident(1, 10), 4)
            .unwrap();
        let busy = [next.id];
        assert_eq!(
            j.next_pending(Order::Freshness, &busy)
                .unwrap()
                .unwrap()
                .name,
            "live"
        );
        assert_eq!(
            j.next_pending(Order::Fifo, &busy).unwrap().unwrap().name,
            "old2"
        );
    }

    #[test]
    fn finish_queues_abort_of_open_upload() {
        let (_d, j) = journal();
        let c = new(&j, "a", "k", ident(1, 1));
        j.begin_multipart(&c, "u").unwrap();
        j.finish(&c, ChunkState::Gone, 1).unwrap();
        assert_eq!(j.chunk(c.id).unwrap().state, ChunkState::Gone);
        assert_eq!(j.pending_aborts().unwrap().len(), 1);
        assert_eq!(j.backlog().unwrap().chunks, 0);
        assert!(j.upload_ids().unwrap().contains("u"));
    }

    /// `n` finished rows that finished at `finished_at`, written in one statement.
    fn history(j: &Journal, n: i64, finished_at: UnixMillis) {
        j.conn()
            .execute(
                "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1)
                 INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode, state,
                                     checksum, discovered_at, started_at, verified_at, finished_at)
                 SELECT 'old/' || ?2 || '/' || i, 'old', 'k/old/' || ?2 || '/' || i, 1, i, i,
                        'removed', 'crc32c:x', 0, 0, 0, ?2 FROM seq",
                params![n, finished_at],
            )
            .unwrap();
    }

    static TRACED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn trace(event: rusqlite::trace::TraceEvent<'_>) {
        if let rusqlite::trace::TraceEvent::Stmt(stmt, _) = event
            && let Some(sql) = stmt.expanded_sql()
        {
            TRACED.lock().unwrap().push(sql);
        }
    }

    /// Every statement the upload path runs, captured as SQLite executed it (parameters
    /// bound), is planned with an index on `chunks` and `parts`: none walks the whole table,
    /// so a chunk costs the same with a long history as with none.
    #[test]
    fn hot_path_statements_use_indexes_whatever_the_history() {
        let (_d, j) = journal();
        history(&j, 5000, 1);
        j.conn().trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_STMT,
            Some(trace),
        );
        let c = new(&j, "cam1/a.mp4", "k/a", ident(10, 1_000_000));
        new(&j, "cam1/b.mp4", "k/b", ident(10, 1_000_001));
        let claimed = j.claim_many(Order::Freshness, &[], 2, 5, |_| true).unwrap();
        assert_eq!(claimed.len(), 2);
        let c = claimed.into_iter().find(|x| x.id == c.id).unwrap();
        j.begin_multipart(&c, "up-1").unwrap();
        j.record_part(&c, "up-1", &part(1), 6).unwrap();
        j.parts(c.id).unwrap();
        j.note_error(c.id, "timeout").unwrap();
        assert!(!j.key_taken("k/a~1", &c).unwrap());
        j.upload_ids().unwrap();
        j.backlog().unwrap();
        let c = j.chunk(c.id).unwrap();
        j.forget_upload(&c).unwrap();
        j.rekey(&c, "k/a~1").unwrap();
        let c = j.chunk(c.id).unwrap();
        j.mark_verified_many(&[(c.clone(), "crc32c:x".into())], 7)
            .unwrap();
        j.chunks_in(ChunkState::Verified).unwrap();
        j.finish_many(&[j.chunk(c.id).unwrap()], ChunkState::Removed, 8)
            .unwrap();
        j.upsert_ready("cam1/a.mp4", "cam1", "k/a", ident(10, 1_000_000), 9)
            .unwrap();
        j.pending_aborts().unwrap();
        j.compact(2, 100).unwrap();
        j.conn()
            .trace_v2(rusqlite::trace::TraceEventCodes::empty(), None);

        let statements: std::collections::BTreeSet<String> =
            TRACED.lock().unwrap().iter().cloned().collect();
        assert!(statements.len() > 15, "{statements:?}");
        let conn = j.conn();
        for sql in &statements {
            let upper = sql.trim_start().to_ascii_uppercase();
            if [
                "BEGIN",
                "COMMIT",
                "ROLLBACK",
                "PRAGMA",
                "SAVEPOINT",
                "RELEASE",
            ]
            .iter()
            .any(|k| upper.starts_with(k))
            {
                continue;
            }
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for step in &plan {
                assert!(
                    !(step.starts_with("SCAN chunks") || step.starts_with("SCAN parts")),
                    "full scan in {sql}: {plan:?}"
                );
            }
        }
    }

    /// Compaction deletes finished rows past the retention in batches and nothing else; the
    /// freed pages go back to the filesystem; the newest mtime ever started survives the rows
    /// it came from, so a late old recording is not mistaken for live data.
    #[test]
    fn compaction_bounds_the_journal_and_keeps_what_is_still_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let j = Journal::open(&path).unwrap();
        new(&j, "cam1/started.mp4", "k/s", ident(1, 500));
        let started = j.claim(Order::Freshness, &[], 10).unwrap().unwrap();
        assert_eq!(started.name, "cam1/started.mp4");
        j.mark_verified(&started, "x", 11).unwrap();
        j.finish(&j.chunk(started.id).unwrap(), ChunkState::Removed, 12)
            .unwrap();
        history(&j, 30_000, 20);
        history(&j, 10, 1_000);
        let pending = new(&j, "cam1/late.mp4", "k/late", ident(1, 400));
        let verified = new(&j, "cam1/v.mp4", "k/v", ident(1, 600));
        j.mark_verified(&verified, "x", 30).unwrap();
        let before = j.size_bytes();

        let mut deleted = 0;
        loop {
            let n = j.compact(100, 1000).unwrap();
            deleted += n;
            if n < 1000 {
                break;
            }
        }
        assert_eq!(deleted, 30_001);
        j.reclaim().unwrap();
        let left: Vec<String> = {
            let conn = j.conn();
            let mut stmt = conn.prepare("SELECT name FROM chunks ORDER BY id").unwrap();
            stmt.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(left.len(), 12, "{left:?}");
        assert!(left.contains(&pending.name) && left.contains(&verified.name));
        assert!(
            j.size_bytes() * 4 < before,
            "{} of {before} bytes",
            j.size_bytes()
        );
        // Both are older than the compacted chunk that started at mtime 500: backlog, not live.
        new(&j, "cam1/older.mp4", "k/o", ident(1, 300));
        let next = j.next_pending(Order::Freshness, &[]).unwrap().unwrap();
        assert_eq!(next.name, "cam1/older.mp4", "oldest first, nothing is live");
    }

    /// A journal from before incremental auto-vacuum is rewritten once after compaction freed
    /// most of it, and shrinks.
    #[test]
    fn a_legacy_journal_is_rewritten_once_when_mostly_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("PRAGMA auto_vacuum = NONE; CREATE TABLE t (a); DROP TABLE t")
                .unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let auto_vacuum = |j: &Journal| -> i64 {
            j.conn()
                .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(auto_vacuum(&j), 0);
        history(&j, 60_000, 1);
        let before = j.size_bytes();
        while j.compact(2, 1000).unwrap() == 1000 {}
        j.reclaim().unwrap();
        assert_eq!(auto_vacuum(&j), 2);
        assert!(
            j.size_bytes() * 10 < before,
            "{} of {before} bytes",
            j.size_bytes()
        );
    }

    #[test]
    fn claim_many_takes_distinct_chunks_in_upload_order_in_one_commit() {
        let (_d, j) = journal();
        for i in 1..=5 {
            new(&j, &format!("c{i}"), &format!("k{i}"), ident(1, i));
        }
        let got = j.claim_many(Order::Fifo, &[], 3, 1, |_| true).unwrap();
        let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["c1", "c2", "c3"]);
        assert!(got.iter().all(|c| c.attempts == 1));
        let busy: Vec<i64> = got.iter().map(|c| c.id).collect();
        let mut admitted = 0;
        let rest = j
            .claim_many(Order::Fifo, &busy, 10, 2, |_| {
                admitted += 1;
                admitted < 2
            })
            .unwrap();
        assert_eq!(rest.len(), 1, "the refused chunk is not claimed");
        assert_eq!(j.chunk_by_name("c5").unwrap().unwrap().attempts, 0);
    }
}
