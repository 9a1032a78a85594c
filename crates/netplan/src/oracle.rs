//! The real `netplan generate` as a second opinion, so what backhaul accepts netplan accepts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::Error;
use crate::source::ConfigFiles;

/// Where netplan.io installs its binary.
pub const DEFAULT_NETPLAN_BINARY: &str = "/usr/sbin/netplan";

/// What the real netplan said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum NetplanOutcome {
    /// Not run; why.
    NotRun {
        /// Reason.
        reason: String,
    },
    /// `netplan generate` succeeded.
    Accepted,
    /// `netplan generate` failed; its message with paths mapped back to the inputs.
    Rejected {
        /// Netplan's stderr.
        message: String,
    },
}

/// Runs `binary generate --root-dir TMP` on `files`, each copied to `TMP/<its dir>/<name>`
/// with mode 0600 (netplan warns about readable files otherwise).
pub fn netplan_generate(binary: &Path, files: &ConfigFiles) -> Result<NetplanOutcome, Error> {
    let scratch = tempfile::Builder::new()
        .prefix("backhaul-netplan-")
        .tempdir()
        .map_err(|source| Error::Scratch {
            path: std::env::temp_dir(),
            source,
        })?;
    let root = scratch.path();
    let mut mapping: Vec<(PathBuf, PathBuf)> = Vec::new();
    for f in &files.files {
        let dir = root.join(f.dir);
        let scratch_err = |source| Error::Scratch {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(scratch_err)?;
        let dest = dir.join(f.name());
        std::fs::write(&dest, &f.text).map_err(scratch_err)?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
            .map_err(scratch_err)?;
        mapping.push((dest, f.path.clone()));
    }
    let output = Command::new(binary)
        .arg("generate")
        .arg("--root-dir")
        .arg(root)
        .output()
        .map_err(|source| Error::NetplanSpawn {
            binary: binary.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(NetplanOutcome::Accepted);
    }
    let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    for (scratch_path, original) in &mapping {
        message = message.replace(
            &scratch_path.display().to_string(),
            &original.display().to_string(),
        );
    }
    if message.is_empty() {
        message = format!("netplan generate exited with {}", output.status);
    }
    Ok(NetplanOutcome::Rejected { message })
}
