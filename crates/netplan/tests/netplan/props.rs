//! The parser never panics: arbitrary text, and structured YAML built from netplan's own keys.

use backhaul_netplan::{SiteInventory, SourceFile, SystemInterfaces, diff, parse_files, resolve};
use proptest::prelude::*;

/// Parses, and when that succeeds, resolves and diffs the config against itself: no stage may
/// panic, every error names the file and says what to do, and a config never differs from itself.
fn parse(text: String) {
    let file = SourceFile {
        path: "p.yaml".into(),
        dir: "etc/netplan",
        text,
    };
    match parse_files(std::slice::from_ref(&file)) {
        Ok(net) => {
            if let Ok(resolved) = resolve(&net, &SystemInterfaces::default()) {
                assert!(diff(&resolved, &resolved, &SiteInventory::default()).is_empty());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("p.yaml"), "{msg}");
            assert!(msg.contains("help:"), "{msg}");
        }
    }
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1500".to_string()),
        Just("9000".to_string()),
        Just("true".to_string()),
        Just("yes".to_string()),
        Just("eno1".to_string()),
        Just("10.0.0.1/24".to_string()),
        Just("\"3c:ec:ef:00:00:01\"".to_string()),
        Just("[eno1, eno2]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        Just("-1".to_string()),
        Just("99999999999".to_string()),
        "[a-z0-9:/.*\\[\\]{}, -]{0,12}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("mtu"),
        Just("addresses"),
        Just("routes"),
        Just("dhcp4"),
        Just("match"),
        Just("set-name"),
        Just("link"),
        Just("id"),
        Just("interfaces"),
        Just("macaddress"),
        Just("renderer"),
        Just("parameters"),
        Just("to"),
        Just("via"),
        Just("name"),
        Just("driver"),
        Just("bogus"),
    ]
    .prop_map(str::to_string)
}

fn device() -> impl Strategy<Value = String> {
    prop::collection::vec((key(), scalar()), 0..6).prop_map(|kv| {
        kv.into_iter()
            .map(|(k, v)| format!("      {k}: {v}\n"))
            .collect()
    })
}

fn document() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("ethernets"),
        Just("vlans"),
        Just("bonds"),
        Just("bridges"),
        Just("wifis"),
    ];
    let def = ("[a-z]{1,3}[0-9]?", device()).prop_map(|(id, body)| format!("    {id}:\n{body}"));
    (
        prop::option::of(0u32..4),
        prop::collection::vec((section, prop::collection::vec(def, 0..3)), 0..4),
    )
        .prop_map(|(version, sections)| {
            let mut s = String::from("network:\n");
            if let Some(v) = version {
                s.push_str(&format!("  version: {v}\n"));
            }
            for (name, defs) in sections {
                s.push_str(&format!("  {name}:\n"));
                for d in defs {
                    s.push_str(&d);
                }
            }
            s
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        parse(text);
    }

    #[test]
    fn yaml_shaped_text_never_panics(text in "[a-z:{}\\[\\], \\n\\t\"'&*!|>#-]{0,120}") {
        parse(text);
    }

    #[test]
    fn structured_netplan_never_panics(doc in document()) {
        parse(doc);
    }

    #[test]
    fn mutated_netplan_never_panics(doc in document(), cut in 0usize..400, byte in any::<u8>()) {
        let mut bytes = doc.into_bytes();
        if !bytes.is_empty() {
            let i = cut % bytes.len();
            bytes[i] = byte;
        }
        parse(String::from_utf8_lossy(&bytes).into_owned());
    }
}
