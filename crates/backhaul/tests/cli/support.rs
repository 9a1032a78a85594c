use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backhaul_upload::test_util::S3Peer;

pub const BUCKET: &str = "site-video";

/// The binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_backhaul"))
}

/// Runs the binary to completion.
pub fn run(args: &[&str]) -> Output {
    Command::new(exe())
        .args(args)
        .output()
        .expect("backhaul runs")
}

/// A site config for `spool` uploading to `endpoint` with the peer's credentials.
pub fn site_config(
    dir: &Path,
    spool: &Path,
    peer: &S3Peer,
    endpoint: &str,
    extra_upload: &str,
    extra: &str,
) -> PathBuf {
    let c = peer.credentials();
    let text = format!(
        "[site]\nname = \"SITE-TEST\"\n\n[spool]\ndir = \"{}\"\nsettle_seconds = 0\n\n\
         [upload]\nendpoint = \"{endpoint}\"\nbucket = \"{BUCKET}\"\ncredentials = \"static\"\n\
         access_key_id = \"{}\"\nsecret_access_key = \"{}\"\ncreate_bucket = {}\n\
         part_size_bytes = 5242880\nmultipart_threshold_bytes = 5242880\nretry_base_milliseconds = 20\nretry_max_seconds = 1\n{extra_upload}\n{extra}",
        spool.display(),
        c.access_key_id,
        c.secret_access_key(),
        peer.needs_create_bucket(),
    );
    let path = dir.join("site.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A site for the agent with a metrics listener on a free port and [`LOOPBACK_WAN_INVENTORY`]
/// (so it opens an `mtu_drift` incident), its spool in `dir/spool`, `extra` appended: the
/// config file and the metrics port.
pub fn drift_site(dir: &Path, peer: &S3Peer, extra: &str) -> (PathBuf, u16) {
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let port = backhaul_upload::test_util::free_port();
    let extra =
        format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n{LOOPBACK_WAN_INVENTORY}");
    (
        site_config(dir, &spool, peer, &peer.endpoint(), "", &extra),
        port,
    )
}

/// Held by the tests that install the package: on this host (`deb`) and inside a systemd
/// booted over an overlay of this host's root (`systemd`), whose lower layer must not change
/// underneath it.
pub static PACKAGE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().next().map(|uid| uid == "0"))
        .unwrap()
}

/// The binary without CAP_NET_RAW: as root, dropped from the bounding set with util-linux's
/// `setpriv` (root keeps its file access, loses raw sockets); as anyone else it never had it.
pub fn without_net_raw() -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set", "-net_raw", "--inh-caps", "-net_raw", "--"])
            .arg(exe());
        c
    } else {
        Command::new(exe())
    }
}

/// `[inventory]` declaring loopback as a 1500-byte WAN: its real 65536 is MTU drift the agent
/// must report.
pub const LOOPBACK_WAN_INVENTORY: &str = "[inventory]\ngateway = \"127.0.0.1\"\n\
    endpoint_host = \"127.0.0.1\"\n\
    interfaces = [{ name = \"lo\", role = \"wan\", mtu_bytes = 1500 }]\n";

/// A child process killed when the test ends, however it ends: a daemon left running would
/// hold the test harness's output pipe open and hang the run.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

/// `backhaul run --config cfg`, its log discarded, killed when the test ends.
pub fn agent(cfg: &Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(exe())
            .args(["run", "--config"])
            .arg(cfg)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The body of a GET of `path` on the loopback `port`; empty when nothing answers.
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).ok();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of `series` (name and labels as exposed) on the agent's `/metrics`; `None` when
/// it is absent or nothing answers.
pub fn metric(metrics_port: u16, series: &str) -> Option<f64> {
    http_get(metrics_port, "/metrics")
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What a receiver got: when, the JSON body, the request line and headers (lowercased).
pub type Received = (std::time::Instant, serde_json::Value, String);

/// A receiver on loopback answering 200 to every POST; each request arrives on the channel.
pub fn receiver(port: u16) -> std::sync::mpsc::Receiver<Received> {
    receiver_on(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
}

/// [`receiver`] on a listener the test already holds.
pub fn receiver_on(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<Received> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, &tx));
        }
    });
    rx
}

fn serve(mut s: std::net::TcpStream, tx: &std::sync::mpsc::Sender<Received>) {
    use std::io::{Read as _, Write as _};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..end + 4 + len).skip(end + 4).collect();
        if let Ok(v) = serde_json::from_slice(&body) {
            tx.send((std::time::Instant::now(), v, head)).ok();
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .is_err()
        {
            return;
        }
    }
}

/// A real Alertmanager (Debian `prometheus-alertmanager`) on loopback `port`, its state in
/// `dir`, routing everything to a webhook at loopback `hook` with these grouping settings.
pub fn alertmanager(
    dir: &Path,
    port: u16,
    hook: u16,
    (group_by, group_wait, group_interval): (&str, u64, u64),
) -> std::process::Child {
    let bin = ["/usr/bin/prometheus-alertmanager", "/usr/bin/alertmanager"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "Alertmanager missing: apt-get install prometheus-alertmanager (scripts/test does)",
        );
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        format!(
            "route:\n  receiver: hook\n  group_by: {group_by}\n  group_wait: {group_wait}s\n  \
             group_interval: {group_interval}s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
             webhook_configs:\n      - url: http://127.0.0.1:{hook}/am\n"
        ),
    )
    .unwrap();
    std::process::Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("am").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}
