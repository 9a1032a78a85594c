//! Site remediation the agent runs by itself when its `[remediation]` allows it: the WAN
//! interface's MTU back to its declared value, or the path MTU on the WAN's routes and taking it
//! off again. A route MTU caps every connection through those routes, the ones already open
//! included (at their next retransmission), so it heals the VPN and every other application on
//! the site, not just the agent's uploads; the interface itself keeps the wrong MTU until a
//! person fixes its configuration.
//!
//! This module only runs `ip` and reads its answers; whether and when to act (the incident,
//! the guard rails, once per incident) is the agent's decision. The guarded apply's lock is
//! read with [`crate::Lock::read`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::link::run;

/// The routing table strongSwan installs its routes in.
pub const STRONGSWAN_TABLE: &str = "220";

/// One IPv4 unicast route through the interface, as `ip -j route` reports it: enough to name
/// it again in `ip route change` (the kernel finds a route by destination, table and metric).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelRoute {
    /// `default` or a prefix.
    pub dst: String,
    /// Next hop, when it has one.
    pub gateway: Option<String>,
    /// `None` is the main table.
    pub table: Option<String>,
    /// `kernel`, `static`, `dhcp`…; `None` is `boot`.
    pub protocol: Option<String>,
    /// `link`, `host`…; `None` is `global`.
    pub scope: Option<String>,
    /// Preferred source address.
    pub prefsrc: Option<String>,
    /// KernelRoute priority.
    pub metric: Option<u32>,
    /// Next hop on the link whatever its prefix says.
    pub onlink: bool,
    /// The route's own MTU before any change.
    pub mtu: Option<u32>,
}

impl KernelRoute {
    /// `ip route change …` for this route on `dev`, with `mtu` (or none).
    fn change(&self, ip: &str, dev: &str, mtu: Option<u32>) -> Vec<String> {
        let mut argv: Vec<String> = [ip, "-4", "route", "change", &self.dst]
            .map(str::to_owned)
            .into();
        fn push(argv: &mut Vec<String>, k: &str, v: Option<&str>) {
            if let Some(v) = v {
                argv.extend([k.to_owned(), v.to_owned()]);
            }
        }
        push(&mut argv, "via", self.gateway.as_deref());
        argv.extend(["dev".to_owned(), dev.to_owned()]);
        push(&mut argv, "table", self.table.as_deref());
        push(&mut argv, "proto", self.protocol.as_deref());
        push(&mut argv, "scope", self.scope.as_deref());
        push(&mut argv, "src", self.prefsrc.as_deref());
        let metric = self.metric.map(|m| m.to_string());
        push(&mut argv, "metric", metric.as_deref());
        if self.onlink {
            argv.push("onlink".to_owned());
        }
        if let Some(m) = mtu {
            argv.extend(["mtu".to_owned(), m.to_string()]);
        }
        argv
    }

    /// `main` or the table's name.
    pub fn table_name(&self) -> &str {
        self.table.as_deref().unwrap_or("main")
    }
}

/// The shape of one element of `ip -j route show`.
#[derive(Deserialize)]
struct IpRoute {
    #[serde(rename = "type")]
    kind: Option<String>,
    dst: String,
    gateway: Option<String>,
    table: Option<String>,
    protocol: Option<String>,
    scope: Option<String>,
    prefsrc: Option<String>,
    metric: Option<u32>,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    metrics: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// The routes of `ip -j -4 route show table all dev X` that carry the site's traffic out: unicast
/// routes of the main table and of strongSwan's table. Local and broadcast routes, and other
/// tables (policy routing the agent knows nothing about), are left alone.
pub fn wan_routes(json: &str) -> Result<Vec<KernelRoute>, serde_json::Error> {
    let all: Vec<IpRoute> = serde_json::from_str(json)?;
    Ok(all
        .into_iter()
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "unicast"))
        .filter(|r| {
            r.table
                .as_deref()
                .is_none_or(|t| t == "main" || t == STRONGSWAN_TABLE)
        })
        .map(|r| KernelRoute {
            mtu: r
                .metrics
                .iter()
                .find_map(|m| m.get("mtu")?.as_u64())
                .and_then(|m| u32::try_from(m).ok()),
            onlink: r.flags.iter().any(|f| f == "onlink"),
            dst: r.dst,
            gateway: r.gateway,
            table: r.table.filter(|t| t != "main"),
            protocol: r.protocol,
            scope: r.scope,
            prefsrc: r.prefsrc,
            metric: r.metric,
        })
        .collect())
}

/// A route MTU the agent set, and the routes as they were, to take it off again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteMtu {
    /// The interface whose routes carry it.
    pub ifname: String,
    /// When those are a tunnel device's routes: the WAN interface whose change made the
    /// tunnel's packets too big, and whose restore takes the route MTU off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan: Option<String>,
    /// The MTU set.
    pub mtu_bytes: u32,
    /// Each route before the change.
    pub routes: Vec<KernelRoute>,
}

impl RouteMtu {
    /// One line for alerts and logs: the first command and how many routes it took.
    pub fn summary(&self) -> String {
        let tables: std::collections::BTreeSet<&str> =
            self.routes.iter().map(KernelRoute::table_name).collect();
        format!(
            "route MTU {} on {} route(s) of {} (table {})",
            self.mtu_bytes,
            self.routes.len(),
            self.ifname,
            tables.into_iter().collect::<Vec<_>>().join(", ")
        )
    }
}

/// The site's network as `ip` changes it.
#[derive(Debug, Clone)]
pub struct SiteNet {
    ip: PathBuf,
}

impl Default for SiteNet {
    fn default() -> Self {
        Self::new("ip")
    }
}

impl SiteNet {
    /// Runs the given `ip` binary.
    pub fn new(ip: impl AsRef<Path>) -> Self {
        Self {
            ip: ip.as_ref().to_path_buf(),
        }
    }

    fn ip(&self) -> String {
        self.ip.display().to_string()
    }

    /// The command [`SiteNet::set_link_mtu`] runs.
    pub fn link_mtu_command(&self, ifname: &str, mtu_bytes: u32) -> Vec<String> {
        [
            &self.ip(),
            "link",
            "set",
            "dev",
            ifname,
            "mtu",
            &mtu_bytes.to_string(),
        ]
        .map(str::to_owned)
        .into()
    }

    /// Sets the interface's MTU.
    pub fn set_link_mtu(&self, ifname: &str, mtu_bytes: u32) -> Result<(), Error> {
        run(&self.link_mtu_command(ifname, mtu_bytes)).map(drop)
    }

    /// The interface's IPv4 routes in the main and strongSwan tables.
    pub fn routes(&self, ifname: &str) -> Result<Vec<KernelRoute>, Error> {
        let argv: Vec<String> = [&self.ip(), "-j", "-4", "route", "show", "table", "all"]
            .map(str::to_owned)
            .into_iter()
            .chain(["dev".to_owned(), ifname.to_owned()])
            .collect();
        let out = run(&argv)?;
        wan_routes(&out).map_err(|e| Error::Command {
            command: argv.join(" "),
            status: "unreadable output".into(),
            stderr: e.to_string(),
        })
    }

    /// Sets `mtu_bytes` on every route of `ifname` in the main and strongSwan tables. All or
    /// nothing: when one route refuses, the ones already changed are put back before the error
    /// is returned.
    pub fn set_route_mtu(&self, ifname: &str, mtu_bytes: u32) -> Result<RouteMtu, Error> {
        let routes = self.routes(ifname)?;
        if routes.is_empty() {
            return Err(Error::Command {
                command: format!("{} -4 route show table all dev {ifname}", self.ip()),
                status: "no routes".into(),
                stderr: format!("{ifname} carries no route in the main or strongSwan table"),
            });
        }
        let ip = self.ip();
        for (done, r) in routes.iter().enumerate() {
            if let Err(e) = run(&r.change(&ip, ifname, Some(mtu_bytes))) {
                for back in &routes[..done] {
                    let _ignored = run(&back.change(&ip, ifname, back.mtu));
                }
                return Err(e);
            }
        }
        Ok(RouteMtu {
            ifname: ifname.to_owned(),
            wan: None,
            mtu_bytes,
            routes,
        })
    }

    /// Puts every route of `set` back as it was. A route that is gone (a renderer rebuilt the
    /// routes meanwhile) has nothing to undo; the first other failure is returned after every
    /// route was tried.
    pub fn undo_route_mtu(&self, set: &RouteMtu) -> Result<(), Error> {
        let ip = self.ip();
        let mut first = None;
        for r in &set.routes {
            match run(&r.change(&ip, &set.ifname, r.mtu)) {
                Err(Error::Command { stderr, .. }) if stderr.contains("No such process") => {}
                Err(e) => {
                    first.get_or_insert(e);
                }
                Ok(_) => {}
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The commands of [`SiteNet::set_route_mtu`] (or, with `undo`, of
    /// [`SiteNet::undo_route_mtu`]) for `set`, for the record.
    pub fn route_mtu_commands(&self, set: &RouteMtu, undo: bool) -> Vec<String> {
        set.routes
            .iter()
            .map(|r| {
                let mtu = if undo { r.mtu } else { Some(set.mtu_bytes) };
                r.change(&self.ip(), &set.ifname, mtu).join(" ")
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOWN: &str = r#"[{"dst":"198.51.100.0/24","gateway":"192.0.2.1","table":"220","protocol":"static","prefsrc":"192.0.2.2","flags":[]},{"dst":"default","gateway":"192.0.2.1","metric":100,"flags":["onlink"]},{"dst":"192.0.2.0/24","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[],"metrics":[{"mtu":1400}]},{"dst":"10.9.0.0/16","gateway":"192.0.2.1","table":"77","flags":[]},{"type":"local","dst":"192.0.2.2","table":"local","protocol":"kernel","scope":"host","prefsrc":"192.0.2.2","flags":[]},{"type":"broadcast","dst":"192.0.2.255","table":"local","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]}]"#;

    #[test]
    fn only_unicast_routes_of_main_and_strongswan_tables_are_touched() {
        let routes = wan_routes(SHOWN).unwrap();
        let named: Vec<(&str, &str)> = routes
            .iter()
            .map(|r| (r.table_name(), r.dst.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                ("220", "198.51.100.0/24"),
                ("main", "default"),
                ("main", "192.0.2.0/24")
            ]
        );
        assert_eq!(routes[2].mtu, Some(1400));
        assert!(routes[1].onlink);
    }

    #[test]
    fn a_change_names_the_route_by_everything_the_kernel_keys_it_on() {
        let routes = wan_routes(SHOWN).unwrap();
        assert_eq!(
            routes[0].change("ip", "eno1", Some(1500)).join(" "),
            "ip -4 route change 198.51.100.0/24 via 192.0.2.1 dev eno1 table 220 proto static \
             src 192.0.2.2 mtu 1500"
        );
        assert_eq!(
            routes[1].change("ip", "eno1", Some(1500)).join(" "),
            "ip -4 route change default via 192.0.2.1 dev eno1 metric 100 onlink mtu 1500"
        );
        // Undo puts the route's own MTU back, or none.
        assert_eq!(
            routes[2].change("ip", "eno1", routes[2].mtu).join(" "),
            "ip -4 route change 192.0.2.0/24 dev eno1 proto kernel scope link src 192.0.2.2 \
             mtu 1400"
        );
        assert!(
            !routes[1]
                .change("ip", "eno1", None)
                .contains(&"mtu".to_owned())
        );
    }

    #[test]
    fn a_summary_says_what_and_where() {
        let set = RouteMtu {
            ifname: "eno1".into(),
            wan: None,
            mtu_bytes: 1500,
            routes: wan_routes(SHOWN).unwrap(),
        };
        assert_eq!(
            set.summary(),
            "route MTU 1500 on 3 route(s) of eno1 (table 220, main)"
        );
        let net = SiteNet::default();
        let ends = |undo| -> Vec<String> {
            net.route_mtu_commands(&set, undo)
                .iter()
                .map(|c| c.rsplit(" dev ").next().unwrap_or_default().to_owned())
                .collect()
        };
        assert!(ends(false).iter().all(|c| c.ends_with(" mtu 1500")));
        // The undo puts each route's own MTU back (1400 on the kernel's link route), or none.
        assert_eq!(
            ends(true)
                .iter()
                .map(|c| c.contains(" mtu "))
                .collect::<Vec<_>>(),
            [false, false, true]
        );
        assert!(ends(true)[2].ends_with(" mtu 1400"), "{:?}", ends(true));
    }
}
