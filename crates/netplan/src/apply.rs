//! Appliers: how a resolved configuration reaches the kernel.
//!
//! [`NetplanApplier`] runs `netplan apply` (hosts, where a renderer runs). [`IpLinkApplier`]
//! sets the same values with `ip` in the current network namespace: the lab runs it inside
//! its site namespace, where systemd-networkd does not run. Like networkd, it leaves a key
//! that is not set alone, so rolling back needs the explicit kernel values of
//! [`crate::Links::restore`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::link::{SysfsLinks, argv, run};
use crate::resolve::Resolved;

/// Makes the kernel follow a resolved configuration.
pub trait Applier {
    /// The commands [`Applier::apply`] runs for `target`, in order (dry run and report).
    fn commands(&self, target: &Resolved) -> Vec<Vec<String>>;

    /// Applies `target`; the first failing command stops it.
    fn apply(&mut self, target: &Resolved) -> Result<(), Error> {
        for c in self.commands(target) {
            run(&c)?;
        }
        Ok(())
    }
}

/// Which applier a plan uses (recorded in the plan so the detached verifier builds the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ApplierKind {
    /// `netplan apply`.
    Netplan {
        /// The netplan binary.
        binary: PathBuf,
    },
    /// `ip link` / `ip addr` in the current namespace.
    IpLink {
        /// The `ip` binary.
        ip: PathBuf,
        /// sysfs, to skip links the kernel does not have.
        sys_root: PathBuf,
    },
}

impl ApplierKind {
    /// The applier itself.
    pub fn build(&self) -> Box<dyn Applier> {
        match self {
            ApplierKind::Netplan { binary } => Box::new(NetplanApplier {
                binary: binary.clone(),
            }),
            ApplierKind::IpLink { ip, sys_root } => Box::new(IpLinkApplier {
                ip: ip.clone(),
                sys_root: sys_root.clone(),
            }),
        }
    }
}

/// `netplan apply`: the renderer reads the files just written.
#[derive(Debug, Clone)]
pub struct NetplanApplier {
    /// The netplan binary.
    pub binary: PathBuf,
}

impl Applier for NetplanApplier {
    fn commands(&self, _target: &Resolved) -> Vec<Vec<String>> {
        vec![argv(&[&self.binary.display().to_string(), "apply"])]
    }
}

/// Sets each present link's `mtu`, brings it up and adds its configured addresses with `ip`.
///
/// Addresses are only added (`ip addr replace`), never removed: removing one that a partial
/// config does not list could cut the link the verify probes travel. Routes, VLAN/bond/bridge
/// creation and DHCP are left to a real renderer; links the kernel does not have are skipped.
#[derive(Debug, Clone)]
pub struct IpLinkApplier {
    /// The `ip` binary.
    pub ip: PathBuf,
    /// sysfs mount (`/sys`).
    pub sys_root: PathBuf,
}

impl Applier for IpLinkApplier {
    fn commands(&self, target: &Resolved) -> Vec<Vec<String>> {
        let ip = self.ip.display().to_string();
        let mut out = Vec::new();
        for iface in target.interfaces.values() {
            if !iface.present || !SysfsLinks::read_one(&self.sys_root, &iface.name).present {
                continue;
            }
            let dev = iface.name.as_str();
            if let Some(m) = iface.mtu_bytes {
                out.push(argv(&[
                    &ip,
                    "link",
                    "set",
                    "dev",
                    dev,
                    "mtu",
                    &m.to_string(),
                ]));
            }
            out.push(argv(&[&ip, "link", "set", "dev", dev, "up"]));
            for a in &iface.addresses {
                out.push(argv(&[&ip, "addr", "replace", a, "dev", dev]));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SourceFile, SystemInterface, SystemInterfaces, parse_files, resolve};

    #[test]
    fn ip_link_applier_sets_mtu_up_and_addresses_of_present_links_only() {
        let sys = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(sys.path().join("class/net/eno1")).unwrap();
        let text = "network:\n  version: 2\n  ethernets:\n    eno1:\n      mtu: 1500\n      \
                    addresses: [192.0.2.2/24]\n    eno2:\n      mtu: 9000\n";
        let net = parse_files(&[SourceFile {
            path: "50.yaml".into(),
            dir: crate::ETC_DIR,
            text: text.into(),
        }])
        .unwrap();
        let system = SystemInterfaces {
            interfaces: vec![SystemInterface {
                name: "eno1".into(),
                mac: None,
                driver: None,
                mtu_bytes: Some(1500),
            }],
        };
        let target = resolve(&net, &system).unwrap();
        let applier = IpLinkApplier {
            ip: "ip".into(),
            sys_root: sys.path().to_path_buf(),
        };
        let lines: Vec<String> = applier
            .commands(&target)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "ip link set dev eno1 mtu 1500",
                "ip link set dev eno1 up",
                "ip addr replace 192.0.2.2/24 dev eno1",
            ]
        );
        let netplan = NetplanApplier {
            binary: "/usr/sbin/netplan".into(),
        };
        assert_eq!(netplan.commands(&target), [["/usr/sbin/netplan", "apply"]]);
    }
}
