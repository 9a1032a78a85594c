use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use crate::{Error, FileIdentity, Pattern};

/// One regular file found in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEntry {
    /// Path relative to the spool directory, `/`-separated.
    pub name: String,
    /// Camera: the first directory of `name`, or `None` at the top level.
    pub camera: Option<String>,
    /// File name (last component).
    pub file_name: String,
    /// Size, mtime and inode.
    pub identity: FileIdentity,
}

impl ScanEntry {
    /// The path below the camera directory (`a/x.mp4` for `cam5/a/x.mp4`); the whole name for
    /// a file at the top of the spool. The key template's `{path}`.
    pub fn below_camera(&self) -> &str {
        match &self.camera {
            Some(c) => self
                .name
                .strip_prefix(c.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or(&self.name),
            None => &self.name,
        }
    }
}

/// What a scan skipped and why, for logging once per name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A symlink: never followed, so nothing outside the spool is ever read or deleted.
    Symlink(String),
    /// A name that is not valid UTF-8 cannot become an S3 key.
    NotUtf8(String),
    /// Not a regular file or directory (fifo, socket, device).
    Special(String),
}

/// The identity of a file, without following symlinks.
///
/// Times are clamped to what the journal stores (64-bit nanoseconds: 1677 to 2262): a file
/// dated beyond that (ext4 stores such mtimes) must compare equal to its own row, or it would
/// look changed on every look.
pub fn identity_of(meta: &std::fs::Metadata) -> FileIdentity {
    let time = |secs: i64, nsec: i64| {
        i128::from(crate::journal::ns(
            i128::from(secs) * 1_000_000_000 + i128::from(nsec),
        ))
    };
    FileIdentity {
        size: meta.len(),
        mtime_ns: time(meta.mtime(), meta.mtime_nsec()),
        inode: meta.ino(),
        ctime_ns: time(meta.ctime(), meta.ctime_nsec()),
    }
}

/// Whether a relative name is ignored: any component matching a pattern, or the journal's
/// own `.backhaul` directory.
pub fn ignored(name: &str, ignore: &[Pattern]) -> bool {
    name.split('/')
        .any(|c| c == ".backhaul" || ignore.iter().any(|p| p.matches(c)))
}

/// Splits a relative name into (camera, file name) and rejects anything that is not plain.
pub fn split_name(rel: &Path) -> Option<(Option<String>, String, String)> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_str()?.to_owned()),
            _ => return None,
        }
    }
    let file = parts.last()?.clone();
    let camera = if parts.len() > 1 {
        Some(parts[0].clone())
    } else {
        None
    };
    Some((camera, file, parts.join("/")))
}

/// Lists regular files below `dir`, skipping ignored names and never following symlinks.
pub fn scan(
    dir: &Path,
    ignore: &[Pattern],
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<ScanEntry>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if d == dir => {
                return Err(Error::SpoolDir {
                    path: dir.to_owned(),
                    source: e,
                });
            }
            // A subdirectory removed mid-scan is not an error.
            Err(_) => continue,
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let Some((camera, file_name, name)) = split_name(rel) else {
                skipped.push(Skipped::NotUtf8(rel.to_string_lossy().into_owned()));
                continue;
            };
            if ignored(&name, ignore) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                skipped.push(Skipped::Symlink(name));
            } else if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file() {
                out.push(ScanEntry {
                    name,
                    camera,
                    file_name,
                    identity: identity_of(&meta),
                });
            } else {
                skipped.push(Skipped::Special(name));
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cameras_and_skips_ignored_symlinks_and_journal() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("cam 1")).unwrap();
        std::fs::create_dir_all(root.join(".backhaul")).unwrap();
        std::fs::write(root.join("cam 1/Tür.mp4"), b"x").unwrap();
        std::fs::write(root.join("top.mp4"), b"yy").unwrap();
        std::fs::write(root.join("top.mp4.part"), b"y").unwrap();
        std::fs::write(root.join(".hidden"), b"y").unwrap();
        std::fs::write(root.join(".backhaul/journal.sqlite"), b"y").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("link.mp4")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("linkdir")).unwrap();

        let ignore: Vec<Pattern> = crate::DEFAULT_IGNORE
            .iter()
            .map(|p| Pattern::new(*p))
            .collect();
        let mut skipped = Vec::new();
        let found = scan(root, &ignore, &mut skipped).unwrap();
        let names: Vec<_> = found.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["cam 1/Tür.mp4", "top.mp4"]);
        assert_eq!(found[0].camera.as_deref(), Some("cam 1"));
        assert_eq!(found[1].camera, None);
        assert_eq!(found[1].identity.size, 2);
        skipped.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            skipped,
            [
                Skipped::Symlink("link.mp4".into()),
                Skipped::Symlink("linkdir".into())
            ]
        );
    }

    #[test]
    fn missing_dir_is_a_clear_error() {
        let err = scan(Path::new("/nonexistent/spool"), &[], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/spool"), "{err}");
    }
}
