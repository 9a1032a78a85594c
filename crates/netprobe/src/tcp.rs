//! `TCP_INFO` of a connection: what the kernel's TCP believes about the path. A black hole
//! shows here as a large send MSS, retransmissions that keep climbing and no newly
//! acknowledged bytes.

use std::os::fd::BorrowedFd;

use crate::{Error, sys};

/// The `TCP_INFO` fields that tell a PMTU black hole from a slow path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// `tcpi_snd_mss`: the segment size TCP sends now.
    pub snd_mss: u32,
    /// `tcpi_pmtu`: the path MTU TCP uses.
    pub pmtu: u32,
    /// `tcpi_retransmits`: consecutive retransmissions of the oldest unacknowledged segment
    /// (back to 0 once something is acknowledged).
    pub retransmits: u32,
    /// `tcpi_total_retrans`: retransmissions over the connection's life.
    pub total_retrans: u32,
    /// `tcpi_unacked`: segments in flight.
    pub unacked: u32,
    /// `tcpi_rtt`: smoothed round trip in microseconds.
    pub rtt_us: u32,
    /// `tcpi_bytes_acked`: bytes the peer acknowledged over the connection's life.
    pub bytes_acked: u64,
}

impl TcpInfo {
    /// Reads `TCP_INFO` of the TCP socket `fd`.
    pub fn of(fd: BorrowedFd<'_>) -> Result<Self, Error> {
        let i = sys::tcp_info(fd).map_err(|source| Error::Socket {
            op: "getsockopt(TCP_INFO)",
            source,
        })?;
        Ok(Self {
            snd_mss: i.tcpi_snd_mss,
            pmtu: i.tcpi_pmtu,
            retransmits: u32::from(i.tcpi_retransmits),
            total_retrans: i.tcpi_total_retrans,
            unacked: i.tcpi_unacked,
            rtt_us: i.tcpi_rtt,
            bytes_acked: i.tcpi_bytes_acked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::os::fd::AsFd as _;

    #[test]
    fn reads_a_real_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(&[7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        server.read_exact(&mut got).unwrap();
        // The kernel acknowledges what the server read within a few milliseconds.
        let mut info = TcpInfo::of(client.as_fd()).unwrap();
        for _ in 0..100 {
            if info.bytes_acked >= 100_000 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            info = TcpInfo::of(client.as_fd()).unwrap();
        }
        assert!(info.bytes_acked >= 100_000, "{info:?}");
        // lo's MTU is 65536; TCP caps its path MTU at the largest IPv4 packet.
        assert_eq!(info.pmtu, 65_535, "{info:?}");
        assert!(info.snd_mss > 1_000 && info.snd_mss < 65_536, "{info:?}");
        assert_eq!(info.retransmits, 0, "{info:?}");

        let not_tcp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(TcpInfo::of(not_tcp.as_fd()).is_err());
    }
}
