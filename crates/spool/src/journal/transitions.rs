//! Every step that changes a chunk's journal state. Each checks the state it starts from and
//! that the row still describes the claimed version; a step on a chunk that changed meanwhile
//! is refused ([`Error::Transition`]).

use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior, params, params_from_iter};

use super::*;

/// The rendered key if no other live chunk holds it, else its first free disambiguation;
/// the second value is `Some` when the key had to change.
fn free_key(
    tx: &rusqlite::Transaction<'_>,
    key: &str,
    own: Option<i64>,
) -> rusqlite::Result<(String, Option<String>)> {
    let taken = |k: &str| -> rusqlite::Result<bool> {
        tx.row_cached(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM chunks WHERE object_key = ?1 AND id IS NOT ?2
               AND state IN {LIVE})"
            ),
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

/// One file of [`Journal::upsert_ready_many`], inside its transaction.
fn upsert_in(
    tx: &rusqlite::Transaction<'_>,
    f: &Ready<'_>,
    now: UnixMillis,
) -> Result<Upsert, Error> {
    let existing = chunk_named(tx, f.name).map_err(Error::journal("upsert: select"))?;
    if let Some(c) = &existing {
        if c.identity == f.identity {
            return Ok(Upsert::Known(c.id));
        }
        // A row from before ctimes were journaled: the file it describes, now with its ctime.
        if c.identity.ctime_ns == 0 && c.identity.same_but_ctime(&f.identity) {
            tx.exec_cached(
                "UPDATE chunks SET ctime_ns = ?2 WHERE id = ?1",
                params![c.id, ns(f.identity.ctime_ns)],
            )
            .map_err(Error::journal("upsert: record ctime"))?;
            return Ok(Upsert::Known(c.id));
        }
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
        now,
        ns(f.identity.ctime_ns)
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
                   verified_at = NULL, finished_at = NULL, ctime_ns = ?8
                 WHERE name = ?1",
                row,
            )
            .map_err(Error::journal("upsert: replace"))?;
            Upsert::Replaced(c.id, key.1)
        }
        None => {
            tx.exec_cached(
                "INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode,
                                     state, discovered_at, ctime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'discovered', ?7, ?8)",
                row,
            )
            .map_err(Error::journal("upsert: insert"))?;
            Upsert::New(tx.last_insert_rowid(), key.1)
        }
    };
    Ok(outcome)
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
/// The parameters `?1`..`?6` of a statement that checks [`SAME_VERSION`]: the chunk's id,
/// key and identity.
fn same_version(chunk: &Chunk) -> [Value; 6] {
    [
        chunk.id.into(),
        chunk.key.clone().into(),
        (chunk.identity.size as i64).into(),
        ns(chunk.identity.mtime_ns).into(),
        (chunk.identity.inode as i64).into(),
        ns(chunk.identity.ctime_ns).into(),
    ]
}

/// How far in the future an mtime may be before ordering takes it for "now": a camera with a
/// wrong clock (a chunk dated 2099) must not look newer than every live chunk to come.
const FUTURE_TOLERANCE_MS: i64 = 60_000;

/// The mtime freshness ordering goes by: the file's, or `now` for one dated beyond the
/// tolerance.
fn ordering_mtime(mtime_ns: i128, now: UnixMillis) -> i128 {
    if mtime_ns > horizon_ns(now) {
        i128::from(now) * 1_000_000
    } else {
        mtime_ns
    }
}

/// The latest mtime taken at its word: `now` plus the tolerance.
fn horizon_ns(now: UnixMillis) -> i128 {
    i128::from(now.saturating_add(FUTURE_TOLERANCE_MS)) * 1_000_000
}

fn next_pending(
    conn: &Connection,
    order: Order,
    busy: &[i64],
    now: UnixMillis,
) -> rusqlite::Result<Option<Chunk>> {
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
    // A "newest started" beyond the tolerance can only be left from before it existed: it is
    // ignored (and replaced by the next claim), so it cannot hold freshness off until then.
    let live = newest_started
        .map(i128::from)
        .filter(|started| *started <= horizon_ns(now))
        .is_none_or(|started| started < ordering_mtime(newest.identity.mtime_ns, now));
    Ok(if live && newest.state == ChunkState::Discovered {
        Some(newest)
    } else {
        oldest
    })
}

impl Journal {
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
        // New discoveries never take the reserve: on a full disk they wait for space (the
        // files stay, and the next scan finds them again).
        let upsert = || {
            let mut conn = self.conn();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::journal("upsert: begin"))?;
            let mut out = Vec::with_capacity(files.len());
            for f in files {
                out.push(upsert_in(&tx, f, now)?);
            }
            tx.commit().map_err(Error::journal("upsert: commit"))?;
            Ok(out)
        };
        upsert().map_err(|e| self.no_space("journal new chunks", e))
    }

    /// The next pending chunk to upload, skipping ids in `busy`.
    ///
    /// `freshness`: the newest pending chunk if it is newer than every chunk ever started
    /// (live data), otherwise the oldest. `fifo`: the oldest. Open uploads come first in
    /// either order: they hold server-side parts and their bytes are half-spent.
    #[cfg(test)]
    pub fn next_pending(&self, order: Order, busy: &[i64]) -> Result<Option<Chunk>, Error> {
        let conn = self.conn();
        next_pending(&conn, order, busy, crate::now_millis())
            .map_err(Error::journal("next pending"))
    }

    /// Takes the next pending chunk (see [`Self::next_pending`]) and counts the attempt.
    #[cfg(test)]
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
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(Error::journal("claim: begin"))?;
            let mut busy = skip.to_vec();
            let mut claimed = Vec::new();
            // On a full filesystem the attempt goes uncounted and the upload goes ahead: it is
            // what frees space.
            let mut recording = true;
            while claimed.len() < n {
                let Some(mut chunk) = next_pending(&tx, order, &busy, now)
                    .map_err(Error::journal("claim: next pending"))?
                else {
                    break;
                };
                if !admit(&chunk) {
                    break;
                }
                if recording {
                    let counted = tx
                        .exec_cached(
                            "UPDATE chunks SET attempts = attempts + 1, started_at = COALESCE(started_at, ?2)
                             WHERE id = ?1",
                            params![chunk.id, now],
                        )
                        .and_then(|_| {
                            tx.exec_cached(
                                "INSERT INTO spool_state (key, value) VALUES (?1, ?2)
                                 ON CONFLICT (key) DO UPDATE SET value = CASE
                                   WHEN value > ?3 THEN excluded.value
                                   ELSE MAX(value, excluded.value) END",
                                params![
                                    NEWEST_STARTED,
                                    ns(ordering_mtime(chunk.identity.mtime_ns, now)),
                                    ns(horizon_ns(now))
                                ],
                            )
                        });
                    match counted {
                        Ok(_) => chunk.attempts += 1,
                        Err(e) if self.reserve.is_no_space(&e) => recording = false,
                        Err(e) => return Err(Error::journal("claim")(e)),
                    }
                }
                busy.push(chunk.id);
                claimed.push(chunk);
            }
            match tx.commit() {
                Ok(()) => Ok(claimed),
                Err(e) if self.reserve.is_no_space(&e) => Ok(claimed),
                Err(e) => Err(Error::journal("claim: commit")(e)),
            }
        })
    }

    /// Records the multipart upload id of a chunk (state `uploading`). Refused unless the row
    /// still describes this version of the file, under this key, with no upload open.
    pub fn begin_multipart(&self, chunk: &Chunk, upload_id: &str) -> Result<(), Error> {
        let n = self.freeing("begin multipart", || {
            self.conn()
                .exec_cached(
                    &format!(
                        "UPDATE chunks SET state = 'uploading', upload_id = ?7
                     WHERE id = ?1 AND state IN {PENDING} AND upload_id IS NULL {SAME_VERSION}"
                    ),
                    params_from_iter(
                        same_version(chunk)
                            .into_iter()
                            .chain([upload_id.to_owned().into()]),
                    ),
                )
                .map_err(Error::journal("begin multipart"))
        })?;
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
        let n = self.freeing("record part", || {
            self.conn()
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
                .map_err(Error::journal("record part"))
        })?;
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
        let changed = self.freeing(op, || {
            let mut conn = self.conn();
            with_sync(&mut conn, sync, |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(Error::journal(op))?;
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
            })
        })?;
        Ok(chunks
            .iter()
            .zip(changed)
            .map(|(chunk, n)| self.transitioned(n, chunk, op))
            .collect())
    }

    /// Gives a pending chunk with no open upload another object key (its own was taken in the
    /// bucket). The unique index refuses a key another live chunk holds.
    pub fn rekey(&self, chunk: &Chunk, key: &str) -> Result<(), Error> {
        let n = self.freeing("rekey", || {
            self.conn()
                .exec_cached(
                    &format!(
                        "UPDATE chunks SET object_key = ?2 WHERE id = ?1 AND state IN {PENDING}
                       AND upload_id IS NULL"
                    ),
                    params![chunk.id, key],
                )
                .map_err(Error::journal("rekey"))
        })?;
        self.transitioned(n, chunk, "rekey")
    }

    /// Stores the last error seen for a chunk (for `backhaul status` and sqlite3 readers).
    /// On a full filesystem it is not recorded: it is for readers, and it never takes the
    /// reserve.
    pub fn note_error(&self, id: i64, error: &str) -> Result<(), Error> {
        match self.conn().exec_cached(
            "UPDATE chunks SET last_error = ?2 WHERE id = ?1",
            params![id, error],
        ) {
            Err(e) if !self.reserve.is_no_space(&e) => Err(Error::journal("note error")(e)),
            _ => Ok(()),
        }
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
                    "UPDATE chunks SET state = 'verified', checksum = ?7, verified_at = ?8,
                       upload_id = NULL, last_error = NULL
                     WHERE id = ?1 AND state IN {PENDING} {SAME_VERSION}"
                ),
                params_from_iter(
                    same_version(chunk)
                        .into_iter()
                        .chain([checksum(chunk).map(str::to_owned).into(), now.into()]),
                ),
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
            ChunkState::Removed | ChunkState::Retained => VERIFIED,
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

    /// Forgets an abort once the server confirmed it (or no longer knows the upload).
    pub fn abort_done(&self, upload_id: &str) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM aborts WHERE upload_id = ?1", [upload_id])
            .map_err(Error::journal("abort done"))?;
        Ok(())
    }
}
