//! A store whose keys expire, for `scripts/bench-credentials`: the embedded S3 server accepting
//! only keys from a [`KeyRing`] that have not expired, and an [`Issuer`] of those keys (the
//! container credentials protocol and `credential_process`), both on loopback.
//!
//! ```text
//! rotating_store --root DIR --lifetime-seconds N --token T
//! ```
//!
//! Prints one JSON line (`endpoint`, `bucket`, `container_uri`, `process_command`) once both
//! listen, runs until its stdin closes, then prints a JSON line of what the ring saw: keys
//! issued, requests accepted and refused as expired, and the refresh lead of every rotation
//! (the previous key's expiry minus the moment the next was issued; negative when the client
//! fetched only after its key had expired).

use std::error::Error;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use backhaul_upload::embedded::{EmbeddedS3, StoreQuirks};
use backhaul_upload::test_creds::{IssuedKey, Issuer, KeyRing};

const BUCKET: &str = "site-video";

struct Args {
    root: PathBuf,
    lifetime: Duration,
    token: String,
}

fn parse_args() -> Result<Args, String> {
    let usage = "usage: rotating_store --root DIR --lifetime-seconds N --token T";
    let (mut root, mut lifetime, mut token) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {usage}"))?;
        match flag.as_str() {
            "--root" => root = Some(PathBuf::from(value)),
            "--lifetime-seconds" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|e| format!("--lifetime-seconds {value}: {e}"))?;
                lifetime = Some(Duration::from_secs(secs));
            }
            "--token" => token = Some(value),
            _ => return Err(format!("unknown argument {flag}; {usage}")),
        }
    }
    match (root, lifetime, token) {
        (Some(root), Some(lifetime), Some(token)) => Ok(Args {
            root,
            lifetime,
            token,
        }),
        _ => Err(usage.into()),
    }
}

/// Seconds from `a` to `b`, negative when `b` is earlier.
fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The lead of each rotation, in the order the keys were issued.
fn leads(mut keys: Vec<IssuedKey>) -> Vec<f64> {
    keys.sort_by_key(|k| k.issued_at);
    keys.windows(2)
        .map(|w| seconds_between(w[1].issued_at, w[0].expires_at))
        .collect()
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn round_tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn print_line(value: &serde_json::Value) -> std::io::Result<()> {
    // The script reads the first line while the store keeps running: it must not sit in a
    // buffer.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}")?;
    out.flush()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let ring = KeyRing::new(args.lifetime);
    let quirks = StoreQuirks {
        clock_offset: None,
        // A multipart upload begun with one key is completed with a later one, as on S3.
        one_principal: true,
    };
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let store = EmbeddedS3::start_with(&args.root, listen, ring.auth(), quirks).await?;
    store.create_bucket(BUCKET)?;
    let issuer = Issuer::start(ring.clone(), &args.token).await;
    print_line(&serde_json::json!({
        "endpoint": store.endpoint(),
        "bucket": BUCKET,
        "container_uri": format!("{}/container", issuer.url()),
        "process_command": issuer.process_command(),
    }))?;

    // Stdin closing is the stop signal: it needs no signal handling, and the store also stops
    // when the script that started it dies.
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await??;

    let leads: Vec<f64> = leads(ring.all_issued())
        .into_iter()
        .map(round_tenths)
        .collect();
    let mut sorted = leads.clone();
    sorted.sort_by(f64::total_cmp);
    print_line(&serde_json::json!({
        "keys_issued": ring.issued(),
        "issuer_requests": issuer.served(),
        "requests_accepted": ring.accepted(),
        "expired_refusals": ring.expired_refusals(),
        "lead_min_seconds": sorted.first(),
        "lead_median_seconds": median(&sorted).map(round_tenths),
        "lead_seconds": leads,
    }))?;
    drop(store);
    Ok(())
}
