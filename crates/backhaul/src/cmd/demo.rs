//! `backhaul demo`: the real agent, same code path as `backhaul run`, against an in-process
//! S3 server (s3s-fs) on a free loopback port, fed by synthetic cameras. No cloud account and
//! no root needed; everything lives in a temporary directory.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use backhaul_spool::synthetic::chunk_bytes;
use backhaul_telemetry::Metrics;
use backhaul_upload::RunMode;
use backhaul_upload::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, EmbeddedS3};

use crate::cli::DemoArgs;
use crate::config;
use crate::env::ProcessEnv;
use crate::logging;

const BUCKET: &str = "backhaul-demo";
const SITE: &str = "DEMO-SITE";
/// The demo gives up waiting for uploads after this long.
const PATIENCE: Duration = Duration::from_secs(300);

/// Entry point.
pub fn main(args: DemoArgs, env: ProcessEnv) -> anyhow::Result<ExitCode> {
    logging::init(&args.log, None, Some("info"), env.stderr);
    if args.chunks == 0 || args.cameras == 0 || args.chunk_mib == 0 {
        anyhow::bail!("--chunks, --cameras and --chunk-mib must be at least 1");
    }
    let rt = super::run::runtime()?;
    rt.block_on(demo(args, env))
}

fn write_chunk(spool: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let dest = spool.join(name);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = dest.with_extension("mp4.part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &dest)
}

/// Regular files below `dir` by file name, skipping dot-files and dot-directories (s3s-fs
/// metadata, the spool's journal).
fn files_below(dir: &Path) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(name, p);
            }
        }
    }
    out
}

async fn demo(args: DemoArgs, env: ProcessEnv) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::Builder::new()
        .prefix("backhaul-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = tmp.path().to_owned();
    let spool_dir = root.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("cannot create {}", spool_dir.display()))?;
    let server = EmbeddedS3::start(&root.join("s3"), "127.0.0.1:0".parse()?).await?;
    server
        .create_bucket(BUCKET)
        .context("cannot create the demo bucket")?;

    // The demo goes through the same config parser and validation as a site file.
    let text = format!(
        "[site]\nname = \"{SITE}\"\n\n[spool]\ndir = \"{}\"\nsettle_seconds = 1\n\n\
         [upload]\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\ncredentials = \"static\"\n\
         access_key_id = \"{EMBEDDED_ACCESS_KEY}\"\nsecret_access_key = \"{EMBEDDED_SECRET_KEY}\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:0\"\n",
        spool_dir.display(),
        server.endpoint()
    );
    let cfg = config::parse(Path::new("<demo config>"), &text)?;
    let chunk_bytes_len = args.chunk_mib as usize * 1024 * 1024;
    let total_bytes = chunk_bytes_len as u64 * u64::from(args.chunks);
    println!(
        "backhaul demo: {} cameras record {} chunks of {} MiB into {}\n  agent uploads to embedded S3 (s3s-fs) at {} bucket {BUCKET}",
        args.cameras,
        args.chunks,
        args.chunk_mib,
        spool_dir.display(),
        server.endpoint()
    );

    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let agent_metrics = metrics.clone();
    let agent_env = env.clone();
    let agent = tokio::spawn(async move {
        super::run::agent(
            cfg,
            &agent_env,
            RunMode::Daemon,
            stop_rx,
            agent_metrics,
            |addr| {
                if let Some(a) = addr {
                    println!("  metrics: http://{a}/metrics");
                }
            },
        )
        .await
    });

    let started = Instant::now();
    let mut names = Vec::new();
    for i in 0..args.chunks {
        let cam = i % args.cameras + 1;
        let name = format!("cam{cam}/chunk-{i:04}.mp4");
        let data = chunk_bytes(u64::from(i), chunk_bytes_len);
        let (dir, n) = (spool_dir.clone(), name.clone());
        tokio::task::spawn_blocking(move || write_chunk(&dir, &n, &data))
            .await?
            .with_context(|| format!("camera could not write {name}"))?;
        names.push(name);
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
    let written_at = started.elapsed();
    while metrics.uploaded_chunks.value() < u64::from(args.chunks) && started.elapsed() < PATIENCE {
        if agent.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    stop_tx.send(true).ok();
    let report = agent.await.context("agent task failed")??;

    let stored = files_below(&server.root().join(BUCKET));
    let mut identical = 0;
    for (i, name) in names.iter().enumerate() {
        let file = name.rsplit('/').next().unwrap_or(name);
        let same = stored
            .get(file)
            .and_then(|p| std::fs::read(p).ok())
            .is_some_and(|b| b == chunk_bytes(i as u64, chunk_bytes_len));
        identical += usize::from(same);
    }
    let left = files_below(&spool_dir).len();
    let mbps = total_bytes as f64 * 8.0 / 1e6 / elapsed.as_secs_f64();
    println!(
        "  recorded {} chunks in {:.1} s",
        args.chunks,
        written_at.as_secs_f64()
    );
    println!(
        "  uploaded and verified: {}/{} chunks, {} bytes; byte-identical in the bucket: {identical}/{}",
        metrics.uploaded_chunks.value(),
        args.chunks,
        report.bytes,
        args.chunks
    );
    println!(
        "  elapsed {:.1} s, goodput {mbps:.1} Mbit/s (first chunk recorded to last verified)",
        elapsed.as_secs_f64()
    );
    println!(
        "  retries {}, stalls {}, errors {}; spool {}",
        metrics.retries.value(),
        metrics.stalls.value(),
        metrics.errors.total(),
        if left == 0 {
            "empty: every file deleted only after its object was verified"
        } else {
            "NOT empty"
        }
    );
    if args.keep {
        let kept = tmp.keep();
        println!("  kept {}", kept.display());
    }
    let ok = identical == names.len() && left == 0;
    println!("demo {}", if ok { "OK" } else { "FAILED" });
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::FAILURE)
    })
}
