//! Running the system tools the lab drives (`ip`, `nft`, `tc`, `mount`) and identifying
//! processes so that a recorded pid is never confused with a recycled one.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::Error;

/// Formats a command line for error messages.
fn line(program: &str, args: &[&str]) -> String {
    let mut s = program.to_owned();
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args…`, returns stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, Error> {
    let output = output(program, args)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line(program, args),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `program args…` and returns its whole output, whatever the exit status.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output, Error> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: line(program, args),
            source,
        })
}

/// `ip args…`.
pub(crate) fn ip(args: &[&str]) -> Result<String, Error> {
    run("ip", args)
}

/// `ip -n NS link set dev INTERFACE mtu N`.
pub(crate) fn set_mtu(ns: &str, interface: &str, mtu_bytes: u32) -> Result<(), Error> {
    let m = mtu_bytes.to_string();
    ip(&["-n", ns, "link", "set", "dev", interface, "mtu", &m]).map(drop)
}

/// `ip netns exec NS program args…`.
pub(crate) fn in_ns(ns: &str, program: &str, args: &[&str]) -> Result<String, Error> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// A [`Command`] that runs `program` inside namespace `ns`.
pub(crate) fn command_in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// The kernel's start time of `pid` (clock ticks since boot, field 22 of `/proc/PID/stat`), or
/// `None` when the process does not exist. Together with the pid it names one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; the start time is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that had `start` as its start time (and is not a zombie
/// waiting to be reaped by a parent that is gone).
pub fn alive(pid: u32, start: u64) -> bool {
    if start_time(pid) != Some(start) {
        return false;
    }
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
    let zombie = state
        .as_deref()
        .and_then(|s| s.rfind(')').map(|i| s[i + 2..].starts_with('Z')))
        .unwrap_or(true);
    !zombie
}

/// SIGTERM, then SIGKILL after `grace`, to the process (`pid`, `start`); returns once it is gone
/// or the second grace period ran out.
pub(crate) fn stop(pid: u32, start: u64, grace: Duration) {
    if !alive(pid, start) {
        return;
    }
    crate::sys::kill(pid, libc::SIGTERM);
    if wait_gone(pid, start, grace) {
        return;
    }
    crate::sys::kill(pid, libc::SIGKILL);
    wait_gone(pid, start, grace);
}

fn wait_gone(pid: u32, start: u64, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if !alive(pid, start) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid, start)
}
