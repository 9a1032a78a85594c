//! One agent per spool. Two agents on one spool would send every chunk twice and report each
//! other's deletions as vanished chunks; with two journals, each one's orphan sweep could
//! abort the other's uploads. So opening a spool takes an exclusive `flock` on the spool
//! directory and on `<journal>.lock` beside the journal (the pid is written there for
//! people), held until the spool is dropped. The kernel releases both when the process dies,
//! so a killed agent never leaves a stale lock.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::{Error, SpoolSettings};

/// The locks of one spool, released on drop.
#[derive(Debug)]
pub struct SpoolLock {
    _dir: File,
    _journal: File,
}

impl SpoolLock {
    /// Takes the spool's locks, or says which process holds them.
    pub fn acquire(settings: &SpoolSettings) -> Result<Self, Error> {
        let spool = &settings.dir;
        let dir = File::open(spool).map_err(|e| Error::SpoolDir {
            path: spool.clone(),
            source: e,
        })?;
        take(&dir, spool, spool)?;
        let lock_path = lock_file(&settings.journal);
        if let Some(parent) = lock_path.parent() {
            crate::journal::create_private_dir(parent)?;
        }
        let io = |action: &'static str| {
            let path = lock_path.clone();
            move |source| Error::ChunkIo {
                path,
                action,
                source,
            }
        };
        let journal = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(io("open the journal's lock file"))?
        };
        take(&journal, &lock_path, spool)?;
        // The pid is for people (the lock itself is the flock); a full disk must not stop
        // the agent that would free it.
        let mut w = &journal;
        let pid = journal
            .set_len(0)
            .and_then(|()| w.write_all(format!("{}\n", std::process::id()).as_bytes()));
        if let Err(e) = pid {
            tracing::debug!(path = ?lock_path, error = %e, "cannot write the pid into the lock file");
        }
        Ok(Self {
            _dir: dir,
            _journal: journal,
        })
    }
}

/// `<journal>.lock`.
fn lock_file(journal: &Path) -> PathBuf {
    crate::journal::sibling(journal, ".lock")
}

fn take(file: &File, path: &Path, spool: &Path) -> Result<(), Error> {
    match flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked {
            spool: spool.to_owned(),
            pid: file.metadata().ok().and_then(|m| holder(&m)),
        }),
        Err(e) => Err(Error::ChunkIo {
            path: path.to_owned(),
            action: "lock",
            source: e.into(),
        }),
    }
}

/// The process holding a `flock` on the file with this metadata, from `/proc/locks`.
fn holder(meta: &std::fs::Metadata) -> Option<u32> {
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    holder_in(&locks, &id)
}

/// The pid of the `FLOCK` line on `id` (`major:minor:inode` as the kernel prints it).
fn holder_in(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 4242 00:2a:123 0 EOF"; blocked waiters are "-> FLOCK …".
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SpoolConfig;

    #[test]
    fn a_second_lock_on_one_spool_is_refused_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let settings = SpoolConfig::with_dir(dir.path()).validate("SITE").unwrap();
        let first = SpoolLock::acquire(&settings).unwrap();
        match SpoolLock::acquire(&settings) {
            Err(Error::Locked { spool, pid }) => {
                assert_eq!(spool, dir.path());
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        let pid = std::fs::read_to_string(lock_file(&settings.journal)).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        drop(first);
        SpoolLock::acquire(&settings).expect("released on drop");
    }

    #[test]
    fn the_holder_is_read_from_proc_locks_lines() {
        let locks = "1: POSIX  ADVISORY  WRITE 10 00:2a:7 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:2a:7 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 77 00:2a:7 0 EOF\n";
        assert_eq!(holder_in(locks, "00:2a:7"), Some(4242));
        assert_eq!(holder_in(locks, "00:2a:8"), None);
    }
}
