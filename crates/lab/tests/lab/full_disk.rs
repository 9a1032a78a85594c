//! A full disk must not stop the agent, nor the cameras for longer than the store is away. The
//! spool and its journal share a small tmpfs (the default layout: the journal in
//! `<spool>/.backhaul/`); a camera keeps writing chunks into it and retries while it is full;
//! the store goes away mid-upload. The agent must stay up, start up again on the full disk, and once the
//! store answers free space within seconds, so the camera records again; every chunk the
//! camera finished ends up in the bucket byte for byte.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::support::{Guard, assert_eventually, backhaul};

/// Size of the filesystem holding spool and journal.
const DISK_MIB: u64 = 48;
const CHUNK_BYTES: usize = 1024 * 1024;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={DISK_MIB}m,mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs at {}", at.display());
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes available on `dir`'s filesystem, as `stat -f` reads them.
fn available(dir: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chunk_bytes(n: u64) -> Vec<u8> {
    (0..CHUNK_BYTES)
        .map(|i| (i as u64).wrapping_mul(31).wrapping_add(n * 7919) as u8)
        .collect()
}

/// A camera: writes `cam1/cNNNN.mp4.part`, renames it in, every 50 ms (about 20 MB/s, more
/// than one real camera); on a full disk it drops the partial file and tries again.
struct Camera {
    stop: Arc<AtomicBool>,
    finished: Arc<AtomicU64>,
    last_ok: Arc<std::sync::Mutex<Instant>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Camera {
    fn start(spool: &Path) -> Self {
        let dir = spool.join("cam1");
        std::fs::create_dir_all(&dir).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicU64::new(0));
        let last_ok = Arc::new(std::sync::Mutex::new(Instant::now()));
        let (s, f, l) = (stop.clone(), finished.clone(), last_ok.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let n = f.load(Ordering::Relaxed);
                let part = dir.join(format!("c{n:04}.mp4.part"));
                let done = dir.join(format!("c{n:04}.mp4"));
                let written = std::fs::File::create(&part)
                    .and_then(|mut file| file.write_all(&chunk_bytes(n)));
                match written.and_then(|()| std::fs::rename(&part, &done)) {
                    Ok(()) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        *l.lock().unwrap() = Instant::now();
                    }
                    Err(_) => {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&part)
                            .and_then(|file| file.set_len(0));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Self {
            stop,
            finished,
            last_ok,
            thread: Some(thread),
        }
    }

    fn since_last_ok(&self) -> Duration {
        self.last_ok.lock().unwrap().elapsed()
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.finished.load(Ordering::Relaxed)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop();
    }
}

fn agent(config: &Path, log: &Path) -> Guard {
    Guard(
        Command::new(backhaul())
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn still_running(agent: &mut Guard, log: &Path) {
    if let Some(status) = agent.0.try_wait().unwrap() {
        panic!(
            "the agent exited ({status}) on a full disk:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// Objects under the bucket directory of s3s-fs, by file name.
fn stored(bucket: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![bucket.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(name) = p.file_name().and_then(|n| n.to_str())
                && name.ends_with(".mp4")
            {
                out.push((name.to_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

pub fn full_disk_never_stops_the_agent_and_frees_space_when_the_store_returns() {
    let work = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&work.path().join("disk"));
    let spool = disk.0.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let s3_root = work.path().join("s3");
    std::fs::create_dir_all(&s3_root).unwrap();
    let port = free_port();
    let config = work.path().join("site.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"SITE-FULL\"\n[spool]\ndir = \"{}\"\nsettle_seconds = 1\n\
             [upload]\nendpoint = \"http://127.0.0.1:{port}\"\nbucket = \"video\"\nregion = \"us-east-1\"\n\
             credentials = \"static\"\naccess_key_id = \"BACKHAULDEMOKEY\"\n\
             secret_access_key = \"backhaul-demo-secret-key\"\n\
             retry_max_seconds = 2\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            spool.display()
        ),
    )
    .unwrap();
    let store = || {
        Guard(
            Command::new(backhaul())
                .args(["s3-server", "--root"])
                .arg(&s3_root)
                .args([
                    "--bucket",
                    "video",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let log = work.path().join("agent.log");
    let up = store();
    let mut running = agent(&config, &log);
    let mut camera = Camera::start(&spool);
    assert_eventually("the first upload", Duration::from_secs(30), || {
        !stored(&s3_root.join("video")).is_empty()
    });

    // The store goes away and the camera fills the disk while the agent keeps retrying.
    drop(up);
    assert_eventually("the disk full", Duration::from_secs(60), || {
        available(&disk.0) < CHUNK_BYTES as u64 && camera.since_last_ok() > Duration::from_secs(3)
    });
    std::thread::sleep(Duration::from_secs(5));
    still_running(&mut running, &log);

    // A clean stop and a start on the full disk.
    terminate(&running);
    let stopped = running.0.wait().unwrap();
    assert!(stopped.success(), "clean stop: {stopped}");
    let log2 = work.path().join("agent2.log");
    let mut running = agent(&config, &log2);
    std::thread::sleep(Duration::from_secs(5));
    still_running(&mut running, &log2);
    // The log the clean stop deleted may have gone to the camera meanwhile.
    assert_eventually("the disk full again", Duration::from_secs(30), || {
        available(&disk.0) < CHUNK_BYTES as u64 && camera.since_last_ok() > Duration::from_secs(3)
    });
    still_running(&mut running, &log2);

    // The store comes back: the camera must be able to record again within seconds.
    let back = Instant::now();
    let _store = store();
    let before = camera.finished.load(Ordering::Relaxed);
    let files = || std::fs::read_dir(spool.join("cam1")).unwrap().count();
    let files_before = files();
    let mut first_freed = None;
    assert_eventually(
        "the camera recording again",
        Duration::from_secs(30),
        || {
            if first_freed.is_none() && files() < files_before {
                first_freed = Some(back.elapsed());
            }
            camera.finished.load(Ordering::Relaxed) > before
        },
    );
    let full_for = back.elapsed();
    eprintln!(
        "full disk: first chunk file deleted {:.2} s and the camera recording again {:.2} s after the store was started",
        first_freed.unwrap_or(full_for).as_secs_f64(),
        full_for.as_secs_f64()
    );
    assert!(
        full_for < Duration::from_secs(15),
        "disk full for {full_for:?} after the store returned"
    );
    still_running(&mut running, &log2);

    // Everything the camera finished is uploaded and nothing is lost.
    let recorded = camera.stop();
    assert_eventually("the spool drained", Duration::from_secs(120), || {
        std::fs::read_dir(spool.join("cam1"))
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().ends_with(".part"))
    });
    let objects = stored(&s3_root.join("video"));
    assert_eq!(
        objects.len() as u64,
        recorded,
        "every finished chunk is in the bucket"
    );
    for (name, bytes) in objects {
        let n: u64 = name
            .trim_start_matches('c')
            .trim_end_matches(".mp4")
            .parse()
            .unwrap();
        assert!(
            bytes == chunk_bytes(n),
            "{name} differs from what was recorded"
        );
    }
    still_running(&mut running, &log2);
}

fn terminate(g: &Guard) {
    let ok = Command::new("kill")
        .args(["-TERM", &g.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}
