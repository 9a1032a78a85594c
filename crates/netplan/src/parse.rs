//! Netplan YAML → [`Network`]: one file at a time into strict serde structs, then merged in
//! netplan's order.
//!
//! Merge rules (checked against `netplan generate` 1.x): scalars of a later file override
//! earlier ones, sequences (`addresses`, `routes`, `interfaces`, nameservers) are appended,
//! `match` keys merge one by one, and a definition may not change its type (`ethernets` →
//! `bonds`) between files.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::{Error, Location};
use crate::source::SourceFile;

/// Largest netplan file accepted; real ones are a few KiB.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

const HELP_SYNTAX: &str = "fix the YAML (netplan uses spaces, never tabs, for indentation)";
const HELP_KEYS: &str =
    "netplan rejects unknown keys too; check the spelling against `man netplan` (netplan-yaml)";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRaw {
    network: Option<NetworkRaw>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkRaw {
    version: Option<Spanned<u32>>,
    renderer: Option<Spanned<String>>,
    ethernets: Option<BTreeMap<String, Spanned<Option<DeviceRaw>>>>,
    vlans: Option<BTreeMap<String, Spanned<Option<DeviceRaw>>>>,
    bonds: Option<BTreeMap<String, Spanned<Option<DeviceRaw>>>>,
    bridges: Option<BTreeMap<String, Spanned<Option<DeviceRaw>>>>,
}

// One struct for every device type keeps the serde side simple; which keys a type may use is
// checked afterwards, with the key's own location, in `Definition::from_raw`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct DeviceRaw {
    // common
    renderer: Option<Spanned<String>>,
    mtu: Option<u32>,
    addresses: Option<Vec<Spanned<String>>>,
    routes: Option<Vec<Route>>,
    dhcp4: Option<bool>,
    dhcp6: Option<bool>,
    gateway4: Option<String>,
    gateway6: Option<String>,
    nameservers: Option<Nameservers>,
    macaddress: Option<String>,
    optional: Option<bool>,
    accept_ra: Option<bool>,
    link_local: Option<Vec<String>>,
    // ethernets only
    #[serde(rename = "match")]
    match_: Option<Spanned<MatchRaw>>,
    set_name: Option<Spanned<String>>,
    wakeonlan: Option<Spanned<bool>>,
    // vlans only
    id: Option<Spanned<u16>>,
    link: Option<Spanned<String>>,
    // bonds and bridges only
    interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    parameters: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchRaw {
    name: Option<String>,
    macaddress: Option<String>,
    driver: Option<String>,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Route {
    /// Destination (`default`, `0.0.0.0/0`, `10.1.0.0/16`).
    pub to: Option<String>,
    /// Gateway.
    pub via: Option<String>,
    /// Preferred source address.
    pub from: Option<String>,
    /// Route metric.
    pub metric: Option<u32>,
    /// Gateway is on-link.
    pub on_link: Option<bool>,
    /// Routing table.
    pub table: Option<u32>,
    /// `global`, `link` or `host`.
    pub scope: Option<String>,
    /// `unicast`, `blackhole`, ….
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to.as_deref().unwrap_or("?"))?;
        if let Some(via) = &self.via {
            write!(f, " via {via}")?;
        }
        if let Some(from) = &self.from {
            write!(f, " from {from}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        if let Some(t) = self.table {
            write!(f, " table {t}")?;
        }
        if let Some(s) = &self.scope {
            write!(f, " scope {s}")?;
        }
        if let Some(k) = &self.kind {
            write!(f, " type {k}")?;
        }
        if self.on_link == Some(true) {
            f.write_str(" on-link")?;
        }
        Ok(())
    }
}

/// DNS servers and search domains.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Nameservers {
    /// Servers.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Search domains.
    #[serde(default)]
    pub search: Vec<String>,
}

/// The netplan section a definition lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `ethernets`: a physical link.
    Ethernet,
    /// `vlans`.
    Vlan,
    /// `bonds`.
    Bond,
    /// `bridges`.
    Bridge,
}

impl Kind {
    /// The YAML section name.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Ethernet => "ethernets",
            Kind::Vlan => "vlans",
            Kind::Bond => "bonds",
            Kind::Bridge => "bridges",
        }
    }

    /// The singular word used in diffs.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Ethernet => "ethernet",
            Kind::Vlan => "vlan",
            Kind::Bond => "bond",
            Kind::Bridge => "bridge",
        }
    }
}

/// Which network daemon renders a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Renderer {
    /// systemd-networkd (netplan's default).
    #[serde(rename = "networkd")]
    Networkd,
    /// NetworkManager.
    NetworkManager,
}

impl Renderer {
    /// The spelling netplan uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Renderer::Networkd => "networkd",
            Renderer::NetworkManager => "NetworkManager",
        }
    }
}

/// `match:` criteria of a physical definition. `name` and `driver` are shell globs.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Match {
    /// Kernel name glob.
    pub name: Option<String>,
    /// MAC address (compared case-insensitively).
    pub macaddress: Option<String>,
    /// Driver name glob.
    pub driver: Option<String>,
}

/// One netplan definition after all files are merged.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Definition {
    /// The definition's id (the key under `ethernets:` etc.).
    pub id: String,
    /// Its section.
    pub kind: Kind,
    /// Where it was first defined.
    pub at: Location,
    /// Per-definition renderer, if set.
    pub renderer: Option<Renderer>,
    /// `mtu`.
    pub mtu_bytes: Option<u32>,
    /// `addresses`, in file order.
    pub addresses: Vec<String>,
    /// `routes`, in file order.
    pub routes: Vec<Route>,
    /// `dhcp4`.
    pub dhcp4: Option<bool>,
    /// `dhcp6`.
    pub dhcp6: Option<bool>,
    /// `gateway4` (deprecated by netplan, still accepted).
    pub gateway4: Option<String>,
    /// `gateway6`.
    pub gateway6: Option<String>,
    /// `nameservers`.
    pub nameservers: Option<Nameservers>,
    /// `macaddress` to set on the link.
    pub macaddress: Option<String>,
    /// `optional`.
    pub optional: Option<bool>,
    /// `accept-ra`.
    pub accept_ra: Option<bool>,
    /// `link-local`.
    pub link_local: Option<Vec<String>>,
    /// `match`.
    pub match_: Option<Match>,
    /// `set-name`.
    pub set_name: Option<String>,
    /// `wakeonlan`.
    pub wakeonlan: Option<bool>,
    /// VLAN `id`.
    pub vlan_id: Option<u16>,
    /// VLAN `link`: the parent definition's id.
    pub link: Option<String>,
    /// Bond or bridge members: definition ids.
    pub interfaces: Vec<String>,
    /// Bond or bridge `parameters`, passed through as JSON (netplan checks their keys).
    pub parameters: Option<serde_json::Value>,
    // Locations of references, for errors found after merging.
    #[serde(skip)]
    pub(crate) link_at: Option<Location>,
    #[serde(skip)]
    pub(crate) interfaces_at: Vec<Location>,
    #[serde(skip)]
    pub(crate) set_name_at: Option<Location>,
}

/// A merged netplan configuration: what netplan would render.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Network {
    /// Global `renderer` (netplan's default is networkd).
    pub renderer: Option<Renderer>,
    /// Definitions by id.
    pub definitions: BTreeMap<String, Definition>,
}

fn loc(path: &Path, l: &serde_saphyr::Location) -> Location {
    Location::new(path, l.line(), l.column())
}

fn yaml_error(path: &Path, text: &str, err: &serde_saphyr::Error) -> Error {
    let at = err
        .location()
        .map_or_else(|| Location::new(path, 0, 0), |l| loc(path, &l));
    let mut message = err.without_snippet().to_string();
    // serde-saphyr addresses the programmer here; the operator cannot change its options.
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(i);
    }
    // The rendered message repeats the position; ours is in front already.
    for suffix in [
        format!(" at line {}, column {}", at.line, at.column),
        format!(" at line {} column {}", at.line, at.column),
    ] {
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_string();
        }
    }
    let line_text = text
        .lines()
        .nth(usize::try_from(at.line.saturating_sub(1)).unwrap_or(usize::MAX))
        .unwrap_or("");
    let help = if line_text.contains('\t') {
        "netplan forbids tabs in YAML; indent with spaces"
    } else if message.contains("unknown field") {
        HELP_KEYS
    } else if message.contains("duplicate") {
        "remove one of the two entries; netplan would silently merge or drop one of them"
    } else {
        HELP_SYNTAX
    };
    if line_text.contains('\t') && !message.contains("tab") {
        message = format!("{message} (the line contains a tab)");
    }
    Error::invalid(at, message, help)
}

fn parse_renderer(path: &Path, s: &Spanned<String>) -> Result<Renderer, Error> {
    match s.value.as_str() {
        "networkd" => Ok(Renderer::Networkd),
        "NetworkManager" => Ok(Renderer::NetworkManager),
        other => Err(Error::invalid(
            loc(path, &s.referenced),
            format!("unknown renderer `{other}`"),
            "use `networkd` or `NetworkManager`",
        )),
    }
}

/// Parses one netplan file into its definitions (not yet merged with other files).
pub(crate) fn parse_file(file: &SourceFile) -> Result<Network, Error> {
    let path = file.path.as_path();
    let text = file.text.as_str();
    if text.len() > MAX_FILE_BYTES {
        return Err(Error::invalid(
            Location::new(path, 0, 0),
            format!("file is {} bytes, more than {MAX_FILE_BYTES}", text.len()),
            "netplan files are small; check that this is the right file",
        ));
    }
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: false,
    };
    // An empty file (or one with only comments) is a valid, empty netplan file.
    let raw: Option<FileRaw> = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| yaml_error(path, text, &e))?;
    let Some(network) = raw.and_then(|r| r.network) else {
        return Ok(Network::default());
    };
    if let Some(v) = &network.version
        && v.value != 2
    {
        return Err(Error::invalid(
            loc(path, &v.referenced),
            format!("`version: {}` is not supported", v.value),
            "netplan supports only `version: 2`",
        ));
    }
    let mut out = Network {
        renderer: network
            .renderer
            .as_ref()
            .map(|r| parse_renderer(path, r))
            .transpose()?,
        definitions: BTreeMap::new(),
    };
    for (kind, section) in [
        (Kind::Ethernet, network.ethernets),
        (Kind::Vlan, network.vlans),
        (Kind::Bond, network.bonds),
        (Kind::Bridge, network.bridges),
    ] {
        for (id, raw) in section.unwrap_or_default() {
            let at = loc(path, &raw.referenced);
            if let Some(prev) = out.definitions.get(&id) {
                return Err(Error::invalid(
                    at,
                    format!(
                        "`{id}` is defined in both `{}` and `{}`",
                        prev.kind.section(),
                        kind.section()
                    ),
                    "a definition keeps one type; rename one of them",
                ));
            }
            let def =
                Definition::from_raw(path, id.clone(), kind, at, raw.value.unwrap_or_default())?;
            out.definitions.insert(id, def);
        }
    }
    Ok(out)
}

fn wrong_key(path: &Path, at: &serde_saphyr::Location, key: &str, kind: Kind) -> Error {
    Error::invalid(
        loc(path, at),
        format!("key `{key}` is not valid in `{}`", kind.section()),
        HELP_KEYS,
    )
}

impl Definition {
    fn from_raw(
        path: &Path,
        id: String,
        kind: Kind,
        at: Location,
        raw: DeviceRaw,
    ) -> Result<Self, Error> {
        // Keys only some sections accept, exactly as netplan rejects them elsewhere.
        if kind != Kind::Ethernet {
            if let Some(m) = &raw.match_ {
                return Err(wrong_key(path, &m.referenced, "match", kind));
            }
            if let Some(s) = &raw.set_name {
                return Err(wrong_key(path, &s.referenced, "set-name", kind));
            }
            if let Some(w) = &raw.wakeonlan {
                return Err(wrong_key(path, &w.referenced, "wakeonlan", kind));
            }
        }
        if kind != Kind::Vlan {
            if let Some(v) = &raw.id {
                return Err(wrong_key(path, &v.referenced, "id", kind));
            }
            if let Some(l) = &raw.link {
                return Err(wrong_key(path, &l.referenced, "link", kind));
            }
        }
        if !matches!(kind, Kind::Bond | Kind::Bridge) {
            if let Some(i) = &raw.interfaces {
                return Err(wrong_key(path, &i.referenced, "interfaces", kind));
            }
            if let Some(p) = &raw.parameters {
                return Err(wrong_key(path, &p.referenced, "parameters", kind));
            }
        }
        let mut addresses = Vec::new();
        for a in raw.addresses.unwrap_or_default() {
            validate_address(path, &a)?;
            addresses.push(a.value);
        }
        let routes = raw.routes.unwrap_or_default();
        if let Some(r) = routes.iter().find(|r| r.to.is_none()) {
            return Err(Error::invalid(
                at,
                format!("`{id}`: a route has no `to:` ({r})"),
                "every route needs a destination, e.g. `to: default`",
            ));
        }
        if let Some(id_value) = &raw.id
            && id_value.value > 4094
        {
            return Err(Error::invalid(
                loc(path, &id_value.referenced),
                format!("`{id}`: vlan id {} is out of range", id_value.value),
                "VLAN ids are 0 to 4094",
            ));
        }
        let (interfaces, interfaces_at) = raw
            .interfaces
            .map(|s| {
                s.value
                    .into_iter()
                    .map(|i| (i.value, loc(path, &i.referenced)))
                    .unzip()
            })
            .unwrap_or_default();
        Ok(Definition {
            renderer: raw
                .renderer
                .as_ref()
                .map(|r| parse_renderer(path, r))
                .transpose()?,
            mtu_bytes: raw.mtu,
            addresses,
            routes,
            dhcp4: raw.dhcp4,
            dhcp6: raw.dhcp6,
            gateway4: raw.gateway4,
            gateway6: raw.gateway6,
            nameservers: raw.nameservers,
            macaddress: raw.macaddress,
            optional: raw.optional,
            accept_ra: raw.accept_ra,
            link_local: raw.link_local,
            match_: raw.match_.map(|m| Match {
                name: m.value.name,
                macaddress: m.value.macaddress,
                driver: m.value.driver,
            }),
            set_name_at: raw.set_name.as_ref().map(|s| loc(path, &s.referenced)),
            set_name: raw.set_name.map(|s| s.value),
            wakeonlan: raw.wakeonlan.map(|w| w.value),
            vlan_id: raw.id.map(|v| v.value),
            link_at: raw.link.as_ref().map(|l| loc(path, &l.referenced)),
            link: raw.link.map(|l| l.value),
            interfaces,
            interfaces_at,
            parameters: raw.parameters.map(|p| p.value),
            id,
            kind,
            at,
        })
    }

    /// Applies a later file's definition of the same id on top of this one.
    fn merge(&mut self, later: Definition) {
        fn over<T>(slot: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *slot = later;
            }
        }
        over(&mut self.renderer, later.renderer);
        over(&mut self.mtu_bytes, later.mtu_bytes);
        self.addresses.extend(later.addresses);
        self.routes.extend(later.routes);
        over(&mut self.dhcp4, later.dhcp4);
        over(&mut self.dhcp6, later.dhcp6);
        over(&mut self.gateway4, later.gateway4);
        over(&mut self.gateway6, later.gateway6);
        match (&mut self.nameservers, later.nameservers) {
            (Some(ns), Some(l)) => {
                ns.addresses.extend(l.addresses);
                ns.search.extend(l.search);
            }
            (slot, l) => over(slot, l),
        }
        over(&mut self.macaddress, later.macaddress);
        over(&mut self.optional, later.optional);
        over(&mut self.accept_ra, later.accept_ra);
        over(&mut self.link_local, later.link_local);
        match (&mut self.match_, later.match_) {
            (Some(m), Some(l)) => {
                over(&mut m.name, l.name);
                over(&mut m.macaddress, l.macaddress);
                over(&mut m.driver, l.driver);
            }
            (slot, l) => over(slot, l),
        }
        over(&mut self.set_name, later.set_name);
        over(&mut self.set_name_at, later.set_name_at);
        over(&mut self.wakeonlan, later.wakeonlan);
        over(&mut self.vlan_id, later.vlan_id);
        over(&mut self.link, later.link);
        over(&mut self.link_at, later.link_at);
        self.interfaces.extend(later.interfaces);
        self.interfaces_at.extend(later.interfaces_at);
        over(&mut self.parameters, later.parameters);
    }
}

fn validate_address(path: &Path, a: &Spanned<String>) -> Result<(), Error> {
    let at = loc(path, &a.referenced);
    let Some((ip, prefix)) = a.value.split_once('/') else {
        return Err(Error::invalid(
            at,
            format!("address `{}` has no /prefix length", a.value),
            "write it as ADDRESS/PREFIX, e.g. 192.0.2.10/24",
        ));
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => {
            return Err(Error::invalid(
                at,
                format!("address `{}` is not an IP address", a.value),
                "write it as ADDRESS/PREFIX, e.g. 192.0.2.10/24",
            ));
        }
    };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok(()),
        _ => Err(Error::invalid(
            at,
            format!("address `{}` has an invalid prefix length", a.value),
            format!("the prefix length is 0 to {max}"),
        )),
    }
}

/// Parses and merges files in netplan's order (the caller sorts them), then checks references
/// that can only be judged on the whole: `link`, `interfaces`, `set-name` needing `match`.
pub fn parse_files(files: &[SourceFile]) -> Result<Network, Error> {
    let mut net = Network::default();
    for file in files {
        let one = parse_file(file)?;
        if one.renderer.is_some() {
            net.renderer = one.renderer;
        }
        for (id, def) in one.definitions {
            match net.definitions.get_mut(&id) {
                Some(prev) if prev.kind != def.kind => {
                    return Err(Error::invalid(
                        def.at,
                        format!(
                            "`{id}` changes type from `{}` (at {}) to `{}`",
                            prev.kind.section(),
                            prev.at,
                            def.kind.section()
                        ),
                        "netplan refuses to change a definition's type; use a new id",
                    ));
                }
                Some(prev) => prev.merge(def),
                None => {
                    net.definitions.insert(id, def);
                }
            }
        }
    }
    validate_references(&net)?;
    Ok(net)
}

fn validate_references(net: &Network) -> Result<(), Error> {
    let mut member_of: BTreeMap<&str, &str> = BTreeMap::new();
    for def in net.definitions.values() {
        if def.set_name.is_some() && def.match_.is_none() {
            return Err(Error::invalid(
                def.set_name_at.clone().unwrap_or_else(|| def.at.clone()),
                format!("`{}`: `set-name` requires `match`", def.id),
                "add a `match:` (e.g. `macaddress:`) that selects the interface to rename",
            ));
        }
        if def.kind == Kind::Vlan {
            let Some(link) = &def.link else {
                return Err(Error::invalid(
                    def.at.clone(),
                    format!("vlan `{}` has no `link`", def.id),
                    "name the parent definition with `link:`",
                ));
            };
            if def.vlan_id.is_none() {
                return Err(Error::invalid(
                    def.at.clone(),
                    format!("vlan `{}` has no `id`", def.id),
                    "give the VLAN tag with `id:`",
                ));
            }
            if !net.definitions.contains_key(link) {
                return Err(Error::invalid(
                    def.link_at.clone().unwrap_or_else(|| def.at.clone()),
                    format!("vlan `{}`: link `{link}` is not defined", def.id),
                    "define the parent in `ethernets`, `bonds` or `bridges`",
                ));
            }
        }
        for (i, member) in def.interfaces.iter().enumerate() {
            let at = def
                .interfaces_at
                .get(i)
                .cloned()
                .unwrap_or_else(|| def.at.clone());
            if !net.definitions.contains_key(member) {
                return Err(Error::invalid(
                    at,
                    format!(
                        "{} `{}`: interface `{member}` is not defined",
                        def.kind.word(),
                        def.id
                    ),
                    "define each member (usually in `ethernets`) before listing it",
                ));
            }
            if let Some(other) = member_of.insert(member, &def.id)
                && other != def.id
            {
                return Err(Error::invalid(
                    at,
                    format!("interface `{member}` is already a member of `{other}`"),
                    "an interface can belong to one bond or bridge only",
                ));
            }
        }
    }
    Ok(())
}
