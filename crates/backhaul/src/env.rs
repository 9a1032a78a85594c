//! Process state — environment variables, home directory, local time offset — read once here
//! and passed down, so library code and tests never consult the process environment.

use std::path::PathBuf;

use backhaul_upload::{AwsEnv, ProxyEnv};

/// What the process inherited.
#[derive(Debug, Clone)]
pub struct ProcessEnv {
    /// AWS variables (credentials chain, CA bundle).
    pub aws: AwsEnv,
    /// Proxy variables (`https_proxy`, `http_proxy`, `no_proxy`).
    pub proxy: ProxyEnv,
    /// This executable, to start helper processes (the netplan apply's detached verifier).
    pub exe: PathBuf,
    /// Where standard error goes, which shapes the log.
    pub stderr: Stderr,
}

/// Where standard error goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stderr {
    /// A terminal: colour is welcome (unless `NO_COLOR` is set).
    pub colour: bool,
    /// systemd's journal (`JOURNAL_STREAM` names this very stream): it stamps the time itself
    /// and reads a line's priority from a `<N>` prefix.
    pub journal: bool,
}

impl Stderr {
    fn read() -> Self {
        use std::io::IsTerminal as _;
        use std::os::unix::fs::MetadataExt as _;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        // `/proc/self/fd/2` stats what the descriptor points at, a socket or a pipe included.
        let ours = std::fs::metadata("/proc/self/fd/2")
            .ok()
            .map(|m| format!("{}:{}", m.dev(), m.ino()));
        let journal = std::env::var("JOURNAL_STREAM")
            .ok()
            .is_some_and(|j| ours.as_deref() == Some(j.as_str()));
        Self {
            colour: std::io::stderr().is_terminal() && !no_color,
            journal,
        }
    }
}

impl ProcessEnv {
    /// Reads the environment. Call before starting threads.
    pub fn read() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self {
            aws: AwsEnv::from_lookup(|k| std::env::var(k).ok(), home),
            proxy: ProxyEnv::from_lookup(|k| std::env::var(k).ok()),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("backhaul")),
            stderr: Stderr::read(),
        }
    }
}
