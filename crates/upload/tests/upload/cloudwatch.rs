use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use backhaul_telemetry::{CounterDeltas, Metrics};
use backhaul_upload::cloudwatch::CloudWatch;
use backhaul_upload::test_util::S3Peer;
use backhaul_upload::{CredentialsProvider, Transport};

/// What the AWS CLI's GetMetricStatistics reads back for one metric and its dimensions: the
/// (Sum, SampleCount) of the last ten minutes.
fn read_back(moto: &S3Peer, metric: &str, dimensions: &[&str]) -> (f64, f64) {
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let mut args = vec![
        "cloudwatch".to_owned(),
        "get-metric-statistics".into(),
        "--endpoint-url".into(),
        moto.endpoint(),
        "--region".into(),
        "eu-west-1".into(),
        "--namespace".into(),
        "BackhaulTest".into(),
        "--metric-name".into(),
        metric.into(),
        "--start-time".into(),
        fmt(now - time::Duration::minutes(5)),
        "--end-time".into(),
        fmt(now + time::Duration::minutes(5)),
        "--period".into(),
        "600".into(),
        "--statistics".into(),
        "Sum".into(),
        "SampleCount".into(),
        "--output".into(),
        "json".into(),
        "--dimensions".into(),
    ];
    args.extend(dimensions.iter().map(|d| (*d).to_owned()));
    let out = Command::new("aws")
        .args(&args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("aws CLI not runnable; pip install awscli");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aws: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let points = v["Datapoints"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{metric} {dimensions:?}: {stdout}");
    (
        points[0]["Sum"].as_f64().unwrap(),
        points[0]["SampleCount"].as_f64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_metric_data_sends_counter_changes_with_labels_as_dimensions() {
    let moto = S3Peer::moto().await;
    let metrics = Metrics::default();
    let cw = CloudWatch {
        endpoint: moto.endpoint(),
        region: "eu-west-1".into(),
        namespace: "BackhaulTest".into(),
        site: "SITE-2847".into(),
        creds: Arc::new(CredentialsProvider::fixed(moto.credentials())),
    };
    let transport = Arc::new(Transport::new(Default::default()));
    let mut sent = CounterDeltas::default();
    // Two intervals: 123456 bytes and a stall, then 1000 more bytes and two 5xx.
    metrics.uploaded_bytes.add(123_456);
    metrics.errors.inc("stall");
    metrics.goodput.record(Instant::now(), 5_000_000);
    for round in 0..2 {
        if round == 1 {
            metrics.uploaded_bytes.add(1000);
            metrics.errors.add("server_5xx", 2);
        }
        let snapshot = metrics.snapshot(Instant::now());
        cw.publish(&transport, &sent.data(&snapshot)).await.unwrap();
        sent.advance(&snapshot);
    }

    // Read back with an independent client. Deltas sum to the total; a cumulative counter
    // sent as a value would sum to 123456 + 124456.
    let site = "Name=site,Value=SITE-2847";
    assert_eq!(
        read_back(&moto, "uploaded_bytes", &[site]),
        (124_456.0, 2.0)
    );
    assert_eq!(
        read_back(&moto, "upload_errors", &[site, "Name=class,Value=stall"]),
        (1.0, 2.0),
        "one stall in the first interval, none in the second"
    );
    assert_eq!(
        read_back(
            &moto,
            "upload_errors",
            &[site, "Name=class,Value=server_5xx"]
        )
        .0,
        2.0
    );
    assert!(
        read_back(
            &moto,
            "upload_goodput_mbps",
            &[site, "Name=window,Value=10s"]
        )
        .0 > 0.0
    );
}
