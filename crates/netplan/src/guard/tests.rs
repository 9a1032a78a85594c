//! The state machine against in-memory fakes: a kernel that keeps an MTU nobody resets (as
//! networkd does), a path that carries 1500 bytes, and a clock that moves only when slept.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::rc::Rc;

use std::path::PathBuf;

use super::*;
use crate::apply::ApplierKind;
use crate::connectivity::{ProbeKind, ProbeResult, ProbeTarget};
use crate::inventory::SiteInventory;
use crate::link::LinkState;
use crate::plan::{PlanOptions, VerifyPolicy, utc_stamp};
use crate::{SystemInterface, SystemInterfaces};

type Kernel = Rc<RefCell<BTreeMap<String, u32>>>;

const PATH_MTU: u32 = 1500;

const CURRENT: &str = "network:\n  version: 2\n  ethernets:\n    eno1:\n      addresses: [192.0.2.2/24]\n    eno2:\n      addresses: [198.51.100.1/24]\n";

/// Applies like networkd: sets what the config sets, leaves an unset MTU where it is.
struct NetworkdLike {
    kernel: Kernel,
    applied: Vec<Option<u32>>,
    fail_first: bool,
}

impl Applier for NetworkdLike {
    fn commands(&self, _t: &Resolved) -> Vec<Vec<String>> {
        vec![vec!["netplan".into(), "apply".into()]]
    }
    fn apply(&mut self, t: &Resolved) -> Result<(), Error> {
        self.applied
            .push(t.interfaces.get("eno1").and_then(|i| i.mtu_bytes));
        if std::mem::take(&mut self.fail_first) {
            return Err(Error::Command {
                command: "netplan apply".into(),
                status: "exit status: 1".into(),
                stderr: "boom".into(),
            });
        }
        let mut k = self.kernel.borrow_mut();
        for (name, i) in &t.interfaces {
            if let (Some(m), Some(cur)) = (i.mtu_bytes, k.get_mut(name)) {
                *cur = m;
            }
        }
        Ok(())
    }
}

struct FakeLinks {
    kernel: Kernel,
    restore_works: bool,
}

impl Links for FakeLinks {
    fn read(&self, names: &[String]) -> Vec<LinkState> {
        let k = self.kernel.borrow();
        names
            .iter()
            .map(|n| LinkState {
                name: n.clone(),
                present: k.contains_key(n),
                mtu_bytes: k.get(n).copied(),
                up: k.contains_key(n).then_some(true),
            })
            .collect()
    }
    fn restore_commands(&self, s: &LinkState) -> Vec<Vec<String>> {
        vec![vec![format!("set {} mtu {:?}", s.name, s.mtu_bytes)]]
    }
    fn restore(&mut self, s: &LinkState) -> Result<(), Error> {
        if let (true, Some(m)) = (self.restore_works, s.mtu_bytes) {
            self.kernel.borrow_mut().insert(s.name.clone(), m);
        }
        Ok(())
    }
}

/// Probes at eno1's MTU toward a gateway behind a 1500-byte path that drops bigger packets.
struct FakePath {
    kernel: Kernel,
}

impl Connectivity for FakePath {
    fn measure(&mut self) -> Measurement {
        let mtu = self.kernel.borrow()["eno1"];
        let probe = |kind, size: u32| ProbeResult {
            target: "gateway".into(),
            addr: Ipv4Addr::new(192, 0, 2, 1),
            kind,
            size_bytes: size,
            ok: size <= PATH_MTU,
            rtt_ms: (size <= PATH_MTU).then_some(0.3),
            note: (size > PATH_MTU).then(|| "lost".into()),
        };
        Measurement {
            at_ms: 0,
            probes: vec![probe(ProbeKind::Small, 84), probe(ProbeKind::Large, mtu)],
        }
    }
    fn describe(&self) -> Vec<String> {
        vec!["probe gateway 192.0.2.1: small 84 B, large at eno1's MTU".into()]
    }
}

struct FakeClock(u64);

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.0
    }
    fn sleep(&mut self, d: Duration) {
        self.0 += d.as_millis() as u64;
    }
}

struct Site {
    _dir: tempfile::TempDir,
    root: PathBuf,
    kernel: Kernel,
}

fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc/netplan")).unwrap();
    std::fs::write(root.join("etc/netplan/50-site.yaml"), CURRENT).unwrap();
    let kernel: Kernel = Rc::new(RefCell::new(BTreeMap::from([
        ("eno1".to_string(), 1500),
        ("eno2".to_string(), 1500),
    ])));
    Site {
        root,
        kernel,
        _dir: dir,
    }
}

fn system() -> SystemInterfaces {
    let one = |n: &str| SystemInterface {
        name: n.into(),
        mac: None,
        driver: None,
        mtu_bytes: Some(1500),
    };
    SystemInterfaces {
        interfaces: vec![one("eno1"), one("eno2")],
    }
}

/// Plans the proposal at `proposed` (a file or directory under the site's temp dir).
fn plan(site: &Site, proposed: &Path) -> (Plan, Resolved) {
    let o = PlanOptions {
        id: "20251112T081500Z-1".into(),
        root: site.root.clone(),
        proposed_path: proposed.to_path_buf(),
        state_dir: site.root.join("var/lib/backhaul/netplan-apply"),
        ticket: Some("NET-4521".into()),
        inventory: SiteInventory::default(),
        system: system(),
        targets: vec![ProbeTarget {
            name: "gateway".into(),
            addr: Ipv4Addr::new(192, 0, 2, 1),
        }],
        verify: VerifyPolicy {
            window_ms: 20_000,
            interval_ms: 1_000,
            settle_ms: 500,
            fail_after_rounds: 3,
            probe_timeout_ms: 300,
        },
        applier: ApplierKind::Netplan {
            binary: "netplan".into(),
        },
        sys_root: "/sys".into(),
        ip: "ip".into(),
    };
    let current = ConfigFiles::load_search_path(&site.root).unwrap();
    let proposed_files = ConfigFiles::load_proposed(&site.root, proposed).unwrap();
    Plan::new(o, &current, &proposed_files).unwrap()
}

fn proposal(site: &Site, name: &str, text: &str) -> PathBuf {
    let p = site.root.parent().unwrap().join("change").join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

struct Run {
    report: ApplyReport,
    progress: Vec<String>,
    applied: Vec<Option<u32>>,
}

fn run(site: &Site, plan: &Plan, restore_works: bool, fail_first_apply: bool) -> Run {
    let mut applier = NetworkdLike {
        kernel: site.kernel.clone(),
        applied: Vec::new(),
        fail_first: fail_first_apply,
    };
    let mut links = FakeLinks {
        kernel: site.kernel.clone(),
        restore_works,
    };
    let mut path = FakePath {
        kernel: site.kernel.clone(),
    };
    let mut clock = FakeClock(0);
    let mut progress = Vec::new();
    let mut sink = |l: &str| progress.push(l.to_string());
    let report = execute(
        plan,
        &mut Env {
            applier: &mut applier,
            links: &mut links,
            connectivity: &mut path,
            clock: &mut clock,
            progress: &mut sink,
        },
    );
    Run {
        report,
        progress,
        applied: applier.applied,
    }
}

fn wan_9000() -> String {
    CURRENT.replace(
        "      addresses: [192.0.2.2/24]\n",
        "      addresses: [192.0.2.2/24]\n      mtu: 9000\n",
    )
}

#[test]
fn incident_2025_11_12_wan_mtu_9000_is_rolled_back_with_the_kernel_mtu_set_explicitly() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, _) = plan(&site, &proposed);
    assert_eq!(plan.changes, ["eno1: mtu unset → 9000"]);
    let r = run(&site, &plan, true, false);
    let rep = &r.report;
    assert_eq!(rep.outcome, Outcome::RolledBack, "{}", rep.render_text());
    assert_eq!(rep.outcome.exit_code(), 2);
    // The previous config has no `mtu:` for eno1, so re-applying it leaves 9000 (networkd);
    // only the explicit restore brings 1500 back.
    assert_eq!(r.applied, [Some(9000), None]);
    assert_eq!(site.kernel.borrow()["eno1"], 1500);
    assert_eq!(rep.kernel_after_apply[0].mtu_bytes, Some(9000));
    assert_eq!(rep.kernel_after_rollback, rep.kernel_before);
    // Fail fast: settle, then three rounds one second apart, not the whole 20 s window.
    assert_eq!(rep.rounds.len(), 3);
    assert_eq!(
        rep.failed_at_ms.unwrap() - rep.applied_at_ms.unwrap(),
        2_500
    );
    assert!(rep.after_rollback.last().unwrap().all_ok());
    assert_eq!(
        std::fs::read_to_string(site.root.join("etc/netplan/50-site.yaml")).unwrap(),
        CURRENT
    );
    let text = rep.render_text();
    assert!(
        text.contains("reason: 3 verify rounds in a row worse than the baseline: large 9000 B to gateway 192.0.2.1: FAILED (lost) (passed at 1500 B before the change)"),
        "{text}"
    );
    assert!(text.contains("before: eno1: mtu 1500, up"), "{text}");
    assert!(
        text.contains("rollback at +3.0 s (0.5 s after the failure): eno1: mtu 1500, up"),
        "{text}"
    );
    assert!(
        r.progress
            .iter()
            .any(|l| l
                .ends_with("rollback proven: kernel as before, probes as good as the baseline"))
    );
}

#[test]
fn rollback_that_cannot_restore_the_kernel_is_reported_unproven() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, _) = plan(&site, &proposed);
    let r = run(&site, &plan, false, false);
    assert_eq!(r.report.outcome, Outcome::RollbackUnproven);
    assert_eq!(r.report.outcome.exit_code(), 3);
    let text = r.report.render_text();
    assert!(
        text.contains("error: kernel differs from before the change: eno1: mtu 9000, up (was eno1: mtu 1500, up)"),
        "{text}"
    );
    assert!(
        text.contains("error: probes are still worse than the baseline"),
        "{text}"
    );
}

#[test]
fn intended_camera_jumbo_change_is_verified_for_the_whole_window_and_kept() {
    let site = site();
    let text = CURRENT.replace(
        "      addresses: [198.51.100.1/24]\n",
        "      addresses: [198.51.100.1/24]\n      mtu: 9000\n",
    );
    let proposed = proposal(&site, "50-site.yaml", &text);
    let (plan, _) = plan(&site, &proposed);
    let r = run(&site, &plan, true, false);
    assert_eq!(
        r.report.outcome,
        Outcome::Kept,
        "{}",
        r.report.render_text()
    );
    assert_eq!(site.kernel.borrow()["eno2"], 9000);
    // Rounds from settle (0.5 s) to the end of the 20 s window, one per second.
    assert_eq!(r.report.rounds.len(), 20);
    assert!(r.report.rounds.iter().all(|x| x.regressions.is_empty()));
    assert_eq!(
        std::fs::read_to_string(site.root.join("etc/netplan/50-site.yaml")).unwrap(),
        text
    );
    assert!(plan.backup_dir().join("50-site.yaml").exists());
}

#[test]
fn failing_apply_command_rolls_back() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, _) = plan(&site, &proposed);
    let r = run(&site, &plan, true, true);
    assert_eq!(r.report.outcome, Outcome::RolledBack);
    assert!(
        r.report
            .reason
            .as_deref()
            .unwrap()
            .starts_with("apply failed: `netplan apply` failed"),
        "{:?}",
        r.report.reason
    );
    assert_eq!(r.report.applied_at_ms, None);
    assert_eq!(
        std::fs::read_to_string(site.root.join("etc/netplan/50-site.yaml")).unwrap(),
        CURRENT
    );
}

#[test]
fn directory_proposal_moves_missing_files_aside_and_rollback_brings_them_back() {
    let site = site();
    let other = "network:\n  version: 2\n  ethernets:\n    eno3:\n      dhcp4: true\n";
    std::fs::write(site.root.join("etc/netplan/60-other.yaml"), other).unwrap();
    proposal(&site, "40-new.yaml", &wan_9000());
    let dir = site.root.parent().unwrap().join("change");
    let (plan, _) = plan(&site, &dir);
    assert_eq!(plan.displaced, ["50-site.yaml", "60-other.yaml"]);
    assert_eq!(plan.writes.len(), 1);
    let r = run(&site, &plan, true, false);
    assert_eq!(
        r.report.outcome,
        Outcome::RolledBack,
        "{}",
        r.report.render_text()
    );
    let etc = site.root.join("etc/netplan");
    assert_eq!(yaml_names(&etc).unwrap(), ["50-site.yaml", "60-other.yaml"]);
    assert_eq!(
        std::fs::read_to_string(etc.join("60-other.yaml")).unwrap(),
        other
    );
    assert!(plan.displaced_dir().join("added/40-new.yaml").exists());
}

#[test]
fn files_edited_after_the_check_are_not_applied() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, _) = plan(&site, &proposed);
    let late = "network:\n  version: 2\n  ethernets:\n    eno2:\n      mtu: 9000\n";
    std::fs::write(site.root.join("etc/netplan/70-late.yaml"), late).unwrap();
    let r = run(&site, &plan, true, false);
    assert!(
        r.report
            .reason
            .as_deref()
            .unwrap()
            .starts_with("the files on disk changed since the check"),
        "{:?}",
        r.report.reason
    );
    // Only the previous config was applied (by the rollback), never the unchecked one.
    assert_eq!(r.applied, [None]);
    assert_eq!(r.report.outcome, Outcome::RolledBack);
}

#[test]
fn dry_run_lists_every_step_and_changes_nothing() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, target) = plan(&site, &proposed);
    let links = FakeLinks {
        kernel: site.kernel.clone(),
        restore_works: true,
    };
    let applier = NetworkdLike {
        kernel: site.kernel.clone(),
        applied: Vec::new(),
        fail_first: false,
    };
    let path = FakePath {
        kernel: site.kernel.clone(),
    };
    let text = plan.render_dry_run(&target, &applier, &links, &path);
    for want in [
        "1. lock ",
        "2. record the kernel state",
        "eno1: mtu 1500, up",
        "probe gateway 192.0.2.1",
        "3. back up every *.yaml",
        "4. write the proposed files",
        "/etc/netplan/50-site.yaml (",
        "5. apply\n    netplan apply",
        "6. verify (detached, survives the session): settle 0.5 s, then every 1.0 s for 20.0 s; 3 rounds",
        "kernel must show eno1 mtu 9000",
        "7. on failure, roll back",
        "set eno1 mtu Some(1500)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!plan.run_dir.exists());
    assert_eq!(
        std::fs::read_to_string(site.root.join("etc/netplan/50-site.yaml")).unwrap(),
        CURRENT
    );
}

#[test]
fn proposal_inside_etc_netplan_is_refused() {
    let site = site();
    let inside = site.root.join("etc/netplan/50-site.yaml");
    let o = PlanOptions {
        id: "x".into(),
        root: site.root.clone(),
        proposed_path: inside.clone(),
        state_dir: site.root.join("state"),
        ticket: None,
        inventory: SiteInventory::default(),
        system: system(),
        targets: Vec::new(),
        verify: VerifyPolicy::default(),
        applier: ApplierKind::Netplan {
            binary: "netplan".into(),
        },
        sys_root: "/sys".into(),
        ip: "ip".into(),
    };
    let files = ConfigFiles::load_search_path(&site.root).unwrap();
    let err = Plan::new(o, &files, &files).unwrap_err();
    assert!(
        err.is_input_error() && err.to_string().contains("help:"),
        "{err}"
    );
}

#[test]
fn plan_survives_the_trip_to_the_detached_verifier() {
    let site = site();
    let proposed = proposal(&site, "50-site.yaml", &wan_9000());
    let (plan, _) = plan(&site, &proposed);
    plan.save().unwrap();
    assert_eq!(Plan::load(&plan.run_dir).unwrap(), plan);
}

#[test]
fn run_ids_are_utc_stamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(1_762_935_300), "20251112T081500Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
}
