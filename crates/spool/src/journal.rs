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
CREATE TABLE IF NOT EXISTS aborts (
    upload_id       TEXT    PRIMARY KEY,
    object_key      TEXT    NOT NULL,
    reason          TEXT    NOT NULL,
    queued_at       INTEGER NOT NULL
);
PRAGMA user_version = 1;
";

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

    /// Whether the chunk still waits for upload.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Discovered | Self::Uploading)
    }
}

/// What identifies one version of a file: if any of these change, it is a different chunk.
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
pub enum Upsert {
    /// First time seen.
    New(i64),
    /// Already journaled with the same identity.
    Known(i64),
    /// Journaled with another identity: the row now describes the new file and starts over.
    Replaced(i64),
}

/// The journal handle. Statements are short; one connection behind a mutex is enough.
#[derive(Debug)]
pub struct Journal {
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

impl Journal {
    /// Opens (creating if needed) the journal at `path`.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let open_err = |source| Error::JournalOpen {
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::SpoolDir {
                path: parent.to_owned(),
                source: e,
            })?;
        }
        let conn = Connection::open(path).map_err(open_err)?;
        // WAL keeps readers (sqlite3 CLI, `backhaul status`) from blocking the agent;
        // synchronous=FULL fsyncs the WAL on every commit, which is the durability we promise.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.execute_batch(SCHEMA).map_err(open_err)?;
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
    /// is a new chunk that reuses the name.
    pub fn upsert_ready(
        &self,
        name: &str,
        camera: &str,
        key: &str,
        id: FileIdentity,
        now: UnixMillis,
    ) -> Result<Upsert, Error> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(Error::journal("upsert: begin"))?;
        let existing = tx
            .query_row(
                &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE name = ?1"),
                [name],
                chunk_from_row,
            )
            .optional()
            .map_err(Error::journal("upsert: select"))?;
        let outcome = match existing {
            Some(c) if c.identity == id => Upsert::Known(c.id),
            Some(c)
                if c.state == ChunkState::Verified
                    && c.identity.size == id.size
                    && c.identity.inode == id.inode =>
            {
                // Only the mtime moved (touch, backup restore): the bytes were verified.
                Upsert::Known(c.id)
            }
            Some(c) => {
                if let Some(upload_id) = &c.upload_id {
                    tx.execute(
                        "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
                         VALUES (?1, ?2, 'file changed', ?3)",
                        params![upload_id, c.key, now],
                    )
                    .map_err(Error::journal("upsert: queue abort"))?;
                }
                tx.execute("DELETE FROM parts WHERE chunk_id = ?1", [c.id])
                    .map_err(Error::journal("upsert: clear parts"))?;
                tx.execute(
                    "UPDATE chunks SET camera = ?2, object_key = ?3, size_bytes = ?4, mtime_ns = ?5,
                       inode = ?6, state = 'discovered', upload_id = NULL, checksum = NULL,
                       attempts = 0, last_error = NULL, discovered_at = ?7, started_at = NULL,
                       verified_at = NULL, finished_at = NULL
                     WHERE id = ?1",
                    params![c.id, camera, key, id.size as i64, ns(id.mtime_ns), id.inode as i64, now],
                )
                .map_err(Error::journal("upsert: replace"))?;
                Upsert::Replaced(c.id)
            }
            None => {
                tx.execute(
                    "INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode,
                                         state, discovered_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'discovered', ?7)",
                    params![
                        name,
                        camera,
                        key,
                        id.size as i64,
                        ns(id.mtime_ns),
                        id.inode as i64,
                        now
                    ],
                )
                .map_err(Error::journal("upsert: insert"))?;
                Upsert::New(tx.last_insert_rowid())
            }
        };
        tx.commit().map_err(Error::journal("upsert: commit"))?;
        Ok(outcome)
    }

    /// One chunk by id.
    pub fn chunk(&self, id: i64) -> Result<Chunk, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE id = ?1"),
                [id],
                chunk_from_row,
            )
            .optional()
            .map_err(Error::journal("chunk"))?
            .ok_or(Error::UnknownChunk { id })
    }

    /// One chunk by name.
    pub fn chunk_by_name(&self, name: &str) -> Result<Option<Chunk>, Error> {
        self.conn()
            .query_row(
                &format!("SELECT {CHUNK_COLUMNS} FROM chunks WHERE name = ?1"),
                [name],
                chunk_from_row,
            )
            .optional()
            .map_err(Error::journal("chunk by name"))
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
    /// (live data), otherwise the oldest. `fifo`: the oldest.
    pub fn next_pending(&self, order: Order, busy: &[i64]) -> Result<Option<Chunk>, Error> {
        let conn = self.conn();
        let busy_list = busy
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let not_busy = if busy.is_empty() {
            String::new()
        } else {
            format!("AND id NOT IN ({busy_list})")
        };
        let pick = |order_by: &str| {
            conn.query_row(
                &format!(
                    "SELECT {CHUNK_COLUMNS} FROM chunks
                     WHERE state IN ('discovered','uploading') {not_busy}
                     ORDER BY {order_by} LIMIT 1"
                ),
                [],
                chunk_from_row,
            )
            .optional()
            .map_err(Error::journal("next pending"))
        };
        // Open uploads first: they hold server-side parts and their bytes are half-spent.
        let oldest = pick("state = 'uploading' DESC, mtime_ns ASC, id ASC")?;
        if order == Order::Fifo {
            return Ok(oldest);
        }
        let Some(newest) = pick("mtime_ns DESC, id DESC")? else {
            return Ok(None);
        };
        let newest_started: Option<i64> = conn
            .query_row(
                "SELECT MAX(mtime_ns) FROM chunks WHERE started_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .map_err(Error::journal("next pending"))?;
        let live = match newest_started {
            Some(started) => i128::from(started) < newest.identity.mtime_ns,
            None => true,
        };
        if live && newest.state == ChunkState::Discovered {
            Ok(Some(newest))
        } else {
            Ok(oldest)
        }
    }

    /// Marks that an upload attempt of a chunk begins (counts attempts, stamps `started_at`).
    pub fn start_attempt(&self, id: i64, now: UnixMillis) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE chunks SET attempts = attempts + 1, started_at = COALESCE(started_at, ?2)
                 WHERE id = ?1",
                params![id, now],
            )
            .map_err(Error::journal("start attempt"))?;
        Ok(())
    }

    /// Records the multipart upload id of a chunk (state `uploading`).
    pub fn begin_multipart(&self, id: i64, upload_id: &str) -> Result<(), Error> {
        let n = self
            .conn()
            .execute(
                "UPDATE chunks SET state = 'uploading', upload_id = ?2 WHERE id = ?1",
                params![id, upload_id],
            )
            .map_err(Error::journal("begin multipart"))?;
        if n == 0 {
            return Err(Error::UnknownChunk { id });
        }
        Ok(())
    }

    /// Records one completed part.
    pub fn record_part(&self, id: i64, part: &PartRecord, now: UnixMillis) -> Result<(), Error> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO parts
                   (chunk_id, part_number, offset_bytes, size_bytes, etag, crc32c, completed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    part.number,
                    part.offset as i64,
                    part.size as i64,
                    part.etag,
                    part.crc32c,
                    now
                ],
            )
            .map_err(Error::journal("record part"))?;
        Ok(())
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

    /// Drops a chunk's upload id and parts (the server lost or refuses the upload) and queues the
    /// old upload for abort.
    pub fn forget_upload(&self, id: i64) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(Error::journal("forget upload"))?;
        // The store may still hold parts of the old upload; abort it so they do not linger.
        tx.execute(
            "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
             SELECT upload_id, object_key, 'upload lost or refused', ?2 FROM chunks
             WHERE id = ?1 AND upload_id IS NOT NULL",
            params![id, crate::now_millis()],
        )
        .map_err(Error::journal("forget upload"))?;
        tx.execute("DELETE FROM parts WHERE chunk_id = ?1", [id])
            .map_err(Error::journal("forget upload"))?;
        tx.execute(
            "UPDATE chunks SET state = 'discovered', upload_id = NULL WHERE id = ?1",
            [id],
        )
        .map_err(Error::journal("forget upload"))?;
        tx.commit().map_err(Error::journal("forget upload"))
    }

    /// Stores the last error seen for a chunk (for `backhaul status` and sqlite3 readers).
    pub fn note_error(&self, id: i64, error: &str) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE chunks SET last_error = ?2 WHERE id = ?1",
                params![id, error],
            )
            .map_err(Error::journal("note error"))?;
        Ok(())
    }

    /// Marks a chunk verified in the bucket with the given object checksum.
    pub fn mark_verified(&self, id: i64, checksum: &str, now: UnixMillis) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(Error::journal("mark verified"))?;
        tx.execute(
            "UPDATE chunks SET state = 'verified', checksum = ?2, verified_at = ?3,
               upload_id = NULL, last_error = NULL
             WHERE id = ?1",
            params![id, checksum, now],
        )
        .map_err(Error::journal("mark verified"))?;
        tx.execute("DELETE FROM parts WHERE chunk_id = ?1", [id])
            .map_err(Error::journal("mark verified"))?;
        tx.commit().map_err(Error::journal("mark verified"))
    }

    /// Moves a chunk to a final state (`removed`, `retained`, `gone`, `dropped`), queueing its
    /// open multipart upload, if any, for abort.
    pub fn finish(&self, id: i64, state: ChunkState, now: UnixMillis) -> Result<(), Error> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(Error::journal("finish"))?;
        tx.execute(
            "INSERT OR IGNORE INTO aborts (upload_id, object_key, reason, queued_at)
             SELECT upload_id, object_key, ?2, ?3 FROM chunks
             WHERE id = ?1 AND upload_id IS NOT NULL",
            params![id, format!("chunk {}", state.as_str()), now],
        )
        .map_err(Error::journal("finish"))?;
        tx.execute(
            "UPDATE chunks SET state = ?2, finished_at = ?3, upload_id = NULL WHERE id = ?1",
            params![id, state.as_str(), now],
        )
        .map_err(Error::journal("finish"))?;
        tx.execute("DELETE FROM parts WHERE chunk_id = ?1", [id])
            .map_err(Error::journal("finish"))?;
        tx.commit().map_err(Error::journal("finish"))
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
            .query_row(
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

    /// Count of chunks per state, for status output.
    pub fn state_counts(&self) -> Result<Vec<(String, u64)>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT state, COUNT(*) FROM chunks GROUP BY state ORDER BY state")
            .map_err(Error::journal("state counts"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(Error::journal("state counts"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("state counts"))
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

    #[test]
    fn state_survives_reopen_with_parts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let j = Journal::open(&path).unwrap();
            let Upsert::New(id) = j
                .upsert_ready("cam1/a.mp4", "cam1", "k/a", ident(10, 1), 5)
                .unwrap()
            else {
                panic!("expected new");
            };
            j.begin_multipart(id, "up-1").unwrap();
            let p = PartRecord {
                number: 1,
                offset: 0,
                size: 5,
                etag: "\"e\"".into(),
                crc32c: "c".into(),
            };
            j.record_part(id, &p, 6).unwrap();
        }
        let j = Journal::open(&path).unwrap();
        let c = j.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
        assert_eq!(c.state, ChunkState::Uploading);
        assert_eq!(c.upload_id.as_deref(), Some("up-1"));
        assert_eq!(j.parts(c.id).unwrap().len(), 1);
        assert_eq!(j.backlog().unwrap().chunks, 1);
    }

    #[test]
    fn changed_file_restarts_and_queues_abort() {
        let (_d, j) = journal();
        let Upsert::New(id) = j.upsert_ready("a", "c", "k", ident(10, 1), 0).unwrap() else {
            panic!()
        };
        j.begin_multipart(id, "up-1").unwrap();
        assert_eq!(
            j.upsert_ready("a", "c", "k", ident(10, 1), 1).unwrap(),
            Upsert::Known(id)
        );
        assert_eq!(
            j.upsert_ready("a", "c", "k", ident(11, 2), 2).unwrap(),
            Upsert::Replaced(id)
        );
        let c = j.chunk(id).unwrap();
        assert_eq!(c.state, ChunkState::Discovered);
        assert_eq!(c.upload_id, None);
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
    fn freshness_takes_live_chunk_then_drains_oldest() {
        let (_d, j) = journal();
        for (i, name) in ["old1", "old2", "old3"].iter().enumerate() {
            j.upsert_ready(name, "c", name, ident(1, i as i128 + 1), 0)
                .unwrap();
        }
        // Nothing started yet: the newest is live.
        let first = j.next_pending(Order::Freshness, &[]).unwrap().unwrap();
        assert_eq!(first.name, "old3");
        j.start_attempt(first.id, 1).unwrap();
        j.mark_verified(first.id, "x", 2).unwrap();
        // Backlog drains oldest first behind it.
        let next = j.next_pending(Order::Freshness, &[]).unwrap().unwrap();
        assert_eq!(next.name, "old1");
        j.start_attempt(next.id, 3).unwrap();
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
        let Upsert::New(id) = j.upsert_ready("a", "c", "k", ident(1, 1), 0).unwrap() else {
            panic!()
        };
        j.begin_multipart(id, "u").unwrap();
        j.finish(id, ChunkState::Gone, 1).unwrap();
        assert_eq!(j.chunk(id).unwrap().state, ChunkState::Gone);
        assert_eq!(j.pending_aborts().unwrap().len(), 1);
        assert_eq!(j.backlog().unwrap().chunks, 0);
    }
}
