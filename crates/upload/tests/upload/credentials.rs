//! Short-lived credentials against a store that accepts only keys that have not expired:
//! refreshed ahead of expiry during a long upload, refreshed and re-signed after a refusal,
//! and a store whose clock is 20 minutes ahead.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use backhaul_spool::test_util::{TempSpool, pattern_bytes};
use backhaul_upload::embedded::StoreQuirks;
use backhaul_upload::test_creds::{Issuer, KeyRing, embedded_keys};
use backhaul_upload::test_util::{S3Peer, uploader, uploader_with};
use backhaul_upload::{
    AwsEnv, CredentialSource, Credentials, CredentialsProvider, RunMode, RunReport, Transport,
    TransportConfig, UploadConfig,
};
use tokio::sync::watch;

use super::support::{BUCKET, config, key_of};

const MIB: usize = 1024 * 1024;

fn one_principal() -> StoreQuirks {
    StoreQuirks {
        clock_offset: None,
        one_principal: true,
    }
}

/// The bytes the embedded store holds under `key`.
fn stored(peer: &S3Peer, key: &str) -> Vec<u8> {
    let S3Peer::Embedded(s, _) = peer else {
        panic!("the embedded store only")
    };
    std::fs::read(s.root().join(BUCKET).join(key)).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Credentials from `issuer`'s container endpoint, with the token it wants in a file under
/// `dir` (rewritten at will: it is read at every call).
fn from_container(issuer: &Issuer, dir: &Path) -> (Arc<CredentialsProvider>, PathBuf) {
    let token_file = dir.join("token");
    std::fs::write(&token_file, "Bearer site-token\n").unwrap();
    let creds = Arc::new(CredentialsProvider::new(
        CredentialSource::Container,
        None,
        None,
        AwsEnv {
            container_full_uri: Some(format!("{}/container", issuer.url())),
            container_token_file: Some(token_file.clone()),
            ..AwsEnv::default()
        },
    ));
    (creds, token_file)
}

async fn drain_with(
    spool: &TempSpool,
    cfg: &UploadConfig,
    creds: Arc<CredentialsProvider>,
) -> RunReport {
    let (up, _) = uploader_with(spool, cfg, creds);
    let (_tx, rx) = watch::channel(false);
    up.run(RunMode::Drain, rx).await.unwrap()
}

/// A throttled multipart upload that lasts several lifetimes of its credentials (6 s each,
/// from a container credentials endpoint that wants its token): every request is signed with
/// credentials the store still accepts, and the chunk arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upload_outlives_several_credentials_without_one_refusal() {
    let ring = KeyRing::new(Duration::from_secs(6));
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), one_principal()).await;
    let issuer = Issuer::start(ring.clone(), "Bearer site-token").await;
    let dir = tempfile::tempdir().unwrap();
    let (creds, _) = from_container(&issuer, dir.path());
    let spool = TempSpool::new();
    let body = pattern_bytes(7, 12 * MIB);
    spool.write_chunk("cam1/long.mp4", &body);
    let mut cfg = config(&peer, &peer.endpoint());
    // 12 MiB at 640 KiB/s: about 19 s, three lifetimes.
    cfg.bandwidth_limit = "640k".into();
    let report = drain_with(&spool, &cfg, creds.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(
        report.elapsed >= Duration::from_secs(15),
        "{:?}",
        report.elapsed
    );
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/long.mp4")), body);
    assert_eq!(
        ring.expired_refusals(),
        0,
        "a request was signed with expired credentials"
    );
    assert!(
        ring.issued() >= 3,
        "refreshed ahead: {} keys",
        ring.issued()
    );
    let m = &spool.metrics;
    assert_eq!(m.errors.total(), 0, "{:?}", m.errors.series());
    assert!(m.credentials_refreshes.value("ok") >= 3);
    let status = creds.status();
    assert_eq!(
        status.source.as_deref(),
        Some("container credentials endpoint")
    );
    assert!(status.expires_at.is_some());
}

/// Instance metadata (IMDSv2) on loopback, as IAM Roles Anywhere's `aws_signing_helper serve`
/// answers it, with keys that live 4 s: the upload outlives several and none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_metadata_credentials_are_refreshed_ahead_as_well() {
    let ring = KeyRing::new(Duration::from_secs(4));
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), one_principal()).await;
    let issuer = Issuer::start(ring.clone(), "unused").await;
    let creds = Arc::new(CredentialsProvider::new(
        CredentialSource::Imds,
        None,
        None,
        AwsEnv {
            imds_endpoint: Some(issuer.url()),
            ..AwsEnv::default()
        },
    ));
    let spool = TempSpool::new();
    let body = pattern_bytes(14, 6 * MIB);
    spool.write_chunk("cam1/imds.mp4", &body);
    let mut cfg = config(&peer, &peer.endpoint());
    // 6 MiB at 512 KiB/s: 12 s, three lifetimes.
    cfg.bandwidth_limit = "512k".into();
    let report = drain_with(&spool, &cfg, creds.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/imds.mp4")), body);
    assert_eq!(ring.expired_refusals(), 0);
    assert!(
        ring.issued() >= 3,
        "refreshed ahead: {} keys",
        ring.issued()
    );
    assert_eq!(creds.status().source.as_deref(), Some("instance metadata"));
}

/// The background refresher is retrying a refused endpoint when a request's own refresh gets
/// new credentials: the refresher takes their refresh time instead of asking the endpoint
/// again when its backoff ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_by_a_request_ends_the_background_retries() {
    let ring = KeyRing::new(Duration::from_secs(20));
    let issuer = Issuer::start(ring.clone(), "Bearer site-token").await;
    let dir = tempfile::tempdir().unwrap();
    let (creds, token_file) = from_container(&issuer, dir.path());
    let transport = Arc::new(Transport::new(TransportConfig::default()));
    let first = creds
        .get(&transport, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let (_stop, shutdown) = watch::channel(false);
    tokio::spawn(creds.clone().keep_fresh(transport.clone(), shutdown));
    std::fs::write(&token_file, "Bearer revoked\n").unwrap();
    // The refresh ahead falls 8-10 s into the 20 s life; it is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while creds.status().last_error.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no refresh ahead");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(&token_file, "Bearer site-token\n").unwrap();
    let second = creds
        .get(&transport, Duration::from_secs(15))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(second.access_key_id, first.access_key_id);
    let asked = issuer.served();
    // The refresher's backoff after one failure is 2 s; the new keys are due at 8-10 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        issuer.served(),
        asked,
        "the refresher asked again with fresh credentials in hand"
    );
    assert_eq!(creds.status().last_error, None);
}

/// Keys revoked under a running upload (`ExpiredToken`): the agent takes new ones from its
/// `credential_process` and sends the refused request again; no chunk is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_is_replaced_from_credential_process_and_the_request_sent_again() {
    let ring = KeyRing::new(Duration::from_secs(3600));
    let peer = S3Peer::embedded_with(BUCKET, ring.auth(), one_principal()).await;
    let issuer = Issuer::start(ring.clone(), "unused").await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config");
    std::fs::write(
        &config_file,
        format!(
            "[profile site]\ncredential_process = {}\n",
            issuer.process_command()
        ),
    )
    .unwrap();
    let creds = Arc::new(CredentialsProvider::new(
        CredentialSource::Process,
        None,
        Some("site".into()),
        AwsEnv {
            config_file: Some(config_file),
            ..AwsEnv::default()
        },
    ));
    let spool = TempSpool::new();
    let body = pattern_bytes(8, 12 * MIB);
    spool.write_chunk("cam1/revoked.mp4", &body);
    let mut cfg = config(&peer, &peer.endpoint());
    cfg.bandwidth_limit = "2M".into();
    let (up, _) = uploader_with(&spool, &cfg, creds.clone());
    let (_tx, rx) = watch::channel(false);
    let run = tokio::spawn(async move { up.run(RunMode::Drain, rx).await.unwrap() });
    tokio::time::sleep(Duration::from_secs(2)).await;
    ring.expire_all();
    let report = run.await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/revoked.mp4")), body);
    assert!(ring.expired_refusals() >= 1, "the revocation was never met");
    let m = &spool.metrics;
    assert!(m.errors.value("resigned") >= 1, "{:?}", m.errors.series());
    assert_eq!(m.errors.value("auth"), 0, "{:?}", m.errors.series());
    assert!(ring.issued() >= 2);
    assert_eq!(
        creds.status().source.as_deref(),
        Some("credential_process of profile site")
    );
}

/// The store's clock is 20 minutes ahead: the first refusal teaches the agent the store's time,
/// every later request is signed at it, and the skew is exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_twenty_minutes_ahead_is_uploaded_to_after_one_re_sign() {
    let offset = Arc::new(AtomicI64::new(20 * 60));
    let quirks = StoreQuirks {
        clock_offset: Some(offset),
        one_principal: false,
    };
    let peer = S3Peer::embedded_with(BUCKET, embedded_keys(), quirks).await;
    let spool = TempSpool::new();
    let body = pattern_bytes(9, 6 * MIB);
    spool.write_chunk("cam1/skew.mp4", &body);
    let cfg = config(&peer, &peer.endpoint());
    let (up, _) = uploader(&spool, &cfg, peer.credentials());
    let (_tx, rx) = watch::channel(false);
    let report = up.run(RunMode::Drain, rx).await.unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(stored(&peer, &key_of(&spool, "cam1/skew.mp4")), body);
    let m = &spool.metrics;
    assert_eq!(m.errors.value("resigned"), 1, "{:?}", m.errors.series());
    assert_eq!(m.errors.value("clock_skew"), 0, "{:?}", m.errors.series());
    let skew = m.clock_skew_seconds.value();
    assert!((1195.0..=1205.0).contains(&skew), "{skew}");
}

/// The AWS CLI against moto, as a set-up user (moto's IAM before auth is switched on).
fn aws(endpoint: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("aws")
        .args([
            "--endpoint-url",
            endpoint,
            "--region",
            "us-east-1",
            "--output",
            "text",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIASETUPSETUPSETUP0")
        .env("AWS_SECRET_ACCESS_KEY", "setup")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap_or_else(|e| panic!("aws CLI not runnable ({e}); pip install awscli"));
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Lets moto's next `n` requests through unauthenticated; every later one must be signed by
/// a key it issued, for an identity whose policy allows the action.
async fn moto_auth_after(endpoint: &str, n: u32) {
    let transport = std::sync::Arc::new(backhaul_upload::Transport::new(Default::default()));
    transport
        .simple(backhaul_upload::SimpleRequest {
            method: "POST",
            url: &format!("{endpoint}/moto-api/reset-auth"),
            headers: &[("content-type", "text/plain")],
            body: n.to_string().into_bytes(),
            timeout: Duration::from_secs(10),
        })
        .await
        .unwrap_or_else(|e| panic!("moto reset-auth: {e}"));
}

/// STS against moto with IAM auth on: a profile's `role_arn` assumed with `source_profile`'s
/// keys (signed `AssumeRole`), with `credential_source = Environment` and `EcsContainer`, and a
/// web identity token (`AssumeRoleWithWebIdentity`). moto
/// checks every signature and session token and the role's policy, so only the temporary
/// credentials STS issued can upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assume_role_and_web_identity_credentials_from_sts_upload() {
    let peer = S3Peer::moto().await;
    let ep = peer.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let role_arn = "arn:aws:iam::123456789012:role/uploader";
    let policy = |name: &str, json: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        format!("file://{}", path.display())
    };
    let trust = policy(
        "trust.json",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"*","Federated":"*"},"Action":["sts:AssumeRole","sts:AssumeRoleWithWebIdentity"]}]}"#,
    );
    let s3_all = policy(
        "s3.json",
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#,
    );
    let may_assume = policy(
        "assume.json",
        &format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"sts:AssumeRole","Resource":"{role_arn}"}}]}}"#
        ),
    );
    aws(
        &ep,
        &[
            "iam",
            "create-role",
            "--role-name",
            "uploader",
            "--assume-role-policy-document",
            &trust,
        ],
    );
    aws(
        &ep,
        &[
            "iam",
            "put-role-policy",
            "--role-name",
            "uploader",
            "--policy-name",
            "s3",
            "--policy-document",
            &s3_all,
        ],
    );
    aws(&ep, &["iam", "create-user", "--user-name", "site"]);
    aws(
        &ep,
        &[
            "iam",
            "put-user-policy",
            "--user-name",
            "site",
            "--policy-name",
            "assume",
            "--policy-document",
            &may_assume,
        ],
    );
    let keys = aws(
        &ep,
        &[
            "iam",
            "create-access-key",
            "--user-name",
            "site",
            "--query",
            "AccessKey.[AccessKeyId,SecretAccessKey]",
        ],
    );
    let (user_key, user_secret) = keys.split_once(char::is_whitespace).unwrap();
    aws(&ep, &["s3api", "create-bucket", "--bucket", BUCKET]);

    // A profile that assumes the role with the user's keys.
    std::fs::write(
        dir.path().join("credentials"),
        format!(
            "[site]\naws_access_key_id = {user_key}\naws_secret_access_key = {}\n",
            user_secret.trim()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "[profile uploader]\nrole_arn = {role_arn}\nsource_profile = site\nduration_seconds = 900\n\
             [profile from-env]\nrole_arn = {role_arn}\ncredential_source = Environment\n\
             [profile from-container]\nrole_arn = {role_arn}\ncredential_source = EcsContainer\n"
        ),
    )
    .unwrap();
    let env = AwsEnv {
        shared_credentials_file: Some(dir.path().join("credentials")),
        config_file: Some(dir.path().join("config")),
        sts_endpoint: Some(ep.clone()),
        ..AwsEnv::default()
    };
    moto_auth_after(&ep, 0).await;
    let spool = TempSpool::new();
    let body = pattern_bytes(11, 6 * MIB);
    spool.write_chunk("cam1/role.mp4", &body);
    let mut cfg = config(&peer, &ep);
    cfg.create_bucket = false;
    let assumed = Arc::new(CredentialsProvider::new(
        CredentialSource::AssumeRole,
        None,
        Some("uploader".into()),
        env.clone(),
    ));
    let report = drain_with(&spool, &cfg, assumed.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.chunks, 1);
    let status = assumed.status();
    assert_eq!(
        status.source.as_deref(),
        Some(format!("assume-role of profile uploader ({role_arn})").as_str())
    );
    assert!(status.access_key_id.is_some_and(|k| k != user_key));
    assert!(status.expires_at.is_some());

    // The store does check: the user's own keys may assume the role, not upload.
    let spool = TempSpool::new();
    spool.write_chunk("cam1/user.mp4", &pattern_bytes(13, MIB));
    let user = Arc::new(CredentialsProvider::fixed(Credentials::new(
        user_key,
        user_secret.trim(),
        None,
    )));
    let report = drain_with(&spool, &cfg, user).await;
    assert_eq!(
        report.failed.len(),
        1,
        "moto refuses keys without an S3 policy"
    );

    // The role assumed with the keys of `credential_source` rather than a source profile: the
    // environment's, then a container endpoint's.
    let user_keys = Issuer::fixed(user_key, user_secret.trim(), "Bearer site-token").await;
    let sources = [
        (
            "from-env",
            AwsEnv {
                access_key_id: Some(user_key.into()),
                secret_access_key: Some(user_secret.trim().into()),
                ..env.clone()
            },
        ),
        (
            "from-container",
            AwsEnv {
                container_full_uri: Some(format!("{}/container", user_keys.url())),
                container_token: Some("Bearer site-token".into()),
                ..env.clone()
            },
        ),
    ];
    for (n, (profile, env)) in sources.into_iter().enumerate() {
        let spool = TempSpool::new();
        spool.write_chunk(
            &format!("cam1/{profile}.mp4"),
            &pattern_bytes(20 + n as u64, MIB),
        );
        let assumed = Arc::new(CredentialsProvider::new(
            CredentialSource::AssumeRole,
            None,
            Some(profile.into()),
            env,
        ));
        let report = drain_with(&spool, &cfg, assumed.clone()).await;
        assert!(report.failed.is_empty(), "{profile}: {:?}", report.failed);
        assert_eq!(report.chunks, 1, "{profile}");
        assert!(
            assumed
                .status()
                .access_key_id
                .is_some_and(|k| k != user_key),
            "{profile}: uploaded with the role's keys"
        );
    }
    assert!(
        user_keys.served() >= 1,
        "the role was assumed with the container endpoint's key"
    );

    // The web identity call is unsigned: moto lets exactly that one through.
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzaXRlIn0.").unwrap();
    let web = Arc::new(CredentialsProvider::new(
        CredentialSource::WebIdentity,
        None,
        None,
        AwsEnv {
            web_identity_token_file: Some(token),
            role_arn: Some(role_arn.into()),
            role_session_name: Some("SITE-TEST".into()),
            sts_endpoint: Some(ep.clone()),
            ..AwsEnv::default()
        },
    ));
    moto_auth_after(&ep, 1).await;
    let spool = TempSpool::new();
    spool.write_chunk("cam1/web.mp4", &pattern_bytes(12, MIB));
    let report = drain_with(&spool, &cfg, web.clone()).await;
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(report.chunks, 1);
    assert_eq!(
        web.status().source.as_deref(),
        Some(format!("web identity ({role_arn})").as_str())
    );
}
