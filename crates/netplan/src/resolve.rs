//! Which real interface each definition touches.
//!
//! A definition without `match:` names its interface. A `match:` is evaluated against
//! [`SystemInterfaces`] (a host fills it from `/sys/class/net`, tests by hand), so a block that
//! matches eno1's MAC address is seen as eno1, whatever its id or `set-name`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Location};
use crate::parse::{Definition, Kind, Nameservers, Network, Renderer, Route};

/// One interface as the kernel sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInterface {
    /// Kernel name (`eno1`).
    pub name: String,
    /// MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Driver (`e1000e`), if it has a device.
    #[serde(default)]
    pub driver: Option<String>,
    /// Current MTU.
    #[serde(default)]
    pub mtu_bytes: Option<u32>,
}

/// The interfaces present on the host, the input for resolving `match:`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SystemInterfaces {
    /// All interfaces.
    #[serde(default)]
    pub interfaces: Vec<SystemInterface>,
}

impl SystemInterfaces {
    /// Reads `<sys>/class/net/*` (`sys` is `/sys` on a host): name, `address`, `mtu` and the
    /// driver behind `device/driver`. Unreadable attributes are left empty: virtual links have
    /// no driver, and a missing MAC only means `match: macaddress` cannot hit that link.
    pub fn from_sysfs(sys: &Path) -> Result<Self, Error> {
        let dir = sys.join("class/net");
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            help: "pass --sys-root pointing at a sysfs mount, or an --interfaces file",
            source,
        })?;
        let mut interfaces = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let read = |f: &str| {
                std::fs::read_to_string(path.join(f))
                    .ok()
                    .map(|s| s.trim().to_string())
            };
            interfaces.push(SystemInterface {
                mac: read("address").filter(|m| !m.is_empty()),
                mtu_bytes: read("mtu").and_then(|m| m.parse().ok()),
                driver: std::fs::read_link(path.join("device/driver"))
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
                name,
            });
        }
        interfaces.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { interfaces })
    }

    /// The interface named `name`.
    pub fn by_name(&self, name: &str) -> Option<&SystemInterface> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Shell-style glob as netplan (fnmatch) uses it for `match: name/driver`: `*`, `?`, `[a-z]`,
/// `[!x]`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn class(p: &[char], c: char) -> Option<(bool, usize)> {
        // Returns (matched, length of the class including brackets).
        let mut i = 1;
        let negate = matches!(p.get(1), Some('!') | Some('^'));
        if negate {
            i += 1;
        }
        let mut hit = false;
        let mut first = true;
        while i < p.len() {
            let ch = p[i];
            if ch == ']' && !first {
                return Some((hit != negate, i + 1));
            }
            first = false;
            if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|e| *e != ']') {
                let end = p[i + 2];
                if ch <= c && c <= end {
                    hit = true;
                }
                i += 3;
            } else {
                if ch == c {
                    hit = true;
                }
                i += 1;
            }
        }
        None
    }
    fn go(p: &[char], t: &[char]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some('*') => (0..=t.len()).any(|k| go(&p[1..], &t[k..])),
            Some('?') => !t.is_empty() && go(&p[1..], &t[1..]),
            Some('[') => match (t.first(), class(p, t.first().copied().unwrap_or('\0'))) {
                (Some(_), Some((true, len))) => go(&p[len..], &t[1..]),
                (Some(_), Some((false, _))) => false,
                // An unclosed '[' is a literal, as in fnmatch.
                (Some(c), None) => *c == '[' && go(&p[1..], &t[1..]),
                (None, _) => false,
            },
            Some(c) => t.first() == Some(c) && go(&p[1..], &t[1..]),
        }
    }
    // Interface names are at most 15 bytes; the recursion is bounded by the pattern, so a long
    // pattern of stars is still cheap enough. Collapse runs of '*' to keep it linear-ish.
    let mut p: Vec<char> = Vec::with_capacity(pattern.len());
    for c in pattern.chars() {
        if c == '*' && p.last() == Some(&'*') {
            continue;
        }
        p.push(c);
    }
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// One interface as a configuration leaves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interface {
    /// The interface's kernel name now (for a virtual device not yet created: its id).
    pub name: String,
    /// The definition that configures it.
    pub definition: String,
    /// Its section.
    pub kind: Kind,
    /// Where the definition starts.
    pub at: Location,
    /// False when a `match:` selects no interface on this host.
    pub present: bool,
    /// Effective renderer (definition, else global, else networkd).
    pub renderer: Renderer,
    /// `set-name`.
    pub set_name: Option<String>,
    /// `mtu`.
    pub mtu_bytes: Option<u32>,
    /// `addresses`.
    pub addresses: Vec<String>,
    /// `routes`.
    pub routes: Vec<Route>,
    /// `dhcp4`.
    pub dhcp4: bool,
    /// `dhcp6`.
    pub dhcp6: bool,
    /// `gateway4`.
    pub gateway4: Option<String>,
    /// `gateway6`.
    pub gateway6: Option<String>,
    /// `nameservers`.
    pub nameservers: Option<Nameservers>,
    /// `macaddress` to set.
    pub macaddress: Option<String>,
    /// `optional`.
    pub optional: bool,
    /// VLAN parent interface.
    pub parent: Option<String>,
    /// VLAN id.
    pub vlan_id: Option<u16>,
    /// Bond or bridge members (interfaces).
    pub members: Vec<String>,
    /// Bond or bridge parameters.
    pub parameters: Option<serde_json::Value>,
    /// Everything else the definition sets, rendered (`accept-ra`, `link-local`, `wakeonlan`).
    pub other: BTreeMap<&'static str, String>,
}

impl Interface {
    /// Every setting as `key → value` for the diff; unset keys are absent.
    pub fn settings(&self) -> BTreeMap<&'static str, String> {
        let mut s = BTreeMap::new();
        s.insert("type", self.kind.word().to_string());
        s.insert("renderer", self.renderer.as_str().to_string());
        let mut opt = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                s.insert(k, v);
            }
        };
        opt("set-name", self.set_name.clone());
        opt("mtu", self.mtu_bytes.map(|m| m.to_string()));
        opt("gateway4", self.gateway4.clone());
        opt("gateway6", self.gateway6.clone());
        opt("macaddress", self.macaddress.clone());
        opt("link", self.parent.clone());
        opt("id", self.vlan_id.map(|i| i.to_string()));
        opt(
            "parameters",
            self.parameters.as_ref().map(|p| p.to_string()),
        );
        opt(
            "nameservers",
            self.nameservers.as_ref().map(|n| {
                format!(
                    "[{}] search [{}]",
                    n.addresses.join(", "),
                    n.search.join(", ")
                )
            }),
        );
        if !self.addresses.is_empty() {
            s.insert("addresses", format!("[{}]", self.addresses.join(", ")));
        }
        if !self.routes.is_empty() {
            let r: Vec<String> = self.routes.iter().map(ToString::to_string).collect();
            s.insert("routes", format!("[{}]", r.join(", ")));
        }
        if !self.members.is_empty() {
            s.insert("interfaces", format!("[{}]", self.members.join(", ")));
        }
        if self.dhcp4 {
            s.insert("dhcp4", "true".into());
        }
        if self.dhcp6 {
            s.insert("dhcp6", "true".into());
        }
        if self.optional {
            s.insert("optional", "true".into());
        }
        for (k, v) in &self.other {
            s.insert(k, v.clone());
        }
        s
    }
}

/// A configuration resolved onto the host: interface name → what it becomes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resolved {
    /// Interfaces by kernel name.
    pub interfaces: BTreeMap<String, Interface>,
}

impl Resolved {
    /// Finds an interface by kernel name, definition id or `set-name`.
    pub fn find(&self, name: &str) -> Option<&Interface> {
        self.interfaces.get(name).or_else(|| {
            self.interfaces
                .values()
                .find(|i| i.definition == name || i.set_name.as_deref() == Some(name))
        })
    }
}

fn matches(m: &crate::parse::Match, sys: &SystemInterface) -> bool {
    m.name.as_ref().is_none_or(|p| glob_match(p, &sys.name))
        && m.macaddress.as_ref().is_none_or(|mac| {
            sys.mac
                .as_ref()
                .is_some_and(|s| s.eq_ignore_ascii_case(mac))
        })
        && m.driver
            .as_ref()
            .is_none_or(|p| sys.driver.as_ref().is_some_and(|d| glob_match(p, d)))
}

/// Resolves every definition of `net` to the interface it configures.
pub fn resolve(net: &Network, system: &SystemInterfaces) -> Result<Resolved, Error> {
    // definition id → (interface name, present)
    let mut names: BTreeMap<&str, (String, bool)> = BTreeMap::new();
    for def in net.definitions.values() {
        let target = match (&def.match_, def.kind) {
            (Some(m), Kind::Ethernet) => {
                let hits: Vec<&SystemInterface> =
                    system.interfaces.iter().filter(|s| matches(m, s)).collect();
                match hits.as_slice() {
                    [] => (
                        def.set_name.clone().unwrap_or_else(|| def.id.clone()),
                        false,
                    ),
                    [one] => (one.name.clone(), true),
                    many => {
                        return Err(Error::AmbiguousMatch {
                            at: def.at.clone(),
                            id: def.id.clone(),
                            interfaces: many.iter().map(|s| s.name.clone()).collect(),
                        });
                    }
                }
            }
            _ => {
                let present = def.kind != Kind::Ethernet || system.by_name(&def.id).is_some();
                (def.id.clone(), present || system.interfaces.is_empty())
            }
        };
        names.insert(def.id.as_str(), target);
    }
    let mut out = Resolved::default();
    for def in net.definitions.values() {
        let (name, present) = names.get(def.id.as_str()).cloned().unwrap_or_default();
        if let Some(prev) = out.interfaces.get(&name) {
            return Err(Error::invalid(
                def.at.clone(),
                format!(
                    "`{}` and `{}` (at {}) both configure interface {name}",
                    def.id, prev.definition, prev.at
                ),
                "keep one definition per interface; two would race over its settings",
            ));
        }
        let iface = interface(net, def, &names, name.clone(), present);
        out.interfaces.insert(name, iface);
    }
    Ok(out)
}

fn interface(
    net: &Network,
    def: &Definition,
    names: &BTreeMap<&str, (String, bool)>,
    name: String,
    present: bool,
) -> Interface {
    let to_iface = |id: &String| {
        names
            .get(id.as_str())
            .map_or_else(|| id.clone(), |n| n.0.clone())
    };
    let mut other = BTreeMap::new();
    if let Some(v) = def.accept_ra {
        other.insert("accept-ra", v.to_string());
    }
    if let Some(v) = &def.link_local {
        other.insert("link-local", format!("[{}]", v.join(", ")));
    }
    if let Some(v) = def.wakeonlan {
        other.insert("wakeonlan", v.to_string());
    }
    Interface {
        name,
        definition: def.id.clone(),
        kind: def.kind,
        at: def.at.clone(),
        present,
        renderer: def.renderer.or(net.renderer).unwrap_or(Renderer::Networkd),
        set_name: def.set_name.clone(),
        mtu_bytes: def.mtu_bytes,
        addresses: def.addresses.clone(),
        routes: def.routes.clone(),
        dhcp4: def.dhcp4.unwrap_or(false),
        dhcp6: def.dhcp6.unwrap_or(false),
        gateway4: def.gateway4.clone(),
        gateway6: def.gateway6.clone(),
        nameservers: def.nameservers.clone(),
        macaddress: def.macaddress.clone(),
        optional: def.optional.unwrap_or(false),
        parent: def.link.as_ref().map(to_iface),
        vlan_id: def.vlan_id,
        members: def.interfaces.iter().map(to_iface).collect(),
        parameters: def.parameters.clone(),
        other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_follows_fnmatch() {
        assert!(glob_match("en*", "eno1"));
        assert!(glob_match("eno?", "eno1"));
        assert!(!glob_match("eno?", "eno10"));
        assert!(glob_match("eno[12]", "eno2"));
        assert!(!glob_match("eno[!12]", "eno2"));
        assert!(glob_match("e1000*", "e1000e"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(glob_match("[", "["));
        assert!(!glob_match("", "x"));
        assert!(glob_match("***", ""));
    }
}
