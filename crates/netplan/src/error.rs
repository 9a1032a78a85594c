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
}

impl Error {
    /// True when the error is in the operator's input (a config, ticket or inventory), which
    /// the binary maps to the "bad config" exit code rather than a runtime failure.
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            Error::Invalid { .. } | Error::AmbiguousMatch { .. } | Error::Intent { .. }
        )
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
