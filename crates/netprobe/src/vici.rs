//! The site's VPN as strongSwan sees it, over its VICI socket (`/var/run/charon.vici`), spoken
//! directly: the framing is small and stable (strongSwan's `src/libcharon/plugins/vici/README.md`),
//! and a client crate would add an async stack for two requests.
//!
//! A VICI packet is a 32-bit big-endian length and a payload: a type byte, for named types a
//! length-prefixed name, then a message of elements (sections, key/values, lists). `list-sas`
//! streams one `list-sa` event per IKE SA before its response, so the event is registered
//! for first.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Where charon listens by default.
pub const VICI_SOCKET: &str = "/var/run/charon.vici";

const CMD_REQUEST: u8 = 0;
const CMD_RESPONSE: u8 = 1;
const CMD_UNKNOWN: u8 = 2;
const EVENT_REGISTER: u8 = 3;
const EVENT_UNREGISTER: u8 = 4;
const EVENT_CONFIRM: u8 = 5;
const EVENT_UNKNOWN: u8 = 6;
const EVENT: u8 = 7;

const SECTION_START: u8 = 1;
const SECTION_END: u8 = 2;
const KEY_VALUE: u8 = 3;
const LIST_START: u8 = 4;
const LIST_ITEM: u8 = 5;
const LIST_END: u8 = 6;

/// Largest packet we accept; charon's own limit is far below.
const MAX_PACKET: usize = 512 * 1024;

/// One element of a VICI message, flattened: sections as paths of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Item {
    /// A key/value inside the sections `path`.
    Value {
        /// Section names from the top.
        path: Vec<String>,
        /// Key.
        key: String,
        /// Value (VICI values are bytes; strongSwan's are text).
        value: String,
    },
    /// A list item.
    ListItem {
        /// Section names from the top.
        path: Vec<String>,
        /// List name.
        list: String,
        /// Value.
        value: String,
    },
}

/// Parses a message (the part after type and name) into flat items.
pub(crate) fn parse_message(mut b: &[u8]) -> Option<Vec<Item>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (b.get(..n)?, b.get(n..)?);
        *b = rest;
        Some(head)
    }
    fn name(b: &mut &[u8]) -> Option<String> {
        let n = usize::from(*take(b, 1)?.first()?);
        Some(String::from_utf8_lossy(take(b, n)?).into_owned())
    }
    fn value(b: &mut &[u8]) -> Option<String> {
        let len = take(b, 2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        Some(String::from_utf8_lossy(take(b, n)?).into_owned())
    }
    let mut path: Vec<String> = Vec::new();
    let mut list: Option<String> = None;
    let mut items = Vec::new();
    while !b.is_empty() {
        match *take(&mut b, 1)?.first()? {
            SECTION_START => path.push(name(&mut b)?),
            SECTION_END => {
                path.pop()?;
            }
            KEY_VALUE => {
                let key = name(&mut b)?;
                let value = value(&mut b)?;
                items.push(Item::Value {
                    path: path.clone(),
                    key,
                    value,
                });
            }
            LIST_START => list = Some(name(&mut b)?),
            LIST_ITEM => items.push(Item::ListItem {
                path: path.clone(),
                list: list.clone()?,
                value: value(&mut b)?,
            }),
            LIST_END => list = None,
            _ => return None,
        }
    }
    path.is_empty().then_some(items)
}

fn packet(kind: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(6 + name.len());
    p.extend(((2 + name.len()) as u32).to_be_bytes());
    p.push(kind);
    p.push(name.len() as u8);
    p.extend(name.as_bytes());
    p
}

/// The tunnels strongSwan has loaded and which of them are up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VpnTunnels {
    /// Names of the loaded connections (`get-conns`).
    pub configured: Vec<String>,
    /// Names of the IKE SAs in state `ESTABLISHED` (`list-sas`).
    pub established: Vec<String>,
    /// Every CHILD_SA of every IKE SA (`list-sas`).
    pub children: Vec<ChildSa>,
}

/// One CHILD_SA as `list-sas` describes it: what carries the site's packets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildSa {
    /// The IKE SA (connection) it belongs to.
    pub ike: String,
    /// The child's configured name (`net`).
    pub name: String,
    /// `INSTALLED`, `REKEYING`, …
    pub state: String,
    /// `ESP` or `AH`.
    pub protocol: String,
    /// ESP is encapsulated in UDP (NAT traversal, or kernel-libipsec, which always does).
    pub encap: bool,
    /// `AES_GCM_16`, `AES_CBC`, …
    pub encr_alg: String,
    /// Key bits.
    pub encr_keysize: Option<u32>,
    /// `HMAC_SHA2_256_128`, …; none for AEAD ciphers.
    pub integ_alg: Option<String>,
    /// The IKE SA's remote address: an IPv6 outer header costs 20 bytes more.
    pub remote_host: Option<std::net::IpAddr>,
    /// Bytes decrypted.
    pub bytes_in: u64,
    /// Bytes encrypted.
    pub bytes_out: u64,
    /// Packets decrypted.
    pub packets_in: u64,
    /// Packets encrypted.
    pub packets_out: u64,
    /// Seconds since a packet last came in, if one did.
    pub use_in_seconds: Option<u64>,
    /// Seconds since a packet last went out, if one did.
    pub use_out_seconds: Option<u64>,
    /// Local traffic selectors (`192.0.2.0/24`).
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
}

impl ChildSa {
    /// Whether it carries packets (state `INSTALLED`, as charon names it).
    pub fn installed(&self) -> bool {
        self.state == "INSTALLED"
    }

    /// Whether a remote traffic selector covers `addr` (IPv4 CIDR selectors; `dynamic` and
    /// ranges are not matched).
    pub fn covers(&self, addr: std::net::Ipv4Addr) -> bool {
        self.remote_ts.iter().any(|ts| {
            let ts = ts.split('[').next().unwrap_or(ts);
            let (net, bits) = ts.split_once('/').unwrap_or((ts, "32"));
            match (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) {
                (Ok(net), Ok(bits)) if bits <= 32 => {
                    let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                    u32::from(net) & mask == u32::from(addr) & mask
                }
                _ => false,
            }
        })
    }
}

/// The CHILD_SAs in one `list-sa` event's items.
fn child_sas(items: &[Item]) -> Vec<ChildSa> {
    use std::collections::BTreeMap;
    let mut children: BTreeMap<(String, String), ChildSa> = BTreeMap::new();
    let mut remote_hosts: BTreeMap<String, std::net::IpAddr> = BTreeMap::new();
    for item in items {
        let (path, key, value, list) = match item {
            Item::Value { path, key, value } => (path, key.as_str(), value, None),
            Item::ListItem { path, list, value } => (path, "", value, Some(list.as_str())),
        };
        if let [ike] = path.as_slice()
            && key == "remote-host"
            && let Ok(ip) = value.parse()
        {
            remote_hosts.insert(ike.clone(), ip);
        }
        let [ike, section, child] = path.as_slice() else {
            continue;
        };
        if section != "child-sas" {
            continue;
        }
        let c = children
            .entry((ike.clone(), child.clone()))
            .or_insert_with(|| ChildSa {
                ike: ike.clone(),
                name: child.clone(),
                ..ChildSa::default()
            });
        let n = || value.parse::<u64>().unwrap_or(0);
        match (list, key) {
            (Some("local-ts"), _) => c.local_ts.push(value.clone()),
            (Some("remote-ts"), _) => c.remote_ts.push(value.clone()),
            (Some(_), _) => {}
            (None, "name") => c.name = value.clone(),
            (None, "state") => c.state = value.clone(),
            (None, "protocol") => c.protocol = value.clone(),
            (None, "encap") => c.encap = value == "yes",
            (None, "encr-alg") => c.encr_alg = value.clone(),
            (None, "encr-keysize") => c.encr_keysize = value.parse().ok(),
            (None, "integ-alg") => c.integ_alg = Some(value.clone()),
            (None, "bytes-in") => c.bytes_in = n(),
            (None, "bytes-out") => c.bytes_out = n(),
            (None, "packets-in") => c.packets_in = n(),
            (None, "packets-out") => c.packets_out = n(),
            (None, "use-in") => c.use_in_seconds = value.parse().ok(),
            (None, "use-out") => c.use_out_seconds = value.parse().ok(),
            (None, _) => {}
        }
    }
    children
        .into_values()
        .map(|mut c| {
            c.remote_host = remote_hosts.get(&c.ike).copied();
            c
        })
        .collect()
}

/// A tunnel coming up or going down, as charon announces it (`ike-updown`, `child-updown`):
/// every one arrives, however quickly the tunnel comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpnEvent {
    /// `ike-updown` or `child-updown`.
    pub kind: VpnEventKind,
    /// Up (`true`) or down.
    pub up: bool,
    /// The IKE SA's name.
    pub ike: String,
}

/// Which SA an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VpnEventKind {
    /// The IKE SA.
    Ike,
    /// A CHILD_SA.
    Child,
}

impl VpnEventKind {
    fn event_name(self) -> &'static str {
        match self {
            VpnEventKind::Ike => "ike-updown",
            VpnEventKind::Child => "child-updown",
        }
    }
}

/// The up/down events of one updown message: `up = yes` is present only on the way up.
fn updown(kind: VpnEventKind, items: &[Item]) -> Option<VpnEvent> {
    let mut ike = None;
    let mut up = false;
    for item in items {
        match item {
            Item::Value { path, key, value } if path.is_empty() && key == "up" => {
                up = value == "yes";
            }
            Item::Value { path, .. } | Item::ListItem { path, .. } => {
                if let Some(first) = path.first() {
                    ike.get_or_insert_with(|| first.clone());
                }
            }
        }
    }
    Some(VpnEvent {
        kind,
        up,
        ike: ike?,
    })
}

/// A VICI session with charon.
#[derive(Debug)]
pub struct Vici {
    stream: UnixStream,
}

fn vici_err(op: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Vici { op, source }
}

fn protocol(op: &'static str, what: &str) -> Error {
    Error::Vici {
        op,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned()),
    }
}

impl Vici {
    /// Connects to charon's socket at `path`; every answer is awaited at most `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let stream = UnixStream::connect(path).map_err(vici_err("connect"))?;
        stream
            .set_read_timeout(Some(timeout))
            .map_err(vici_err("SO_RCVTIMEO"))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(vici_err("SO_SNDTIMEO"))?;
        Ok(Self { stream })
    }

    fn send(&mut self, p: &[u8], op: &'static str) -> Result<(), Error> {
        self.stream.write_all(p).map_err(vici_err(op))
    }

    /// The next packet: type, name (for events) and message bytes.
    fn recv(&mut self, op: &'static str) -> Result<(u8, String, Vec<u8>), Error> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).map_err(vici_err(op))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_PACKET {
            return Err(protocol(op, "packet length out of range"));
        }
        let mut p = vec![0u8; len];
        self.stream.read_exact(&mut p).map_err(vici_err(op))?;
        let kind = p[0];
        if kind == EVENT {
            let n = usize::from(*p.get(1).ok_or_else(|| protocol(op, "truncated event"))?);
            let name = p
                .get(2..2 + n)
                .ok_or_else(|| protocol(op, "truncated event name"))?;
            let name = String::from_utf8_lossy(name).into_owned();
            return Ok((kind, name, p[2 + n..].to_vec()));
        }
        Ok((kind, String::new(), p[1..].to_vec()))
    }

    fn command(
        &mut self,
        cmd: &'static str,
        stream_event: Option<&'static str>,
    ) -> Result<Vec<Vec<Item>>, Error> {
        if let Some(event) = stream_event {
            self.send(&packet(EVENT_REGISTER, event), cmd)?;
            match self.recv(cmd)?.0 {
                EVENT_CONFIRM => {}
                EVENT_UNKNOWN => return Err(protocol(cmd, "charon does not know the event")),
                _ => return Err(protocol(cmd, "unexpected answer to event registration")),
            }
        }
        self.send(&packet(CMD_REQUEST, cmd), cmd)?;
        let mut events = Vec::new();
        let response = loop {
            let (kind, name, msg) = self.recv(cmd)?;
            match kind {
                EVENT if Some(name.as_str()) == stream_event => events.push(msg),
                EVENT => {}
                CMD_RESPONSE => break msg,
                CMD_UNKNOWN => return Err(protocol(cmd, "charon does not know the command")),
                _ => return Err(protocol(cmd, "unexpected packet type")),
            }
        };
        if let Some(event) = stream_event {
            self.send(&packet(EVENT_UNREGISTER, event), cmd)?;
            self.recv(cmd)?;
        }
        events.push(response);
        events
            .iter()
            .map(|m| parse_message(m).ok_or_else(|| protocol(cmd, "malformed message")))
            .collect()
    }

    /// Loaded connections and established IKE SAs.
    pub fn tunnels(&mut self) -> Result<VpnTunnels, Error> {
        let configured = self
            .command("get-conns", None)?
            .into_iter()
            .flatten()
            .filter_map(|i| match i {
                Item::ListItem { list, value, .. } if list == "conns" => Some(value),
                _ => None,
            })
            .collect();
        let sas = self.command("list-sas", Some("list-sa"))?;
        let children = sas.iter().flat_map(|items| child_sas(items)).collect();
        let established = sas
            .into_iter()
            .flatten()
            .filter_map(|i| match i {
                Item::Value { path, key, value }
                    if path.len() == 1 && key == "state" && value == "ESTABLISHED" =>
                {
                    path.into_iter().next()
                }
                _ => None,
            })
            .collect();
        Ok(VpnTunnels {
            configured,
            established,
            children,
        })
    }

    /// Registers for charon's up/down events on this connection; read them with
    /// [`Vici::next_event`]. Commands must then go over another connection.
    pub fn subscribe(&mut self) -> Result<(), Error> {
        for kind in [VpnEventKind::Ike, VpnEventKind::Child] {
            self.send(&packet(EVENT_REGISTER, kind.event_name()), "register")?;
            match self.recv("register")?.0 {
                EVENT_CONFIRM => {}
                EVENT_UNKNOWN => {
                    return Err(protocol("register", "charon does not know the event"));
                }
                _ => {
                    return Err(protocol(
                        "register",
                        "unexpected answer to event registration",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The next up/down event, or `None` when none came within the connection's timeout.
    pub fn next_event(&mut self) -> Result<Option<VpnEvent>, Error> {
        let (kind, name, msg) = match self.recv("event") {
            Ok(p) => p,
            Err(Error::Vici { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        if kind != EVENT {
            return Ok(None);
        }
        let which = match name.as_str() {
            "ike-updown" => VpnEventKind::Ike,
            "child-updown" => VpnEventKind::Child,
            _ => return Ok(None),
        };
        let items = parse_message(&msg).ok_or_else(|| protocol("event", "malformed message"))?;
        Ok(updown(which, &items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> Vec<u8> {
        let mut b = vec![KEY_VALUE, k.len() as u8];
        b.extend(k.as_bytes());
        b.extend((v.len() as u16).to_be_bytes());
        b.extend(v.as_bytes());
        b
    }

    fn section(name: &str, body: Vec<u8>) -> Vec<u8> {
        let mut b = vec![SECTION_START, name.len() as u8];
        b.extend(name.as_bytes());
        b.extend(body);
        b.push(SECTION_END);
        b
    }

    #[test]
    fn parses_a_list_sa_event_and_a_conns_list() {
        // Shaped like charon's list-sa event: { site-vpn { state = ESTABLISHED, child-sas {…} } }
        let mut body = kv("uniqueid", "3");
        body.extend(kv("state", "ESTABLISHED"));
        body.extend(section("child-sas", kv("state", "INSTALLED")));
        let msg = section("site-vpn", body);
        let items = parse_message(&msg).unwrap();
        assert!(items.contains(&Item::Value {
            path: vec!["site-vpn".into()],
            key: "state".into(),
            value: "ESTABLISHED".into()
        }));
        assert!(items.contains(&Item::Value {
            path: vec!["site-vpn".into(), "child-sas".into()],
            key: "state".into(),
            value: "INSTALLED".into()
        }));

        let mut conns = vec![LIST_START, 5];
        conns.extend(b"conns");
        for c in ["site-vpn", "backup"] {
            conns.push(LIST_ITEM);
            conns.extend((c.len() as u16).to_be_bytes());
            conns.extend(c.as_bytes());
        }
        conns.push(LIST_END);
        let items = parse_message(&conns).unwrap();
        assert_eq!(items.len(), 2);

        assert_eq!(
            parse_message(&msg[..msg.len() - 1]),
            None,
            "unclosed section"
        );
        assert_eq!(parse_message(&[KEY_VALUE, 9, b'x']), None, "truncated");
        assert_eq!(
            parse_message(&[LIST_ITEM, 0, 0]),
            None,
            "item outside a list"
        );
    }

    fn list(name: &str, values: &[&str]) -> Vec<u8> {
        let mut b = vec![LIST_START, name.len() as u8];
        b.extend(name.as_bytes());
        for v in values {
            b.push(LIST_ITEM);
            b.extend((v.len() as u16).to_be_bytes());
            b.extend(v.as_bytes());
        }
        b.push(LIST_END);
        b
    }

    #[test]
    fn reads_a_child_sa_with_its_proposal_counters_and_selectors() {
        let mut child = kv("name", "net");
        for (k, v) in [
            ("state", "INSTALLED"),
            ("protocol", "ESP"),
            ("encap", "yes"),
            ("encr-alg", "AES_GCM_16"),
            ("encr-keysize", "256"),
            ("bytes-in", "1200"),
            ("packets-in", "10"),
            ("use-in", "3"),
            ("bytes-out", "98000"),
            ("packets-out", "70"),
            ("use-out", "0"),
        ] {
            child.extend(kv(k, v));
        }
        child.extend(list("local-ts", &["198.51.100.200/32"]));
        child.extend(list("remote-ts", &["203.0.113.128/26"]));
        let mut ike = kv("state", "ESTABLISHED");
        ike.extend(kv("remote-host", "203.0.113.10"));
        ike.extend(section("child-sas", section("net-2", child)));
        let items = parse_message(&section("site-vpn", ike)).unwrap();
        let children = child_sas(&items);
        assert_eq!(children.len(), 1);
        let c = &children[0];
        assert_eq!(
            (c.ike.as_str(), c.name.as_str(), c.state.as_str()),
            ("site-vpn", "net", "INSTALLED")
        );
        assert!(c.encap && c.installed());
        assert_eq!(
            (c.encr_alg.as_str(), c.encr_keysize),
            ("AES_GCM_16", Some(256))
        );
        assert_eq!(c.integ_alg, None);
        assert_eq!(
            (c.bytes_in, c.bytes_out, c.packets_in, c.packets_out),
            (1200, 98000, 10, 70)
        );
        assert_eq!((c.use_in_seconds, c.use_out_seconds), (Some(3), Some(0)));
        assert_eq!(c.remote_host, Some("203.0.113.10".parse().unwrap()));
        assert!(c.covers("203.0.113.130".parse().unwrap()));
        assert!(
            !c.covers("203.0.113.10".parse().unwrap()),
            "the outer address"
        );
    }

    #[test]
    fn an_updown_event_says_up_only_on_the_way_up() {
        let mut up = kv("up", "yes");
        up.extend(section("site-vpn", kv("state", "ESTABLISHED")));
        let ev = updown(VpnEventKind::Ike, &parse_message(&up).unwrap()).unwrap();
        assert_eq!((ev.up, ev.ike.as_str()), (true, "site-vpn"));
        let down = section("site-vpn", kv("state", "DELETING"));
        let ev = updown(VpnEventKind::Child, &parse_message(&down).unwrap()).unwrap();
        assert_eq!((ev.kind, ev.up), (VpnEventKind::Child, false));
    }

    #[test]
    fn absent_socket_is_an_error_not_a_healthy_vpn() {
        let dir = std::env::temp_dir().join(format!("no-charon-{}.vici", std::process::id()));
        let e = Vici::connect(&dir, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Vici { op: "connect", .. }), "{e}");
    }
}
