//! Full-size probes and the search for the largest size that crosses the path.

use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use socket2::{SockAddr, Socket};

use crate::icmp::{self, FragNeeded, ICMP_HEADER, IP_HEADER, ProbeOutcome, ProbeSocket};
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
    kind: ProbeSocket,
    target: Ipv4Addr,
    id: u16,
    seq: u16,
    timeout: Duration,
}

impl Prober {
    /// A prober toward `target`; each probe waits `timeout` for its answer. It uses a raw
    /// socket when the process may open one, else a ping socket ([`ProbeSocket`]).
    pub fn new(target: Ipv4Addr, timeout: Duration) -> Result<Self, Error> {
        if target.is_unspecified() || target.is_broadcast() || target.is_multicast() {
            return Err(Error::Target(target));
        }
        let (socket, kind) = crate::icmp::probe_socket("path-MTU probes")?;
        sys::set_pmtudisc_probe(&socket).map_err(|e| Error::Socket {
            op: "setsockopt(IP_MTU_DISCOVER)",
            source: e,
        })?;
        if kind == ProbeSocket::Ping {
            sys::set_recverr(&socket).map_err(|e| Error::Socket {
                op: "setsockopt(IP_RECVERR)",
                source: e,
            })?;
        }
        // Random per-prober id: several probers (and ping) may share the host.
        let id = (std::process::id() as u16)
            ^ (Instant::now().elapsed().subsec_nanos() as u16)
            ^ (u32::from(target) as u16);
        Ok(Self {
            socket,
            kind,
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

    /// Which kind of socket the probes leave by.
    pub fn socket_kind(&self) -> ProbeSocket {
        self.kind
    }

    /// What one received datagram answers: a probe's sequence number and its fate.
    fn answer(&self, packet: &[u8]) -> Option<(u16, Result<(), FragNeeded>)> {
        match self.kind {
            ProbeSocket::Raw => icmp::classify(packet, self.id, self.target),
            ProbeSocket::Ping => icmp::classify_ping(packet).map(|seq| (seq, Ok(()))),
        }
    }

    /// The frag-needed answers a ping socket's error queue holds, by sequence number. (A raw
    /// socket reads them as datagrams instead.)
    fn queued_answers(&self) -> Result<Vec<(u16, FragNeeded)>, Error> {
        let mut found = Vec::new();
        while let Some(e) = sys::read_error_queue(&self.socket).map_err(|e| Error::Socket {
            op: "recvmsg(MSG_ERRQUEUE)",
            source: e,
        })? {
            found.extend(icmp::classify_queued(&e));
        }
        Ok(found)
    }

    /// Sends one probe whose IPv4 packet is `size` bytes and waits for its fate.
    pub fn probe(&mut self, size: usize) -> Result<ProbeOutcome, Error> {
        Ok(self.volley(&[size])?[0])
    }

    /// Sends one probe per entry of `sizes` (IPv4 packet sizes, repeats allowed) a millisecond
    /// apart, then waits up to the timeout after the last for their fates, returned in the
    /// order of `sizes`. A volley costs one timeout however many sizes it tries, where probing
    /// them one by one costs one timeout per size the path drops.
    pub fn volley(&mut self, sizes: &[usize]) -> Result<Vec<ProbeOutcome>, Error> {
        let min = IP_HEADER + ICMP_HEADER;
        if let Some(&size) = sizes.iter().find(|s| !(min..=MAX_IPV4_PACKET).contains(*s)) {
            return Err(Error::Size {
                size,
                min,
                max: MAX_IPV4_PACKET,
            });
        }
        let to = SockAddr::from(SocketAddrV4::new(self.target, 0));
        let mut outcomes: Vec<Option<ProbeOutcome>> = vec![None; sizes.len()];
        // Each probe's sequence number and send time, by its index in `sizes`.
        let mut sent: Vec<(u16, Instant)> = Vec::with_capacity(sizes.len());
        for (i, &size) in sizes.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(VOLLEY_SPACING);
            }
            self.seq = self.seq.wrapping_add(1);
            let packet = icmp::echo_request(self.id, self.seq, size);
            sent.push((self.seq, Instant::now()));
            match self.socket.send_to(&packet, &to) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                    outcomes[i] = Some(ProbeOutcome::LocalTooBig);
                }
                Err(e) => {
                    return Err(Error::Socket {
                        op: "sendto",
                        source: e,
                    });
                }
            }
        }
        let deadline = sent.last().map_or_else(Instant::now, |(_, at)| *at) + self.timeout;
        let mut buf = vec![0u8; MAX_IPV4_PACKET];
        let settle = |seq: u16, answer: Result<(), FragNeeded>, outcomes: &mut [Option<_>]| {
            let Some(i) = sent.iter().position(|(s, _)| *s == seq) else {
                return;
            };
            if outcomes[i].is_none() {
                outcomes[i] = Some(match answer {
                    Ok(()) => ProbeOutcome::Passed {
                        rtt_us: sent[i].1.elapsed().as_micros() as u64,
                    },
                    Err(f) => ProbeOutcome::FragNeeded(f),
                });
            }
        };
        while outcomes.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
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
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A ping socket reports a queued ICMP error (frag-needed: EMSGSIZE) on the
                // next read; the error itself waits in the error queue.
                Err(_) if self.kind == ProbeSocket::Ping => {
                    for (seq, frag) in self.queued_answers()? {
                        settle(seq, Err(frag), &mut outcomes);
                    }
                    continue;
                }
                Err(e) => {
                    return Err(Error::Socket {
                        op: "recv",
                        source: e,
                    });
                }
            };
            if let Some((seq, answer)) = self.answer(&buf[..n]) {
                settle(seq, answer, &mut outcomes);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(ProbeOutcome::Lost))
            .collect())
    }

    /// Finds the largest packet size in `floor..=ceiling` that crosses the path, by probe
    /// loss, in volleys: each tries up to 15 sizes inside the bounds so far, every size `tries`
    /// times (probe loss, not one lost packet, is the signal — RFC 8899 §4.2), so 1280..1500
    /// takes two volleys (two timeouts) where a binary search waited out one per dropped size.
    /// A frag-needed answer's next-hop MTU, or else `hint` (the path MTU the site expects), is
    /// tried with one byte more in the first volley: when it is the boundary, one volley ends
    /// the search.
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
        let mut bounds = Bounds::new(floor, ceiling.max(floor));
        let mut sizes = bounds.first_volley(hint);
        for _ in 0..MAX_VOLLEYS {
            let sent: Vec<usize> = (0..tries.max(1)).flat_map(|_| sizes.clone()).collect();
            result.probes += sent.len() as u32;
            let mut candidate = None;
            for (size, outcome) in sent.iter().zip(self.volley(&sent)?) {
                match outcome {
                    ProbeOutcome::Passed { .. } => bounds.passed(*size),
                    ProbeOutcome::FragNeeded(f) => {
                        result.frag_needed = Some(f);
                        candidate = Some(usize::from(f.next_hop_mtu)).filter(|m| *m > 0);
                        bounds.failed(*size);
                    }
                    ProbeOutcome::Lost | ProbeOutcome::LocalTooBig => bounds.failed(*size),
                }
            }
            match bounds.next_volley(candidate) {
                Some(next) => sizes = next,
                None => break,
            }
        }
        result.largest_passing = bounds.largest_passing;
        result.smallest_failing = bounds.smallest_failing();
        Ok(result)
    }
}

/// Time between the probes of a volley, so a burst does not overflow a shaper's queue by
/// itself.
const VOLLEY_SPACING: Duration = Duration::from_millis(1);
/// Sizes tried per volley besides the bounds and the candidate.
const VOLLEY_SIZES: usize = 15;
/// A search that has not converged after this many volleys reports its bounds so far (it
/// converges in four from 68..65535 when probes are not lost at random).
const MAX_VOLLEYS: usize = 8;

/// What a search knows so far: the largest size that passed and every size that failed. A
/// size that failed below one that passed was lost at random, not to the path, so only the
/// failures above the largest pass bound the search.
#[derive(Debug)]
struct Bounds {
    floor: usize,
    ceiling: usize,
    largest_passing: Option<usize>,
    failed: std::collections::BTreeSet<usize>,
}

impl Bounds {
    fn new(floor: usize, ceiling: usize) -> Self {
        Self {
            floor,
            ceiling,
            largest_passing: None,
            failed: Default::default(),
        }
    }

    fn passed(&mut self, size: usize) {
        self.largest_passing = self.largest_passing.max(Some(size));
    }

    fn failed(&mut self, size: usize) {
        self.failed.insert(size);
    }

    fn smallest_failing(&self) -> Option<usize> {
        let above = self.largest_passing.map_or(0, |p| p + 1);
        self.failed.range(above..).next().copied()
    }

    /// The ceiling, the floor, the candidate and one byte more, and sizes spread between.
    fn first_volley(&self, candidate: Option<usize>) -> Vec<usize> {
        let mut sizes = vec![self.ceiling, self.floor];
        sizes.extend(self.candidate(candidate, self.floor, self.ceiling));
        sizes.extend(spread(self.floor, self.ceiling));
        dedup(sizes)
    }

    /// The sizes for the next volley, `None` once the boundary is found (or not even the floor
    /// passes, or the ceiling does).
    fn next_volley(&self, candidate: Option<usize>) -> Option<Vec<usize>> {
        let lo = self.largest_passing?;
        let hi = self.smallest_failing()?;
        if hi - lo <= 1 {
            return None;
        }
        let mut sizes = self.candidate(candidate, lo, hi);
        sizes.extend(spread(lo, hi));
        Some(dedup(sizes))
    }

    fn candidate(&self, candidate: Option<usize>, lo: usize, hi: usize) -> Vec<usize> {
        candidate
            .filter(|c| *c > lo && *c < hi)
            .map(|c| vec![c, c + 1])
            .unwrap_or_default()
    }
}

/// Up to `VOLLEY_SIZES` sizes strictly between `lo` and `hi`, evenly spaced.
fn spread(lo: usize, hi: usize) -> Vec<usize> {
    let inside = hi.saturating_sub(lo).saturating_sub(1);
    let n = inside.min(VOLLEY_SIZES);
    (1..=n).map(|i| lo + (hi - lo) * i / (n + 1)).collect()
}

fn dedup(mut sizes: Vec<usize>) -> Vec<usize> {
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the search's volleys against a path that carries `mtu`, losing the probes that
    /// `lose(volley, size)` says.
    fn converge(
        floor: usize,
        ceiling: usize,
        hint: Option<usize>,
        mtu: usize,
        lose: impl Fn(usize, usize) -> bool,
    ) -> (Option<usize>, Option<usize>, usize) {
        let mut b = Bounds::new(floor, ceiling);
        let mut sizes = b.first_volley(hint);
        let mut volleys = 0;
        loop {
            volleys += 1;
            for &s in &sizes {
                if s <= mtu && !lose(volleys, s) {
                    b.passed(s);
                } else {
                    b.failed(s);
                }
            }
            match b.next_volley(None) {
                Some(next) if volleys < MAX_VOLLEYS => sizes = next,
                _ => return (b.largest_passing, b.smallest_failing(), volleys),
            }
        }
    }

    #[test]
    fn a_path_that_shrank_is_found_in_two_volleys() {
        assert_eq!(
            converge(1280, 1500, Some(1500), 1400, |_, _| false),
            (Some(1400), Some(1401), 2)
        );
    }

    #[test]
    fn the_expected_path_mtu_ends_the_search_in_one_volley() {
        assert_eq!(
            converge(1280, 9000, Some(1500), 1500, |_, _| false),
            (Some(1500), Some(1501), 1)
        );
    }

    #[test]
    fn the_whole_ipv4_range_converges_within_the_volley_limit() {
        for mtu in [68, 69, 576, 1280, 1499, 8999, 65_534] {
            let (lo, hi, volleys) = converge(68, 65_535, None, mtu, |_, _| false);
            assert_eq!((lo, hi), (Some(mtu), Some(mtu + 1)), "mtu {mtu}");
            assert!(volleys <= 5, "mtu {mtu}: {volleys} volleys");
        }
    }

    #[test]
    fn a_size_lost_below_one_that_passed_does_not_bound_the_search() {
        // The first volley loses 1293 at random; 1389 passes, so 1293 was not the path.
        assert_eq!(spread(1280, 1500)[0], 1293);
        assert_eq!(
            converge(1280, 1500, None, 1400, |v, s| v == 1 && s == 1293),
            (Some(1400), Some(1401), 2)
        );
    }

    #[test]
    fn a_passing_ceiling_or_a_failing_floor_ends_at_once() {
        assert_eq!(
            converge(1280, 1500, None, 1500, |_, _| false),
            (Some(1500), None, 1)
        );
        assert_eq!(
            converge(1280, 1500, None, 1000, |_, _| false),
            (None, Some(1280), 1)
        );
    }

    #[test]
    fn spread_stays_strictly_inside_its_bounds() {
        assert_eq!(spread(1400, 1401), Vec::<usize>::new());
        assert_eq!(spread(1400, 1403), vec![1401, 1402]);
        let s = spread(1280, 1500);
        assert_eq!(s.len(), VOLLEY_SIZES);
        assert!(s.iter().all(|x| (1281..1500).contains(x)), "{s:?}");
    }
}
