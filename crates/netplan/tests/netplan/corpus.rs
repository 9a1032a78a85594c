//! The fixture corpus: `fixtures/<case>/{current,proposed}/*.yaml` + `case.toml` with the
//! intent, inventory, host interfaces and the expected diff and verdict. Every proposed config
//! also goes through the real `netplan generate`, which must agree with our accept/reject.

use std::path::{Path, PathBuf};

use backhaul_netplan::{
    CheckInput, ConfigFiles, DEFAULT_NETPLAN_BINARY, Intent, NetplanOutcome, SiteInventory,
    SourceFile, SystemInterface, SystemInterfaces, Verdict, check, netplan_generate,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    intent: Option<String>,
    verdict: Option<String>,
    #[serde(default)]
    diff: Vec<String>,
    block: Option<Vec<String>>,
    warnings: Option<Vec<String>>,
    error: Option<String>,
    error_at: Option<String>,
    stricter_than_netplan: Option<String>,
    #[serde(default)]
    inventory: SiteInventory,
    #[serde(default)]
    system: Vec<SystemInterface>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("case.toml").exists())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// Files of a fixture directory, with paths relative to the case (stable messages).
fn load(case_dir: &Path, sub: &str) -> ConfigFiles {
    let mut files = ConfigFiles::load_dir(&case_dir.join(sub)).unwrap();
    for f in &mut files.files {
        f.path = Path::new(sub).join(f.path.file_name().unwrap());
    }
    files
}

fn read_case(dir: &Path) -> Case {
    toml::from_str(&std::fs::read_to_string(dir.join("case.toml")).unwrap()).unwrap()
}

fn input(dir: &Path, case: &Case) -> CheckInput {
    CheckInput {
        current: load(dir, "current"),
        proposed: load(dir, "proposed"),
        intent: case.intent.as_deref().map(|i| Intent::parse(i).unwrap()),
        inventory: case.inventory.clone(),
        system: SystemInterfaces {
            interfaces: case.system.clone(),
        },
        netplan: None,
    }
}

#[test]
fn corpus_has_at_least_thirty_cases() {
    assert!(cases().len() >= 30, "only {} fixtures", cases().len());
}

#[test]
fn corpus_verdicts_and_diffs() {
    let mut failures = Vec::new();
    for (name, dir) in cases() {
        let case = read_case(&dir);
        let result = check(&input(&dir, &case));
        let problem = match (&case.error, result) {
            (Some(want), Err(err)) => {
                let text = err.to_string();
                let at = case.error_at.as_deref().unwrap_or("");
                if !text.contains(want.as_str()) || !text.starts_with(at) || !text.contains("help:")
                {
                    Some(format!(
                        "error should start with `{at}`, contain `{want}` and a help line; got:\n{text}"
                    ))
                } else {
                    None
                }
            }
            (Some(want), Ok(report)) => Some(format!(
                "expected error `{want}`, got verdict {:?}:\n{}",
                report.verdict,
                report.render_text()
            )),
            (None, Err(err)) => Some(format!("unexpected error: {err}")),
            (None, Ok(report)) => {
                let verdict = match case.verdict.as_deref() {
                    Some("pass") => Verdict::Pass,
                    Some("warn") => Verdict::Warn,
                    Some("block") => Verdict::Block,
                    other => panic!("{name}: bad verdict {other:?}"),
                };
                let diff: Vec<String> = report.changes.iter().map(ToString::to_string).collect();
                let mut p = Vec::new();
                if report.verdict != verdict {
                    p.push(format!("verdict {:?}, want {verdict:?}", report.verdict));
                }
                if diff != case.diff {
                    p.push(format!("diff {diff:#?}\nwant {:#?}", case.diff));
                }
                if let Some(block) = &case.block
                    && report.block_reasons() != *block
                {
                    p.push(format!(
                        "block {:#?}\nwant {block:#?}",
                        report.block_reasons()
                    ));
                }
                if let Some(w) = &case.warnings
                    && report.warnings() != *w
                {
                    p.push(format!("warnings {:#?}\nwant {w:#?}", report.warnings()));
                }
                (!p.is_empty()).then(|| format!("{}\n{}", p.join("\n"), report.render_text()))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("--- {name} ({}):\n{p}", case.description));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The 2025-11-12 change must be blocked with exactly two lines, the intended one must pass.
#[test]
fn incident_2025_11_12_wan_mtu_9000() {
    let dir = fixtures().join("incident_2025_11_12_wan_mtu_9000");
    let report = check(&input(&dir, &read_case(&dir))).unwrap();
    assert_eq!(report.verdict, Verdict::Block);
    assert_eq!(report.verdict.exit_code(), 2);
    assert_eq!(report.block_reasons().len(), 2, "{}", report.render_text());
    assert!(
        report.block_reasons()[0]
            .starts_with("intent names eno2, but this change sets eno1.mtu 1500 → 9000")
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["verdict"], "block");
    assert_eq!(json["findings"][0]["rule"], "outside-intent");
    assert_eq!(json["changes"][0]["interface"], "eno1");

    let good = fixtures().join("intended_eno2_jumbo");
    let report = check(&input(&good, &read_case(&good))).unwrap();
    assert_eq!(report.verdict, Verdict::Pass, "{}", report.render_text());
    assert_eq!(report.verdict.exit_code(), 0);
}

/// Whether the real netplan can be consulted. Off CI a missing netplan skips with a message; on
/// CI (which installs netplan.io) it fails, so the oracle can never be skipped silently there.
fn oracle_available(netplan: &Path) -> bool {
    if netplan.exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing on CI; .ci/run must install netplan.io",
        netplan.display()
    );
    eprintln!(
        "SKIP netplan oracle: {} is not installed (apt-get install netplan.io)",
        netplan.display()
    );
    false
}

/// Real netplan as the oracle: what we accept it accepts, what we reject it rejects (except
/// where a case documents that backhaul is deliberately stricter).
#[test]
fn corpus_agrees_with_netplan_generate() {
    let netplan = Path::new(DEFAULT_NETPLAN_BINARY);
    if !netplan.exists() {
        // Visible even with captured output: the summary line says "ignored" for nothing, so
        // say it loudly instead of passing quietly. CI installs netplan.io.
        eprintln!(
            "SKIP netplan oracle: {DEFAULT_NETPLAN_BINARY} is not installed (apt-get install netplan.io)"
        );
        return;
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, dir) in cases() {
        let case = read_case(&dir);
        let ours = check(&input(&dir, &case));
        let proposed = ConfigFiles::load_dir(&dir.join("proposed")).unwrap();
        let theirs = netplan_generate(netplan, &proposed).unwrap();
        compared += 1;
        let netplan_accepts = theirs == NetplanOutcome::Accepted;
        let ok = match (&ours, case.stricter_than_netplan.is_some()) {
            (Ok(_), _) => netplan_accepts,
            (Err(_), true) => netplan_accepts,
            (Err(_), false) => !netplan_accepts,
        };
        if !ok {
            failures.push(format!(
                "--- {name}: backhaul {}, netplan {theirs:?}",
                match &ours {
                    Ok(_) => "accepts".to_string(),
                    Err(e) => format!("rejects: {e}"),
                }
            ));
        }
    }
    assert!(compared >= 30);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn netplan_rejection_blocks_the_change() {
    let netplan = Path::new(DEFAULT_NETPLAN_BINARY);
    if !oracle_available(netplan) {
        return;
    }
    // Valid for backhaul (bond parameters are passed through), invalid for netplan.
    let text = "network:\n  version: 2\n  ethernets:\n    eno4: {}\n  bonds:\n    bond0:\n      interfaces: [eno4]\n      parameters:\n        mode: sideways\n";
    let proposed = ConfigFiles {
        files: vec![SourceFile {
            path: "proposed/50-bond.yaml".into(),
            dir: "etc/netplan",
            text: text.into(),
        }],
    };
    let report = check(&CheckInput {
        proposed,
        netplan: Some(netplan.into()),
        ..CheckInput::default()
    })
    .unwrap();
    assert_eq!(report.verdict, Verdict::Block, "{}", report.render_text());
    let reason = report.block_reasons()[0];
    assert!(reason.starts_with("netplan generate rejects"), "{reason}");
    assert!(reason.contains("proposed/50-bond.yaml:9"), "{reason}");
}
