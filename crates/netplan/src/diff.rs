//! The effective per-interface difference between two resolved configurations.

use serde::Serialize;

use crate::inventory::{Role, SiteInventory};
use crate::resolve::{Interface, Resolved};

/// The diff key for adding or removing a whole definition.
pub const DEFINITION_KEY: &str = "definition";

/// One changed setting of one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Interface (kernel name).
    pub interface: String,
    /// Its role in the inventory, if it has one.
    pub role: Option<Role>,
    /// Netplan key (`mtu`, `addresses`, …) or `definition` for an added or removed interface.
    pub key: String,
    /// Value before; `None` when unset.
    pub before: Option<String>,
    /// Value after; `None` when unset.
    pub after: Option<String>,
}

impl Change {
    /// `1500 → 9000`, with `unset` for a missing side.
    pub fn transition(&self) -> String {
        format!(
            "{} → {}",
            self.before.as_deref().unwrap_or("unset"),
            self.after.as_deref().unwrap_or("unset")
        )
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.interface)?;
        if let Some(r) = self.role {
            write!(f, " ({})", r.as_str())?;
        }
        if self.key == DEFINITION_KEY {
            return match (&self.before, &self.after) {
                (None, Some(a)) => write!(f, ": added {a}"),
                (Some(b), None) => write!(f, ": removed {b}"),
                _ => write!(f, ": definition {}", self.transition()),
            };
        }
        write!(f, ": {} {}", self.key, self.transition())
    }
}

/// The role of `iface` in the inventory, looked up by kernel name, `set-name` or id.
pub fn role_of(inventory: &SiteInventory, iface: &Interface) -> Option<Role> {
    let mut names = vec![iface.name.as_str(), iface.definition.as_str()];
    if let Some(s) = &iface.set_name {
        names.push(s);
    }
    inventory.entry(&names).map(|e| e.role)
}

fn summary(i: &Interface) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &i.parent {
        parts.push(format!(
            "id {} on {p}",
            i.vlan_id.map_or("?".into(), |v| v.to_string())
        ));
    }
    if !i.members.is_empty() {
        parts.push(format!("of {}", i.members.join(", ")));
    }
    if let Some(m) = i.mtu_bytes {
        parts.push(format!("mtu {m}"));
    }
    if parts.is_empty() {
        i.kind.word().to_string()
    } else {
        format!("{} ({})", i.kind.word(), parts.join(", "))
    }
}

/// Every changed setting, by interface then key.
pub fn diff(current: &Resolved, proposed: &Resolved, inventory: &SiteInventory) -> Vec<Change> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = current
        .interfaces
        .keys()
        .chain(proposed.interfaces.keys())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        match (current.interfaces.get(name), proposed.interfaces.get(name)) {
            (Some(before), Some(after)) => {
                let role = role_of(inventory, after).or_else(|| role_of(inventory, before));
                let (b, a) = (before.settings(), after.settings());
                let mut keys: Vec<&&str> = b.keys().chain(a.keys()).collect();
                keys.sort();
                keys.dedup();
                for key in keys {
                    if b.get(key) != a.get(key) {
                        out.push(Change {
                            interface: name.clone(),
                            role,
                            key: (*key).to_string(),
                            before: b.get(key).cloned(),
                            after: a.get(key).cloned(),
                        });
                    }
                }
            }
            (Some(before), None) => out.push(Change {
                interface: name.clone(),
                role: role_of(inventory, before),
                key: DEFINITION_KEY.into(),
                before: Some(summary(before)),
                after: None,
            }),
            (None, Some(after)) => out.push(Change {
                interface: name.clone(),
                role: role_of(inventory, after),
                key: DEFINITION_KEY.into(),
                before: None,
                after: Some(summary(after)),
            }),
            (None, None) => {}
        }
    }
    out
}
