//! Chunks out on upload, as the spool hands them out: a [`Claim`] holds the chunk's file open
//! and keeps the chunk in flight until it is dropped, and the spool remembers, for this
//! process, which chunks wait out a backoff after a failed attempt and which a drain gave up
//! on. So the next claim skips all of them by itself, and upkeep never drops a chunk in
//! flight; the uploader keeps no list of its own.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::scan::identity_of;
use crate::watch::now_millis;
use crate::{Chunk, Error, Spool};

/// What became of a chunk's failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Claimed again once the delay is over (or the store answers again).
    RetryIn(Duration),
    /// Not claimed again by this process (a drain that gave up on it).
    GiveUp,
}

#[derive(Debug)]
struct Backoff {
    failures: u32,
    not_before: Instant,
    given_up: bool,
}

/// The spool's memory of chunks handed out, in this process.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    in_flight: HashMap<i64, Chunk>,
    backoff: HashMap<i64, Backoff>,
}

impl Flights {
    /// Chunks a claim must not take now.
    fn skip(&self, now: Instant) -> Vec<i64> {
        let waiting = self
            .backoff
            .iter()
            .filter(|(_, b)| b.given_up || b.not_before > now)
            .map(|(id, _)| *id);
        self.in_flight.keys().copied().chain(waiting).collect()
    }
}

/// A chunk claimed for upload, its file opened at the claim (`O_NOFOLLOW`, and checked to be
/// the journaled version). The chunk stays in flight until the claim is dropped.
#[derive(Debug)]
pub struct Claim {
    chunk: Chunk,
    path: PathBuf,
    file: std::io::Result<Arc<File>>,
    flights: Arc<Mutex<Flights>>,
}

impl Claim {
    /// The chunk as it was claimed.
    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// The chunk's file, opened at the claim; the error if it could not be read.
    pub fn file(&self) -> Result<&Arc<File>, &std::io::Error> {
        self.file.as_ref()
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        lock(&self.flights).in_flight.remove(&self.chunk.id);
    }
}

fn lock(flights: &Mutex<Flights>) -> MutexGuard<'_, Flights> {
    flights.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a claimed chunk's file did not open as the journaled version.
enum Open {
    /// Gone, replaced by a symlink, or another version: the journal is told.
    Changed,
    /// Could not be read.
    Unreadable(std::io::Error),
}

fn open(path: &Path, chunk: &Chunk) -> Result<File, Open> {
    // O_NOFOLLOW: a chunk swapped for a symlink after discovery is never followed.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Open::Changed,
            _ if e.raw_os_error() == Some(libc::ELOOP) => Open::Changed,
            _ => Open::Unreadable(e),
        })?;
    let meta = file.metadata().map_err(Open::Unreadable)?;
    if identity_of(&meta) != chunk.identity {
        return Err(Open::Changed);
    }
    Ok(file)
}

impl Spool {
    fn flights(&self) -> MutexGuard<'_, Flights> {
        lock(&self.flights)
    }

    /// Claims the next chunk to upload in the configured order (see [`Self::claim_many`]).
    pub fn claim(&self) -> Result<Option<Claim>, Error> {
        Ok(self.claim_many(1, |_| true)?.pop())
    }

    /// Claims up to `n` chunks in the configured order in one journal commit, counting each
    /// attempt and stopping at the first one `admit` refuses (for example, one that does not
    /// fit a byte budget). Chunks in flight, waiting out a backoff or given up on are
    /// skipped. A chunk whose file is gone or changed is handed to [`Self::changed`] instead
    /// of being returned.
    pub fn claim_many(
        &self,
        n: usize,
        admit: impl FnMut(&Chunk) -> bool,
    ) -> Result<Vec<Claim>, Error> {
        let skip = self.flights().skip(Instant::now());
        let chunks = self
            .journal
            .claim_many(self.settings.order, &skip, n, now_millis(), admit)?;
        let mut claims = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let path = self.path_of(&chunk);
            let file = match open(&path, &chunk) {
                Ok(f) => Ok(Arc::new(f)),
                Err(Open::Unreadable(e)) => Err(e),
                Err(Open::Changed) => {
                    tracing::warn!(chunk = ?chunk.name, "chunk changed or vanished before its upload; nothing deleted, the new version is uploaded");
                    if let Err(e) = self.changed(&chunk) {
                        tracing::warn!(chunk = ?chunk.name, error = %e, "journal: the change is not recorded now; the next scan finds the file as it is");
                    }
                    continue;
                }
            };
            self.flights().in_flight.insert(chunk.id, chunk.clone());
            claims.push(Claim {
                chunk,
                path,
                file,
                flights: self.flights.clone(),
            });
        }
        Ok(claims)
    }

    /// The chunks in flight now (claims not yet dropped).
    pub fn in_flight(&self) -> Vec<Chunk> {
        self.flights().in_flight.values().cloned().collect()
    }

    /// A claimed chunk's attempt failed: its error is kept for `backhaul status` and `sqlite3`
    /// readers, and `decide` (given how many attempts of this chunk failed in this process)
    /// says when it may be claimed again. The claim ends.
    pub fn failed(
        &self,
        claim: Claim,
        error: &str,
        decide: impl FnOnce(u32) -> AfterFailure,
    ) -> (u32, AfterFailure) {
        if let Err(e) = self.journal.note_error(claim.chunk.id, error) {
            tracing::error!(error = %e, "journal: cannot record the chunk's last error");
        }
        let mut flights = self.flights();
        let b = flights.backoff.entry(claim.chunk.id).or_insert(Backoff {
            failures: 0,
            not_before: Instant::now(),
            given_up: false,
        });
        b.failures += 1;
        let after = decide(b.failures);
        match after {
            AfterFailure::RetryIn(d) => b.not_before = Instant::now() + d,
            AfterFailure::GiveUp => b.given_up = true,
        }
        (b.failures, after)
    }

    /// The store answers again: every chunk waiting out a backoff may be claimed now (those
    /// given up on stay given up). Returns how many were waiting.
    pub fn retry_now(&self) -> usize {
        let now = Instant::now();
        let mut waiting = 0;
        for b in self.flights().backoff.values_mut() {
            if !b.given_up && b.not_before > now {
                waiting += 1;
                b.not_before = now;
            }
        }
        waiting
    }

    /// Whether a chunk failed in this process and is neither uploaded nor given up on yet
    /// (a drain is not done while one is).
    pub fn retrying(&self) -> bool {
        self.flights().backoff.values().any(|b| !b.given_up)
    }

    /// When the next chunk waiting out a backoff may be claimed, if one is.
    pub fn next_retry(&self) -> Option<Instant> {
        let now = Instant::now();
        self.flights()
            .backoff
            .values()
            .filter(|b| !b.given_up && b.not_before > now)
            .map(|b| b.not_before)
            .min()
    }

    /// The chunk is done with in this process (verified, or changed into a new version): it
    /// no longer waits out a backoff.
    pub(crate) fn settled(&self, id: i64) {
        self.flights().backoff.remove(&id);
    }
}
