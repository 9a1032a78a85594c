//! Publishing the metrics snapshot to CloudWatch with `PutMetricData` (Query API, SigV4 for
//! the `monitoring` service). The EMF alternative needs no API call: the binary writes EMF
//! lines for the CloudWatch agent.

use std::sync::Arc;
use std::time::Duration;

use backhaul_telemetry::Datum;
use time::OffsetDateTime;

use crate::Error;
use crate::creds::CredentialsProvider;
use crate::sigv4::{self, SignRequest};
use crate::transport::{SimpleRequest, Transport, parse_url};

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
    /// Credentials.
    pub creds: CredentialsProvider,
}

/// The form body of one PutMetricData call (exposed for tests): each datum with the `site`
/// dimension first and its labels after it.
pub fn put_metric_data_body(
    data: &[Datum],
    namespace: &str,
    site: &str,
    at: OffsetDateTime,
) -> String {
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
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                sigv4::uri_encode(k, false),
                sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl CloudWatch {
    /// Sends one interval's data.
    pub async fn publish(&self, transport: &Arc<Transport>, data: &[Datum]) -> Result<(), Error> {
        let now = OffsetDateTime::now_utc();
        let body = put_metric_data_body(data, &self.namespace, &self.site, now);
        let (target, base) = parse_url(&self.endpoint)?;
        let path = if base.is_empty() {
            "/".to_owned()
        } else {
            format!("{base}/")
        };
        let payload_hash = sigv4::sha256_hex(body.as_bytes());
        let content_type = "application/x-www-form-urlencoded; charset=utf-8";
        let host = target.authority();
        let date = sigv4::amz_date(now);
        let mut headers = vec![
            ("content-type".to_owned(), content_type.to_owned()),
            ("host".to_owned(), host),
            ("x-amz-date".to_owned(), date.clone()),
        ];
        let creds = self.creds.get(transport).await?;
        if let Some(t) = creds.as_ref().and_then(|c| c.session_token()) {
            headers.push(("x-amz-security-token".to_owned(), t.to_owned()));
        }
        let mut send: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| k != "host")
            .cloned()
            .collect();
        if let Some(c) = &creds {
            let auth = sigv4::authorization(
                &SignRequest {
                    method: "POST",
                    canonical_uri: &path,
                    query: &[],
                    headers: &headers,
                    payload_hash: &payload_hash,
                    region: &self.region,
                    service: "monitoring",
                },
                c,
                now,
            );
            send.push(("authorization".to_owned(), auth));
        }
        let hdrs: Vec<(&str, &str)> = send.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let url = format!(
            "{}{}",
            self.endpoint.trim_end_matches('/'),
            if base.is_empty() { "/" } else { "" }
        );
        transport
            .simple(SimpleRequest {
                method: "POST",
                url: &url,
                headers: &hdrs,
                body: body.into_bytes(),
                timeout: Duration::from_secs(15),
            })
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
