//! Reading netplan files: the search path with its shadowing rules, and a proposed change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The netplan search path, lowest priority first. A file in a later directory shadows a file
/// of the same name in an earlier one.
pub const SEARCH_DIRS: [&str; 3] = ["lib/netplan", "etc/netplan", "run/netplan"];

/// The directory a proposed config replaces.
pub const ETC_DIR: &str = "etc/netplan";

/// One netplan file's text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The file's path (as read; used in messages).
    pub path: PathBuf,
    /// Which search directory it belongs to, relative to the root (`etc/netplan`).
    pub dir: &'static str,
    /// Its contents.
    pub text: String,
}

impl SourceFile {
    /// The file name, which decides the merge order.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// A set of netplan files in merge order: what netplan would read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFiles {
    /// Files sorted by name, shadowed files already dropped.
    pub files: Vec<SourceFile>,
}

fn read_file(path: &Path, dir: &'static str) -> Result<SourceFile, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        help: "netplan files must be readable UTF-8; check the path and its permissions",
        source,
    })?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        dir,
        text,
    })
}

/// The `*.yaml` files of one directory, by name. A missing directory is empty, as for netplan.
fn yaml_in(dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                help: "check that the directory is readable (run as root for /etc/netplan)",
                source,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            help: "check that the directory is readable",
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            out.insert(entry.file_name().to_string_lossy().into_owned(), path);
        }
    }
    Ok(out)
}

impl ConfigFiles {
    /// Reads the search path under `root` (`/` on a host): `lib/netplan`, `etc/netplan`,
    /// `run/netplan`. Same-named files shadow earlier directories; the survivors are merged in
    /// name order.
    pub fn load_search_path(root: &Path) -> Result<Self, Error> {
        Self::load_layers(root, None)
    }

    /// The configuration after a change: `proposed` is either a directory that replaces
    /// `etc/netplan`, or one file that replaces (or adds) the same-named file in `etc/netplan`.
    /// `lib/netplan` and `run/netplan` under `root` still apply.
    pub fn load_proposed(root: &Path, proposed: &Path) -> Result<Self, Error> {
        Self::load_layers(root, Some(proposed))
    }

    fn load_layers(root: &Path, proposed: Option<&Path>) -> Result<Self, Error> {
        let mut by_name: BTreeMap<String, (PathBuf, &'static str)> = BTreeMap::new();
        for dir in SEARCH_DIRS {
            let mut files = yaml_in(&root.join(dir))?;
            if dir == ETC_DIR
                && let Some(p) = proposed
            {
                let meta = std::fs::metadata(p).map_err(|source| Error::Read {
                    path: p.to_path_buf(),
                    help: "pass the proposed netplan file or directory",
                    source,
                })?;
                if meta.is_dir() {
                    files = yaml_in(p)?;
                } else {
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    files.insert(name, p.to_path_buf());
                }
            }
            for (name, path) in files {
                by_name.insert(name, (path, dir));
            }
        }
        let files = by_name
            .into_values()
            .map(|(path, dir)| read_file(&path, dir))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { files })
    }

    /// Files from a plain directory treated as `etc/netplan` (fixtures, CI checks of a repo).
    pub fn load_dir(dir: &Path) -> Result<Self, Error> {
        let files = yaml_in(dir)?
            .into_values()
            .map(|path| read_file(&path, ETC_DIR))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { files })
    }
}
