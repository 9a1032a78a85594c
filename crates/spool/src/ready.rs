use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::FileIdentity;

/// Decides when a file in the spool is completely written.
///
/// A file is ready when it was renamed into the spool (the camera's write-then-rename
/// protocol), or when nothing has written to it for the settle time: its mtime is at least
/// `settle` old, or — for clocks that disagree — its size and mtime stayed unchanged across
/// observations `settle` apart.
#[derive(Debug)]
pub struct Readiness {
    settle: Duration,
    seen: HashMap<String, (FileIdentity, Instant)>,
    renamed: HashSet<String>,
}

impl Readiness {
    /// A tracker with the given settle time.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle,
            seen: HashMap::new(),
            renamed: HashSet::new(),
        }
    }

    /// Notes that `name` arrived by rename (inotify `IN_MOVED_TO`).
    pub fn mark_renamed(&mut self, name: &str) {
        self.renamed.insert(name.to_owned());
    }

    /// Observes `name` with its current identity; true when it is ready.
    ///
    /// `mtime_age` is wall-clock now minus the file's mtime (`None` if the mtime is in the
    /// future). `now` is the monotonic clock.
    pub fn check(
        &mut self,
        name: &str,
        ident: FileIdentity,
        mtime_age: Option<Duration>,
        now: Instant,
    ) -> bool {
        if self.renamed.contains(name) || mtime_age.is_some_and(|age| age >= self.settle) {
            self.forget(name);
            return true;
        }
        match self.seen.get(name) {
            Some((prev, since)) if *prev == ident => {
                if now.saturating_duration_since(*since) >= self.settle {
                    self.forget(name);
                    return true;
                }
            }
            _ => {
                self.seen.insert(name.to_owned(), (ident, now));
            }
        }
        false
    }

    /// Keeps `name` waiting although it looked ready: a writer still holds it open. It is
    /// looked at again on the next settle poll.
    pub fn still_written(&mut self, name: &str, ident: FileIdentity, now: Instant) {
        self.renamed.remove(name);
        self.seen.insert(name.to_owned(), (ident, now));
    }

    /// Stops tracking `name` (it was journaled, ignored or removed).
    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
        self.renamed.remove(name);
    }

    /// Names seen but not yet ready, to be checked again soon.
    pub fn waiting(&self) -> Vec<String> {
        self.seen.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(5);

    fn id(size: u64) -> FileIdentity {
        FileIdentity {
            size,
            mtime_ns: size as i128,
            inode: 1,
            ctime_ns: size as i128,
        }
    }

    #[test]
    fn renamed_file_is_ready_at_once() {
        let mut r = Readiness::new(S);
        r.mark_renamed("a.mp4");
        assert!(r.check("a.mp4", id(1), Some(Duration::ZERO), Instant::now()));
    }

    #[test]
    fn growing_file_waits_until_unchanged_for_settle() {
        let mut r = Readiness::new(S);
        let t0 = Instant::now();
        let fresh = Some(Duration::ZERO);
        assert!(!r.check("a", id(1), fresh, t0));
        assert!(!r.check("a", id(2), fresh, t0 + Duration::from_secs(4)));
        // Unchanged, but only 2 s since the last change.
        assert!(!r.check("a", id(2), fresh, t0 + Duration::from_secs(6)));
        assert_eq!(r.waiting(), vec!["a".to_owned()]);
        assert!(r.check("a", id(2), fresh, t0 + Duration::from_secs(9)));
        assert!(r.waiting().is_empty());
    }

    #[test]
    fn old_mtime_is_ready_at_once() {
        let mut r = Readiness::new(S);
        assert!(r.check("a", id(1), Some(Duration::from_secs(60)), Instant::now()));
        // A future mtime falls back to observation.
        assert!(!r.check("b", id(1), None, Instant::now()));
    }
}
