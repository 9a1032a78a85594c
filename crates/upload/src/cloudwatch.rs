//! Publishing the metrics snapshot to CloudWatch with `PutMetricData` (Query API, SigV4 for
//! the `monitoring` service). The EMF alternative needs no API call: the binary writes EMF
//! lines for the CloudWatch agent.

use std::sync::Arc;
use std::time::Duration;

use backhaul_telemetry::Datum;
use time::OffsetDateTime;

use crate::Error;
use crate::creds::CredentialsProvider;
use crate::query::QueryCall;
use crate::transport::Transport;

/// A publish that takes longer is dropped; the next interval carries its change.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(15);

/// CloudWatch accepts at most 1000 metric data entries per call; we send far fewer.
const MAX_PER_CALL: usize = 1000;

/// Where and as whom to publish.
#[derive(Debug)]
pub struct CloudWatch {
    /// Endpoint, e.g. `https://monitoring.eu-west-1.amazonaws.com`.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Namespace.
    pub namespace: String,
    /// Site, the `site` dimension.
    pub site: String,
    /// Credentials (the uploader's: one provider refreshes them for both).
    pub creds: Arc<CredentialsProvider>,
}

/// The form body of one PutMetricData call (exposed for tests): each datum with the `site`
/// dimension first and its labels after it.
pub fn put_metric_data_body(
    data: &[Datum],
    namespace: &str,
    site: &str,
    at: OffsetDateTime,
) -> String {
    crate::query::form_body(&put_metric_data_pairs(data, namespace, site, at))
}

fn put_metric_data_pairs(
    data: &[Datum],
    namespace: &str,
    site: &str,
    at: OffsetDateTime,
) -> Vec<(String, String)> {
    let ts = at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut pairs = vec![
        ("Action".to_owned(), "PutMetricData".to_owned()),
        ("Version".to_owned(), "2010-08-01".to_owned()),
        ("Namespace".to_owned(), namespace.to_owned()),
    ];
    let mut i = 0;
    for d in data
        .iter()
        .filter(|d| d.value.is_finite())
        .take(MAX_PER_CALL)
    {
        i += 1;
        let p = format!("MetricData.member.{i}");
        pairs.push((format!("{p}.MetricName"), d.name.clone()));
        pairs.push((format!("{p}.Value"), d.value.to_string()));
        pairs.push((format!("{p}.Unit"), d.unit.to_owned()));
        pairs.push((format!("{p}.Timestamp"), ts.clone()));
        let dims = std::iter::once(("site", site))
            .chain(d.dimensions.iter().map(|(k, v)| (*k, v.as_str())));
        for (j, (k, v)) in dims.enumerate() {
            let j = j + 1;
            pairs.push((format!("{p}.Dimensions.member.{j}.Name"), k.to_owned()));
            pairs.push((format!("{p}.Dimensions.member.{j}.Value"), v.to_owned()));
        }
    }
    pairs
}

impl CloudWatch {
    /// Sends one interval's data.
    pub async fn publish(&self, transport: &Arc<Transport>, data: &[Datum]) -> Result<(), Error> {
        let now = OffsetDateTime::now_utc();
        let creds = self.creds.get(transport, PUBLISH_TIMEOUT).await?;
        let pairs = put_metric_data_pairs(data, &self.namespace, &self.site, now);
        crate::query::post(
            transport,
            &QueryCall {
                endpoint: &self.endpoint,
                region: &self.region,
                service: "monitoring",
                pairs: &pairs,
                timeout: PUBLISH_TIMEOUT,
            },
            creds.as_ref(),
            now,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backhaul_telemetry::{CounterDeltas, Metrics};

    #[test]
    fn body_names_every_finite_metric_with_site_then_label_dimensions() {
        let m = Metrics::default();
        m.uploaded_bytes.add(5);
        m.disk_full_projected_seconds.set(f64::INFINITY);
        let data = CounterDeltas::default().data(&m.snapshot(std::time::Instant::now()));
        let body = put_metric_data_body(
            &data,
            "Backhaul",
            "SITE-2847",
            time::macros::datetime!(2025-11-12 08:15:00 UTC),
        );
        assert!(body.starts_with("Action=PutMetricData&Version=2010-08-01&Namespace=Backhaul"));
        assert!(body.contains("MetricName=uploaded_bytes&"));
        assert!(body.contains("Dimensions.member.1.Value=SITE-2847"));
        assert!(body.contains("Dimensions.member.2.Name=window"));
        assert!(body.contains("Unit=Bytes"));
        assert!(!body.contains("spool_disk_full_projected_seconds"));
        assert!(body.contains("Timestamp=2025-11-12T08%3A15%3A00Z"));
    }
}
