use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use backhaul_telemetry::Metrics;
use backhaul_upload::cloudwatch::CloudWatch;
use backhaul_upload::test_util::S3Peer;
use backhaul_upload::{CredentialsProvider, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_metric_data_lands_in_moto_and_reads_back_with_aws_cli() {
    let moto = S3Peer::moto().await;
    let metrics = Metrics::default();
    metrics.uploaded_bytes.add(123_456);
    metrics.goodput.record(Instant::now(), 5_000_000);
    let cw = CloudWatch {
        endpoint: moto.endpoint(),
        region: "eu-west-1".into(),
        namespace: "BackhaulTest".into(),
        site: "SITE-2847".into(),
        creds: CredentialsProvider::fixed(moto.credentials()),
    };
    let transport = Arc::new(Transport::new(Default::default()));
    cw.publish(&transport, &metrics.snapshot(Instant::now()))
        .await
        .unwrap();

    // Read back with an independent client: the AWS CLI's GetMetricStatistics.
    let now = time::OffsetDateTime::now_utc();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let out = Command::new("aws")
        .args([
            "cloudwatch",
            "get-metric-statistics",
            "--endpoint-url",
            &moto.endpoint(),
            "--region",
            "eu-west-1",
            "--namespace",
            "BackhaulTest",
            "--metric-name",
            "uploaded_bytes_total",
            "--dimensions",
            "Name=site,Value=SITE-2847",
            "--start-time",
            &fmt(now - time::Duration::minutes(5)),
            "--end-time",
            &fmt(now + time::Duration::minutes(5)),
            "--period",
            "60",
            "--statistics",
            "Maximum",
            "--output",
            "json",
        ])
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
    assert_eq!(points.len(), 1, "{stdout}");
    assert_eq!(points[0]["Maximum"], 123456.0);
}
