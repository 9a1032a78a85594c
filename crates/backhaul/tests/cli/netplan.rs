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
        "upstream_path_mtu_bytes = 1500\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 1500\n\
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
