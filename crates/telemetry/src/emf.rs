use serde_json::{Map, Value, json};

use crate::Datum;

/// Where EMF lines are attributed in CloudWatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmfTarget {
    /// CloudWatch namespace, e.g. `Backhaul`.
    pub namespace: String,
    /// Site name, emitted as the `site` dimension.
    pub site: String,
}

type Dimensions<'a> = &'a [(&'static str, String)];

/// Encodes data as CloudWatch Embedded Metric Format JSON lines (no trailing newlines).
///
/// An EMF document holds one value per dimension name, so the data split into one line per
/// distinct label set: the unlabelled series share a `[site]` line, and
/// `upload_errors{class=stall}` goes into a `[site, class]` line with `class: "stall"`.
pub fn emf_lines(data: &[Datum], target: &EmfTarget, timestamp_ms: u64) -> Vec<String> {
    let mut groups: Vec<(Dimensions<'_>, Vec<&Datum>)> = Vec::new();
    for d in data {
        match groups.iter_mut().find(|(dims, _)| *dims == d.dimensions) {
            Some((_, members)) => members.push(d),
            None => groups.push((&d.dimensions, vec![d])),
        }
    }
    groups
        .into_iter()
        .map(|(dims, members)| {
            let mut root = Map::new();
            let mut names = vec![Value::String("site".into())];
            root.insert("site".into(), Value::String(target.site.clone()));
            for (k, v) in dims {
                names.push(Value::String((*k).to_owned()));
                root.insert((*k).to_owned(), Value::String(v.clone()));
            }
            let defs: Vec<Value> = members
                .iter()
                .map(|d| json!({"Name": d.name, "Unit": d.unit}))
                .collect();
            for d in &members {
                root.insert(d.name.clone(), json!(d.value));
            }
            root.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": target.namespace,
                        "Dimensions": [names],
                        "Metrics": defs,
                    }]
                }),
            );
            Value::Object(root).to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CounterDeltas, Metrics};
    use std::time::Instant;

    #[test]
    fn lines_are_valid_emf_with_labels_as_dimensions() {
        let m = Metrics::default();
        m.uploaded_bytes.add(1024);
        m.errors.inc("stall");
        m.errors.inc("server_5xx");
        m.disk_full_projected_seconds.set(f64::INFINITY);
        let target = EmfTarget {
            namespace: "Backhaul".into(),
            site: "SITE-2847".into(),
        };
        let data = CounterDeltas::default().data(&m.snapshot(Instant::now()));
        let lines: Vec<Value> = emf_lines(&data, &target, 1_700_000_000_000)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        for v in &lines {
            assert_eq!(v["site"], "SITE-2847");
            let cw = &v["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(cw["Namespace"], "Backhaul");
            // Every dimension and every metric the definitions name is present at the root.
            for d in cw["Dimensions"][0].as_array().unwrap() {
                assert!(v.get(d.as_str().unwrap()).is_some(), "{v}");
            }
            for n in cw["Metrics"].as_array().unwrap() {
                assert!(v.get(n["Name"].as_str().unwrap()).is_some(), "{v}");
            }
        }
        let with = |dims: &[&str]| {
            lines
                .iter()
                .filter(|v| v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0] == json!(dims))
                .collect::<Vec<_>>()
        };
        let site = with(&["site"]);
        assert_eq!(site.len(), 1);
        assert_eq!(site[0]["uploaded_bytes"], 1024.0);
        assert!(site[0].get("spool_disk_full_projected_seconds").is_none());
        let by_class = with(&["site", "class"]);
        assert_eq!(by_class.len(), 2, "one line per class");
        assert!(
            by_class
                .iter()
                .all(|v| v["upload_errors"] == 1.0 && v.get("uploaded_bytes").is_none())
        );
        let windows = with(&["site", "window"]);
        assert_eq!(windows.len(), 2);
        assert!(windows.iter().any(|v| v["window"] == "10s"));
    }
}
