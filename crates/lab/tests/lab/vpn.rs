//! The VPN signal against real strongSwan: two charon daemons in a namespace of their own
//! (each in a private mount namespace, so their pid files do not collide) establish an IKE SA
//! over loopback. The kernel here has no xfrm, so no CHILD_SA is installed; the IKE SA's state
//! is what backhaul reads. netprobe's VICI client must see the loaded connection and the
//! established SA, and the daemon must report up, count a dropped tunnel as a flap, and report
//! up again after it is re-established.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use backhaul_netprobe::{Vici, VpnTunnels};

use super::support::backhaul;
use super::support::{Guard, assert_eventually};

const CHARON: &str = "/usr/lib/ipsec/charon";
const PSK: &str = "lab-only-psk-0123456789";

/// A namespace deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// One charon: `port` for IKE (not 500, so neither side floats to 4500 and meets the other),
/// its VICI socket in `dir`.
fn charon(ns: &str, dir: &Path, port: u16) -> Guard {
    std::fs::write(
        dir.join("strongswan.conf"),
        format!(
            "charon {{\n port = {port}\n port_nat_t = {}\n install_routes = no\n plugins {{\n  \
             vici {{ socket = unix://{}/charon.vici }}\n  stroke {{ load = no }}\n }}\n}}\n",
            port + 1,
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns, "unshare", "--mount", "sh", "-c"])
        .arg(format!("mount -t tmpfs tmpfs /run && exec {CHARON}"))
        .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guard(child)
}

fn swanctl(dir: &Path, args: &[&str]) {
    let uri = format!("unix://{}/charon.vici", dir.display());
    let out = Command::new("swanctl")
        .args(args)
        .args(["--uri", &uri])
        .output()
        .expect("swanctl (apt-get install strongswan-swanctl)");
    assert!(out.status.success(), "swanctl {args:?}: {out:?}");
}

fn conn(dir: &Path, name: &str, local: (&str, &str), remote: (&str, &str, u16)) {
    let path = dir.join("swanctl.conf");
    std::fs::write(
        &path,
        format!(
            "connections {{\n {name} {{\n  local_addrs = {}\n  remote_addrs = {}\n  \
             remote_port = {}\n  local {{\n   auth = psk\n   id = {}\n  }}\n  remote {{\n   \
             auth = psk\n   id = {}\n  }}\n  children {{\n   net {{\n    local_ts = 10.1.0.0/24\n    \
             remote_ts = 10.2.0.0/24\n   }}\n  }}\n }}\n}}\nsecrets {{\n ike-1 {{\n  id-1 = site\n  \
             id-2 = cloud\n  secret = \"{PSK}\"\n }}\n}}\n",
            local.0, remote.0, remote.2, local.1, remote.1
        ),
    )
    .unwrap();
    swanctl(dir, &["--load-all", "--file", path.to_str().unwrap()]);
}

fn tunnels(socket: &Path) -> VpnTunnels {
    Vici::connect(socket, Duration::from_secs(2))
        .unwrap()
        .tunnels()
        .unwrap()
}

fn vpn_line(port: u16) -> String {
    let out = Command::new(backhaul())
        .args([
            "status",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--json",
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return String::new();
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    doc["vpn"].as_str().unwrap_or_default().to_owned()
}

pub fn vici_sees_strongswan_tunnels_and_the_daemon_counts_a_flap() {
    assert!(
        Path::new(CHARON).exists(),
        "{CHARON} missing: apt-get install strongswan-charon strongswan-swanctl (scripts/test does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let (site, cloud) = (tmp.path().join("site"), tmp.path().join("cloud"));
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(&cloud).unwrap();
    // Not `bhl-*`: a `lab up` elsewhere would sweep that as a stale lab.
    let ns = Netns(format!("bh-vpn-{}", std::process::id()));
    assert!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()
            .unwrap()
            .success()
    );
    let _ = Command::new("ip")
        .args(["-n", &ns.0, "link", "set", "lo", "up"])
        .status();
    let _site = charon(&ns.0, &site, 5100);
    let _cloud = charon(&ns.0, &cloud, 5000);
    let socket = site.join("charon.vici");
    assert_eventually("charon VICI sockets", Duration::from_secs(10), || {
        socket.exists() && cloud.join("charon.vici").exists()
    });
    conn(
        &site,
        "site-vpn",
        ("127.0.0.1", "site"),
        ("127.0.0.2", "cloud", 5000),
    );
    conn(
        &cloud,
        "cloud-vpn",
        ("127.0.0.2", "cloud"),
        ("127.0.0.1", "site", 5100),
    );
    assert_eq!(
        tunnels(&socket),
        VpnTunnels {
            configured: vec!["site-vpn".into()],
            established: vec![],
            children: vec![],
        }
    );
    // The CHILD_SA cannot be installed without xfrm; swanctl then exits non-zero while the
    // IKE SA stays up, which is what is checked below.
    let initiate = |dir: &Path| {
        let uri = format!("unix://{}/charon.vici", dir.display());
        let _ = Command::new("swanctl")
            .args([
                "--initiate",
                "--ike",
                "site-vpn",
                "--child",
                "net",
                "--timeout",
                "5",
            ])
            .args(["--uri", &uri])
            .output();
    };
    initiate(&site);
    assert_eq!(tunnels(&socket).established, vec!["site-vpn".to_owned()]);

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let cfg = tmp.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            "[site]\nname = \"SITE-2847\"\n[spool]\ndir = \"{}\"\n[upload]\n\
             endpoint = \"http://127.0.0.1:1\"\nbucket = \"video\"\ncredentials = \"anonymous\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n[monitor]\nvici_socket = \"{}\"\n\
             [inventory]\ngateway = \"127.0.0.1\"\nendpoint_host = \"127.0.0.1\"\n\
             interfaces = [{{ name = \"lo\", role = \"wan\", mtu_bytes = 1500 }}]\n",
            spool.display(),
            socket.display()
        ),
    )
    .unwrap();
    let _daemon = Guard(
        Command::new(backhaul())
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert_eventually(
        "daemon reports the tunnel up",
        Duration::from_secs(10),
        || vpn_line(port) == "up: site-vpn; 0 flaps since start",
    );
    swanctl(
        &site,
        &["--terminate", "--ike", "site-vpn", "--timeout", "5"],
    );
    assert_eventually("daemon counts the drop", Duration::from_secs(10), || {
        vpn_line(port) == "down: site-vpn loaded, none established; 1 flaps since start"
    });
    initiate(&site);
    assert_eventually(
        "daemon reports it up again",
        Duration::from_secs(10),
        || vpn_line(port) == "up: site-vpn; 1 flaps since start",
    );
}
