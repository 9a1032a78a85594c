//! The pending-apply lock: one guarded apply per host at a time.
//!
//! `<state dir>/pending.json` is created with `O_EXCL` before anything changes and names the
//! process that owns the change (first the foreground, then the detached verifier), with the
//! kernel start time of that process so a recycled pid is never mistaken for it. Finishing
//! moves the file into the run's directory (`lock.json`) instead of deleting it, which also
//! leaves a record. A lock whose process is gone means a run ended without finishing: the
//! links may still be in the changed state, so it is never taken over silently; the operator
//! looks, then passes `--clear-stale`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// File name of the lock inside the state directory.
pub const LOCK_FILE: &str = "pending.json";

/// What the lock file records about the pending apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Run id (`20251112T081500Z-4242`).
    pub id: String,
    /// The process that owns the change now.
    pub pid: u32,
    /// Its kernel start time (field 22 of `/proc/PID/stat`), to tell it from a recycled pid.
    pub start_time: Option<u64>,
    /// Where its plan, progress, backup and report live.
    pub run_dir: PathBuf,
    /// The ticket, when the intent came from one.
    pub ticket: Option<String>,
    /// Unix seconds when the verify window ends (rollback decided by then).
    pub verify_until_unix: u64,
}

impl Pending {
    /// Whether the recorded process still runs.
    pub fn alive(&self) -> bool {
        let Some(now) = start_time(self.pid) else {
            return false;
        };
        self.start_time.is_none_or(|t| t == now) && !zombie(self.pid)
    }
}

/// The held lock. Dropping it without [`Lock::release`] leaves the file in place on purpose:
/// a run that stops half-way must stay visible.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
}

impl Lock {
    /// The lock file of `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(LOCK_FILE)
    }

    /// Takes the lock, or says which apply holds it.
    pub fn acquire(state_dir: &Path, pending: &Pending) -> Result<Self, Error> {
        std::fs::create_dir_all(state_dir).map_err(|source| Error::Io {
            op: "create the state directory",
            path: state_dir.to_path_buf(),
            help: "pass a writable --state-dir (default /var/lib/backhaul/netplan-apply; needs root)",
            source,
        })?;
        let path = Self::path_in(state_dir);
        let text = to_json(pending)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        match file {
            Ok(mut f) => {
                f.write_all(text.as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|source| Error::Io {
                        op: "write the lock",
                        path: path.clone(),
                        help: "check the state directory's filesystem",
                        source,
                    })?;
                Ok(Self { path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(held(&path, Self::read(state_dir)?))
            }
            Err(source) => Err(Error::Io {
                op: "create the lock",
                path,
                help: "pass a writable --state-dir",
                source,
            }),
        }
    }

    /// Fails, naming the pending apply, when `state_dir` holds a lock (the early, friendly
    /// form of the `O_EXCL` in [`Lock::acquire`], which still decides races).
    pub fn ensure_free(state_dir: &Path) -> Result<(), Error> {
        match Self::read(state_dir)? {
            None => Ok(()),
            Some(p) => Err(held(&Self::path_in(state_dir), Some(p))),
        }
    }

    /// The pending apply recorded in `state_dir`, if any.
    pub fn read(state_dir: &Path) -> Result<Option<Pending>, Error> {
        let path = Self::path_in(state_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| Error::State { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Io {
                op: "read the lock",
                path,
                help: "check the state directory's permissions",
                source,
            }),
        }
    }

    /// Moves a lock whose process is gone into its run directory (`lock-stale.json`) and
    /// returns what it held; a live one is an error naming it.
    pub fn clear_stale(state_dir: &Path) -> Result<Option<Pending>, Error> {
        let path = Self::path_in(state_dir);
        let Some(p) = Self::read(state_dir)? else {
            return Ok(None);
        };
        if p.alive() {
            return Err(held(&path, Some(p)));
        }
        retire(&path, &p.run_dir.join("lock-stale.json"))?;
        Ok(Some(p))
    }

    /// Takes over the lock of run `id` from the process that created it (the detached
    /// verifier adopting the foreground's lock).
    pub fn adopt(state_dir: &Path, id: &str, pending: &Pending) -> Result<Self, Error> {
        let path = Self::path_in(state_dir);
        match Self::read(state_dir)? {
            Some(p) if p.id == id => {}
            other => return Err(held(&path, other)),
        }
        let lock = Self { path };
        lock.update(pending)?;
        Ok(lock)
    }

    /// Rewrites the record (atomically: a reader sees the old or the new one).
    pub fn update(&self, pending: &Pending) -> Result<(), Error> {
        let tmp = self.path.with_extension("json.tmp");
        let io = |op, source| Error::Io {
            op,
            path: tmp.clone(),
            help: "check the state directory's filesystem",
            source,
        };
        std::fs::write(&tmp, to_json(pending)?).map_err(|e| io("write the lock", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("replace the lock", e))
    }

    /// Ends the pending state: the lock moves to `run_dir/lock.json`.
    pub fn release(self, run_dir: &Path) -> Result<(), Error> {
        retire(&self.path, &run_dir.join("lock.json"))
    }
}

fn retire(from: &Path, to: &Path) -> Result<(), Error> {
    std::fs::rename(from, to).map_err(|source| Error::Io {
        op: "move the lock into its run directory",
        path: from.to_path_buf(),
        help: "check that the run directory still exists on the same filesystem",
        source,
    })
}

fn held(path: &Path, pending: Option<Pending>) -> Error {
    match pending {
        Some(p) if p.alive() => Error::Pending {
            path: path.to_path_buf(),
            id: p.id,
            pid: p.pid,
            ticket: p.ticket,
            run_dir: p.run_dir,
        },
        Some(p) => Error::StalePending {
            path: path.to_path_buf(),
            id: p.id,
            pid: p.pid,
            run_dir: p.run_dir,
        },
        None => Error::Pending {
            path: path.to_path_buf(),
            id: "unknown".into(),
            pid: 0,
            ticket: None,
            run_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
        },
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string_pretty(value).map_err(|e| Error::Output(std::io::Error::other(e)))
}

/// The kernel start time of `pid`, or `None` when no such process exists.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(dir: &Path, pid: u32) -> Pending {
        Pending {
            id: format!("run-{pid}"),
            pid,
            start_time: start_time(pid),
            run_dir: dir.join("run"),
            ticket: Some("NET-4521".into()),
            verify_until_unix: 0,
        }
    }

    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn second_apply_is_told_which_one_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let lock = Lock::acquire(dir.path(), &pending(dir.path(), std::process::id())).unwrap();
        let err = Lock::acquire(dir.path(), &pending(dir.path(), 1)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Pending { .. }), "{text}");
        assert!(
            text.contains(&format!("run-{}", std::process::id())) && text.contains("NET-4521"),
            "{text}"
        );
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        lock.release(&dir.path().join("run")).unwrap();
        assert!(dir.path().join("run/lock.json").exists());
        Lock::acquire(dir.path(), &pending(dir.path(), std::process::id())).unwrap();
    }

    #[test]
    fn lock_of_a_dead_process_is_stale_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        let mut p = pending(dir.path(), dead_pid());
        p.start_time = Some(1);
        Lock::acquire(dir.path(), &p).unwrap();
        let err = Lock::acquire(dir.path(), &pending(dir.path(), std::process::id())).unwrap_err();
        assert!(matches!(err, Error::StalePending { .. }), "{err}");
        assert!(err.to_string().contains("--clear-stale"), "{err}");
        assert_eq!(Lock::clear_stale(dir.path()).unwrap(), Some(p));
        assert!(dir.path().join("run/lock-stale.json").exists());
        Lock::acquire(dir.path(), &pending(dir.path(), std::process::id())).unwrap();
    }

    #[test]
    fn a_recycled_pid_is_not_the_pending_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = pending(dir.path(), std::process::id());
        p.start_time = p.start_time.map(|t| t + 1);
        assert!(!p.alive());
        assert!(pending(dir.path(), std::process::id()).alive());
    }

    #[test]
    fn clearing_refuses_a_live_apply() {
        let dir = tempfile::tempdir().unwrap();
        Lock::acquire(dir.path(), &pending(dir.path(), std::process::id())).unwrap();
        assert!(matches!(
            Lock::clear_stale(dir.path()),
            Err(Error::Pending { .. })
        ));
    }
}
