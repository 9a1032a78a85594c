//! Helpers for the root suite: the lab executable, labs with unique names, processes that are
//! killed when the test ends, and bounded waiting.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_lab::{Invocation, Lab, LabOptions, Node};

/// The package's own executable (runs the wire and the TCP probes).
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_backhaul-lab"))
}

/// The agent binary, built beside this package's binary by `cargo test --workspace`.
pub fn backhaul() -> PathBuf {
    let lab_exe = exe();
    let agent = lab_exe.with_file_name("backhaul");
    assert!(
        agent.exists(),
        "{} missing: run `cargo test --workspace` (it builds the agent)",
        agent.display()
    );
    agent
}

pub fn invocation() -> Invocation {
    Invocation {
        program: exe(),
        prefix_args: Vec::new(),
    }
}

/// `Some(reason)` when the suite cannot run here.
pub fn skip_reason() -> Option<String> {
    if backhaul_lab::require_root().is_err() {
        return Some("not root".into());
    }
    let probe = format!("bhl-probe-{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .status()
        .is_ok_and(|s| s.success());
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    if ok {
        None
    } else {
        Some("cannot create a network namespace".into())
    }
}

/// A lab with a unique prefix, torn down on drop.
pub fn lab(lan_wire_mtu_bytes: u32, icmp: backhaul_lab::IcmpPolicy) -> Lab {
    let mut o = LabOptions::new(invocation());
    o.lan_wire_mtu_bytes = lan_wire_mtu_bytes;
    o.icmp = icmp;
    Lab::up(&o).expect("lab up")
}

/// A child process killed (and reaped) on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a probe subcommand of the lab executable inside `node`.
pub fn spawn_in(lab: &Lab, node: Node, args: &[&str]) -> Guard {
    let child = lab
        .command(node, exe().to_str().unwrap())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn probe");
    Guard(child)
}

/// A receiver in the cloud and a 1 MiB sender in the site; returns the progress file.
pub struct Transfer {
    pub progress: PathBuf,
    _recv: Guard,
    _send: Guard,
}

pub fn start_transfer(lab: &Lab, bytes: u64, patience: Duration) -> Transfer {
    let progress = lab.dir().join(format!("progress-{}", fastrand_suffix()));
    let secs = patience.as_secs_f64().to_string();
    let recv = spawn_in(
        lab,
        Node::Cloud,
        &[
            "tcp-recv",
            "--listen",
            "203.0.113.10:5001",
            "--progress",
            progress.to_str().unwrap(),
            "--timeout",
            &secs,
        ],
    );
    assert_eventually("receiver listening", Duration::from_secs(5), || {
        progress.exists()
    });
    let send = spawn_in(
        lab,
        Node::Site,
        &[
            "tcp-send",
            "--to",
            "203.0.113.10:5001",
            "--bytes",
            &bytes.to_string(),
            "--timeout",
            &secs,
        ],
    );
    Transfer {
        progress,
        _recv: recv,
        _send: send,
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn progress(path: &Path) -> (u64, bool) {
    backhaul_lab::probe::read_progress(path)
}

/// Polls `check` every 50 ms until it holds; panics after `patience`.
pub fn assert_eventually(what: &str, patience: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(check(), "{what}: not true after {patience:?}");
}

/// `ping` from the site to the cloud; true when a reply came back.
pub fn ping(lab: &Lab, extra: &[&str]) -> bool {
    let mut args = vec!["-c", "2", "-W", "1", "-i", "0.2"];
    args.extend_from_slice(extra);
    args.push("203.0.113.10");
    lab.command(Node::Site, "ping")
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ping (iputils-ping) is installed")
        .success()
}

/// Everything on the host that belongs to the lab with `prefix`: namespaces and state.
pub fn leftovers(prefix: &str) -> Vec<String> {
    let mut found: Vec<String> = backhaul_lab::state::list_namespaces()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.starts_with(&format!("{prefix}-")))
        .collect();
    if backhaul_lab::state::State::dir_of(prefix).exists() {
        found.push(format!("state dir of {prefix}"));
    }
    found
}

/// Runs `f` on a fresh thread that has joined the lab's site namespace, so sockets it opens
/// live there; the test's own threads never leave the host namespace.
#[allow(unsafe_code)] // setns(2) on a dedicated thread
pub fn in_site<T: Send + 'static>(lab: &Lab, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{}-site", lab.prefix())).unwrap();
    std::thread::spawn(move || {
        // SAFETY: `ns` is an open namespace file; CLONE_NEWNET only changes this thread's
        // network namespace, and the thread ends with the closure.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}
