use std::path::PathBuf;

/// Why a lab operation failed. Each variant names the operation and what it acted on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The lab needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) for namespaces and TAP devices.
    #[error(
        "the lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) to create network namespaces and TAP \
         devices\nhelp: run it with sudo, or as root in CI"
    )]
    NotRoot,
    /// A helper command (`ip`, `nft`, `tc`, …) could not be started.
    #[error("running `{command}` failed")]
    Spawn {
        /// The command line.
        command: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A helper command ran and failed.
    #[error("`{command}` exited with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A file or directory of the lab could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// Operation (`read`, `write`, `create directory`, …).
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A TAP device could not be created.
    #[error("creating TAP device {name}")]
    Tap {
        /// Interface name.
        name: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A state, counter or control file is not valid JSON of the expected shape.
    #[error("{path}: invalid lab state")]
    State {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A scenario file is invalid; the message carries file:line:col and a `help:` line.
    #[error("{0}")]
    Scenario(String),
    /// The named lab or node does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The wire process did not come up.
    #[error("the wire forwarder did not start: {0}")]
    Wire(String),
    /// A peer (S3 server, uploader, webhook receiver) did not start or answer in time.
    #[error("peer {peer}: {message}")]
    Peer {
        /// Which peer.
        peer: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The run was interrupted (Ctrl-C or SIGTERM); the lab was torn down.
    #[error("interrupted; the lab was torn down")]
    Interrupted,
    /// The report picture could not be drawn.
    #[error("drawing {path}: {message}")]
    Plot {
        /// The SVG file.
        path: PathBuf,
        /// Cause, from plotters.
        message: String,
    },
    /// Teardown hit several errors; all were attempted.
    #[error("teardown of {prefix} left errors: {}", .errors.join("; "))]
    Teardown {
        /// The lab prefix.
        prefix: String,
        /// Every error, in order.
        errors: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
