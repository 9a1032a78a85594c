//! The guard's view of the site inventory: which link is which, the MTUs the site declares,
//! and the path MTU upstream.
//!
//! The file schema is not ours: it is the agent's `[inventory]`
//! ([`backhaul_diagnose::InventoryConfig`]), so the guard and the agent cannot disagree about
//! which interface is the WAN. [`SiteInventory::load`] reads it from the agent's `site.toml`
//! (its `[inventory]` table) or from a file holding only that table.

use std::net::IpAddr;
use std::path::Path;

use backhaul_diagnose::InventoryConfig;
pub use backhaul_diagnose::Role;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};

/// The agent's config file, where the guard finds the inventory by default.
pub const DEFAULT_SITE_CONFIG: &str = "/etc/backhaul/site.toml";

/// How a sentence names a role ("eno1 is the WAN link").
pub fn describe_role(role: Role) -> &'static str {
    match role {
        Role::Wan => "the WAN link",
        Role::Camera => "the camera link",
        Role::Mgmt => "the management link",
        Role::Other => "a link with no special role",
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

/// The site's links, the path MTU its upstream carries, and the probe targets it names. This
/// is what a plan carries to the detached verifier (`plan.json`), not a file format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInventory {
    /// Links with roles.
    #[serde(default)]
    pub interfaces: Vec<InventoryInterface>,
    /// Largest packet the upstream path carries; the WAN MTU must equal it.
    #[serde(default)]
    pub upstream_path_mtu_bytes: Option<u32>,
    /// The WAN gateway (the default of `apply --gateway`).
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// The upload endpoint's host, maybe with `:port` (the default of `apply --endpoint`).
    #[serde(default)]
    pub endpoint_host: Option<String>,
}

/// A `site.toml`: only its `[inventory]` table matters here.
#[derive(Deserialize)]
struct SiteFile {
    inventory: Option<InventoryConfig>,
}

const HELP: &str = "give the agent's site.toml (its [inventory] table) or a file with that table's \
     keys: gateway, endpoint_host, path_mtu_bytes and [[interfaces]] with name, role (wan, \
     camera, mgmt, other) and mtu_bytes";

impl SiteInventory {
    /// Reads the inventory from the agent's `site.toml` (its `[inventory]` table) or from a
    /// file holding only that table, TOML (`.toml`) or YAML (anything else), and validates it
    /// as the agent does.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = read(path)?;
        match from_file_text::<SiteFile>(path, &text, HELP)?.inventory {
            Some(config) => Self::validated(path, config),
            None => Self::validated(path, from_file_text(path, &text, HELP)?),
        }
    }

    /// The `[inventory]` of the agent's `site.toml`, if it has one.
    pub fn from_site_config(path: &Path) -> Result<Option<Self>, Error> {
        let text = read(path)?;
        from_file_text::<SiteFile>(path, &text, HELP)?
            .inventory
            .map(|config| Self::validated(path, config))
            .transpose()
    }

    fn validated(path: &Path, config: InventoryConfig) -> Result<Self, Error> {
        let inventory = config.validate().map_err(|e| {
            Error::invalid(Location::new(path, 0, 0), format!("inventory: {e}"), HELP)
        })?;
        Ok(Self {
            interfaces: inventory
                .interfaces()
                .iter()
                .map(|i| InventoryInterface {
                    name: i.name.clone(),
                    role: i.role,
                    mtu_bytes: Some(i.mtu_bytes),
                })
                .collect(),
            upstream_path_mtu_bytes: Some(inventory.path_mtu_bytes()),
            gateway: inventory.gateway(),
            endpoint_host: Some(inventory.endpoint_host().to_owned()),
        })
    }

    /// The inventory entry for any of `names`.
    pub fn entry(&self, names: &[&str]) -> Option<&InventoryInterface> {
        self.interfaces
            .iter()
            .find(|i| names.contains(&i.name.as_str()))
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        help: "pass the site inventory with --inventory (the agent's site.toml will do)",
        source,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "gateway = \"192.0.2.1\"\nendpoint_host = \"s3.example:9000\"\n\
                         path_mtu_bytes = 1500\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\n\
                         mtu_bytes = 1500\n[[interfaces]]\nname = \"eno2\"\nrole = \"other\"\n\
                         mtu_bytes = 9000\n";

    fn file(name: &str, text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// The agent's site.toml and a file with only its `[inventory]` keys read the same.
    #[test]
    fn the_agents_site_config_and_a_bare_table_are_one_schema() {
        let site = format!(
            "[site]\nname = \"S1\"\n[spool]\ndir = \"/s\"\n[inventory]\n{}",
            TABLE.replace("[[interfaces]]", "[[inventory.interfaces]]")
        );
        let (_d1, site) = file("site.toml", &site);
        let (_d2, bare) = file("inventory.toml", TABLE);
        let a = SiteInventory::load(&site).unwrap();
        assert_eq!(a, SiteInventory::load(&bare).unwrap());
        assert_eq!(a.upstream_path_mtu_bytes, Some(1500));
        assert_eq!(a.gateway, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(a.entry(&["eno2"]).map(|e| e.role), Some(Role::Other));
        assert_eq!(SiteInventory::from_site_config(&site).unwrap(), Some(a));
    }

    #[test]
    fn a_site_config_without_an_inventory_has_none() {
        let (_d, site) = file("site.toml", "[site]\nname = \"S1\"\n");
        assert_eq!(SiteInventory::from_site_config(&site).unwrap(), None);
    }

    /// Errors say where: file:line:col for a wrong type, the key for a wrong value.
    #[test]
    fn errors_name_the_file_and_the_key() {
        let (_d, typed) = file(
            "inventory.toml",
            &TABLE.replacen("1500\n[[", "\"big\"\n[[", 1),
        );
        let err = SiteInventory::load(&typed).unwrap_err().to_string();
        assert!(err.contains("inventory.toml:3:"), "{err}");
        let (_d, bad) = file(
            "inventory.toml",
            &TABLE.replace("mtu_bytes = 9000", "mtu_bytes = 7"),
        );
        let err = SiteInventory::load(&bad).unwrap_err().to_string();
        assert!(err.contains("interfaces[1].mtu_bytes"), "{err}");
    }
}
