use std::fmt;
use std::path::PathBuf;

/// Where in which file something was found: `path:line:column` (1-based).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// Line, 1-based; 0 when unknown.
    pub line: u64,
    /// Column, 1-based; 0 when unknown.
    pub column: u64,
}

impl Location {
    /// A location in `path`.
    pub fn new(path: impl Into<PathBuf>, line: u64, column: u64) -> Self {
        Self {
            path: path.into(),
            line,
            column,
        }
    }

    /// Line and column of byte `offset` in `text`.
    pub fn at_offset(path: impl Into<PathBuf>, text: &str, offset: usize) -> Self {
        let before = text.get(..offset.min(text.len())).unwrap_or(text);
        let line = before.matches('\n').count() as u64 + 1;
        let column = before
            .rsplit('\n')
            .next()
            .map_or(0, |l| l.chars().count() as u64)
            + 1;
        Self::new(path, line, column)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}", self.path.display()),
            (l, 0) => write!(f, "{}:{l}", self.path.display()),
            (l, c) => write!(f, "{}:{l}:{c}", self.path.display()),
        }
    }
}

/// Errors of the netplan change guard.
///
/// Every variant says what failed and where; the ones an operator can fix carry a `help:` line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A netplan file, ticket, inventory or interface list is not valid: bad YAML or TOML,
    /// an unknown key, a tab, a duplicate key, a dangling reference.
    #[error("{at}: {message}\n  help: {help}")]
    Invalid {
        /// File, line and column.
        at: Location,
        /// What is wrong.
        message: String,
        /// What to do about it.
        help: String,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}\n  help: {help}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What to do about it.
        help: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A definition's `match` selects more than one interface on this host.
    #[error(
        "{at}: `{id}` matches {} interfaces ({}); the guard must know which link a change touches\n  help: narrow the match (e.g. `macaddress:`) or write one definition per interface",
        interfaces.len(),
        interfaces.join(", ")
    )]
    AmbiguousMatch {
        /// Where the definition starts.
        at: Location,
        /// Definition id.
        id: String,
        /// The interfaces it matches.
        interfaces: Vec<String>,
    },
    /// The `--intent` text is not a list of `interface.key[=value]`.
    #[error(
        "invalid intent `{item}`: {message}\n  help: write e.g. --intent \"eno2.mtu=9000\" (comma-separated)"
    )]
    Intent {
        /// The offending item.
        item: String,
        /// What is wrong.
        message: String,
    },
    /// The `netplan` binary could not be run (it exists but did not start).
    #[error(
        "cannot run {binary} generate\n  help: check the netplan.io installation, or pass --no-netplan"
    )]
    NetplanSpawn {
        /// Binary.
        binary: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A scratch directory for `netplan generate` could not be prepared.
    #[error(
        "cannot prepare a scratch root for netplan generate at {path}\n  help: check that the temporary directory is writable (TMPDIR)"
    )]
    Scratch {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The report could not be written.
    #[error("cannot write the report")]
    Output(#[source] std::io::Error),
    /// A file operation of a guarded apply failed.
    #[error("cannot {op} {path}\n  help: {help}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What to do about it.
        help: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A state file (plan, lock, report) is not what this version writes.
    #[error(
        "cannot read {path}: not a state file of this backhaul version\n  help: look at it; a run directory is safe to archive once its apply finished"
    )]
    State {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// Another guarded apply is still running.
    #[error(
        "guarded apply {id} is pending (pid {pid}{}); only one change at a time\n  help: wait for it to finish (follow {}/progress.log); the lock is {}",
        ticket.as_ref().map(|t| format!(", ticket {t}")).unwrap_or_default(),
        run_dir.display(),
        path.display()
    )]
    Pending {
        /// The lock file.
        path: PathBuf,
        /// Its run id.
        id: String,
        /// Its process.
        pid: u32,
        /// Its ticket.
        ticket: Option<String>,
        /// Its run directory.
        run_dir: PathBuf,
    },
    /// A guarded apply ended without finishing (its process is gone, the lock remains).
    #[error(
        "guarded apply {id} (pid {pid}) stopped without finishing; the links may still carry its change\n  help: compare `ip link` with {}/report.txt or plan.json (backup in {}/backup), fix the links if needed, then rerun with --clear-stale (lock: {})",
        run_dir.display(),
        run_dir.display(),
        path.display()
    )]
    StalePending {
        /// The lock file.
        path: PathBuf,
        /// Its run id.
        id: String,
        /// Its process.
        pid: u32,
        /// Its run directory.
        run_dir: PathBuf,
    },
    /// The command line asks for something the guard cannot do safely.
    #[error("{message}\n  help: {help}")]
    Usage {
        /// What is wrong.
        message: String,
        /// What to do.
        help: String,
    },
    /// A command (`ip`, `netplan apply`) could not be started.
    #[error("cannot run `{command}`\n  help: check that it is installed and on PATH")]
    Spawn {
        /// The command line.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A command exited non-zero.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
}

impl Error {
    /// True when the error is in the operator's input (a config, ticket or inventory), which
    /// the binary maps to the "bad config" exit code rather than a runtime failure.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. }
                | Error::AmbiguousMatch { .. }
                | Error::Intent { .. }
                | Error::Usage { .. }
        )
    }

    /// True when another guarded apply holds the lock (live or stale): nothing was changed,
    /// try again later.
    pub fn is_pending(&self) -> bool {
        matches!(self, Error::Pending { .. } | Error::StalePending { .. })
    }

    pub(crate) fn invalid(
        at: Location,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            at,
            message: message.into(),
            help: help.into(),
        }
    }
}
