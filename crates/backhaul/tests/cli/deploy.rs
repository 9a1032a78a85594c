//! The fleet view in `deploy/` (docs/fleet.md): the Prometheus rules pass `promtool check` and
//! their own unit tests, every `runbook_url` names a heading in this repository, and every
//! metric name the rules and the Grafana dashboards use is one a real agent serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_upload::test_util::S3Peer;

use super::support::{BUCKET, KillOnDrop, drift_site, exe, http_get};

const RULES: &str = "deploy/prometheus/backhaul.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/backhaul.rules.test.yml";
const DASHBOARDS: [&str; 2] = [
    "deploy/grafana/backhaul-fleet.json",
    "deploy/grafana/backhaul-site.json",
];

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    if Command::new("promtool").arg("--version").output().is_err() {
        panic!("promtool missing: apt-get install prometheus (scripts/test does)");
    }
    for (args, file) in [(["check", "rules"], RULES), (["test", "rules"], RULE_TESTS)] {
        let out = Command::new("promtool")
            .args(args)
            .arg(repo(file))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {} {file}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The fleet rules at fleet scale: one netplan change breaks 480 sites and another change 20,
/// each site's incident as the agent exports it (an escalating site shows two severities).
/// The recording rules must count sites, not series, per change and per kind.
#[test]
fn fleet_rules_count_500_sites_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut series = String::new();
    for n in 1..=500 {
        let change = if n <= 480 {
            "NET-4521"
        } else {
            "eno1 mtu 1500→9000"
        };
        let labels = |severity: &str| {
            format!(
                "backhaul_incident_active{{site=\"SITE-{n:04}\", kind=\"pmtu_blackhole\", \
                 severity=\"{severity}\", change=\"{change}\", job=\"backhaul\", \
                 instance=\"127.0.0.1:9464\"}}"
            )
        };
        series.push_str(&format!(
            "      - series: '{}'\n        values: '1x20'\n",
            labels("warning")
        ));
        if n % 50 == 0 {
            series.push_str(&format!(
                "      - series: '{}'\n        values: '1x20'\n",
                labels("critical")
            ));
        }
    }
    let test = format!(
        "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{series}\
         \x20   promql_expr_test:\n\
         \x20     - expr: change:backhaul_incident_active:sites\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: 'change:backhaul_incident_active:sites{{change=\"NET-4521\"}}'\n            value: 480\n\
         \x20         - labels: 'change:backhaul_incident_active:sites{{change=\"eno1 mtu 1500→9000\"}}'\n            value: 20\n\
         \x20     - expr: kind:backhaul_incident_active:count\n        eval_time: 10m\n        exp_samples:\n\
         \x20         - labels: 'kind:backhaul_incident_active:count{{kind=\"pmtu_blackhole\"}}'\n            value: 500\n",
        repo(RULES).display()
    );
    let file = dir.path().join("fleet500.test.yml");
    std::fs::write(&file, test).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// GitHub's heading anchor: lower case, spaces to hyphens, other punctuation dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn runbook_urls_point_at_headings_in_this_repository() {
    let mut checked = 0;
    for line in read(RULES).lines() {
        let Some(url) = line.trim().strip_prefix("runbook_url: ") else {
            continue;
        };
        let (file, want) = url
            .split_once('#')
            .unwrap_or_else(|| panic!("{url}: no #section"));
        let doc = read(file);
        assert!(
            doc.lines()
                .filter_map(|l| l.strip_prefix('#'))
                .any(|h| anchor(h.trim_start_matches('#')) == want),
            "{url}: {file} has no heading whose anchor is #{want}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} runbook_url lines in {RULES}");
}

/// Names with `backhaul_` in them: a colon makes one a recording rule's output
/// (`site:backhaul_backlog_bytes:sum`), otherwise it is a metric the agent must serve.
fn names_in(text: &str, metrics: &mut BTreeSet<String>, recorded: &mut BTreeSet<String>) {
    for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if token.contains(':') && token.contains("backhaul_") {
            recorded.insert(token.to_owned());
        } else if token.starts_with("backhaul_") {
            metrics.insert(token.to_owned());
        }
    }
}

/// Every query string in a Grafana dashboard: panel targets' `expr`, template variables'
/// `query` (a string or an object holding one) and `definition`.
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone());
                    }
                    _ => dashboard_queries(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| dashboard_queries(x, out)),
        _ => {}
    }
}

/// Family names in a Prometheus text exposition: from `# HELP`/`# TYPE` lines (a family
/// announced without samples counts) and from sample lines.
fn served(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| {
            if let Some(rest) = l
                .strip_prefix("# TYPE ")
                .or_else(|| l.strip_prefix("# HELP "))
            {
                rest.split_whitespace().next()
            } else if l.is_empty() || l.starts_with('#') {
                None
            } else {
                l.split(['{', ' ']).next()
            }
        })
        .map(str::to_owned)
        .collect()
}

/// The agent prints a family only once it has a series. `backhaul_upload_errors_total` needs
/// a failed request and `backhaul_incident_active` an open incident. So the agent gets a wrong
/// secret (auth errors from its first HeadBucket) and loopback declared as a 1500-byte WAN
/// (`mtu_drift`, as in alerts.rs): both are real events, not faked series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_dashboards_use_only_metrics_a_real_agent_serves() {
    let mut metrics = BTreeSet::new();
    let mut recorded = BTreeSet::new();
    let rules = read(RULES);
    for file in [RULES, RULE_TESTS] {
        // Comments may name what the agent does not export; they are not queries.
        for line in read(file).lines() {
            if !line.trim_start().starts_with('#') {
                names_in(line, &mut metrics, &mut recorded);
            }
        }
    }
    for file in DASHBOARDS {
        let dashboard: serde_json::Value =
            serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let mut queries = Vec::new();
        dashboard_queries(&dashboard, &mut queries);
        assert!(queries.len() >= 10, "{file}: only {queries:?}");
        for q in &queries {
            names_in(q, &mut metrics, &mut recorded);
        }
    }
    let defined: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record: "))
        .map(|n| n.trim().to_owned())
        .collect();
    let undefined: Vec<&String> = recorded.difference(&defined).collect();
    assert!(
        undefined.is_empty(),
        "recorded series used but not recorded by {RULES}: {undefined:?}"
    );
    for family in ["backhaul_upload_errors_total", "backhaul_incident_active"] {
        assert!(metrics.contains(family), "{family} not used: {metrics:?}");
    }

    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let (cfg, port) = drift_site(dir.path(), &peer, "");
    let text: String = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("secret_access_key = ") {
                "secret_access_key = \"not-the-secret\"\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&cfg, text).unwrap();
    let _agent = KillOnDrop(
        Command::new(exe())
            .args(["run", "--log-level", "warn", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let is_served = |exported: &BTreeSet<String>, name: &str| {
        exported.contains(name)
            || ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| name.strip_suffix(s).is_some_and(|b| exported.contains(b)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let (exposition, missing) = loop {
        let exposition = http_get(port, "/metrics");
        let exported = served(&exposition);
        let missing: Vec<&String> = metrics
            .iter()
            .filter(|m| !is_served(&exported, m))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break (exposition, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "used in deploy/ but not served by the agent after 60 s: {missing:?}\n/metrics:\n{exposition}"
    );
    println!("deploy/ uses {} metrics, all served", metrics.len());
}
