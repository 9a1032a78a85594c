//! Reading inputs: the search path, proposed file vs directory, sysfs, unreadable files, CLI.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use backhaul_netplan::cli::NetplanCommand;
use backhaul_netplan::{ConfigFiles, Error, SystemInterfaces, parse_files};
use clap::Parser;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn eth_mtu(id: &str, mtu: u32) -> String {
    format!("network:\n  version: 2\n  ethernets:\n    {id}:\n      mtu: {mtu}\n")
}

#[test]
fn later_search_dirs_shadow_same_named_files_then_names_order_the_merge() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("lib/netplan/50-a.yaml"), &eth_mtu("eno1", 1400));
    write(&r.join("etc/netplan/50-a.yaml"), &eth_mtu("eno1", 1500));
    write(&r.join("run/netplan/10-b.yaml"), &eth_mtu("eno1", 9000));
    write(&r.join("etc/netplan/README"), "not yaml");
    let files = ConfigFiles::load_search_path(r).unwrap();
    let names: Vec<String> = files.files.iter().map(|f| f.name()).collect();
    // /run's 10-b sorts first, so etc's 50-a (which shadowed lib's) has the last word.
    assert_eq!(names, ["10-b.yaml", "50-a.yaml"]);
    assert_eq!(files.files[1].dir, "etc/netplan");
    let net = parse_files(&files.files).unwrap();
    assert_eq!(net.definitions["eno1"].mtu_bytes, Some(1500));
}

#[test]
fn proposed_file_replaces_its_namesake_and_directory_replaces_etc() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(&r.join("etc/netplan/50-a.yaml"), &eth_mtu("eno1", 1500));
    write(&r.join("etc/netplan/60-b.yaml"), &eth_mtu("eno2", 1500));
    write(&r.join("lib/netplan/10-lib.yaml"), &eth_mtu("eno3", 1500));
    let new = r.join("change/60-b.yaml");
    write(&new, &eth_mtu("eno2", 9000));
    let one = ConfigFiles::load_proposed(r, &new).unwrap();
    let net = parse_files(&one.files).unwrap();
    assert_eq!(net.definitions.len(), 3);
    assert_eq!(net.definitions["eno2"].mtu_bytes, Some(9000));
    let dir = ConfigFiles::load_proposed(r, &r.join("change")).unwrap();
    let net = parse_files(&dir.files).unwrap();
    // etc's 50-a is gone (replaced), lib's file stays.
    assert_eq!(net.definitions.keys().collect::<Vec<_>>(), ["eno2", "eno3"]);
}

#[test]
fn missing_search_dirs_are_empty_not_errors() {
    let root = tempfile::tempdir().unwrap();
    let files = ConfigFiles::load_search_path(root.path()).unwrap();
    assert!(files.files.is_empty());
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("etc/netplan/50-a.yaml");
    write(&path, &eth_mtu("eno1", 1500));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let result = ConfigFiles::load_search_path(root.path());
    // root reads 0000 files anyway; then make it unreadable another way: invalid UTF-8.
    if result.is_ok() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
    }
    let err = ConfigFiles::load_search_path(root.path()).unwrap_err();
    assert!(matches!(err, Error::Read { .. }));
    let text = err.to_string();
    assert!(text.contains("50-a.yaml"), "{text}");
    assert!(text.contains("help:"), "{text}");
}

#[test]
fn proposed_path_that_does_not_exist_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = ConfigFiles::load_proposed(root.path(), &root.path().join("nope.yaml")).unwrap_err();
    assert!(err.to_string().contains("nope.yaml"));
}

#[test]
fn reads_interfaces_from_a_sysfs_tree() {
    let sys = tempfile::tempdir().unwrap();
    let net = sys.path().join("class/net");
    write(&net.join("eno1/address"), "3C:EC:EF:00:00:01\n");
    write(&net.join("eno1/mtu"), "1500\n");
    std::fs::create_dir_all(sys.path().join("bus/pci/drivers/igb")).unwrap();
    std::os::unix::fs::symlink(
        sys.path().join("bus/pci/drivers/igb"),
        net.join("eno1/device_driver_tmp"),
    )
    .unwrap();
    std::fs::create_dir_all(net.join("eno1/device")).unwrap();
    std::fs::rename(
        net.join("eno1/device_driver_tmp"),
        net.join("eno1/device/driver"),
    )
    .unwrap();
    write(&net.join("lo/mtu"), "65536\n");
    let found = SystemInterfaces::from_sysfs(sys.path()).unwrap();
    assert_eq!(found.interfaces.len(), 2);
    let eno1 = found.by_name("eno1").unwrap();
    assert_eq!(eno1.driver.as_deref(), Some("igb"));
    assert_eq!(eno1.mtu_bytes, Some(1500));
    assert_eq!(eno1.mac.as_deref(), Some("3C:EC:EF:00:00:01"));
    assert_eq!(found.by_name("lo").unwrap().driver, None);
}

/// A runtime for commands that never probe (`check`, refused applies).
fn no_probes() -> backhaul_netplan::cli::Runtime {
    backhaul_netplan::cli::Runtime {
        self_command: Vec::new(),
        connectivity: |_, _| panic!("this test must not probe"),
    }
}

#[derive(Parser)]
struct TestCli {
    #[command(subcommand)]
    cmd: NetplanCommand,
}

#[test]
fn cli_check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base = "network:\n  version: 2\n  ethernets:\n    eno1:\n      mtu: 1500\n    eno2:\n      mtu: 1500\n";
    write(&d.join("root/etc/netplan/50-site.yaml"), base);
    write(
        &d.join("bad/50-site.yaml"),
        &base.replacen("mtu: 1500", "mtu: 9000", 1),
    );
    write(
        &d.join("good/50-site.yaml"),
        &base
            .replace("      mtu: 1500\n", "      mtu: 9000\n")
            .replacen("mtu: 9000", "mtu: 1500", 1),
    );
    write(
        &d.join("inventory.toml"),
        "gateway = \"192.0.2.1\"\nendpoint_host = \"203.0.113.10\"\npath_mtu_bytes = 1500\n[[interfaces]]\nname = \"eno1\"\nrole = \"wan\"\nmtu_bytes = 1500\n",
    );
    write(
        &d.join("ifaces.yaml"),
        "interfaces:\n  - {name: eno1}\n  - {name: eno2}\n",
    );
    write(
        &d.join("ticket.toml"),
        "ticket = \"NET-4521\"\nintent = [\"eno2.mtu=9000\"]\n",
    );
    let run = |proposed: &str, extra: &[&str]| {
        let mut args = vec![
            "t".to_string(),
            "check".into(),
            d.join(proposed).display().to_string(),
            "--root".into(),
            d.join("root").display().to_string(),
            "--inventory".into(),
            d.join("inventory.toml").display().to_string(),
            "--interfaces".into(),
            d.join("ifaces.yaml").display().to_string(),
            "--no-netplan".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        backhaul_netplan::cli::run(TestCli::try_parse_from(args).unwrap().cmd, &no_probes())
    };
    let code = |c: std::process::ExitCode| format!("{c:?}");
    let ticket = d.join("ticket.toml").display().to_string();
    assert_eq!(
        code(run("bad", &["--intent", "eno2.mtu=9000"]).unwrap()),
        code(2.into())
    );
    assert_eq!(
        code(run("good", &["--ticket", &ticket]).unwrap()),
        code(0.into())
    );
    assert_eq!(code(run("good", &["--json"]).unwrap()), code(1.into()));
    let err = run("good", &["--intent", "eno2"]).unwrap_err();
    assert!(err.is_input_error());
}
