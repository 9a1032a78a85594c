//! The journal's tables, their migration from older versions, and the file modes that keep it
//! private.

use std::path::Path;

use rusqlite::{Connection, params};

use super::{ANY, Cached, FINISHED, LIVE, NEWEST_STARTED};
use crate::Error;

/// The tables of a journal of this version (every statement `IF NOT EXISTS`).
pub(super) fn schema() -> String {
    format!(
        "
CREATE TABLE IF NOT EXISTS chunks (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    camera          TEXT    NOT NULL,
    object_key      TEXT    NOT NULL,
    size_bytes      INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    inode           INTEGER NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN
                      {ANY}),
    upload_id       TEXT,
    checksum        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    discovered_at   INTEGER NOT NULL,
    started_at      INTEGER,
    verified_at     INTEGER,
    finished_at     INTEGER,
    ctime_ns        INTEGER
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
"
    )
}

/// Version 2: no two live chunks (discovered, uploading, verified) share an object key.
fn live_key_index() -> String {
    format!(
        "CREATE UNIQUE INDEX IF NOT EXISTS chunks_live_key ON chunks (object_key)
    WHERE state IN {LIVE}"
    )
}
/// Version 3: every statement of the upload path uses an index, so its cost follows the
/// backlog, not the history; finished rows can be found by age for compaction; state that
/// must outlive the rows it came from lives in `spool_state`.
fn history_indexes() -> String {
    format!(
        "
CREATE INDEX IF NOT EXISTS chunks_upload_id ON chunks (upload_id) WHERE upload_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS chunks_finished ON chunks (finished_at)
    WHERE state IN {FINISHED};
CREATE TABLE IF NOT EXISTS spool_state (
    key             TEXT    PRIMARY KEY,
    value           INTEGER NOT NULL
) WITHOUT ROWID;
"
    )
}
/// Version 4: the file's status-change time is part of its identity (a writer that patches
/// a file in place and puts the mtime back still moves it). Rows from before hold NULL until
/// the next scan sees their file.
const CTIME_COLUMN: &str = "ALTER TABLE chunks ADD COLUMN ctime_ns INTEGER";
const SCHEMA_VERSION: i64 = 4;

/// Brings an older journal to [`SCHEMA_VERSION`]. A version-1 journal may hold live chunks
/// that share a key (the collision version 2 prevents): all but the first get a
/// disambiguated key before the unique index is built. Every step is idempotent, so a crash
/// in the middle is repaired by the next open.
pub(super) fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.row_cached("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    if version < 2 {
        let dupes: Vec<(i64, String)> = {
            let mut stmt = conn.prepare(
                &format!("SELECT id, object_key FROM chunks c WHERE state IN {LIVE}
                   AND EXISTS (SELECT 1 FROM chunks o WHERE o.object_key = c.object_key AND o.id < c.id
                     AND o.state IN {LIVE})"),
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
        conn.execute_batch(&live_key_index())?;
    }
    conn.execute_batch(&history_indexes())?;
    conn.exec_cached(
        "INSERT OR IGNORE INTO spool_state (key, value)
         SELECT ?1, MAX(mtime_ns) FROM chunks WHERE started_at IS NOT NULL HAVING COUNT(*) > 0",
        [NEWEST_STARTED],
    )?;
    let has_ctime: bool = conn.row_cached(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('chunks') WHERE name = 'ctime_ns')",
        [],
        |r| r.get(0),
    )?;
    if !has_ctime {
        conn.execute_batch(CTIME_COLUMN)?;
    }
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
}

/// Creates `dir` (and parents) and makes it `0700` if this agent created it.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), Error> {
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
pub(super) fn restrict(path: &Path, mode: u32) -> Result<(), Error> {
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
