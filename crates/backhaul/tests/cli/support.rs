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
