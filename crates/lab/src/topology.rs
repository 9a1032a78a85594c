//! The incident site in three network namespaces, joined by the wire:
//!
//! ```text
//!  <prefix>-site                 <prefix>-gw                      <prefix>-cloud
//!  eno1 192.0.2.2/24 ──[lan]── lan 192.0.2.1/24                     
//!  (MTU 1500; the fault          wan 203.0.113.1/24 ──[wan]── eth0 203.0.113.10/24
//!   raises it to 9000)           (ip_forward=1, MTU 1500          (MTU 9001, like a cloud VPC,
//!  eno2 198.51.100.1/24           both ports; nft filter for       so MSS negotiation does not
//!  (camera VLAN: an empty         ICMP frag-needed; tbf rate       hide the fault)
//!   bridge, nothing behind)       on wan)
//! ```
//!
//! `[lan]` carries L3 packets up to 1500 bytes by default and silently drops bigger frames: the
//! gateway port that cannot take jumbo frames. No ICMP can come from such a drop, so this is a
//! black hole whatever the ICMP policy. Raising the lan wire's limit (`lan_wire_mtu_bytes =
//! 9000`, a jumbo-capable switch) lets the oversize packet reach the gateway's kernel, which
//! must forward it into its 1500-byte `wan` port and answers with ICMP "fragmentation needed";
//! the nftables policy then decides between PMTUD working and the true PMTUD black hole.
//!
//! The namespaces have no link to the host namespace: the TAPs are created in the host by the
//! wire process and moved into the lab before they are configured or brought up.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::Error;
use crate::cmd;
use crate::state::{NS_PREFIX, Proc, State};
use crate::wire::{self, LinkCounters, LinkSettings, LinkSpec, WireConfig};

/// Site's WAN address (`eno1`).
pub const SITE_WAN_ADDR: &str = "192.0.2.2";
/// Gateway's port toward the site.
pub const GW_LAN_ADDR: &str = "192.0.2.1";
/// Gateway's port toward the cloud.
pub const GW_WAN_ADDR: &str = "203.0.113.1";
/// The cloud host (S3 server, webhook receiver).
pub const CLOUD_ADDR: &str = "203.0.113.10";
/// Site's camera VLAN address (`eno2`).
pub const SITE_CAMERA_ADDR: &str = "198.51.100.1";
/// MTU of every interface except the cloud's.
pub const DEFAULT_MTU_BYTES: u32 = 1500;
/// The cloud interface's MTU (like an AWS VPC).
pub const CLOUD_MTU_BYTES: u32 = 9001;

/// A namespace of the lab.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Node {
    /// The edge site (the agent, `eno1`, `eno2`).
    Site,
    /// The gateway router.
    Gw,
    /// The cloud (S3 server, webhook receiver).
    Cloud,
}

impl Node {
    /// Every node.
    pub const ALL: [Node; 3] = [Node::Site, Node::Gw, Node::Cloud];

    /// Lower-case name (namespace suffix).
    pub fn name(self) -> &'static str {
        match self {
            Node::Site => "site",
            Node::Gw => "gw",
            Node::Cloud => "cloud",
        }
    }
}

/// Whether the gateway's ICMP "fragmentation needed" reaches the sender.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpPolicy {
    /// Dropped by nftables in the gateway: the PMTUD black hole of the incident.
    #[default]
    Block,
    /// Sent: path MTU discovery works.
    Allow,
}

/// How to start this crate's hidden subcommands (`wire`, `tcp-recv`, …) as processes: the
/// `backhaul` binary with `lab` before them, or the standalone `backhaul-lab` binary.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The executable.
    pub program: PathBuf,
    /// Arguments before the subcommand (`["lab"]` for `backhaul`).
    pub prefix_args: Vec<String>,
}

impl Invocation {
    /// A [`Command`] for `subcommand` (not yet given its own arguments).
    pub fn command(&self, subcommand: &str) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.prefix_args).arg(subcommand);
        c
    }

    /// The argv of `subcommand`, for running it with `ip netns exec`.
    pub fn argv(&self, subcommand: &str) -> Vec<String> {
        let mut v = vec![self.program.to_string_lossy().into_owned()];
        v.extend(self.prefix_args.iter().cloned());
        v.push(subcommand.to_owned());
        v
    }
}

/// What [`Lab::up`] builds.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Instance name; the prefix becomes `bhl-<name>`. `None`: `bhl-<pid>-<n>`.
    pub name: Option<String>,
    /// Largest packet the site–gateway wire carries (the black hole).
    pub lan_wire_mtu_bytes: u32,
    /// ICMP frag-needed policy in the gateway.
    pub icmp: IcmpPolicy,
    /// Whether the lab outlives this process (`lab up`): the wire process becomes the owner.
    pub persistent: bool,
    /// How to start the wire.
    pub exe: Invocation,
}

impl LabOptions {
    /// Defaults: a 1500-byte lan wire, ICMP blocked, torn down with this process.
    pub fn new(exe: Invocation) -> Self {
        Self {
            name: None,
            lan_wire_mtu_bytes: DEFAULT_MTU_BYTES,
            icmp: IcmpPolicy::Block,
            persistent: false,
            exe,
        }
    }
}

static INSTANCE: AtomicU32 = AtomicU32::new(0);

/// Checks a user-given instance name: short, lower-case, digits and dashes.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 20
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The `bhl-…` prefix of an instance name.
pub fn prefix_of(name: &str) -> Result<String, Error> {
    let bare = name.strip_prefix(NS_PREFIX).unwrap_or(name);
    if valid_name(bare) {
        Ok(format!("{NS_PREFIX}{bare}"))
    } else {
        Err(Error::NotFound(format!(
            "invalid lab name {name:?}\nhelp: use up to 20 characters from a-z, 0-9 and '-'"
        )))
    }
}

/// Refuses clearly unless the process can create namespaces.
pub fn require_root() -> Result<(), Error> {
    if crate::sys::euid() == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// A running lab. Dropping it tears everything down (unless it was made persistent with
/// [`Lab::keep`]), so a panic or an early return leaves nothing behind.
#[derive(Debug)]
pub struct Lab {
    state: State,
    wire: Option<Child>,
    armed: bool,
}

impl Lab {
    /// Builds the topology: cleans stale instances, creates the namespaces, starts the wire,
    /// moves the TAPs in and configures addresses, routes, MTUs and the ICMP policy.
    pub fn up(options: &LabOptions) -> Result<Self, Error> {
        require_root()?;
        if let Err(e) = crate::state::clean_stale() {
            tracing::warn!(error = %e, "cleaning stale lab instances left errors");
        }
        let prefix = match &options.name {
            Some(n) => prefix_of(n)?,
            None => format!(
                "{NS_PREFIX}{}-{}",
                std::process::id(),
                INSTANCE.fetch_add(1, Ordering::Relaxed)
            ),
        };
        if State::dir_of(&prefix).exists() {
            return Err(Error::NotFound(format!(
                "lab {prefix} is already up\nhelp: `lab down --name {prefix}` first"
            )));
        }
        // Host-side TAP names must be unique on the host and fit IFNAMSIZ: a short hash of the
        // prefix and this process. They are renamed once inside their namespace.
        let tag = short_tag(&prefix);
        let taps: Vec<String> = (0..4).map(|i| format!("bht{tag}{i}")).collect();
        let state = State {
            prefix: prefix.clone(),
            owner: Proc::of("owner", std::process::id()),
            namespaces: Node::ALL
                .iter()
                .map(|n| format!("{prefix}-{}", n.name()))
                .collect(),
            taps: taps.clone(),
            processes: Vec::new(),
            mounts: Vec::new(),
        };
        // The state goes to disk before anything exists, so a kill at any later point leaves
        // a record that the next `up`/`down` can clean from.
        state.save()?;
        let mut lab = Lab {
            state,
            wire: None,
            armed: true,
        };
        lab.build(options, &taps)?;
        if options.persistent {
            lab.state.owner = lab
                .state
                .processes
                .iter()
                .find(|p| p.name == "wire")
                .cloned();
            lab.state.save()?;
        }
        Ok(lab)
    }

    fn build(&mut self, options: &LabOptions, taps: &[String]) -> Result<(), Error> {
        for ns in &self.state.namespaces {
            cmd::ip(&["netns", "add", ns])?;
            cmd::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let dir = self.dir();
        let config = WireConfig {
            links: vec![
                LinkSpec {
                    name: "lan".into(),
                    a: taps[0].clone(),
                    b: taps[1].clone(),
                    settings: LinkSettings::clean(options.lan_wire_mtu_bytes),
                },
                LinkSpec {
                    name: "wan".into(),
                    a: taps[2].clone(),
                    b: taps[3].clone(),
                    settings: LinkSettings::clean(CLOUD_MTU_BYTES),
                },
            ],
        };
        let path = dir.join("wire.json");
        let text = serde_json::to_vec_pretty(&config).map_err(|source| Error::State {
            path: path.clone(),
            source,
        })?;
        crate::state::write_atomic(&path, &text)?;
        self.start_wire(options)?;

        let (site, gw, cloud) = (self.ns(Node::Site), self.ns(Node::Gw), self.ns(Node::Cloud));
        let mtu = DEFAULT_MTU_BYTES.to_string();
        let cloud_mtu = CLOUD_MTU_BYTES.to_string();
        let plan: [(&str, &str, &str, &str, &str); 4] = [
            (&taps[0], &site, "eno1", "192.0.2.2/24", &mtu),
            (&taps[1], &gw, "lan", "192.0.2.1/24", &mtu),
            (&taps[2], &gw, "wan", "203.0.113.1/24", &mtu),
            (&taps[3], &cloud, "eth0", "203.0.113.10/24", &cloud_mtu),
        ];
        for (tap, ns, name, addr, mtu) in plan {
            cmd::ip(&["link", "set", "dev", tap, "netns", ns])?;
            cmd::ip(&["-n", ns, "link", "set", "dev", tap, "name", name])?;
            cmd::ip(&["-n", ns, "link", "set", "dev", name, "mtu", mtu])?;
            cmd::ip(&["-n", ns, "addr", "add", addr, "dev", name])?;
            cmd::ip(&["-n", ns, "link", "set", "dev", name, "up"])?;
        }
        // eno2: the camera VLAN. This kernel has no dummy links; an empty bridge is a link
        // that takes an address and an MTU and has nothing behind it.
        cmd::ip(&["-n", &site, "link", "add", "eno2", "type", "bridge"])?;
        cmd::ip(&["-n", &site, "addr", "add", "198.51.100.1/24", "dev", "eno2"])?;
        cmd::ip(&["-n", &site, "link", "set", "dev", "eno2", "up"])?;
        cmd::ip(&["-n", &site, "route", "add", "default", "via", GW_LAN_ADDR])?;
        cmd::ip(&["-n", &cloud, "route", "add", "default", "via", GW_WAN_ADDR])?;
        cmd::in_ns(&gw, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        cmd::in_ns(&gw, "nft", &["add table inet bhl"])?;
        cmd::in_ns(
            &gw,
            "nft",
            &["add chain inet bhl out { type filter hook output priority 0 ; policy accept ; }"],
        )?;
        self.set_icmp(options.icmp)?;
        Ok(())
    }

    fn start_wire(&mut self, options: &LabOptions) -> Result<(), Error> {
        let dir = self.dir();
        let log_path = dir.join("wire.log");
        let log =
            std::fs::File::create(&log_path).map_err(|e| Error::io("create", &log_path, e))?;
        let mut c = options.exe.command("wire");
        c.arg("--dir").arg(&dir);
        if !options.persistent {
            c.arg("--owner").arg(std::process::id().to_string());
        }
        // Own process group: a Ctrl-C at the terminal reaches the owner, which tears down in
        // order, instead of killing the wire under it.
        use std::os::unix::process::CommandExt as _;
        c.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = c.spawn().map_err(|source| Error::Spawn {
            command: format!("{} wire", options.exe.program.display()),
            source,
        })?;
        if let Some(p) = Proc::of("wire", child.id()) {
            self.state.processes.push(p);
            self.state.save()?;
        }
        let stdout = child.stdout.take();
        self.wire = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ignored = BufReader::new(out).read_line(&mut line);
            }
            let _ignored = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => Ok(()),
            Ok(_) | Err(_) => {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                Err(Error::Wire(format!(
                    "no ready signal; wire.log: {}",
                    log.trim()
                )))
            }
        }
    }

    /// Opens an existing instance (for `exec`, `status`, `down`) without taking ownership:
    /// dropping it leaves the lab running.
    pub fn attach(prefix: &str) -> Result<Self, Error> {
        let state = State::load(prefix)
            .map_err(|_| Error::NotFound(format!("no lab named {prefix} is up")))?;
        Ok(Lab {
            state,
            wire: None,
            armed: false,
        })
    }

    /// Keeps the lab running after this value is dropped (`lab up`).
    pub fn keep(mut self) {
        self.armed = false;
    }

    /// The namespace prefix (`bhl-…`).
    pub fn prefix(&self) -> &str {
        &self.state.prefix
    }

    /// The state directory (`/run/backhaul-lab/<prefix>`), also home of run artifacts.
    pub fn dir(&self) -> PathBuf {
        self.state.dir()
    }

    /// The namespace of `node`.
    pub fn ns(&self, node: Node) -> String {
        format!("{}-{}", self.state.prefix, node.name())
    }

    /// Runs `program args…` inside `node` and returns its stdout.
    pub fn exec(&self, node: Node, program: &str, args: &[&str]) -> Result<String, Error> {
        cmd::in_ns(&self.ns(node), program, args)
    }

    /// A [`Command`] running `program` inside `node`.
    pub fn command(&self, node: Node, program: &str) -> Command {
        cmd::command_in_ns(&self.ns(node), program)
    }

    /// Records a process the lab started, so teardown (even a later `down` after `kill -9`)
    /// stops it.
    pub fn track(&mut self, name: &str, pid: u32) -> Result<(), Error> {
        if let Some(p) = Proc::of(name, pid) {
            self.state.processes.push(p);
            self.state.save()?;
        }
        Ok(())
    }

    /// Records a mount to undo at teardown.
    pub fn track_mount(&mut self, path: &Path) -> Result<(), Error> {
        self.state.mounts.push(path.to_owned());
        self.state.save()
    }

    /// Sets an interface's MTU (the incident's fault is `set_mtu(Site, "eno1", 9000)`).
    pub fn set_mtu(&self, node: Node, interface: &str, mtu_bytes: u32) -> Result<(), Error> {
        cmd::set_mtu(&self.ns(node), interface, mtu_bytes)
    }

    /// Chooses whether the gateway's ICMP "fragmentation needed" leaves it. Either way the
    /// rule counts them (see [`Lab::frag_needed_sent`]).
    pub fn set_icmp(&self, policy: IcmpPolicy) -> Result<(), Error> {
        let gw = self.ns(Node::Gw);
        let verdict = match policy {
            IcmpPolicy::Block => "drop",
            IcmpPolicy::Allow => "accept",
        };
        cmd::in_ns(&gw, "nft", &["flush chain inet bhl out"])?;
        let rule = format!(
            "add rule inet bhl out icmp type destination-unreachable icmp code frag-needed \
             counter {verdict}"
        );
        cmd::in_ns(&gw, "nft", &[&rule]).map(drop)
    }

    /// ICMP frag-needed packets the gateway generated since the policy was last set.
    pub fn frag_needed_sent(&self) -> Result<u64, Error> {
        let out = cmd::in_ns(&self.ns(Node::Gw), "nft", &["list chain inet bhl out"])?;
        Ok(out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0))
    }

    /// Shapes the gateway's uplink (toward the cloud) with `tc tbf`; `None` removes it.
    pub fn set_rate(&self, mbit: Option<f64>) -> Result<(), Error> {
        let gw = self.ns(Node::Gw);
        match mbit {
            Some(rate) => {
                let rate = format!("{}kbit", (rate * 1000.0).round().max(8.0) as u64);
                cmd::in_ns(
                    &gw,
                    "tc",
                    &[
                        "qdisc", "replace", "dev", "wan", "root", "tbf", "rate", &rate, "burst",
                        "64kb", "latency", "300ms",
                    ],
                )
                .map(drop)
            }
            None => {
                // Deleting a root qdisc that is not there fails; that is the state we want.
                let _ignored = cmd::in_ns(&gw, "tc", &["qdisc", "del", "dev", "wan", "root"]);
                Ok(())
            }
        }
    }

    /// Changes a wire link (`lan` or `wan`): loss, delay, cut, MTU.
    pub fn set_link(
        &self,
        link: &str,
        change: impl FnOnce(&mut LinkSettings),
    ) -> Result<(), Error> {
        wire::set_link(&self.dir(), link, change)
    }

    /// The wire's counters, by link.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, LinkCounters>, Error> {
        wire::read_counters(&self.dir())
    }

    /// Tears the lab down now, reporting every error.
    pub fn down(mut self) -> Result<(), Error> {
        self.armed = false;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        let result = self.state.teardown();
        if let Some(mut child) = self.wire.take() {
            // Reap it; teardown already stopped it.
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
        result
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.teardown()
        {
            tracing::error!(error = %e, "lab teardown");
        }
    }
}

/// Eight hex digits derived from the prefix and this process (FNV-1a).
fn short_tag(prefix: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in prefix.bytes().chain(std::process::id().to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_short_bhl_prefixes() {
        assert_eq!(prefix_of("lab").unwrap(), "bhl-lab");
        assert_eq!(prefix_of("bhl-x1").unwrap(), "bhl-x1");
        assert!(prefix_of("Bad Name").is_err());
        assert!(prefix_of("").is_err());
        // bht + 8 hex + index fits IFNAMSIZ (15 usable bytes).
        assert_eq!(format!("bht{}3", short_tag("bhl-12345678-99")).len(), 12);
    }
}
