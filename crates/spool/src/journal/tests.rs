use super::schema::schema;
use super::*;

fn ident(size: u64, mtime_ns: i128) -> FileIdentity {
    FileIdentity {
        size,
        mtime_ns,
        inode: 7,
        ctime_ns: mtime_ns + 1,
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
        conn.execute_batch(&schema()).unwrap();
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

/// A journal from before ctimes were recorded gains the column; a row's file seen again with
/// the same size, mtime and inode is the same chunk (its ctime recorded, nothing restarted),
/// and from then on a ctime that moves is a new version.
#[test]
fn a_version_3_journal_adopts_ctimes_without_restarting_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&schema().replace(",\n    ctime_ns        INTEGER\n", "\n"))
            .unwrap();
        conn.execute(
            "INSERT INTO chunks (name, camera, object_key, size_bytes, mtime_ns, inode, state,
                                 upload_id, discovered_at)
             VALUES ('cam1/a.mp4', 'cam1', 'S/cam1/a.mp4', 10, 100, 7, 'uploading', 'u1', 0)",
            [],
        )
        .unwrap();
        conn.pragma_update(None, "user_version", 3).unwrap();
    }
    let j = Journal::open(&path).unwrap();
    let legacy = j.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
    assert_eq!(legacy.identity.ctime_ns, 0);
    let seen = ident(10, 100);
    let up = j
        .upsert_ready("cam1/a.mp4", "cam1", "S/cam1/a.mp4", seen, 1)
        .unwrap();
    assert!(matches!(up, Upsert::Known(_)), "{up:?}");
    let adopted = j.chunk_by_name("cam1/a.mp4").unwrap().unwrap();
    assert_eq!(adopted.identity, seen);
    assert_eq!(
        adopted.upload_id.as_deref(),
        Some("u1"),
        "the open upload goes on"
    );
    assert!(j.pending_aborts().unwrap().is_empty());
    let patched = FileIdentity {
        ctime_ns: seen.ctime_ns + 5,
        ..seen
    };
    let up = j
        .upsert_ready("cam1/a.mp4", "cam1", "S/cam1/a.mp4", patched, 2)
        .unwrap();
    assert!(matches!(up, Upsert::Replaced(..)), "{up:?}");
    assert!(
        j.mark_verified(&adopted, "crc32c:x", 3).is_err(),
        "the old version is never marked verified"
    );
}

/// A chunk dated 2099 (a camera with a wrong clock) is uploaded like a live one, and freshness
/// goes on for the chunks after it instead of waiting for 2099; a "newest started" from the
/// future left by an older agent does not hold it off either.
#[test]
fn a_chunk_from_the_future_does_not_turn_freshness_off() {
    let (_d, j) = journal();
    let now = crate::now_millis();
    let now_ns = i128::from(now) * 1_000_000;
    let year_2099_ns = 4_070_908_800 * 1_000_000_000i128;
    for (name, mtime) in [
        ("old1", now_ns - 3_600_000_000_000),
        ("old2", now_ns - 3_000_000_000_000),
    ] {
        j.upsert_ready(name, "c", name, ident(1, mtime), now)
            .unwrap();
    }
    j.upsert_ready("future", "c", "future", ident(1, year_2099_ns), now)
        .unwrap();
    let first = j.claim(Order::Freshness, &[], now).unwrap().unwrap();
    assert_eq!(first.name, "future", "the newest counts as live");
    j.upsert_ready("live", "c", "live", ident(1, now_ns + 1_000_000_000), now)
        .unwrap();
    let next = j
        .claim(Order::Freshness, &[first.id], now + 2_000)
        .unwrap()
        .unwrap();
    assert_eq!(
        next.name, "live",
        "freshness still on after the chunk from 2099"
    );

    j.conn()
        .execute(
            "UPDATE spool_state SET value = ?1 WHERE key = ?2",
            params![ns(year_2099_ns), NEWEST_STARTED],
        )
        .unwrap();
    j.upsert_ready("live2", "c", "live2", ident(1, now_ns + 3_000_000_000), now)
        .unwrap();
    let next = j
        .claim(Order::Freshness, &[first.id, next.id], now + 4_000)
        .unwrap()
        .unwrap();
    assert_eq!(next.name, "live2");
}

/// The SQL lists of states are written from `ChunkState`: each state is in exactly one of
/// pending, verified and finished, and a name the agent does not know is refused, never read
/// as another state.
#[test]
fn state_lists_come_from_chunk_state_and_unknown_states_are_refused() {
    assert_eq!(PENDING.to_string(), "('discovered','uploading')");
    assert_eq!(LIVE.to_string(), "('discovered','uploading','verified')");
    assert_eq!(
        FINISHED.to_string(),
        "('removed','retained','gone','dropped')"
    );
    for s in ChunkState::ALL {
        assert_eq!(ChunkState::parse(s.as_str()), Some(s));
        let classes = [s.is_pending(), s == ChunkState::Verified, s.is_finished()];
        assert_eq!(classes.iter().filter(|c| **c).count(), 1, "{s:?}");
    }
    assert_eq!(ChunkState::parse("archived"), None);

    let (_d, j) = journal();
    let c = new(&j, "a", "k", ident(1, 1));
    j.conn()
        .execute_batch("PRAGMA ignore_check_constraints = ON")
        .unwrap();
    j.conn()
        .execute("UPDATE chunks SET state = 'archived' WHERE id = ?1", [c.id])
        .unwrap();
    let err = j.chunk(c.id).unwrap_err().to_string();
    assert!(err.contains("journal operation"), "{err}");
    assert!(
        format!("{:?}", j.chunk(c.id).unwrap_err()).contains("unknown chunk state `archived`"),
        "refused, not read as discovered"
    );
}

/// Another connection to the journal (the alert outbox is one) writes while a transition runs:
/// the transition waits for it and then commits, it never fails with "database is locked".
/// A deferred transaction that read before the other writer committed could not write after
/// it, and the agent stopped on that error.
#[test]
fn a_write_on_another_connection_makes_transitions_wait_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.sqlite");
    let j = Journal::open(&path).unwrap();
    for round in 0..5 {
        let other = rusqlite::Connection::open(&path).unwrap();
        let (held, go) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            other.execute_batch("BEGIN IMMEDIATE").unwrap();
            other
                .execute(
                    "INSERT INTO outbox (destination, incident, status, body, created_at, next_attempt_at)
                     VALUES ('webhook', 'i', 'firing', x'00', 0, 0)",
                    [],
                )
                .unwrap();
            held.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            other.execute_batch("COMMIT").unwrap();
        });
        go.recv().unwrap();
        let name = format!("cam/{round}.mp4");
        let upserted = j.upsert_ready(&name, "c", &name, ident(5, 1), 0);
        writer.join().unwrap();
        assert!(upserted.is_ok(), "round {round}: {upserted:?}");
    }
}
