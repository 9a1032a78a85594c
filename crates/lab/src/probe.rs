//! Small network helpers that run *inside* a namespace as their own processes (hidden
//! subcommands): a bulk TCP sender and receiver for the ground-truth tests and the benchmark,
//! a TCP readiness wait for peers, and the webhook receiver that records what the agent sends.
//! They are plain blocking std code with bounded timeouts.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Error;
use crate::state::write_atomic;

fn io(op: &'static str, what: &str, e: std::io::Error) -> Error {
    Error::io(op, what, e)
}

/// Accepts one connection on `listen`, reads until EOF, and keeps `progress` holding the byte
/// count so far (rewritten at most every 50 ms, and with a final line `done` at EOF). Gives up
/// after `timeout`.
pub fn tcp_recv(listen: SocketAddr, progress: &Path, timeout: Duration) -> Result<u64, Error> {
    let deadline = Instant::now() + timeout;
    let listener = TcpListener::bind(listen).map_err(|e| io("bind", &listen.to_string(), e))?;
    write_atomic(progress, b"0\n")?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io("listen", &listen.to_string(), e))?;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io("accept", &listen.to_string(), e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| io("accept", &listen.to_string(), e))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| io("accept", &listen.to_string(), e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    let mut last_write = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("read", &listen.to_string(), e)),
        }
        if last_write.elapsed() >= Duration::from_millis(50) {
            write_atomic(progress, format!("{total}\n").as_bytes())?;
            last_write = Instant::now();
        }
        if Instant::now() >= deadline {
            write_atomic(progress, format!("{total}\n").as_bytes())?;
            return Ok(total);
        }
    }
    write_atomic(progress, format!("{total}\ndone\n").as_bytes())?;
    Ok(total)
}

/// Reads a progress file of [`tcp_recv`]: (bytes, finished).
pub fn read_progress(progress: &Path) -> (u64, bool) {
    let text = std::fs::read_to_string(progress).unwrap_or_default();
    let mut lines = text.lines();
    let bytes = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (bytes, lines.next() == Some("done"))
}

/// Connects to `to` and sends `bytes` bytes (or for `seconds` when given), then closes.
/// Prints the achieved rate. Gives up after `timeout`.
pub fn tcp_send(
    to: SocketAddr,
    bytes: u64,
    seconds: Option<f64>,
    timeout: Duration,
) -> Result<u64, Error> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&to, timeout.min(Duration::from_secs(10)))
        .map_err(|e| io("connect", &to.to_string(), e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| io("connect", &to.to_string(), e))?;
    let buf = vec![0x5au8; 256 * 1024];
    let mut sent = 0u64;
    loop {
        let done = match seconds {
            Some(s) => start.elapsed().as_secs_f64() >= s,
            None => sent >= bytes,
        };
        if done || start.elapsed() >= timeout {
            break;
        }
        let n = match seconds {
            Some(_) => buf.len(),
            None => buf.len().min((bytes - sent) as usize),
        };
        stream
            .write_all(&buf[..n])
            .map_err(|e| io("send", &to.to_string(), e))?;
        sent += n as u64;
    }
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| io("close", &to.to_string(), e))?;
    // Wait for the peer's close so the figure covers delivery, not just the socket buffer.
    let _ignored = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut sink = [0u8; 64];
    let _ignored = stream.read(&mut sink);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} bytes in {secs:.2} s: {:.0} Mbit/s",
        sent as f64 * 8.0 / secs.max(1e-9) / 1e6
    );
    Ok(sent)
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Peer {
                peer: "tcp",
                message: format!("nothing listens on {addr} after {timeout:?}"),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One POST the webhook receiver recorded (a line of its JSONL file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Alert {
    /// Arrival, milliseconds since the Unix epoch.
    pub received_unix_ms: u64,
    /// Request path.
    pub path: String,
    /// Body (lossy UTF-8).
    pub body: String,
}

/// Serves HTTP on `listen`, appending every request with a body to `out` as an [`Alert`] JSON
/// line and answering `200 OK`. Runs until killed.
pub fn webhook(listen: SocketAddr, out: &Path) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).map_err(|e| io("bind", &listen.to_string(), e))?;
    let out = out.to_owned();
    for stream in listener.incoming().flatten() {
        let out = out.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_one(stream, &out) {
                tracing::warn!(error = %e, "webhook request");
            }
        });
    }
    Ok(())
}

fn serve_one(stream: TcpStream, out: &Path) -> Result<(), Error> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| io("read", "webhook", e))?;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| io("read", "webhook", e))?);
    let mut request_line = String::new();
    reader
        .read_line(&mut request_line)
        .map_err(|e| io("read", "webhook", e))?;
    // A connection that sends nothing is a readiness probe (`wait-tcp`), not an alert.
    let Some(path) = request_line.split_whitespace().nth(1).map(str::to_owned) else {
        return Ok(());
    };
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| io("read", "webhook", e))?;
        if n == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length.min(1 << 20)];
    reader
        .read_exact(&mut body)
        .map_err(|e| io("read", "webhook", e))?;
    let received_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let alert = Alert {
        received_unix_ms,
        path,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    let mut line = serde_json::to_string(&alert).map_err(|source| Error::State {
        path: out.to_owned(),
        source,
    })?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .map_err(|e| Error::io("append", out, e))?;
    f.write_all(line.as_bytes())
        .map_err(|e| Error::io("append", out, e))?;
    let mut stream = stream;
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .map_err(|e| io("write", "webhook", e))
}

/// Every alert in a webhook receiver's file.
pub fn read_alerts(path: &Path) -> Vec<Alert> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
