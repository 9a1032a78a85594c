//! Kernel link state: what sysfs says a link is now, and setting recorded values back
//! explicitly.
//!
//! Rollback cannot rely on a renderer: removing `mtu:` from a file and re-applying leaves the
//! link at 9000 (networkd never resets an MTU it no longer manages), and `netplan try`'s own
//! revert was silently broken with networkd until 2025 (canonical/netplan#548). So the guard
//! records the kernel's values before the change and writes them back itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Kernel name.
    pub name: String,
    /// Whether the kernel has it.
    pub present: bool,
    /// `mtu`.
    pub mtu_bytes: Option<u32>,
    /// Administratively up (`IFF_UP` in `flags`).
    pub up: Option<bool>,
}

impl std::fmt::Display for LinkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.present {
            return write!(f, "{}: absent", self.name);
        }
        write!(f, "{}: mtu ", self.name)?;
        match self.mtu_bytes {
            Some(m) => write!(f, "{m}")?,
            None => f.write_str("?")?,
        }
        match self.up {
            Some(true) => f.write_str(", up"),
            Some(false) => f.write_str(", down"),
            None => Ok(()),
        }
    }
}

/// Reads links and sets recorded values back.
pub trait Links {
    /// The kernel state of `names`, in order; a missing link is `present: false`.
    fn read(&self, names: &[String]) -> Vec<LinkState>;

    /// The commands [`Links::restore`] runs for `state` (dry run and report).
    fn restore_commands(&self, state: &LinkState) -> Vec<Vec<String>>;

    /// Sets the recorded MTU and up/down state of one link explicitly.
    fn restore(&mut self, state: &LinkState) -> Result<(), Error>;
}

/// The host's links: sysfs to read, `ip link` to set.
#[derive(Debug, Clone)]
pub struct SysfsLinks {
    /// sysfs mount (`/sys`).
    pub sys_root: PathBuf,
    /// The `ip` binary.
    pub ip: PathBuf,
}

impl SysfsLinks {
    /// Reads one link under `sys_root`.
    pub fn read_one(sys_root: &Path, name: &str) -> LinkState {
        // Interface names come from config files; refuse anything that could walk out of sysfs.
        let safe = !name.is_empty() && !name.contains('/') && !name.starts_with('.');
        let dir = sys_root.join("class/net").join(name);
        if !safe || !dir.exists() {
            return LinkState {
                name: name.to_string(),
                present: false,
                mtu_bytes: None,
                up: None,
            };
        }
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .ok()
                .map(|s| s.trim().to_string())
        };
        LinkState {
            name: name.to_string(),
            present: true,
            mtu_bytes: read("mtu").and_then(|m| m.parse().ok()),
            up: read("flags")
                .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
                .map(|flags| flags & 1 == 1),
        }
    }
}

impl Links for SysfsLinks {
    fn read(&self, names: &[String]) -> Vec<LinkState> {
        names
            .iter()
            .map(|n| Self::read_one(&self.sys_root, n))
            .collect()
    }

    fn restore_commands(&self, state: &LinkState) -> Vec<Vec<String>> {
        if !state.present {
            return Vec::new();
        }
        let ip = self.ip.display().to_string();
        let mut out = Vec::new();
        if let Some(m) = state.mtu_bytes {
            out.push(argv(&[
                &ip,
                "link",
                "set",
                "dev",
                &state.name,
                "mtu",
                &m.to_string(),
            ]));
        }
        if let Some(up) = state.up {
            let word = if up { "up" } else { "down" };
            out.push(argv(&[&ip, "link", "set", "dev", &state.name, word]));
        }
        out
    }

    fn restore(&mut self, state: &LinkState) -> Result<(), Error> {
        for c in self.restore_commands(state) {
            run(&c)?;
        }
        Ok(())
    }
}

pub(crate) fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

/// Runs `argv`; a non-zero exit is an error carrying stderr.
pub(crate) fn run(argv: &[String]) -> Result<String, Error> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(String::new());
    };
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: argv.join(" "),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: argv.join(" "),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mtu_and_up_flag_from_sysfs() {
        let sys = tempfile::tempdir().unwrap();
        let eno1 = sys.path().join("class/net/eno1");
        std::fs::create_dir_all(&eno1).unwrap();
        std::fs::write(eno1.join("mtu"), "9000\n").unwrap();
        std::fs::write(eno1.join("flags"), "0x1003\n").unwrap();
        let links = SysfsLinks {
            sys_root: sys.path().to_path_buf(),
            ip: "ip".into(),
        };
        let got = links.read(&["eno1".into(), "eno9".into(), "../x".into()]);
        assert_eq!(got[0].mtu_bytes, Some(9000));
        assert_eq!(got[0].up, Some(true));
        assert_eq!(got[0].to_string(), "eno1: mtu 9000, up");
        assert!(!got[1].present && !got[2].present);
        assert_eq!(
            links.restore_commands(&LinkState {
                mtu_bytes: Some(1500),
                ..got[0].clone()
            }),
            vec![
                argv(&["ip", "link", "set", "dev", "eno1", "mtu", "1500"]),
                argv(&["ip", "link", "set", "dev", "eno1", "up"]),
            ]
        );
    }

    #[test]
    fn failing_command_reports_its_stderr() {
        let err = run(&argv(&["sh", "-c", "echo nope >&2; exit 3"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sh -c") && text.contains("nope"), "{text}");
    }
}
