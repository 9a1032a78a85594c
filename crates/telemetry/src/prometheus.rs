use crate::{SampleKind, Snapshot};

/// Encodes a snapshot in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus_text(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut last_name = "";
    for s in &snapshot.samples {
        if s.name != last_name {
            let kind = match s.kind {
                SampleKind::Counter => "counter",
                SampleKind::Gauge => "gauge",
            };
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n",
                s.name, s.help, s.name, kind
            ));
            last_name = s.name;
        }
        out.push_str(s.name);
        if !s.labels.is_empty() {
            out.push('{');
            for (i, (k, v)) in s.labels.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&format!("{k}=\"{}\"", escape(v)));
            }
            out.push('}');
        }
        out.push_str(&format!(" {}\n", number(s.value)));
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Metrics;
    use std::time::Instant;

    #[test]
    fn renders_help_type_labels_and_infinity() {
        let m = Metrics::default();
        m.errors.inc("slow_down");
        m.disk_full_projected_seconds.set(f64::INFINITY);
        let text = prometheus_text(&m.snapshot(Instant::now()));
        assert!(text.contains("# TYPE backhaul_upload_errors_total counter\n"));
        assert!(text.contains("backhaul_upload_errors_total{class=\"slow_down\"} 1\n"));
        assert!(text.contains("backhaul_spool_disk_full_projected_seconds +Inf\n"));
        assert!(text.contains("backhaul_upload_goodput_mbps{window=\"10s\"} 0\n"));
        // Each family's HELP appears once even with several series.
        assert_eq!(
            text.matches("# HELP backhaul_upload_goodput_mbps").count(),
            1
        );
    }
}
