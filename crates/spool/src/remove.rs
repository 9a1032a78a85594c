//! The only place that deletes chunk files. `clippy.toml` bans `std::fs::remove_file`
//! everywhere else, so "nothing is deleted before it is verified" is checked by the compiler.

use std::path::Path;

use crate::scan::identity_of;
use crate::{Chunk, ChunkState, Error};

/// What happened to a chunk file after verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted.
    Deleted,
    /// Moved to the retain directory.
    Retained,
    /// Already gone (deleted by someone else or by a previous run).
    AlreadyGone,
    /// The file on disk is no longer the version that was uploaded; it was left in place and
    /// will be picked up as a new chunk.
    Changed,
    /// A process still holds the file open for writing: it was left in place; once the writer
    /// is done it is removed, or, if it grew, uploaded again as a new version.
    InUse,
}

/// Deletes or retains the file of a verified chunk.
pub(crate) fn remove_verified(
    path: &Path,
    chunk: &Chunk,
    retain_to: Option<&Path>,
    being_written: impl FnOnce(&Path) -> bool,
) -> Result<Removal, Error> {
    if chunk.state != ChunkState::Verified {
        return Err(Error::NotVerified {
            name: chunk.name.clone(),
            state: chunk.state.as_str().into(),
        });
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::AlreadyGone),
        Err(e) => {
            return Err(Error::ChunkIo {
                path: path.to_owned(),
                action: "stat",
                source: e,
            });
        }
        Ok(meta) if identity_of(&meta) != chunk.identity => return Ok(Removal::Changed),
        Ok(_) => {}
    }
    if being_written(path) {
        return Ok(Removal::InUse);
    }
    match retain_to {
        Some(dir) => {
            let dest = dir.join(&chunk.name);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(|e| Error::ChunkIo {
                    path: parent.to_owned(),
                    action: "create retain directory",
                    source: e,
                })?;
            }
            std::fs::rename(path, &dest).map_err(|e| Error::ChunkIo {
                path: path.to_owned(),
                action: "move to retain directory (it must be on the same filesystem)",
                source: e,
            })?;
            Ok(Removal::Retained)
        }
        None => {
            delete(path)?;
            Ok(Removal::Deleted)
        }
    }
}

/// Deletes an un-uploaded chunk under the explicit `drop-oldest` disk policy.
pub(crate) fn drop_unuploaded(path: &Path) -> Result<(), Error> {
    match delete(path) {
        Err(Error::ChunkIo { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        other => other,
    }
}

#[allow(clippy::disallowed_methods)] // the one sanctioned delete; callers above check the state
fn delete(path: &Path) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|e| Error::ChunkIo {
        path: path.to_owned(),
        action: "delete",
        source: e,
    })
}
