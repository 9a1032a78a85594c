//! The plan of a guarded apply: everything decided in the foreground after the check passed,
//! saved as `plan.json` so the detached verifier runs exactly what was checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::apply::{Applier, ApplierKind};
use crate::connectivity::{Connectivity, ProbeTarget};
use crate::diff::diff;
use crate::error::Error;
use crate::inventory::SiteInventory;
use crate::link::{Links, SysfsLinks};
use crate::parse::parse_files;
use crate::report::secs;
use crate::resolve::{Resolved, SystemInterfaces, resolve};
use crate::source::{ConfigFiles, ETC_DIR};

/// Where runs are recorded unless `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/backhaul/netplan-apply";
/// Default verify window (the incident's action item: a 5-minute connectivity test).
pub const DEFAULT_VERIFY_SECONDS: u64 = 300;
/// Default pause between verify rounds.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 2;
/// Default number of failing rounds in a row that triggers the rollback.
pub const DEFAULT_FAIL_AFTER_ROUNDS: u32 = 3;
/// Default wait after applying before the kernel is read and probed (links may bounce).
pub const DEFAULT_SETTLE_SECONDS: u64 = 2;
/// Hidden directory in `etc/netplan` holding files a run moved aside. netplan reads only
/// `*.yaml` at the top of the directory, and a subdirectory stays on the same filesystem, so
/// moving there is an atomic rename that rollback can undo.
pub const DISPLACED_DIR: &str = ".backhaul-displaced";

/// Timing of the post-change test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPolicy {
    /// How long after the apply the test runs.
    pub window_ms: u64,
    /// Pause between rounds.
    pub interval_ms: u64,
    /// Wait after applying (and after rolling back) before reading the kernel and probing.
    pub settle_ms: u64,
    /// Rounds with a regression in a row that fail the change.
    pub fail_after_rounds: u32,
    /// Wait for each probe's answer.
    pub probe_timeout_ms: u64,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            window_ms: DEFAULT_VERIFY_SECONDS * 1000,
            interval_ms: DEFAULT_INTERVAL_SECONDS * 1000,
            settle_ms: DEFAULT_SETTLE_SECONDS * 1000,
            fail_after_rounds: DEFAULT_FAIL_AFTER_ROUNDS,
            probe_timeout_ms: 500,
        }
    }
}

/// A file the change writes into `etc/netplan`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFile {
    /// File name.
    pub name: String,
    /// Exactly the text that was checked.
    pub text: String,
}

/// Everything a guarded apply will do, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Run id (`20251112T081500Z-4242`).
    pub id: String,
    /// Root of the netplan tree (`/` on a host).
    pub root: PathBuf,
    /// The state directory holding the lock.
    pub state_dir: PathBuf,
    /// This run's directory.
    pub run_dir: PathBuf,
    /// The ticket, if any.
    pub ticket: Option<String>,
    /// The checked diff, one line per change.
    pub changes: Vec<String>,
    /// Every setting of every interface as the checked config leaves it, to compare with
    /// what is on disk right before applying.
    pub expected: Settings,
    /// Files written into `etc/netplan`.
    pub writes: Vec<PlannedFile>,
    /// Files of `etc/netplan` moved aside (the proposed directory does not have them).
    pub displaced: Vec<String>,
    /// Inventory, to re-diff what is on disk before applying.
    pub inventory: SiteInventory,
    /// The host's interfaces when checked, for `match:`.
    pub system: SystemInterfaces,
    /// Links whose kernel state is recorded and restored.
    pub links: Vec<String>,
    /// What the connectivity test probes.
    pub targets: Vec<ProbeTarget>,
    /// Verify timing.
    pub verify: VerifyPolicy,
    /// How to apply.
    pub applier: ApplierKind,
    /// sysfs mount, to read the links.
    pub sys_root: PathBuf,
    /// The `ip` binary, to restore the links.
    pub ip: PathBuf,
}

/// Interface → key → value ([`crate::Interface::settings`]).
pub type Settings = BTreeMap<String, BTreeMap<String, String>>;

pub(crate) fn settings_of(r: &Resolved) -> Settings {
    r.interfaces
        .iter()
        .map(|(n, i)| {
            let s = i
                .settings()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            (n.clone(), s)
        })
        .collect()
}

/// `eno2.mtu: checked unset, on disk 9000` for every setting that differs.
pub(crate) fn settings_diff(checked: &Settings, now: &Settings) -> Vec<String> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = checked.keys().chain(now.keys()).collect();
    for n in names {
        let (a, b) = (
            checked.get(n).unwrap_or(&empty),
            now.get(n).unwrap_or(&empty),
        );
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        for k in keys {
            if a.get(k) != b.get(k) {
                out.push(format!(
                    "{n}.{k}: checked {}, on disk {}",
                    a.get(k).map_or("unset", String::as_str),
                    b.get(k).map_or("unset", String::as_str)
                ));
            }
        }
    }
    out
}

/// Inputs of [`Plan::new`] besides the files.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Run id.
    pub id: String,
    /// Root of the netplan tree.
    pub root: PathBuf,
    /// The proposed file or directory as given (a directory replaces `etc/netplan`).
    pub proposed_path: PathBuf,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Ticket.
    pub ticket: Option<String>,
    /// Inventory.
    pub inventory: SiteInventory,
    /// The host's interfaces.
    pub system: SystemInterfaces,
    /// Probe targets.
    pub targets: Vec<ProbeTarget>,
    /// Verify timing.
    pub verify: VerifyPolicy,
    /// Applier.
    pub applier: ApplierKind,
    /// sysfs mount.
    pub sys_root: PathBuf,
    /// The `ip` binary.
    pub ip: PathBuf,
}

impl Plan {
    /// Plans the change from the checked configs. `proposed` must be what the check read.
    pub fn new(
        o: PlanOptions,
        current: &ConfigFiles,
        proposed: &ConfigFiles,
    ) -> Result<(Self, Resolved), Error> {
        let etc = o.root.join(ETC_DIR);
        let inside_etc = match (o.proposed_path.canonicalize(), etc.canonicalize()) {
            (Ok(p), Ok(e)) => p.starts_with(&e),
            _ => false,
        };
        if inside_etc {
            return Err(Error::Usage {
                message: format!(
                    "the proposed config {} is inside {}, whose current content is what gets backed up",
                    o.proposed_path.display(),
                    etc.display()
                ),
                help: "put the proposed file or directory elsewhere (e.g. /root/NET-4521/)".into(),
            });
        }
        if o.targets.is_empty() {
            return Err(Error::Usage {
                message: "nothing to probe: no gateway or endpoint to test the change against"
                    .into(),
                help: "pass --gateway ADDR and/or --endpoint HOST (the gateway defaults to the default route's)".into(),
            });
        }
        let writes: Vec<PlannedFile> = proposed
            .files
            .iter()
            .filter(|f| f.dir == ETC_DIR && !f.path.starts_with(&etc))
            .map(|f| PlannedFile {
                name: f.name(),
                text: f.text.clone(),
            })
            .collect();
        let displaced = if o.proposed_path.is_dir() {
            yaml_names(&etc)?
                .into_iter()
                .filter(|n| !writes.iter().any(|w| &w.name == n))
                .collect()
        } else {
            Vec::new()
        };
        let before = resolve(&parse_files(&current.files)?, &o.system)?;
        let target = resolve(&parse_files(&proposed.files)?, &o.system)?;
        let changes = diff(&before, &target, &o.inventory)
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut links: Vec<String> = Vec::new();
        for i in before.interfaces.values().chain(target.interfaces.values()) {
            if i.present && !links.contains(&i.name) {
                links.push(i.name.clone());
            }
        }
        let plan = Plan {
            run_dir: o.state_dir.join(&o.id),
            id: o.id,
            root: o.root,
            state_dir: o.state_dir,
            ticket: o.ticket,
            changes,
            expected: settings_of(&target),
            writes,
            displaced,
            inventory: o.inventory,
            system: o.system,
            links,
            targets: o.targets,
            verify: o.verify,
            applier: o.applier,
            sys_root: o.sys_root,
            ip: o.ip,
        };
        Ok((plan, target))
    }

    /// The host's links as the plan reads and restores them.
    pub fn links_seam(&self) -> SysfsLinks {
        SysfsLinks {
            sys_root: self.sys_root.clone(),
            ip: self.ip.clone(),
        }
    }

    /// `etc/netplan` under the root.
    pub fn etc_dir(&self) -> PathBuf {
        self.root.join(ETC_DIR)
    }

    /// Where the current files are copied.
    pub fn backup_dir(&self) -> PathBuf {
        self.run_dir.join("backup")
    }

    /// Where displaced and rolled-back files go.
    pub fn displaced_dir(&self) -> PathBuf {
        self.etc_dir().join(DISPLACED_DIR).join(&self.id)
    }

    /// Writes `plan.json` into the run directory (creating it).
    pub fn save(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.run_dir).map_err(|source| Error::Io {
            op: "create the run directory",
            path: self.run_dir.clone(),
            help: "pass a writable --state-dir",
            source,
        })?;
        let path = self.run_dir.join("plan.json");
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Output(std::io::Error::other(e)))?;
        std::fs::write(&path, text).map_err(|source| Error::Io {
            op: "write the plan",
            path,
            help: "check the state directory's filesystem",
            source,
        })
    }

    /// Reads `plan.json` of a run directory.
    pub fn load(run_dir: &Path) -> Result<Self, Error> {
        let path = run_dir.join("plan.json");
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            help: "the detached verifier reads the plan the foreground wrote; pass its run directory",
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| Error::State { path, source })
    }

    /// Every step the apply would take, for `--dry-run`.
    pub fn render_dry_run(
        &self,
        target: &Resolved,
        applier: &dyn Applier,
        links: &dyn Links,
        connectivity: &dyn Connectivity,
    ) -> String {
        let mut out = String::from("dry run: nothing is changed\n");
        let mut step = |title: &str, lines: Vec<String>| {
            out.push_str(title);
            out.push('\n');
            for l in lines {
                out.push_str(&format!("    {l}\n"));
            }
        };
        step(
            &format!(
                "1. lock {} (run {})",
                crate::lock::Lock::path_in(&self.state_dir).display(),
                self.id
            ),
            vec![],
        );
        let before = links.read(&self.links);
        step(
            "2. record the kernel state of the links and measure the baseline",
            before
                .iter()
                .map(ToString::to_string)
                .chain(connectivity.describe())
                .collect(),
        );
        step(
            &format!(
                "3. back up every *.yaml of {} to {}",
                self.etc_dir().display(),
                self.backup_dir().display()
            ),
            yaml_names(&self.etc_dir()).unwrap_or_default(),
        );
        let mut files: Vec<String> = self
            .writes
            .iter()
            .map(|w| {
                format!(
                    "write {} ({} bytes)",
                    self.etc_dir().join(&w.name).display(),
                    w.text.len()
                )
            })
            .collect();
        files.extend(self.displaced.iter().map(|n| {
            format!(
                "move {} to {}",
                self.etc_dir().join(n).display(),
                self.displaced_dir().display()
            )
        }));
        step("4. write the proposed files", files);
        step(
            "5. apply",
            applier
                .commands(target)
                .iter()
                .map(|c| c.join(" "))
                .collect(),
        );
        let v = &self.verify;
        step(
            &format!(
                "6. verify (detached, survives the session): settle {}, then every {} for {}; \
                 {} rounds in a row worse than the baseline roll back",
                secs(v.settle_ms),
                secs(v.interval_ms),
                secs(v.window_ms),
                v.fail_after_rounds
            ),
            self.links
                .iter()
                .filter_map(|n| {
                    let m = target.interfaces.get(n)?.mtu_bytes?;
                    Some(format!("kernel must show {n} mtu {m}"))
                })
                .collect(),
        );
        let mut rollback = vec![format!(
            "restore {} from {}, apply it",
            self.etc_dir().display(),
            self.backup_dir().display()
        )];
        for s in &before {
            rollback.extend(links.restore_commands(s).iter().map(|c| c.join(" ")));
        }
        rollback.push("re-read the kernel and re-probe to prove the rollback".into());
        step("7. on failure, roll back", rollback);
        out
    }
}

/// The `*.yaml` file names of `dir`, sorted; a missing directory has none.
pub(crate) fn yaml_names(dir: &Path) -> Result<Vec<String>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                help: "check that the directory is readable (run as root for /etc/netplan)",
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    Ok(names)
}

/// `YYYYMMDDTHHMMSSZ` of Unix seconds (UTC), for run ids that sort by time; the seconds
/// themselves past year 9999.
pub fn utc_stamp(unix_secs: u64) -> String {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| unix_secs.to_string())
}
