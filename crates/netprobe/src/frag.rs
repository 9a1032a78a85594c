//! The host-wide ICMP "fragmentation needed" listener (issue #5's P2 action item: Linux keeps
//! no such counter). A raw ICMP socket receives a copy of every ICMP message the host gets;
//! `ICMP_FILTER` lets only destination-unreachable through, so the agent is not woken by every
//! echo on the host. It sees frag-needed about any socket's packets (the uploader's TCP, the
//! VPN's ESP), not only about our probes.

use std::io::Read as _;
use std::time::Duration;

use socket2::Socket;

use crate::icmp::{self, FragNeededSeen};
use crate::{Error, sys};

/// How long [`FragNeededListener::recv`] waits at most, so its thread can notice shutdown.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);
const DEST_UNREACHABLE: u8 = 3;

/// A raw ICMP socket that reports every "fragmentation needed" the host receives.
#[derive(Debug)]
pub struct FragNeededListener {
    socket: Socket,
    buf: Vec<u8>,
}

impl FragNeededListener {
    /// Opens the listener in the current network namespace. Needs root or `CAP_NET_RAW`
    /// ([`Error::Permission`] otherwise; the rest of the agent keeps working).
    pub fn open() -> Result<Self, Error> {
        let socket = crate::icmp::raw_socket("the fragmentation-needed listener")?;
        sys::set_icmp_filter(&socket, !(1u32 << DEST_UNREACHABLE)).map_err(|e| Error::Socket {
            op: "setsockopt(ICMP_FILTER)",
            source: e,
        })?;
        socket
            .set_read_timeout(Some(RECV_TIMEOUT))
            .map_err(|e| Error::Socket {
                op: "SO_RCVTIMEO",
                source: e,
            })?;
        Ok(Self {
            socket,
            buf: vec![0; 65_535],
        })
    }

    /// Waits up to about a second for the next frag-needed message; `None` on timeout.
    pub fn recv(&mut self) -> Result<Option<FragNeededSeen>, Error> {
        loop {
            let n = match (&self.socket).read(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Socket {
                        op: "recv (frag-needed listener)",
                        source: e,
                    });
                }
            };
            // Other destination-unreachable codes pass the filter; skip them here.
            if let Some(seen) = icmp::frag_needed_any(&self.buf[..n]) {
                return Ok(Some(seen));
            }
        }
    }
}
