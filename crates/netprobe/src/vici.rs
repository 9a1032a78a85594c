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
    /// Connection names loaded (`get-conns`).
    pub configured: Vec<String>,
    /// IKE SAs in state `ESTABLISHED` (`list-sas`), by connection name.
    pub established: Vec<String>,
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
        let established = self
            .command("list-sas", Some("list-sa"))?
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
        })
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

    #[test]
    fn absent_socket_is_an_error_not_a_healthy_vpn() {
        let dir = std::env::temp_dir().join(format!("no-charon-{}.vici", std::process::id()));
        let e = Vici::connect(&dir, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, Error::Vici { op: "connect", .. }), "{e}");
    }
}
