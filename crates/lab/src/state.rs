//! The lab's state files: `/run/backhaul-lab/<prefix>/state.json` records every namespace, TAP
//! device, process and mount an instance made, and which process's life bounds it (the
//! *owner*). Whoever finds an instance whose owner is gone (after `kill -9`, a crash, a reboot
//! of the owner) tears it down from this record: `up`, `down` and every test start do.
//!
//! A namespace named `bhl-*` with no state directory at all is also stale: the lab writes the
//! state before it creates anything, so such a namespace can only be left over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::cmd;

/// Directory under which every lab instance keeps its state.
pub const STATE_ROOT: &str = "/run/backhaul-lab";
/// Every lab namespace starts with this; nothing else of the host is ever touched.
pub const NS_PREFIX: &str = "bhl-";

/// One process the lab started (or whose life bounds the lab).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    /// Role (`wire`, `s3`, `agent`, `owner`, …).
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Kernel start time, so a recycled pid is never mistaken for ours.
    pub start: u64,
}

impl Proc {
    /// Records the running process `pid` under `name`; `None` when it already exited.
    pub fn of(name: &str, pid: u32) -> Option<Self> {
        Some(Self {
            name: name.to_owned(),
            pid,
            start: cmd::start_time(pid)?,
        })
    }

    /// Whether the process is still running.
    pub fn alive(&self) -> bool {
        cmd::alive(self.pid, self.start)
    }
}

/// Everything one lab instance made.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    /// Namespace prefix, also the state directory's name (`bhl-…`).
    pub prefix: String,
    /// The process whose exit makes the instance stale.
    pub owner: Option<Proc>,
    /// Network namespaces.
    pub namespaces: Vec<String>,
    /// Host-side names the TAP devices had before they were moved into namespaces.
    pub taps: Vec<String>,
    /// Processes started for the lab (wire, peers, uploader).
    pub processes: Vec<Proc>,
    /// Filesystems mounted for the lab (the spool's tmpfs).
    pub mounts: Vec<PathBuf>,
}

impl State {
    /// The state directory of `prefix`.
    pub fn dir_of(prefix: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(prefix)
    }

    /// This instance's state directory.
    pub fn dir(&self) -> PathBuf {
        Self::dir_of(&self.prefix)
    }

    /// Writes the state file atomically (temp name, then rename).
    pub fn save(&self) -> Result<(), Error> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let text = serde_json::to_vec_pretty(self).map_err(|source| Error::State {
            path: dir.join("state.json"),
            source,
        })?;
        write_atomic(&dir.join("state.json"), &text)
    }

    /// Reads the state of `prefix`.
    pub fn load(prefix: &str) -> Result<Self, Error> {
        let path = Self::dir_of(prefix).join("state.json");
        let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_slice(&text).map_err(|source| Error::State { path, source })
    }

    /// Whether the owner is gone (or was never recorded and nothing of ours runs).
    pub fn stale(&self) -> bool {
        match &self.owner {
            Some(owner) => !owner.alive(),
            None => !self.processes.iter().any(Proc::alive),
        }
    }

    /// Removes everything the instance made: processes inside its namespaces and recorded
    /// ones, mounts, namespaces, leftover TAPs, and the state directory. Keeps going after
    /// an error and reports them all.
    pub fn teardown(&self) -> Result<(), Error> {
        let mut errors = Vec::new();
        let existing = list_namespaces().unwrap_or_default();
        // Processes first: a process inside a namespace keeps it (and its TAPs) alive after
        // `ip netns del`, and the agent may hold the spool's tmpfs.
        for ns in self.namespaces.iter().filter(|ns| existing.contains(ns)) {
            kill_namespace_processes(ns);
        }
        for p in &self.processes {
            cmd::stop(p.pid, p.start, Duration::from_secs(2));
        }
        for m in &self.mounts {
            let path = m.to_string_lossy();
            if is_mounted(m)
                && let Err(e) = cmd::run("umount", &["-l", &path])
            {
                errors.push(e.to_string());
            }
        }
        for ns in self.namespaces.iter().filter(|ns| existing.contains(ns)) {
            if let Err(e) = cmd::ip(&["netns", "del", ns]) {
                errors.push(e.to_string());
            }
        }
        for tap in &self.taps {
            // A TAP still in the host namespace means the wire died between creating and
            // moving it; non-persistent TAPs otherwise vanish with the wire's descriptors.
            if cmd::ip(&["link", "show", "dev", tap]).is_ok()
                && let Err(e) = cmd::ip(&["link", "del", "dev", tap])
            {
                errors.push(e.to_string());
            }
        }
        let dir = self.dir();
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            errors.push(Error::io("remove", &dir, e).to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                prefix: self.prefix.clone(),
                errors,
            })
        }
    }
}

/// Writes `bytes` to `path` through a temp file and a rename, so readers never see half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
}

fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(&*want))
}

/// Every network namespace `ip netns` knows.
pub fn list_namespaces() -> Result<Vec<String>, Error> {
    let out = cmd::ip(&["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Stops every process inside namespace `ns` (SIGTERM, then SIGKILL).
pub(crate) fn kill_namespace_processes(ns: &str) {
    let Ok(out) = cmd::ip(&["netns", "pids", ns]) else {
        return;
    };
    let procs: Vec<(u32, u64)> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter_map(|pid| Some((pid, cmd::start_time(pid)?)))
        .collect();
    for &(pid, start) in &procs {
        if cmd::alive(pid, start) {
            crate::sys::kill(pid, libc::SIGTERM);
        }
    }
    for (pid, start) in procs {
        cmd::stop(pid, start, Duration::from_secs(2));
    }
}

/// Every instance with a state directory.
pub fn instances() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with(NS_PREFIX))
        .collect();
    names.sort();
    names
}

/// The state of `prefix`, or a reconstruction from its namespaces when the file is unreadable.
fn load_or_guess(prefix: &str, namespaces: &[String]) -> State {
    State::load(prefix).unwrap_or_else(|_| State {
        prefix: prefix.to_owned(),
        namespaces: namespaces
            .iter()
            .filter(|ns| ns.strip_prefix(prefix).is_some_and(|r| r.starts_with('-')))
            .cloned()
            .collect(),
        ..State::default()
    })
}

/// Tears down every instance whose owner is gone, and every `bhl-*` namespace without a state
/// directory. Returns the prefixes removed.
pub fn clean_stale() -> Result<Vec<String>, Error> {
    let namespaces = list_namespaces()?;
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let known = instances();
    for prefix in &known {
        let state = load_or_guess(prefix, &namespaces);
        if state.stale() {
            if let Err(e) = state.teardown() {
                errors.push(e.to_string());
            }
            removed.push(prefix.clone());
        }
    }
    for ns in namespaces.iter().filter(|ns| ns.starts_with(NS_PREFIX)) {
        let owned = known.iter().any(|p| {
            ns.strip_prefix(p.as_str())
                .is_some_and(|r| r.starts_with('-'))
        });
        if !owned {
            kill_namespace_processes(ns);
            if let Err(e) = cmd::ip(&["netns", "del", ns]) {
                errors.push(e.to_string());
            }
            removed.push(ns.clone());
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(Error::Teardown {
            prefix: "stale instances".into(),
            errors,
        })
    }
}
