use std::path::Path;

use super::support::run;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// NET-4521 as it happened: meant for eno2, applied to eno1. Blocked before apply with the
/// two-line reason; the change the ticket meant passes. `netplan generate` runs as the oracle.
#[test]
fn netplan_check_blocks_the_2025_11_12_change_and_passes_the_intended_one() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let current = "network:\n  version: 2\n  ethernets:\n    eno1:\n      addresses: [192.0.2.2/24]\n      mtu: 1500\n    eno2:\n      mtu: 1500\n";
    write(&d.join("root/etc/netplan/50-site.yaml"), current);
    write(
        &d.join("bad/50-site.yaml"),
        &current.replacen("mtu: 1500", "mtu: 9000", 1),
    );
    write(
        &d.join("good/50-site.yaml"),
        &current.replace("    eno2:\n      mtu: 1500", "    eno2:\n      mtu: 9000"),
    );
    write(
        &d.join("inventory.toml"),
        "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\npath_mtu_bytes = 1500\n\
         [[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 1500\n\
         [[interfaces]]\nname = \"eno2\"\nrole = \"camera\"\nmtu_bytes = 9000\n",
    );
    write(
        &d.join("ifaces.yaml"),
        "interfaces:\n  - {name: eno1}\n  - {name: eno2}\n",
    );
    let check = |proposed: &str| {
        let (p, root, inv, ifs) = (
            d.join(proposed),
            d.join("root"),
            d.join("inventory.toml"),
            d.join("ifaces.yaml"),
        );
        run(&[
            "netplan",
            "check",
            p.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--inventory",
            inv.to_str().unwrap(),
            "--interfaces",
            ifs.to_str().unwrap(),
            "--intent",
            "eno2.mtu=9000",
        ])
    };
    let out = check("bad");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("eno1 (wan): mtu 1500 → 9000"), "{text}");
    let blocks: Vec<&str> = text.lines().filter(|l| l.starts_with("block:")).collect();
    assert_eq!(blocks.len(), 2, "{text}");
    assert!(
        blocks[0].contains(
            "intent names eno2, but this change sets eno1.mtu 1500 → 9000; eno1 is the WAN link"
        ),
        "{text}"
    );

    let out = check("good");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn packaging(script: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../packaging")
        .join(script)
}

/// The site wrapper runs the guard with the declared intent, refuses a change that declares
/// none, and stops the 2025-11-12 change before anything is locked, written or applied.
#[test]
fn netplan_guarded_wrapper_refuses_undeclared_and_blocked_changes() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let current = "network:\n  version: 2\n  ethernets:\n    eno1:\n      mtu: 1500\n    eno2:\n      mtu: 1500\n";
    write(&d.join("root/etc/netplan/50-site.yaml"), current);
    write(
        &d.join("bad/50-site.yaml"),
        &current.replacen("mtu: 1500", "mtu: 9000", 1),
    );
    write(
        &d.join("inventory.toml"),
        "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\npath_mtu_bytes = 1500\n\
         [[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 1500\n",
    );
    write(
        &d.join("ifaces.yaml"),
        "interfaces:\n  - {name: eno1}\n  - {name: eno2}\n",
    );
    write(
        &d.join("NET-4521.toml"),
        "ticket = \"NET-4521\"\nintent = [\"eno2.mtu=9000\"]\n",
    );
    let guarded = |args: &[&str]| {
        std::process::Command::new(packaging("netplan-guarded"))
            .env("BACKHAUL_BIN", super::support::exe())
            .env("NETPLAN_GUARD_ENV", d.join("no-such.env"))
            .env("BACKHAUL_NETPLAN_ROOT", d.join("root"))
            .env("BACKHAUL_NETPLAN_INVENTORY", d.join("inventory.toml"))
            .env("BACKHAUL_NETPLAN_INTERFACES", d.join("ifaces.yaml"))
            .env("BACKHAUL_NETPLAN_STATE_DIR", d.join("state"))
            .env("BACKHAUL_NETPLAN_NO_NETPLAN", "true")
            .args(args)
            .output()
            .unwrap()
    };
    let bad = d.join("bad");
    let out = guarded(&[bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --ticket or --intent"));

    let ticket = d.join("NET-4521.toml");
    for mode in [&["--check"][..], &[]] {
        let mut args = mode.to_vec();
        args.extend([bad.to_str().unwrap(), "--ticket", ticket.to_str().unwrap()]);
        let out = guarded(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{mode:?}: {text}");
        assert!(text.contains("NET-4521: BLOCKED: do not apply"), "{text}");
    }
    assert!(text_of(&d.join("root/etc/netplan/50-site.yaml")) == current);
    assert!(!d.join("state/pending.json").exists());
}

fn text_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// The `netplan` shim passes everything through except the unguarded `apply` and `try`.
#[test]
fn netplan_shim_stops_unguarded_apply_and_passes_the_rest() {
    let shim = |args: &[&str]| {
        std::process::Command::new(packaging("netplan-shim"))
            .env("NETPLAN_REAL", "/bin/echo")
            .args(args)
            .output()
            .unwrap()
    };
    for sub in [&["apply"][..], &["--debug", "try"]] {
        let out = shim(sub);
        assert_eq!(out.status.code(), Some(2), "{sub:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("netplan-guarded PROPOSED --ticket"));
    }
    let out = shim(&["generate", "--root-dir", "/tmp/x"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "generate --root-dir /tmp/x\n"
    );
}

/// `apply --dry-run` shows every step and touches nothing; `--applier netplan` refuses a
/// root other than `/` (78); a pending apply blocks the next one with exit 75 before it checks.
#[test]
fn netplan_apply_dry_run_refusals_and_pending_lock() {
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let current = "network:\n  version: 2\n  ethernets:\n    eno1:\n      mtu: 1500\n    eno2:\n      mtu: 1500\n";
    write(&d.join("root/etc/netplan/50-site.yaml"), current);
    write(
        &d.join("good/50-site.yaml"),
        &current.replace("    eno2:\n      mtu: 1500", "    eno2:\n      mtu: 9000"),
    );
    write(
        &d.join("ifaces.yaml"),
        "interfaces:\n  - {name: eno1}\n  - {name: eno2}\n",
    );
    let (good, root, ifs, state) = (
        d.join("good"),
        d.join("root"),
        d.join("ifaces.yaml"),
        d.join("state"),
    );
    let apply = |extra: &[&str]| {
        let mut args = vec![
            "netplan",
            "apply",
            good.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--interfaces",
            ifs.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--intent",
            "eno2.mtu=9000",
            "--gateway",
            "192.0.2.1",
            "--no-netplan",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = apply(&["--applier", "ip-link", "--dry-run", "--verify", "20s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "eno2: mtu 1500 → 9000",
        "dry run: nothing is changed",
        "probe gateway 192.0.2.1: small 84 B, large DF",
        "4. write the proposed files",
        "for 20.0 s; 3 rounds in a row worse than the baseline roll back",
        "kernel must show eno2 mtu 9000",
        "7. on failure, roll back",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    assert!(!state.exists());
    assert_eq!(text_of(&d.join("root/etc/netplan/50-site.yaml")), current);

    let out = apply(&[]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use --root / with --applier netplan"));

    std::fs::create_dir_all(&state).unwrap();
    let me = std::process::id();
    write(
        &state.join("pending.json"),
        &format!(
            "{{\"id\": \"20251112T081500Z-1\", \"pid\": {me}, \"start_time\": null, \
             \"run_dir\": \"/var/lib/backhaul/netplan-apply/20251112T081500Z-1\", \
             \"ticket\": \"NET-4521\", \"verify_until_unix\": 0}}"
        ),
    );
    let out = apply(&["--applier", "ip-link"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{err}");
    assert!(
        err.contains("guarded apply 20251112T081500Z-1 is pending") && err.contains("NET-4521"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "refused before the check runs");
}
