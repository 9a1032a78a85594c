//! How a request's progress is watched: the bytes a body has handed to the socket, and the
//! deadline the transport enforces from them. Shared by the request bodies and the transport,
//! so neither imports the other for it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Upload progress shared between a request body and its watchdog.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    sent: AtomicU64,
    last_ms: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            start: Instant::now(),
            sent: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl Progress {
    /// Records `n` more bytes taken by the socket.
    pub fn advance(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.touch();
    }

    /// Records activity without bytes (the body finished; the response is awaited).
    pub fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Bytes taken so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// How a request is watched.
#[derive(Debug, Clone, Copy)]
pub enum Deadline<'a> {
    /// The whole exchange must finish within this time.
    Total(Duration),
    /// Abandon when `progress` has not moved for `stall` (body uploads).
    Stall {
        /// The body's progress.
        progress: &'a Progress,
        /// Stall timeout.
        stall: Duration,
        /// Part number for the error message.
        part: u32,
    },
}
