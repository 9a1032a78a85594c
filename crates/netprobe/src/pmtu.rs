//! Full-size probes and the search for the largest size that crosses the path.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use crate::icmp::{self, FragNeeded, ICMP_HEADER, IP_HEADER, ProbeOutcome};
use crate::{Error, sys};

/// The smallest IPv4 MTU every link must carry (RFC 791); the search never goes below it.
pub const MIN_IPV4_MTU: usize = 68;
const MAX_IPV4_PACKET: usize = 65_535;

/// What a path-MTU search found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchResult {
    /// The largest packet size that passed (`None` if not even the smallest did).
    pub largest_passing: Option<usize>,
    /// The smallest size that failed (`None` if the ceiling passed).
    pub smallest_failing: Option<usize>,
    /// A frag-needed message received during the search, if any router sent one.
    pub frag_needed: Option<FragNeeded>,
    /// Probes sent.
    pub probes: u32,
}

/// Sends ICMP echo probes with DF set toward one IPv4 target.
#[derive(Debug)]
pub struct Prober {
    socket: Socket,
    target: Ipv4Addr,
    id: u16,
    seq: u16,
    timeout: Duration,
}

impl Prober {
    /// A prober toward `target`; each probe waits `timeout` for its answer.
    pub fn new(target: Ipv4Addr, timeout: Duration) -> Result<Self, Error> {
        if target.is_unspecified() || target.is_broadcast() || target.is_multicast() {
            return Err(Error::Target(target));
        }
        let socket = crate::icmp::raw_socket("path-MTU probes")?;
        sys::set_pmtudisc_probe(&socket).map_err(|e| Error::Socket {
            op: "setsockopt(IP_MTU_DISCOVER)",
            source: e,
        })?;
        // Random per-prober id: several probers (and ping) may share the host.
        let id = (std::process::id() as u16)
            ^ (Instant::now().elapsed().subsec_nanos() as u16)
            ^ (u32::from(target) as u16);
        Ok(Self {
            socket,
            target,
            id,
            seq: 0,
            timeout,
        })
    }

    /// The target.
    pub fn target(&self) -> Ipv4Addr {
        self.target
    }

    /// Sends one probe whose IPv4 packet is `size` bytes and waits for its fate.
    pub fn probe(&mut self, size: usize) -> Result<ProbeOutcome, Error> {
        let min = IP_HEADER + ICMP_HEADER;
        if !(min..=MAX_IPV4_PACKET).contains(&size) {
            return Err(Error::Size {
                size,
                min,
                max: MAX_IPV4_PACKET,
            });
        }
        self.seq = self.seq.wrapping_add(1);
        let packet = icmp::echo_request(self.id, self.seq, size);
        let to = SockAddr::from(SocketAddrV4::new(self.target, 0));
        let started = Instant::now();
        match self.socket.send_to(&packet, &to) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                return Ok(ProbeOutcome::LocalTooBig);
            }
            Err(e) => {
                return Err(Error::Socket {
                    op: "sendto",
                    source: e,
                });
            }
        }
        let deadline = started + self.timeout;
        let mut buf = vec![0u8; MAX_IPV4_PACKET];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(ProbeOutcome::Lost);
            }
            self.socket
                .set_read_timeout(Some(left))
                .map_err(|e| Error::Socket {
                    op: "SO_RCVTIMEO",
                    source: e,
                })?;
            let n = match (&self.socket).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(ProbeOutcome::Lost);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Socket {
                        op: "recv",
                        source: e,
                    });
                }
            };
            match icmp::classify(&buf[..n], self.id, self.seq, self.target) {
                Some(Ok(())) => {
                    return Ok(ProbeOutcome::Passed {
                        rtt_us: started.elapsed().as_micros() as u64,
                    });
                }
                Some(Err(f)) => return Ok(ProbeOutcome::FragNeeded(f)),
                None => continue,
            }
        }
    }

    /// Whether `size` passes, trying up to `tries` times (probe loss, not one lost packet, is
    /// the signal — RFC 8899 §4.2).
    fn passes(
        &mut self,
        size: usize,
        tries: u32,
        result: &mut SearchResult,
    ) -> Result<bool, Error> {
        for _ in 0..tries {
            result.probes += 1;
            match self.probe(size)? {
                ProbeOutcome::Passed { .. } => return Ok(true),
                ProbeOutcome::FragNeeded(f) => {
                    result.frag_needed = Some(f);
                    return Ok(false);
                }
                ProbeOutcome::LocalTooBig => return Ok(false),
                ProbeOutcome::Lost => {}
            }
        }
        Ok(false)
    }

    /// Finds the largest packet size in `floor..=ceiling` that crosses the path, by binary
    /// search on probe loss. A frag-needed answer's next-hop MTU, or else `hint` (the path MTU
    /// the site expects), is tried first: when it passes and one byte more fails, the search is
    /// over in two probes instead of a dozen timeouts.
    pub fn search(
        &mut self,
        floor: usize,
        ceiling: usize,
        tries: u32,
        hint: Option<usize>,
    ) -> Result<SearchResult, Error> {
        let floor = floor.max(MIN_IPV4_MTU).max(IP_HEADER + ICMP_HEADER);
        let mut result = SearchResult {
            largest_passing: None,
            smallest_failing: None,
            frag_needed: None,
            probes: 0,
        };
        if self.passes(ceiling, tries, &mut result)? {
            result.largest_passing = Some(ceiling);
            return Ok(result);
        }
        result.smallest_failing = Some(ceiling);
        if !self.passes(floor, tries, &mut result)? {
            return Ok(result);
        }
        let (mut lo, mut hi) = (floor, ceiling);
        let candidate = result
            .frag_needed
            .map(|f| usize::from(f.next_hop_mtu))
            .filter(|m| *m > 0)
            .or(hint);
        if let Some(mtu) = candidate
            && mtu > lo
            && mtu < hi
            && self.passes(mtu, tries, &mut result)?
        {
            lo = mtu;
            if self.passes(mtu + 1, tries, &mut result)? {
                lo = mtu + 1;
            } else {
                hi = mtu + 1;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.passes(mid, tries, &mut result)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        result.largest_passing = Some(lo);
        result.smallest_failing = Some(hi);
        Ok(result)
    }
}
