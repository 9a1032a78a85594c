//! The site inventory: what the network is supposed to look like.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Default path MTU expected upstream of the WAN interface (plain Ethernet).
pub const DEFAULT_PATH_MTU_BYTES: u32 = 1500;

/// Smallest MTU an IPv4 link may have (RFC 791).
const MIN_MTU_BYTES: u32 = 68;
/// Largest MTU an IPv4 packet can use.
const MAX_MTU_BYTES: u32 = 65535;
/// Largest interface MTU Linux sets: loopback's default, one more than an IPv4 packet.
const MAX_LINK_MTU_BYTES: u32 = 65536;
/// Linux `IFNAMSIZ` is 16 including the terminating NUL.
const MAX_IFNAME_BYTES: usize = 15;

/// What an interface is for; it decides how much an MTU drift on it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The uplink that carries uploads (and the VPN) to the gateway.
    Wan,
    /// The camera network (jumbo frames are normal here).
    Camera,
    /// Out-of-band management.
    Mgmt,
    /// Anything else.
    Other,
}

impl Role {
    /// The role's name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Wan => "wan",
            Role::Camera => "camera",
            Role::Mgmt => "mgmt",
            Role::Other => "other",
        }
    }
}

/// One `[[inventory.interfaces]]` entry as written in the config file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Kernel interface name (`eno1`).
    pub name: String,
    /// `wan`, `camera`, `mgmt` or `other`.
    pub role: Role,
    /// The MTU this interface must have.
    pub mtu_bytes: u32,
    /// The netplan file that configures it; named in the fix text.
    #[serde(default)]
    pub netplan_file: Option<PathBuf>,
}

/// The `[inventory]` table as written in the config file; [`InventoryConfig::validate`] turns
/// it into an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryConfig {
    /// The site's interfaces.
    pub interfaces: Vec<InterfaceConfig>,
    /// The WAN gateway's address.
    pub gateway: IpAddr,
    /// Host name (optionally `:port`) of the upload endpoint, without scheme or path.
    pub endpoint_host: String,
    /// Upload rate the site normally achieves, in Mbit/s; without it `uplink_degraded` is off.
    #[serde(default)]
    pub expected_upload_mbps: Option<f64>,
    /// The path MTU expected upstream of the WAN interface.
    #[serde(default = "default_path_mtu")]
    pub path_mtu_bytes: u32,
    /// Bytes a VPN tunnel adds to every upload packet, for sites whose tunnel the agent cannot
    /// read over strongSwan's VICI (62 for ESP AES-GCM-16 in UDP over IPv4).
    #[serde(default)]
    pub vpn_overhead_bytes: Option<u32>,
}

/// More than any ESP, GRE or WireGuard encapsulation adds.
const MAX_VPN_OVERHEAD_BYTES: u32 = 200;

fn default_path_mtu() -> u32 {
    DEFAULT_PATH_MTU_BYTES
}

/// One validated interface of the [`Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Kernel interface name.
    pub name: String,
    /// What it is for.
    pub role: Role,
    /// The declared MTU.
    pub mtu_bytes: u32,
    /// The netplan file that configures it, if known.
    pub netplan_file: Option<PathBuf>,
}

/// The validated site inventory. Deserializing it validates it, so an `Inventory` value is
/// always usable.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "InventoryConfig")]
pub struct Inventory {
    interfaces: Vec<Interface>,
    gateway: Option<IpAddr>,
    endpoint_host: String,
    expected_upload_mbps: Option<f64>,
    path_mtu_bytes: u32,
    vpn_overhead_bytes: Option<u32>,
    /// The upload endpoint as configured (scheme, host, port), for fix commands.
    endpoint_url: Option<String>,
}

impl InventoryConfig {
    /// Checks every value and produces the inventory the engine runs with.
    ///
    /// Errors name the key (`interfaces[0].mtu_bytes`); the caller adds file and line.
    pub fn validate(&self) -> Result<Inventory, Error> {
        let invalid = |key: String, reason: String| Error::Inventory { key, reason };
        if self.interfaces.is_empty() {
            return Err(invalid(
                "interfaces".into(),
                "list at least the WAN interface, e.g. { name = \"eno1\", role = \"wan\", \
                 mtu_bytes = 1500 }"
                    .into(),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut interfaces = Vec::with_capacity(self.interfaces.len());
        for (i, ifc) in self.interfaces.iter().enumerate() {
            let key = |field: &str| format!("interfaces[{i}].{field}");
            if let Err(reason) = check_ifname(&ifc.name) {
                return Err(invalid(key("name"), reason));
            }
            if !seen.insert(ifc.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is listed twice; list each interface once", ifc.name),
                ));
            }
            if !(MIN_MTU_BYTES..=MAX_LINK_MTU_BYTES).contains(&ifc.mtu_bytes) {
                return Err(invalid(
                    key("mtu_bytes"),
                    format!(
                        "{} is not a valid MTU; use {MIN_MTU_BYTES}-{MAX_LINK_MTU_BYTES} (1500 for \
                         plain Ethernet, 9000 for jumbo frames)",
                        ifc.mtu_bytes
                    ),
                ));
            }
            interfaces.push(Interface {
                name: ifc.name.clone(),
                role: ifc.role,
                mtu_bytes: ifc.mtu_bytes,
                netplan_file: ifc.netplan_file.clone(),
            });
        }
        if self.gateway.is_ipv6() {
            return Err(invalid(
                "gateway".into(),
                format!(
                    "{} is IPv6, which is not monitored yet (the probes are ICMPv4, every check \
                     would answer UNKNOWN): give the site's IPv4 gateway, or leave [inventory] \
                     out (uploads over IPv6 work without it)",
                    self.gateway
                ),
            ));
        }
        let host = self.endpoint_host.trim();
        if host.is_empty()
            || host.contains("://")
            || host.contains('/')
            || host.contains(char::is_whitespace)
        {
            return Err(invalid(
                "endpoint_host".into(),
                format!(
                    "`{}` is not a host name; give the host only, e.g. \
                     `s3.eu-west-1.amazonaws.com`",
                    self.endpoint_host
                ),
            ));
        }
        if let Some(mbps) = self.expected_upload_mbps
            && !(mbps.is_finite() && mbps > 0.0)
        {
            return Err(invalid(
                "expected_upload_mbps".into(),
                format!("{mbps} is not a rate; give Mbit/s above 0, or leave it out"),
            ));
        }
        if !(MIN_MTU_BYTES..=MAX_MTU_BYTES).contains(&self.path_mtu_bytes) {
            return Err(invalid(
                "path_mtu_bytes".into(),
                format!(
                    "{} is not a valid MTU; use {MIN_MTU_BYTES}-{MAX_MTU_BYTES}",
                    self.path_mtu_bytes
                ),
            ));
        }
        if let Some(bytes) = self.vpn_overhead_bytes
            && !(1..=MAX_VPN_OVERHEAD_BYTES).contains(&bytes)
        {
            return Err(invalid(
                "vpn_overhead_bytes".into(),
                format!(
                    "{bytes} is not a tunnel overhead; give 1-{MAX_VPN_OVERHEAD_BYTES} bytes \
                     (62 for ESP AES-GCM-16 in UDP over IPv4), or leave it out"
                ),
            ));
        }
        Ok(Inventory {
            interfaces,
            gateway: Some(self.gateway),
            endpoint_host: host.to_string(),
            expected_upload_mbps: self.expected_upload_mbps,
            path_mtu_bytes: self.path_mtu_bytes,
            vpn_overhead_bytes: self.vpn_overhead_bytes,
            endpoint_url: None,
        })
    }
}

fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_BYTES {
        return Err(format!(
            "`{name}` is not an interface name; Linux names are 1-{MAX_IFNAME_BYTES} bytes"
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!(
            "`{name}` is not an interface name; it may not contain '/', ':' or spaces"
        ));
    }
    Ok(())
}

impl TryFrom<InventoryConfig> for Inventory {
    type Error = Error;

    fn try_from(config: InventoryConfig) -> Result<Self, Error> {
        config.validate()
    }
}

impl Inventory {
    /// A site without an `[inventory]`: no interfaces and no gateway, only the upload
    /// endpoint's host. The rules that need path facts ([`crate::Kind::needs_path`]) find
    /// nothing; the site's own health (credentials, the store, the disk, goodput, the VPN) is
    /// watched as with one.
    pub fn site_only(endpoint_host: &str) -> Self {
        Self {
            interfaces: Vec::new(),
            gateway: None,
            endpoint_host: endpoint_host.to_owned(),
            expected_upload_mbps: None,
            path_mtu_bytes: DEFAULT_PATH_MTU_BYTES,
            vpn_overhead_bytes: None,
            endpoint_url: None,
        }
    }

    /// The same inventory, knowing the upload endpoint's URL as configured, so fixes name
    /// it as it is reached (`http://127.0.0.1:19000`, not `https://127.0.0.1/`).
    pub fn with_endpoint_url(mut self, url: &str) -> Self {
        self.endpoint_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// The upload endpoint's URL: as configured, else `https://` and the endpoint's host.
    pub fn endpoint_url(&self) -> String {
        self.endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.endpoint_host))
    }

    /// Whether the path is declared (interfaces and gateway), so the path rules and the
    /// probes can run.
    pub fn declares_path(&self) -> bool {
        !self.interfaces.is_empty() && self.gateway.is_some()
    }

    /// All interfaces, in config order.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// The interface called `name`, if the inventory lists it.
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The first WAN interface, the one uploads leave through.
    pub fn wan(&self) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.role == Role::Wan)
    }

    /// The gateway's address (none without an `[inventory]`).
    pub fn gateway(&self) -> Option<IpAddr> {
        self.gateway
    }

    /// The upload endpoint's host.
    pub fn endpoint_host(&self) -> &str {
        &self.endpoint_host
    }

    /// The expected upload rate in Mbit/s, if configured.
    pub fn expected_upload_mbps(&self) -> Option<f64> {
        self.expected_upload_mbps
    }

    /// The path MTU expected upstream.
    pub fn path_mtu_bytes(&self) -> u32 {
        self.path_mtu_bytes
    }

    /// The tunnel overhead the site declares, if any.
    pub fn vpn_overhead_bytes(&self) -> Option<u32> {
        self.vpn_overhead_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Inventory, String> {
        serde_json::from_str::<Inventory>(json).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"{
        "interfaces": [
            {"name": "eno1", "role": "wan", "mtu_bytes": 1500,
             "netplan_file": "/etc/netplan/01-wan.yaml"},
            {"name": "eno2", "role": "camera", "mtu_bytes": 9000}
        ],
        "gateway": "192.0.2.1",
        "endpoint_host": "s3.eu-west-1.amazonaws.com",
        "expected_upload_mbps": 50
    }"#;

    #[test]
    fn parses_and_validates_a_site() {
        let inv = parse(GOOD).unwrap();
        assert_eq!(inv.wan().unwrap().name, "eno1");
        assert_eq!(inv.interface("eno2").unwrap().mtu_bytes, 9000);
        assert_eq!(inv.path_mtu_bytes(), DEFAULT_PATH_MTU_BYTES);
        assert_eq!(inv.expected_upload_mbps(), Some(50.0));
    }

    #[test]
    fn an_ipv6_gateway_is_refused_rather_than_left_unknown_forever() {
        let err = parse(&GOOD.replace("192.0.2.1", "2001:db8::1")).unwrap_err();
        assert!(
            err.contains("gateway") && err.contains("IPv6, which is not monitored yet"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = parse(&GOOD.replace("\"gateway\"", "\"gatway\"")).unwrap_err();
        assert!(err.contains("unknown field `gatway`"), "{err}");
    }

    #[test]
    fn rejects_duplicate_and_bad_interface_names() {
        let dup = GOOD.replace("\"eno2\"", "\"eno1\"");
        assert!(parse(&dup).unwrap_err().contains("interfaces[1].name"));
        let long = GOOD.replace("\"eno2\"", "\"a-very-long-interface\"");
        assert!(parse(&long).unwrap_err().contains("1-15 bytes"));
    }

    #[test]
    fn rejects_impossible_mtus_and_rates() {
        let err = parse(&GOOD.replace("9000", "70000")).unwrap_err();
        assert!(err.contains("interfaces[1].mtu_bytes"), "{err}");
        let err = parse(&GOOD.replace(
            "\"expected_upload_mbps\": 50",
            "\"expected_upload_mbps\": 0",
        ))
        .unwrap_err();
        assert!(err.contains("expected_upload_mbps"), "{err}");
    }

    #[test]
    fn rejects_endpoint_urls() {
        let err = parse(&GOOD.replace(
            "s3.eu-west-1.amazonaws.com",
            "https://s3.eu-west-1.amazonaws.com",
        ))
        .unwrap_err();
        assert!(err.contains("host only"), "{err}");
    }
}
