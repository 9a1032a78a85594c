//! Opt-in site remediation (`[remediation]`): once `pmtu_blackhole` is attributed to a declared
//! interface whose MTU left its declared value, set it back (`restore-declared`) or cap the
//! path MTU on its routes (`route-mtu`). Guard rails: at most once per incident; never while a
//! guarded netplan apply holds its lock (nor when the lock cannot be read); never on an
//! interface the inventory does not declare; not at all without `CAP_NET_ADMIN`. The route MTU
//! comes off again when the interface is back at its declared value, also after a restart
//! (it is recorded in `state_file`).
//!
//! [`plan`] and [`undo_due`] decide, purely; [`Remediator`] runs `ip` (a few milliseconds, on
//! the monitor's worker thread, so the result is in the rules' store before the link event it
//! causes) and returns each result as a [`Done`], which the monitor turns into an observation,
//! a log line, a metric, `/status` and an alert.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backhaul_diagnose::{Incident, Inventory, Kind, Signal};
use backhaul_netplan::{Lock, RouteMtu, SiteNet};
use serde::{Deserialize, Serialize};

use crate::config::{RemediationConfig, RemediationMode};

/// `CAP_NET_ADMIN`'s bit in the capability sets.
const CAP_NET_ADMIN: u32 = 12;

/// Pause before a failed undo is tried again.
const UNDO_RETRY: Duration = Duration::from_secs(60);

/// What to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// `ip link set dev IF mtu M`.
    LinkMtu {
        /// Interface.
        ifname: String,
        /// Its declared MTU.
        mtu_bytes: u32,
    },
    /// The path MTU on the interface's routes, or on a tunnel device's when the uploads ride
    /// one (the tunnel's inner path MTU).
    RouteMtu {
        /// Interface.
        ifname: String,
        /// The path MTU.
        mtu_bytes: u32,
        /// The tunnel device whose routes carry the uploads, if any.
        device: Option<String>,
    },
}

impl Action {
    fn ifname(&self) -> &str {
        match self {
            Action::LinkMtu { ifname, .. } | Action::RouteMtu { ifname, .. } => ifname,
        }
    }

    /// The metric label.
    fn label(&self) -> &'static str {
        match self {
            Action::LinkMtu { .. } => "restore_declared",
            Action::RouteMtu { .. } => "route_mtu",
        }
    }
}

/// What `mode` does about one incident: only a firing `pmtu_blackhole` on a declared interface
/// whose current MTU is not its declared one. `path_mtu_bytes` is the best known path MTU.
pub(super) fn plan(
    mode: RemediationMode,
    incident: &Incident,
    inventory: &Inventory,
    mtus: &HashMap<String, u32>,
    path_mtu_bytes: u32,
) -> Option<Action> {
    if incident.kind != Kind::PmtuBlackhole || incident.resolved_at_ms.is_some() {
        return None;
    }
    let declared = inventory.interface(&incident.subject)?;
    let current = *mtus.get(&declared.name)?;
    if current == declared.mtu_bytes {
        // The path shrank beyond the site: nothing local to put back.
        return None;
    }
    let ifname = declared.name.clone();
    match mode {
        RemediationMode::Off => None,
        RemediationMode::RestoreDeclared => Some(Action::LinkMtu {
            ifname,
            mtu_bytes: declared.mtu_bytes,
        }),
        RemediationMode::RouteMtu => Some(Action::RouteMtu {
            ifname,
            mtu_bytes: path_mtu_bytes.min(declared.mtu_bytes).min(current),
            device: None,
        }),
    }
}

/// Whether the route MTU in force should come off: its interface is back at its declared MTU.
pub(super) fn undo_due(set: &RouteMtu, inventory: &Inventory, mtus: &HashMap<String, u32>) -> bool {
    inventory
        .interface(set.wan.as_deref().unwrap_or(&set.ifname))
        .is_some_and(|i| mtus.get(&i.name) == Some(&i.mtu_bytes))
}

/// One finished action.
#[derive(Debug)]
pub(super) struct Done {
    /// The incident it was for (none: an undo).
    pub(super) incident: Option<String>,
    /// The metric label.
    pub(super) label: &'static str,
    /// The interface.
    pub(super) ifname: String,
    /// What was done, in words.
    pub(super) action: String,
    /// The commands, for the log.
    pub(super) commands: Vec<String>,
    /// Why it failed.
    pub(super) error: Option<String>,
    /// The route MTU now in force after it (set, or taken off: `None`).
    route: Option<Option<RouteMtu>>,
}

/// What one [`Remediator::turn`] did.
#[derive(Debug, Default)]
pub(super) struct Turn {
    /// The action it ran, if any.
    pub(super) done: Option<Done>,
    /// The metric label of a hold that is new (`backhaul_remediation_held_total`).
    pub(super) held: Option<&'static str>,
}

impl Done {
    /// The observation the rules read.
    pub(super) fn signal(&self) -> Signal {
        Signal::Remediation {
            ifname: self.ifname.clone(),
            action: self.action.clone(),
            error: self.error.clone(),
            undo: self.incident.is_none(),
        }
    }
}

/// What `/status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemediationStatus {
    /// `off`, `route-mtu`, `restore-declared`.
    pub mode: String,
    /// Why it cannot act now (no `CAP_NET_ADMIN`, a guarded apply pending), if so.
    pub held: Option<String>,
    /// The latest action: `HH:MM:SS remediated: …` or `… failed: …`.
    pub last: Option<String>,
    /// The route MTU in force, in words.
    pub route_mtu: Option<String>,
}

/// What the state file records.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    route_mtu: Option<RouteMtu>,
}

/// The remediation state the monitor keeps.
#[derive(Debug)]
pub(super) struct Remediator {
    mode: RemediationMode,
    netplan_state_dir: PathBuf,
    state_file: PathBuf,
    /// Why it can never act (no `CAP_NET_ADMIN`).
    unable: Option<String>,
    /// Incidents acted on.
    acted: HashSet<String>,
    /// Incidents whose hold was logged.
    held_logged: HashSet<String>,
    /// The route MTU in force.
    route: Option<RouteMtu>,
    /// A failed undo is tried again from then on.
    undo_after: Option<Instant>,
    net: SiteNet,
    /// What `/status` shows.
    pub(super) status: RemediationStatus,
}

impl Remediator {
    /// The remediator for `cfg`.
    pub(super) fn new(cfg: &RemediationConfig) -> Self {
        let unable = (cfg.mode != RemediationMode::Off && !has_net_admin()).then(|| {
            "no CAP_NET_ADMIN: the agent alerts but changes nothing (install \
             packaging/remediation.conf as a systemd drop-in)"
                .to_owned()
        });
        if let Some(why) = &unable {
            tracing::warn!(mode = cfg.mode.as_str(), "remediation off: {why}");
        }
        let record = read_record(&cfg.state_file);
        if let Some(r) = &record.route_mtu {
            tracing::info!(route = %r.summary(), file = %cfg.state_file.display(),
                "a route MTU set before the restart is still recorded; it comes off when its interface is back at its declared MTU");
        }
        let status = RemediationStatus {
            mode: cfg.mode.as_str().to_owned(),
            held: unable.clone(),
            last: None,
            route_mtu: record.route_mtu.as_ref().map(RouteMtu::summary),
        };
        Self {
            mode: cfg.mode,
            netplan_state_dir: cfg.netplan_state_dir.clone(),
            state_file: cfg.state_file.clone(),
            unable,
            acted: HashSet::new(),
            held_logged: HashSet::new(),
            route: record.route_mtu,
            undo_after: None,
            net: SiteNet::default(),
            status,
        }
    }

    /// Looks at the open incidents and the interfaces, and runs at most one action.
    pub(super) fn turn(
        &mut self,
        incidents: &[&Incident],
        inventory: &Inventory,
        mtus: &HashMap<String, u32>,
        path_mtu_bytes: u32,
        tunnel_device: Option<&str>,
    ) -> Turn {
        if self.mode == RemediationMode::Off || self.unable.is_some() {
            return Turn::default();
        }
        if let Some(set) = self.route.clone()
            && undo_due(&set, inventory, mtus)
        {
            if self.undo_after.is_some_and(|t| Instant::now() < t) {
                return Turn::default();
            }
            let done = self.finish(tokio::task::block_in_place(|| undo(&self.net, &set)));
            return Turn {
                done: Some(done),
                held: None,
            };
        }
        let Some((incident, action)) = incidents.iter().find_map(|i| {
            if self.acted.contains(&i.id) {
                return None;
            }
            let action = match plan(self.mode, i, inventory, mtus, path_mtu_bytes)? {
                // The tunnel's packets are what is too big: its routes get the inner path MTU.
                Action::RouteMtu {
                    ifname, mtu_bytes, ..
                } => Action::RouteMtu {
                    ifname,
                    mtu_bytes,
                    device: tunnel_device.map(str::to_owned),
                },
                other @ Action::LinkMtu { .. } => other,
            };
            Some((*i, action))
        }) else {
            return Turn::default();
        };
        let pending = match Lock::read(&self.netplan_state_dir) {
            Ok(None) => None,
            Ok(Some(p)) => Some(format!(
                "guarded netplan apply {} pending (pid {}): its verifier decides",
                p.id, p.pid
            )),
            Err(e) => Some(format!("cannot read the guarded apply's lock: {e}")),
        };
        self.status.held.clone_from(&pending);
        if let Some(why) = pending {
            let new = self.held_logged.insert(incident.id.clone());
            if new {
                tracing::warn!(incident = %incident.id, "remediation held: {why}");
            }
            return Turn {
                done: None,
                held: new.then_some("netplan_pending"),
            };
        }
        self.acted.insert(incident.id.clone());
        let id = incident.id.clone();
        let done = tokio::task::block_in_place(|| run(&self.net, id, &action));
        Turn {
            done: Some(self.finish(done)),
            held: None,
        }
    }

    /// Takes a finished action's result into the state and `/status`.
    fn finish(&mut self, done: Done) -> Done {
        let at = backhaul_diagnose::TimeBase::UNIX.hms(crate::probe::now_ms());
        self.undo_after =
            (done.incident.is_none() && done.error.is_some()).then(|| Instant::now() + UNDO_RETRY);
        if let Some(route) = &done.route {
            self.route.clone_from(route);
            self.status.route_mtu = route.as_ref().map(RouteMtu::summary);
            write_record(
                &self.state_file,
                &Record {
                    route_mtu: route.clone(),
                },
            );
        }
        self.status.last = Some(match &done.error {
            None => format!("{at} remediated: {}", done.action),
            Some(e) => format!("{at} remediation failed: {}: {e}", done.action),
        });
        done
    }
}

fn undo(net: &SiteNet, set: &RouteMtu) -> Done {
    let error = net.undo_route_mtu(set).err().map(|e| e.to_string());
    Done {
        incident: None,
        label: "undo_route_mtu",
        ifname: set.ifname.clone(),
        action: format!("{} taken off", set.summary()),
        commands: net.route_mtu_commands(set, true),
        // A failed undo keeps the route MTU on record and is tried again after a pause.
        route: Some(error.is_some().then(|| set.clone())),
        error,
    }
}

fn run(net: &SiteNet, incident: String, action: &Action) -> Done {
    let (words, commands, result) = match action {
        Action::LinkMtu { ifname, mtu_bytes } => {
            let command = net.link_mtu_command(ifname, *mtu_bytes).join(" ");
            let result = net.set_link_mtu(ifname, *mtu_bytes).map(|()| None);
            (command.clone(), vec![command], result)
        }
        Action::RouteMtu {
            ifname,
            mtu_bytes,
            device,
        } => {
            let on = device.as_deref().unwrap_or(ifname);
            match net.set_route_mtu(on, *mtu_bytes) {
                Ok(mut set) => {
                    set.wan = device.as_ref().map(|_| ifname.clone());
                    (
                        set.summary(),
                        net.route_mtu_commands(&set, false),
                        Ok(Some(Some(set))),
                    )
                }
                Err(e) => (
                    format!("route MTU {mtu_bytes} on the routes of {on}"),
                    Vec::new(),
                    Err(e),
                ),
            }
        }
    };
    let (route, error) = match result {
        Ok(route) => (route, None),
        Err(e) => (None, Some(e.to_string())),
    };
    Done {
        incident: Some(incident),
        label: action.label(),
        ifname: action.ifname().to_owned(),
        action: words,
        commands,
        error,
        route,
    }
}

/// Whether this process holds `CAP_NET_ADMIN` in its effective set.
fn has_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
            u64::from_str_radix(hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

fn read_record(path: &Path) -> Record {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e,
                "remediation record unreadable; no route MTU is known to be in force");
            Record::default()
        }),
        Err(_) => Record::default(),
    }
}

/// Writes the record through a temporary file, so a crash leaves the old one or the new one.
fn write_record(path: &Path, record: &Record) {
    let tmp = path.with_extension("json.tmp");
    let result = serde_json::to_vec_pretty(record)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&tmp, bytes))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e,
            "cannot record the route MTU in force: a restart will not take it off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::tests::inventory;

    fn hole(subject: &str) -> Incident {
        Incident {
            id: format!("pmtu_blackhole:{subject}:1"),
            kind: Kind::PmtuBlackhole,
            subject: subject.into(),
            severity: backhaul_diagnose::Severity::Warning,
            started_at_ms: 1,
            updated_at_ms: 1,
            resolved_at_ms: None,
            root_cause: String::new(),
            evidence: Vec::new(),
            fix: Vec::new(),
            runbook: Kind::PmtuBlackhole.runbook().to_owned(),
            flapping: None,
            held_since_ms: None,
            change: None,
        }
    }

    fn mtus(eno1: u32) -> HashMap<String, u32> {
        [("eno1".to_owned(), eno1), ("eno2".to_owned(), 9000)].into()
    }

    #[test]
    fn each_mode_fixes_the_drifted_interface_its_own_way() {
        let inv = inventory();
        assert_eq!(
            plan(
                RemediationMode::RestoreDeclared,
                &hole("eno1"),
                &inv,
                &mtus(9000),
                1500
            ),
            Some(Action::LinkMtu {
                ifname: "eno1".into(),
                mtu_bytes: 1500
            })
        );
        // The route MTU follows the measured path, never above the declared MTU.
        assert_eq!(
            plan(
                RemediationMode::RouteMtu,
                &hole("eno1"),
                &inv,
                &mtus(9000),
                1400
            ),
            Some(Action::RouteMtu {
                ifname: "eno1".into(),
                mtu_bytes: 1400,
                device: None,
            })
        );
        assert_eq!(
            plan(
                RemediationMode::RouteMtu,
                &hole("eno1"),
                &inv,
                &mtus(9000),
                8000
            ),
            Some(Action::RouteMtu {
                ifname: "eno1".into(),
                mtu_bytes: 1500,
                device: None,
            })
        );
        assert_eq!(
            plan(RemediationMode::Off, &hole("eno1"), &inv, &mtus(9000), 1500),
            None
        );
    }

    #[test]
    fn nothing_is_touched_without_a_local_drift_on_a_declared_interface() {
        let inv = inventory();
        let restore = RemediationMode::RestoreDeclared;
        // The path shrank beyond the site: eno1 is at its declared MTU.
        assert_eq!(plan(restore, &hole("eno1"), &inv, &mtus(1500), 1400), None);
        // An interface the inventory does not declare, or not seen yet.
        assert_eq!(
            plan(restore, &hole("uplink"), &inv, &mtus(9000), 1500),
            None
        );
        assert_eq!(
            plan(restore, &hole("eno1"), &inv, &HashMap::new(), 1500),
            None
        );
        // Other kinds, and a resolved black hole.
        let mut drift = hole("eno1");
        drift.kind = Kind::MtuDrift;
        assert_eq!(plan(restore, &drift, &inv, &mtus(9000), 1500), None);
        let mut over = hole("eno1");
        over.resolved_at_ms = Some(2);
        assert_eq!(plan(restore, &over, &inv, &mtus(9000), 1500), None);
    }

    #[test]
    fn the_route_mtu_comes_off_once_the_interface_is_declared_again() {
        let inv = inventory();
        let set = RouteMtu {
            ifname: "eno1".into(),
            wan: None,
            mtu_bytes: 1500,
            routes: Vec::new(),
        };
        assert!(!undo_due(&set, &inv, &mtus(9000)));
        assert!(undo_due(&set, &inv, &mtus(1500)));
        assert!(!undo_due(&set, &inv, &HashMap::new()));
        // A tunnel device's routes come off when the WAN that broke them is restored.
        let tunnel = RouteMtu {
            ifname: "ipsec0".into(),
            wan: Some("eno1".into()),
            ..set
        };
        assert!(!undo_due(&tunnel, &inv, &mtus(9000)));
        assert!(undo_due(&tunnel, &inv, &mtus(1500)));
    }

    #[test]
    fn the_record_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("remediation.json");
        assert!(read_record(&path).route_mtu.is_none(), "no file yet");
        let set = RouteMtu {
            ifname: "eno1".into(),
            wan: None,
            mtu_bytes: 1500,
            routes: backhaul_netplan::wan_routes(
                r#"[{"dst":"default","gateway":"192.0.2.1","flags":[]}]"#,
            )
            .unwrap(),
        };
        write_record(
            &path,
            &Record {
                route_mtu: Some(set.clone()),
            },
        );
        assert_eq!(read_record(&path).route_mtu, Some(set));
        write_record(&path, &Record { route_mtu: None });
        assert!(read_record(&path).route_mtu.is_none());
    }
}
