//! The `[vpn]` tunnel: the site's uploads ride IKEv2/ESP between two real strongSwan charons,
//! as on the 2025-11-12 site. This kernel has no xfrm, so ESP runs in userspace through
//! strongSwan's `kernel-libipsec` plugin over a TUN device (`ipsec0`), always in UDP 4500.
//!
//! ```text
//!  site: lo 198.51.100.193/32 (inner)              cloud: lo 203.0.113.129/32 (inner: S3, webhook)
//!        ipsec0 ── ESP in UDP 192.0.2.2:4500 ─── wire ─── gw ─── wire ─── 203.0.113.10:4500 ── ipsec0
//!        table 220: 203.0.113.128/26 dev ipsec0          table 220: 198.51.100.192/26 dev ipsec0
//!        main: unreachable 203.0.113.128/26 (guard)      main: unreachable 198.51.100.192/26 (guard)
//! ```
//!
//! The guards keep inner traffic from ever leaving in the clear while the tunnel is down: the
//! cloud's inner address is on `lo`, and the gateway would otherwise reach it by ARP.
//!
//! Each charon runs in its namespace and a private mount namespace (its own `/run`, the VICI
//! socket in the run's directory), recorded in the lab's state so teardown stops it.
//!
//! `inner_mtu = "stock"` is the plugin as Debian ships it: `ipsec0` at libipsec's fixed 1400.
//! `inner_mtu = "follow-wan"` models xfrm, whose tunnel MTU is the outer link's minus the ESP
//! overhead: each side's `ipsec0` is set to its link's MTU less the AES-GCM-16-in-UDP overhead,
//! and the site's follows every change of `eno1`, whoever makes it (a scenario event, the
//! netplan guard's apply and rollback, the agent's remediation): `ip monitor link` reports it
//! and the follower sets `ipsec0` within milliseconds, as xfrm derives it per packet. Stock libipsec reads the
//! TUN device into a buffer of its creation MTU (1400), so a larger device MTU set from outside
//! truncates packets; the lab builds the plugin from Debian's source with that MTU (and so the
//! buffer) taken from `strongswan.conf` instead of the constant (`scripts/build-libipsec.sh`,
//! cached under `/var/cache/backhaul-lab/`, keyed by the installed packages' version and
//! hashes, with an ABI check against the installed plugin) and bind-mounts it over the
//! installed one inside the charons' mount namespaces only.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::cmd;
use crate::scenario::{InnerMtu, VpnConfig, VpnOp};
use crate::topology::{CLOUD_ADDR, CLOUD_MTU_BYTES, Lab, Node, SITE_WAN_ADDR};

/// The site's inner address (the uploads' source).
pub const SITE_INNER_ADDR: &str = "198.51.100.193";
/// The cloud's inner address (S3 and the webhook receiver listen on it).
pub const CLOUD_INNER_ADDR: &str = "203.0.113.129";
const SITE_INNER_NET: &str = "198.51.100.192/26";
const CLOUD_INNER_NET: &str = "203.0.113.128/26";
const CHARON: &str = "/usr/lib/ipsec/charon";
const INSTALLED_PLUGIN: &str = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
const BUILD_SCRIPT: &str = include_str!("../scripts/build-libipsec.sh");
const PSK: &str = "lab-only-psk-not-a-secret-0123456789";
/// The patched plugin's TUN buffer: the largest device MTU `follow-wan` sets.
const TUN_BUFFER_BYTES: u32 = 9000;
/// The connection's name on both sides.
pub const CONNECTION: &str = "backhaul";

/// AES-GCM-16 ESP in UDP over IPv4: outer IP, UDP, ESP header, IV, ICV; the inner packet and
/// ESP's 2-byte trailer are padded to 4 bytes.
const ESP_FIXED_BYTES: u32 = 20 + 8 + 8 + 8 + 16;

/// The largest inner packet whose ESP packet fits a link of `outer_mtu` (1438 on 1500).
pub fn inner_mtu(outer_mtu: u32) -> u32 {
    (outer_mtu.saturating_sub(ESP_FIXED_BYTES) / 4 * 4).saturating_sub(2)
}

/// One side's charon.
struct Side {
    dir: PathBuf,
    child: Option<Child>,
}

impl Side {
    fn vici(&self) -> PathBuf {
        self.dir.join("run").join("charon.vici")
    }

    /// `swanctl args… --uri <this charon>`; its standard output.
    fn swanctl(&self, args: &[&str]) -> Result<String, Error> {
        let uri = format!("unix://{}", self.vici().display());
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--uri", &uri]);
        cmd::run("swanctl", &all)
    }
}

/// The running tunnel.
pub struct Tunnel {
    cfg: VpnConfig,
    plugin: Option<PathBuf>,
    site: Side,
    cloud: Side,
}

impl Tunnel {
    /// Builds (or finds) the plugin `cfg` needs, configures both sides, starts both charons
    /// and waits until the CHILD_SA is installed. Charon logs go to `out/charon-{site,cloud}.log`.
    pub fn start(lab: &mut Lab, cfg: &VpnConfig, out: &Path) -> Result<Self, Error> {
        let plugin = match cfg.inner_mtu {
            InnerMtu::Stock => None,
            InnerMtu::FollowWan => Some(patched_plugin()?),
        };
        let base = out.join("vpn");
        let mut tunnel = Tunnel {
            cfg: cfg.clone(),
            plugin,
            site: Side {
                dir: base.join("site"),
                child: None,
            },
            cloud: Side {
                dir: base.join("cloud"),
                child: None,
            },
        };
        for (node, addr, guard) in [
            (Node::Site, SITE_INNER_ADDR, CLOUD_INNER_NET),
            (Node::Cloud, CLOUD_INNER_ADDR, SITE_INNER_NET),
        ] {
            let ns = lab.ns(node);
            cmd::ip(&["-n", &ns, "addr", "add", &format!("{addr}/32"), "dev", "lo"])?;
            cmd::ip(&["-n", &ns, "route", "add", "unreachable", guard])?;
        }
        for node in [Node::Cloud, Node::Site] {
            tunnel.write_config(node)?;
            tunnel.launch(lab, node)?;
        }
        tunnel.wait_installed(Duration::from_secs(30))?;
        if tunnel.cfg.inner_mtu == InnerMtu::FollowWan {
            follow_wan(lab)?;
        }
        Ok(tunnel)
    }

    /// The site charon's VICI socket (the agent's `[monitor] vici_socket`).
    pub fn site_vici(&self) -> PathBuf {
        self.site.vici()
    }

    /// A `vpn` event.
    pub fn act(&mut self, lab: &mut Lab, op: VpnOp) -> Result<(), Error> {
        match op {
            VpnOp::Down => self
                .site
                .swanctl(&["--terminate", "--ike", CONNECTION])
                .map(drop),
            VpnOp::Up => self
                .site
                .swanctl(&["--initiate", "--child", CONNECTION])
                .map(drop),
            VpnOp::KillCharon => {
                if let Some(mut child) = self.site.child.take() {
                    let _ignored = child.kill();
                    let _ignored = child.wait();
                }
                std::thread::sleep(Duration::from_secs(1));
                self.launch(lab, Node::Site)
            }
        }
    }

    fn side(&self, node: Node) -> &Side {
        match node {
            Node::Site => &self.site,
            Node::Gw | Node::Cloud => &self.cloud,
        }
    }

    fn write_config(&self, node: Node) -> Result<(), Error> {
        let side = self.side(node);
        let run = side.dir.join("run");
        std::fs::create_dir_all(&run).map_err(|e| Error::io("create directory", &run, e))?;
        let conf = format!(
            "# Generated by the incident lab: no include of /etc/strongswan.d.\n\
             charon {{\n  load = random nonce aes sha1 sha2 hmac gcm kdf openssl kernel-libipsec \
             kernel-netlink socket-default vici\n  port = 500\n  port_nat_t = 4500\n  \
             install_routes = yes\n  routing_table = 220\n  routing_table_prio = 220\n  \
             retransmit_tries = 3\n  filelog {{\n    lab {{\n      path = {}\n      \
             time_format = %H:%M:%S\n      default = 1\n      knl = 2\n      flush_line = yes\n    \
             }}\n  }}\n  syslog {{ daemon {{ default = -1 }} }}\n  plugins {{\n    \
             vici {{ socket = unix://{} }}\n    kernel-libipsec {{ mtu = {} }}\n  }}\n}}\n",
            side.dir.join("charon.log").display(),
            side.vici().display(),
            TUN_BUFFER_BYTES,
        );
        let path = side.dir.join("strongswan.conf");
        std::fs::write(&path, conf).map_err(|e| Error::io("write", &path, e))?;
        let dpd = self.cfg.dpd_seconds;
        let (local, remote, local_id, remote_id, local_ts, remote_ts, child_extra) = match node {
            Node::Site => (
                SITE_WAN_ADDR,
                CLOUD_ADDR,
                "site.backhaul.example",
                "cloud.backhaul.example",
                SITE_INNER_NET,
                CLOUD_INNER_NET,
                "dpd_action = restart\n        close_action = start\n        start_action = start",
            ),
            Node::Gw | Node::Cloud => (
                CLOUD_ADDR,
                "%any",
                "cloud.backhaul.example",
                "site.backhaul.example",
                CLOUD_INNER_NET,
                SITE_INNER_NET,
                "dpd_action = clear",
            ),
        };
        let swanctl = format!(
            "connections {{\n  {CONNECTION} {{\n    version = 2\n    local_addrs = {local}\n    \
             remote_addrs = {remote}\n    proposals = aes256gcm16-prfsha256-x25519\n    \
             dpd_delay = {dpd}s\n    encap = yes\n    local {{\n      auth = psk\n      \
             id = {local_id}\n    }}\n    remote {{\n      auth = psk\n      id = {remote_id}\n    \
             }}\n    children {{\n      {CONNECTION} {{\n        local_ts = {local_ts}\n        \
             remote_ts = {remote_ts}\n        esp_proposals = aes256gcm16\n        \
             {child_extra}\n      }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-lab {{\n    \
             id-1 = site.backhaul.example\n    id-2 = cloud.backhaul.example\n    \
             secret = \"{PSK}\"\n  }}\n}}\n"
        );
        let path = side.dir.join("swanctl.conf");
        std::fs::write(&path, swanctl).map_err(|e| Error::io("write", &path, e))
    }

    /// Starts `node`'s charon, loads its connection and, under `follow-wan`, sets its tunnel
    /// device's MTU once the device exists.
    fn launch(&mut self, lab: &mut Lab, node: Node) -> Result<(), Error> {
        let plugin = self.plugin.clone();
        let side = match node {
            Node::Site => &mut self.site,
            Node::Gw | Node::Cloud => &mut self.cloud,
        };
        let run = side.dir.join("run");
        let bind = plugin.map_or(String::new(), |p| {
            format!("mount --bind '{}' {INSTALLED_PLUGIN} && ", p.display())
        });
        let script = format!(
            "mount --bind '{}' /run && {bind}exec {CHARON}",
            run.display()
        );
        let child = lab
            .command(node, "unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .env("STRONGSWAN_CONF", side.dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Peer {
                peer: "charon",
                message: e.to_string(),
            })?;
        lab.track(&format!("charon-{}", node.name()), child.id())?;
        side.child = Some(child);
        let vici = side.vici();
        // A killed charon leaves its socket file behind: ready means it answers.
        wait_for(Duration::from_secs(10), || {
            side.swanctl(&["--stats"]).is_ok()
        })
        .ok_or_else(|| Error::Peer {
            peer: "charon",
            message: format!(
                "no VICI socket at {} after 10 s; see {}",
                vici.display(),
                side.dir.join("charon.log").display()
            ),
        })?;
        let conf = side.dir.join("swanctl.conf");
        side.swanctl(&["--load-all", "--file", &conf.to_string_lossy()])?;
        self.set_device_mtu(lab, node)
    }

    /// `follow-wan`: the side's `ipsec0` at its link's MTU less the ESP overhead.
    fn set_device_mtu(&self, lab: &Lab, node: Node) -> Result<(), Error> {
        if self.cfg.inner_mtu == InnerMtu::Stock {
            return Ok(());
        }
        let link = match node {
            Node::Site => "eno1",
            Node::Gw | Node::Cloud => "eth0",
        };
        let ns = lab.ns(node);
        let outer = cmd::ip(&["-n", &ns, "-o", "link", "show", "dev", link])
            .ok()
            .and_then(|s| mtu_of(&s))
            .unwrap_or(match node {
                Node::Site | Node::Gw => crate::topology::DEFAULT_MTU_BYTES,
                Node::Cloud => CLOUD_MTU_BYTES,
            });
        wait_for(Duration::from_secs(10), || {
            cmd::ip(&["-n", &ns, "link", "show", "dev", "ipsec0"]).is_ok()
        })
        .ok_or_else(|| Error::Peer {
            peer: "charon",
            message: format!("no ipsec0 in {ns} after 10 s"),
        })?;
        lab.set_mtu(node, "ipsec0", inner_mtu(outer))
    }

    fn wait_installed(&self, within: Duration) -> Result<(), Error> {
        wait_for(within, || {
            self.site
                .swanctl(&["--list-sas"])
                .is_ok_and(|out| out.contains("INSTALLED"))
        })
        .ok_or_else(|| Error::Peer {
            peer: "charon",
            message: format!(
                "no CHILD_SA installed within {} s; see {}",
                within.as_secs(),
                self.site.dir.join("charon.log").display()
            ),
        })
    }
}

/// `follow-wan`: `ip monitor link` in the site's namespace (tracked, so teardown stops it) and a
/// thread that sets `ipsec0` to the inner MTU of every new `eno1` MTU it reports. The thread
/// ends when the monitor does.
fn follow_wan(lab: &mut Lab) -> Result<(), Error> {
    let ns = lab.ns(Node::Site);
    let mut child = cmd::command_in_ns(&ns, "ip")
        .args(["-o", "monitor", "link"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            command: format!("ip netns exec {ns} ip -o monitor link"),
            source,
        })?;
    lab.track("follow-wan", child.id())?;
    let Some(stdout) = child.stdout.take() else {
        return Ok(());
    };
    std::thread::spawn(move || {
        let mut last = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.split_whitespace().nth(1) != Some("eno1:") {
                continue;
            }
            let Some(outer) = mtu_of(&line) else { continue };
            if last == Some(outer) {
                continue;
            }
            if cmd::set_mtu(&ns, "ipsec0", inner_mtu(outer)).is_ok() {
                last = Some(outer);
            }
        }
        let _ignored = child.wait();
    });
    Ok(())
}

/// `mtu N` in one line of `ip -o link show`.
fn mtu_of(line: &str) -> Option<u32> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// Polls `ready` every 100 ms until it holds (`Some`) or `within` passes (`None`).
fn wait_for(within: Duration, mut ready: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + within;
    loop {
        if ready() {
            return Some(());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel-libipsec plugin with its TUN MTU from `strongswan.conf`: built from Debian's
/// source for the installed version once, then taken from the cache.
pub fn patched_plugin() -> Result<PathBuf, Error> {
    let version = cmd::run(
        "dpkg-query",
        &["-W", "-f=${Version}", "libcharon-extra-plugins"],
    )
    .map_err(|_| {
        Error::NotFound(
            "strongSwan's kernel-libipsec plugin is not installed\nhelp: apt-get install \
             strongswan-charon strongswan-swanctl libcharon-extra-plugins"
                .into(),
        )
    })?;
    let cache = PathBuf::from(format!(
        "/var/cache/backhaul-lab/strongswan-{}-tun9000",
        version.trim()
    ));
    let out = cmd::output(
        "sh",
        &[
            "-c",
            BUILD_SCRIPT,
            "build-libipsec",
            &cache.to_string_lossy(),
        ],
    )?;
    let path = cache.join("libstrongswan-kernel-libipsec.so");
    if out.status.success() && path.exists() {
        Ok(path)
    } else {
        Err(Error::Peer {
            peer: "kernel-libipsec build",
            message: format!(
                "{}\nhelp: `inner_mtu = \"follow-wan\"` needs the plugin built from Debian's \
                 strongswan source (a deb-src entry and build-essential); `stock` does not",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_mtus_follow_the_esp_padding() {
        assert_eq!(inner_mtu(1500), 1438);
        assert_eq!(inner_mtu(1450), 1386);
        assert_eq!(inner_mtu(9000), 8938);
        assert_eq!(inner_mtu(9001), 8938);
    }

    #[test]
    fn reads_the_mtu_of_a_link_line() {
        assert_eq!(
            mtu_of("5: eno1: <BROADCAST,UP> mtu 9000 qdisc fq_codel state UP"),
            Some(9000)
        );
        assert_eq!(mtu_of("garbage"), None);
    }
}
