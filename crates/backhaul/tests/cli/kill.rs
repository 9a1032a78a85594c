use std::process::{Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::{FaultProxy, Faults, S3Peer, uploader};

use super::support::{BUCKET, exe, site_config};

const MIB: u64 = 1024 * 1024;
const KILLS: usize = 20;
const PARTS_IN_FLIGHT: u64 = 2;
const CHUNKS_IN_FLIGHT: u64 = 2;
const PART: u64 = 5 * MIB;

/// Multipart chunks: at a kill at most the parts in flight are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_loses_nothing_and_resends_little() {
    torture(8, 20 * MIB, CHUNKS_IN_FLIGHT * PARTS_IN_FLIGHT * PART).await;
}

/// Chunks below the multipart threshold go as one PutObject each: at a kill at most the
/// chunks in flight are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_on_the_put_object_path_loses_nothing() {
    torture(40, 3 * MIB, CHUNKS_IN_FLIGHT * 3 * MIB).await;
}

/// Uploads `chunks` chunks of `chunk_bytes`, SIGKILLs the agent [`KILLS`] times at random
/// moments, drains, and checks every object byte for byte, an empty spool, and at most
/// `resend_per_kill` bytes sent again per kill, on both stores.
async fn torture(chunks: u64, chunk_bytes: u64, resend_per_kill: u64) {
    for peer in [S3Peer::embedded(BUCKET).await, S3Peer::moto().await] {
        // A pass-through proxy counts every body byte that reaches the server.
        let proxy = FaultProxy::start(peer.socket_addr(), Faults::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let mut keys = Vec::new();
        for i in 0..chunks {
            let path = write_chunk(
                &spool,
                &format!("cam{}/k{i}.mp4", i % 2),
                &pattern_bytes(i, chunk_bytes as usize),
            );
            // The default key template dates a chunk by its mtime (UTC).
            let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
            let d = time::OffsetDateTime::from(mtime).date();
            keys.push(format!(
                "SITE-TEST/cam{}/{:04}-{:02}-{:02}/k{i}.mp4",
                i % 2,
                d.year(),
                u8::from(d.month()),
                d.day()
            ));
        }
        let upload = format!(
            "parts_in_flight = {PARTS_IN_FLIGHT}\nchunks_in_flight = {CHUNKS_IN_FLIGHT}\nbandwidth_limit = \"6M\"\n"
        );
        let cfg = site_config(
            dir.path(),
            &spool,
            &peer,
            &proxy.endpoint(),
            &upload,
            "[metrics]\nlisten = \"off\"\n",
        );
        let mut killed_mid_upload = 0;
        for _ in 0..KILLS {
            let mut child = Command::new(exe())
                .args([
                    "run",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--log-level",
                    "warn",
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300 + fastrand::u64(0..900))).await;
            let before = proxy.stats.forwarded_body_bytes.load(Relaxed);
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            if before < chunks * chunk_bytes {
                killed_mid_upload += 1;
            }
        }
        // Restart once more and let it finish.
        let cfg_s = cfg.to_str().unwrap().to_owned();
        let out = tokio::task::spawn_blocking(move || {
            Command::new(exe())
                .args(["run", "--drain", "--config", &cfg_s, "--log-level", "warn"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "{}: final drain: {}",
            peer.name(),
            String::from_utf8_lossy(&out.stderr)
        );

        // Every chunk is in the bucket, byte-identical (read back from the server directly).
        let check_spool = backhaul_spool::test_util::TempSpool::new();
        let cfg_direct = backhaul_upload::test_util::test_config(&peer.endpoint(), BUCKET);
        let (_, client) = uploader(&check_spool, &cfg_direct, peer.credentials());
        for (i, key) in keys.iter().enumerate() {
            let i = i as u64;
            let got = client
                .client
                .get_object(key)
                .await
                .unwrap_or_else(|e| panic!("{}: {key}: {e}", peer.name()));
            assert!(
                got == pattern_bytes(i, chunk_bytes as usize),
                "{}: {key} differs",
                peer.name()
            );
        }
        let left: Vec<_> = walk(&spool);
        assert!(
            left.is_empty(),
            "{}: spool not empty: {left:?}",
            peer.name()
        );

        let forwarded = proxy.stats.forwarded_body_bytes.load(Relaxed);
        let resent = forwarded.saturating_sub(chunks * chunk_bytes);
        let per_kill = resent as f64 / KILLS as f64;
        println!(
            "{}: {KILLS} SIGKILLs ({killed_mid_upload} mid-upload), {:.1} MiB re-sent in all = {:.2} MiB per kill \
             = {:.2} parts per kill per in-flight chunk ({CHUNKS_IN_FLIGHT} chunks x {PARTS_IN_FLIGHT} parts in flight, {} MiB parts)",
            peer.name(),
            resent as f64 / MIB as f64,
            per_kill / MIB as f64,
            per_kill / PART as f64 / CHUNKS_IN_FLIGHT as f64,
            PART / MIB
        );
        assert!(
            killed_mid_upload >= KILLS / 2,
            "{}: too few kills landed mid-upload ({killed_mid_upload})",
            peer.name()
        );
        // At a kill at most what was in flight is lost: never more than that is sent again.
        assert!(
            resent <= KILLS as u64 * resend_per_kill,
            "{}: re-sent {resent} bytes",
            peer.name()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == ".backhaul" {
            continue;
        }
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(name);
        }
    }
    out
}
