//! The durable outbox: alerts the agent must deliver, kept in the journal's SQLite file so an
//! alert raised while the uplink is down, or just before a restart, is delivered when the path
//! is back. Rows leave only when delivered or superseded. Delivery order per incident and
//! destination is creation order, so a firing alert always arrives before its resolve.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ToSql, TransactionBehavior, params};

use crate::{Error, UnixMillis};

/// Where a message goes. Stored by name, so a message queued before a restart finds its
/// receiver after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The webhook (`monitor.webhook_url`).
    Webhook,
    /// Alertmanager's v2 API (`monitor.alertmanager_url`).
    Alertmanager,
}

impl Destination {
    /// The stored and logged name.
    pub fn as_str(self) -> &'static str {
        match self {
            Destination::Webhook => "webhook",
            Destination::Alertmanager => "alertmanager",
        }
    }
}

/// What a message says of its incident: the outbox keeps a firing message's resolve behind it
/// and lets a newer firing message replace an older one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageStatus {
    /// The incident is open.
    Firing,
    /// It is over.
    Resolved,
}

impl MessageStatus {
    /// The stored and logged name.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Firing => "firing",
            MessageStatus::Resolved => "resolved",
        }
    }
}

impl ToSql for Destination {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Destination {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "webhook" => Ok(Destination::Webhook),
            "alertmanager" => Ok(Destination::Alertmanager),
            other => Err(FromSqlError::Other(
                format!("unknown outbox destination {other:?}").into(),
            )),
        }
    }
}

impl ToSql for MessageStatus {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for MessageStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        match value.as_str()? {
            "firing" => Ok(MessageStatus::Firing),
            "resolved" => Ok(MessageStatus::Resolved),
            other => Err(FromSqlError::Other(
                format!("unknown outbox status {other:?}").into(),
            )),
        }
    }
}

/// One undelivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Row id (creation order).
    pub id: i64,
    /// Where it goes.
    pub destination: Destination,
    /// The incident it is about.
    pub incident: String,
    /// Firing or resolved.
    pub status: MessageStatus,
    /// The payload.
    pub body: Vec<u8>,
    /// When it was raised, Unix ms.
    pub created_at: UnixMillis,
    /// Failed deliveries so far.
    pub attempts: u32,
}

/// The outbox handle: its own connection to the journal file (WAL lets it and the chunk
/// journal write without blocking each other for long).
#[derive(Debug)]
pub struct Outbox {
    conn: Mutex<Connection>,
}

impl Outbox {
    /// Opens the outbox in the journal at `journal` (which [`crate::Spool::open`] created).
    pub fn open(journal: &Path) -> Result<Self, Error> {
        // Opening through the journal creates and migrates the schema, outbox included.
        drop(crate::journal::Journal::open(journal)?);
        let open_err = |source| Error::JournalOpen {
            cause: crate::OpenCause::Other,
            path: journal.to_owned(),
            source,
        };
        let conn = Connection::open(journal).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message, due at once. A firing message supersedes the undelivered firing
    /// messages of the same incident and destination (the newer says the same, later); a
    /// resolve supersedes nothing, so the firing before it is still delivered first.
    pub fn enqueue(
        &self,
        destination: Destination,
        incident: &str,
        status: MessageStatus,
        body: &[u8],
        now: UnixMillis,
    ) -> Result<i64, Error> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(Error::journal("outbox enqueue"))?;
        tx.execute(
            "INSERT INTO outbox (destination, incident, status, body, created_at, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![destination, incident, status, body, now],
        )
        .map_err(Error::journal("outbox enqueue"))?;
        let id = tx.last_insert_rowid();
        // Inserted before the superseded rows go, so it never takes the id of one the delivery
        // task may be sending right now (SQLite reuses the highest id once it is deleted), and
        // that task's `delivered` cannot remove the new message.
        match status {
            MessageStatus::Firing => {
                tx.execute(
                    "DELETE FROM outbox WHERE destination = ?1 AND incident = ?2 AND status = ?3
                     AND id < ?4",
                    params![destination, incident, MessageStatus::Firing, id],
                )
                .map_err(Error::journal("outbox enqueue"))?;
            }
            MessageStatus::Resolved => {}
        }
        tx.commit().map_err(Error::journal("outbox enqueue"))?;
        Ok(id)
    }

    /// Messages due at `now`, oldest first, each only if no older message of the same
    /// incident and destination is still undelivered, and no older message of the destination
    /// is waiting out a backoff: an alert raised while the receiver is down queues behind the
    /// ones before it instead of overtaking them when the receiver is back. (A message the
    /// receiver keeps refusing holds the later ones back for at most one backoff, 60 s.)
    pub fn due(&self, now: UnixMillis) -> Result<Vec<OutboxMessage>, Error> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare(
                "SELECT id, destination, incident, status, body, created_at, attempts FROM outbox o
                 WHERE next_attempt_at <= ?1 AND NOT EXISTS (
                   SELECT 1 FROM outbox e WHERE e.destination = o.destination
                     AND e.incident = o.incident AND e.id < o.id)
                 AND NOT EXISTS (
                   SELECT 1 FROM outbox w WHERE w.destination = o.destination
                     AND w.id < o.id AND w.next_attempt_at > ?1)
                 ORDER BY id",
            )
            .map_err(Error::journal("outbox due"))?;
        let rows = stmt
            .query_map([now], |r| {
                Ok(OutboxMessage {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    incident: r.get(2)?,
                    status: r.get(3)?,
                    body: r.get(4)?,
                    created_at: r.get(5)?,
                    attempts: r.get::<_, i64>(6)? as u32,
                })
            })
            .map_err(Error::journal("outbox due"))?;
        rows.collect::<Result<_, _>>()
            .map_err(Error::journal("outbox due"))
    }

    /// The message arrived.
    pub fn delivered(&self, id: i64) -> Result<(), Error> {
        self.conn()
            .execute("DELETE FROM outbox WHERE id = ?1", [id])
            .map_err(Error::journal("outbox delivered"))?;
        Ok(())
    }

    /// A delivery failed; the message is tried again at `retry_at`.
    pub fn failed(&self, id: i64, error: &str, retry_at: UnixMillis) -> Result<(), Error> {
        self.conn()
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_at = ?3
                 WHERE id = ?1",
                params![id, error, retry_at],
            )
            .map_err(Error::journal("outbox failed"))?;
        Ok(())
    }

    /// Messages not delivered yet.
    pub fn undelivered(&self) -> Result<u64, Error> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(Error::journal("outbox count"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox() -> (tempfile::TempDir, Outbox) {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("j.sqlite")).unwrap();
        (dir, o)
    }

    #[test]
    fn firing_is_delivered_before_its_resolve_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        {
            let o = Outbox::open(&path).unwrap();
            o.enqueue(
                Destination::Webhook,
                "i1",
                MessageStatus::Firing,
                b"fire",
                10,
            )
            .unwrap();
            o.enqueue(
                Destination::Webhook,
                "i1",
                MessageStatus::Resolved,
                b"ok",
                20,
            )
            .unwrap();
            o.enqueue(
                Destination::Webhook,
                "i2",
                MessageStatus::Firing,
                b"other",
                30,
            )
            .unwrap();
        }
        let o = Outbox::open(&path).unwrap();
        assert_eq!(o.undelivered().unwrap(), 3);
        let due = o.due(100).unwrap();
        let bodies: Vec<&[u8]> = due.iter().map(|m| m.body.as_slice()).collect();
        // The resolve waits behind its firing; the other incident goes at once.
        assert_eq!(bodies, [b"fire".as_slice(), b"other".as_slice()]);
        assert_eq!(due[0].created_at, 10, "the original time is kept");
        o.failed(due[0].id, "connection refused", 200).unwrap();
        o.delivered(due[1].id).unwrap();
        assert!(o.due(150).unwrap().is_empty(), "backing off");
        let again = o.due(200).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        o.delivered(again[0].id).unwrap();
        assert_eq!(o.due(200).unwrap()[0].body, b"ok");
    }

    /// The remediation alert of #12 was lost this way: the opened alert was being sent when the
    /// newer one superseded it, the newer took its row id, and the opened alert's delivery
    /// deleted it.
    #[test]
    fn a_message_superseded_while_in_flight_does_not_take_its_successor_along() {
        let (_dir, o) = outbox();
        o.enqueue(
            Destination::Webhook,
            "i1",
            MessageStatus::Firing,
            b"opened",
            10,
        )
        .unwrap();
        let in_flight = o.due(10).unwrap().remove(0);
        o.enqueue(
            Destination::Webhook,
            "i1",
            MessageStatus::Firing,
            b"remediated",
            20,
        )
        .unwrap();
        o.delivered(in_flight.id).unwrap();
        let due = o.due(20).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].body, b"remediated");
    }

    /// The receiver is down when i1 fires; i2 fires during i1's backoff. When the receiver is
    /// back, i1 arrives first, then i2 (in the site-gateway cut the later alert overtook).
    #[test]
    fn an_alert_raised_while_the_receiver_is_down_waits_behind_older_ones() {
        let (_d, o) = outbox();
        o.enqueue(
            Destination::Webhook,
            "i1",
            MessageStatus::Firing,
            b"first",
            10,
        )
        .unwrap();
        let head = o.due(10).unwrap();
        o.failed(head[0].id, "connection refused", 200).unwrap();
        o.enqueue(
            Destination::Webhook,
            "i2",
            MessageStatus::Firing,
            b"second",
            120,
        )
        .unwrap();
        o.enqueue(
            Destination::Alertmanager,
            "i2",
            MessageStatus::Firing,
            b"elsewhere",
            120,
        )
        .unwrap();
        let due = o.due(150).unwrap();
        let bodies: Vec<&[u8]> = due.iter().map(|m| m.body.as_slice()).collect();
        assert_eq!(
            bodies,
            [b"elsewhere".as_slice()],
            "another destination is not held"
        );
        let due = o.due(200).unwrap();
        let bodies: Vec<&[u8]> = due.iter().map(|m| m.body.as_slice()).collect();
        assert_eq!(bodies, [b"first".as_slice(), b"second", b"elsewhere"]);
    }

    #[test]
    fn a_newer_firing_supersedes_an_undelivered_one_but_a_resolve_does_not() {
        let (_d, o) = outbox();
        o.enqueue(
            Destination::Alertmanager,
            "i1",
            MessageStatus::Firing,
            b"old",
            1,
        )
        .unwrap();
        o.enqueue(
            Destination::Alertmanager,
            "i1",
            MessageStatus::Firing,
            b"new",
            2,
        )
        .unwrap();
        o.enqueue(
            Destination::Webhook,
            "i1",
            MessageStatus::Firing,
            b"hook",
            2,
        )
        .unwrap();
        assert_eq!(o.undelivered().unwrap(), 2);
        o.enqueue(
            Destination::Alertmanager,
            "i1",
            MessageStatus::Resolved,
            b"done",
            3,
        )
        .unwrap();
        let due = o.due(10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].body, b"new");
        assert_eq!(o.undelivered().unwrap(), 3);
    }
}
