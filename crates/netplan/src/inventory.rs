//! The site inventory: which link is which, and the MTUs the site declares.
//!
//! Kept small and self-contained on purpose: the diagnosis side has its own, richer inventory;
//! this one holds only what the change guard's policy needs.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The uplink: VPN and uploads leave through it.
    Wan,
    /// The camera network.
    Camera,
    /// Management access.
    Mgmt,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Wan => "wan",
            Role::Camera => "camera",
            Role::Mgmt => "mgmt",
        })
    }
}

impl Role {
    /// How a sentence names it ("eno1 is the WAN link").
    pub fn describe(self) -> &'static str {
        match self {
            Role::Wan => "the WAN link",
            Role::Camera => "the camera link",
            Role::Mgmt => "the management link",
        }
    }
}

/// One link of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryInterface {
    /// Interface name (kernel name, definition id or `set-name`).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The MTU the site declares for it.
    #[serde(default)]
    pub mtu_bytes: Option<u32>,
}

/// The site's links and the path MTU its upstream carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInventory {
    /// Links with roles.
    #[serde(default)]
    pub interfaces: Vec<InventoryInterface>,
    /// Largest packet the upstream path carries; the WAN MTU must equal it.
    #[serde(default)]
    pub upstream_path_mtu_bytes: Option<u32>,
}

impl SiteInventory {
    /// Reads an inventory file, TOML (`.toml`) or YAML (anything else).
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            help: "pass the site inventory with --inventory",
            source,
        })?;
        from_file_text(
            path,
            &text,
            "an inventory holds `upstream_path_mtu_bytes` and [[interfaces]] with name, role (wan, camera, mgmt) and mtu_bytes",
        )
    }

    /// The inventory entry for any of `names`.
    pub fn entry(&self, names: &[&str]) -> Option<&InventoryInterface> {
        self.interfaces
            .iter()
            .find(|i| names.contains(&i.name.as_str()))
    }
}

/// Deserializes a small TOML (by extension) or YAML file with file:line:col errors.
pub(crate) fn from_file_text<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    help: &str,
) -> Result<T, Error> {
    if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map_or_else(
                || Location::new(path, 0, 0),
                |s| Location::at_offset(path, text, s.start),
            );
            Error::invalid(at, e.message().to_string(), help)
        })
    } else {
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(text, options).map_err(|e| {
            let at = e.location().map_or_else(
                || Location::new(path, 0, 0),
                |l| Location::new(path, l.line(), l.column()),
            );
            Error::invalid(at, e.without_snippet().to_string(), help)
        })
    }
}
