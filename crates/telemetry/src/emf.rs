use serde_json::{Map, Value, json};

use crate::{SampleKind, Snapshot};

/// Where EMF lines are attributed in CloudWatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmfTarget {
    /// CloudWatch namespace, e.g. `Backhaul`.
    pub namespace: String,
    /// Site name, emitted as the `site` dimension.
    pub site: String,
}

/// Encodes a snapshot as one CloudWatch Embedded Metric Format JSON line (no trailing newline).
///
/// Series with labels become their own metric name with the label folded in
/// (`upload_errors_total.server_5xx`) rather than extra dimensions, so that every metric shares
/// the single `[site]` dimension set and one line carries the whole snapshot. Non-finite values
/// are left out: CloudWatch rejects them.
pub fn emf_line(snapshot: &Snapshot, target: &EmfTarget, timestamp_ms: u64) -> String {
    let mut root = Map::new();
    let mut defs = Vec::new();
    for s in &snapshot.samples {
        if !s.value.is_finite() {
            continue;
        }
        let mut name = s.name.trim_start_matches("backhaul_").to_owned();
        for (_, v) in &s.labels {
            name.push('.');
            name.push_str(v);
        }
        let unit = if s.name.ends_with("_bytes") || s.name.ends_with("_bytes_total") {
            "Bytes"
        } else if s.name.ends_with("_seconds") {
            "Seconds"
        } else if s.name.ends_with("_percent") {
            "Percent"
        } else if s.name.ends_with("_mbps") {
            "Megabits/Second"
        } else if s.kind == SampleKind::Counter {
            "Count"
        } else {
            "None"
        };
        defs.push(json!({"Name": name, "Unit": unit}));
        root.insert(name, json!(s.value));
    }
    root.insert("site".into(), Value::String(target.site.clone()));
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": target.namespace,
                "Dimensions": [["site"]],
                "Metrics": defs,
            }]
        }),
    );
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use std::time::Instant;

    #[test]
    fn line_is_valid_emf_with_site_dimension() {
        let m = Metrics::default();
        m.uploaded_bytes.add(1024);
        m.errors.inc("stall");
        m.disk_full_projected_seconds.set(f64::INFINITY);
        let target = EmfTarget {
            namespace: "Backhaul".into(),
            site: "SITE-2847".into(),
        };
        let line = emf_line(&m.snapshot(Instant::now()), &target, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["site"], "SITE-2847");
        assert_eq!(v["uploaded_bytes_total"], 1024.0);
        assert_eq!(v["upload_errors_total.stall"], 1.0);
        assert!(v.get("spool_disk_full_projected_seconds").is_none());
        let cw = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "Backhaul");
        assert_eq!(cw["Dimensions"][0][0], "site");
        let names: Vec<&str> = cw["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"upload_goodput_mbps.10s"));
        // Every metric the definitions name is present at the root.
        for n in names {
            assert!(v.get(n).is_some(), "{n}");
        }
    }
}
