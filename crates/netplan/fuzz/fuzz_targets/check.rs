//! Arbitrary bytes → (current config, proposed config, intent, ticket) → parse, resolve, diff,
//! policy. Whatever the input, the guard must answer with a report or an error, never panic
//! or hang.
#![no_main]

use std::path::PathBuf;

use backhaul_netplan::{
    CheckInput, ConfigFiles, ETC_DIR, Intent, InventoryInterface, Role, SiteInventory,
    SourceFile, SystemInterface, SystemInterfaces, check,
};
use libfuzzer_sys::fuzz_target;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(format!("/etc/netplan/{name}")),
        dir: ETC_DIR,
        text: text.to_string(),
    }
}

fn system() -> SystemInterfaces {
    let iface = |name: &str, mac: &str, driver: &str| SystemInterface {
        name: name.into(),
        mac: Some(mac.into()),
        driver: Some(driver.into()),
        mtu_bytes: Some(1500),
    };
    SystemInterfaces {
        interfaces: vec![
            iface("eno1", "3c:ec:ef:00:00:01", "igb"),
            iface("eno2", "3c:ec:ef:00:00:02", "igb"),
            iface("enp3s0", "3c:ec:ef:00:00:03", "e1000e"),
        ],
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Sections separated by NUL: current files, proposed files, intent, ticket. Each of the
    // first two may hold several files separated by "\n---file\n", so merging is fuzzed too.
    let mut parts = text.split('\0');
    let files = |s: Option<&str>, prefix: &str| ConfigFiles {
        files: s
            .unwrap_or_default()
            .split("\n---file\n")
            .enumerate()
            .map(|(i, t)| file(&format!("{prefix}{i:02}.yaml"), t))
            .collect(),
    };
    let current = files(parts.next(), "50-");
    let proposed = files(parts.next(), "60-");
    let intent = parts.next().and_then(|s| Intent::parse(s).ok());
    if let Some(ticket) = parts.next() {
        let _ = Intent::from_ticket_text(std::path::Path::new("t.yaml"), ticket);
        let _ = Intent::from_ticket_text(std::path::Path::new("t.toml"), ticket);
    }
    let input = CheckInput {
        current,
        proposed,
        intent,
        inventory: SiteInventory {
            interfaces: vec![
                InventoryInterface {
                    name: "eno1".into(),
                    role: Role::Wan,
                    mtu_bytes: Some(1500),
                },
                InventoryInterface {
                    name: "eno2".into(),
                    role: Role::Camera,
                    mtu_bytes: None,
                },
            ],
            upstream_path_mtu_bytes: Some(1500),
            ..SiteInventory::default()
        },
        system: system(),
        netplan: None,
    };
    if let Ok(report) = check(&input) {
        let _ = report.render_text();
    }
});
