//! Request bodies: small in-memory ones, and file ranges streamed in blocks so memory does not
//! grow with part or chunk size.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use backhaul_telemetry::Metrics;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::progress::Progress;
use crate::ratelimit::RateLimiter;

/// Size of the blocks a file body is read and sent in.
pub const BLOCK_BYTES: usize = 256 * 1024;

type ReadFuture = Pin<Box<dyn Future<Output = io::Result<Bytes>> + Send>>;

/// A streamed byte range of a file.
pub struct FileBody {
    file: Arc<File>,
    offset: u64,
    remaining: u64,
    progress: Arc<Progress>,
    limiter: Arc<RateLimiter>,
    metrics: Arc<Metrics>,
    pending: Option<ReadFuture>,
}

impl std::fmt::Debug for FileBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBody")
            .field("offset", &self.offset)
            .field("remaining", &self.remaining)
            .finish()
    }
}

impl FileBody {
    /// `len` bytes of `file` from `offset`.
    pub fn new(
        file: Arc<File>,
        offset: u64,
        len: u64,
        progress: Arc<Progress>,
        limiter: Arc<RateLimiter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        progress.touch();
        Self {
            file,
            offset,
            remaining: len,
            progress,
            limiter,
            metrics,
            pending: None,
        }
    }
}

/// The body of every request we send.
#[derive(Debug)]
pub enum ReqBody {
    /// In memory (XML, form bodies, empty).
    Bytes(Option<Bytes>),
    /// A file range.
    File(FileBody),
}

impl ReqBody {
    /// An in-memory body.
    pub fn bytes(b: Bytes) -> Self {
        ReqBody::Bytes(if b.is_empty() { None } else { Some(b) })
    }

    /// An empty body.
    pub fn empty() -> Self {
        ReqBody::Bytes(None)
    }
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            ReqBody::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ReqBody::File(f) => {
                if f.remaining == 0 {
                    f.progress.touch();
                    return Poll::Ready(None);
                }
                if f.pending.is_none() {
                    let n = (f.remaining as usize).min(BLOCK_BYTES);
                    let (file, offset, limiter) = (f.file.clone(), f.offset, f.limiter.clone());
                    f.pending = Some(Box::pin(async move {
                        limiter.acquire(n as u64).await;
                        tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0u8; n];
                            file.read_exact_at(&mut buf, offset)?;
                            Ok(Bytes::from(buf))
                        })
                        .await
                        .map_err(io::Error::other)?
                    }));
                }
                let Some(fut) = f.pending.as_mut() else {
                    return Poll::Ready(None);
                };
                match fut.as_mut().poll(cx) {
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(r) => {
                        f.pending = None;
                        let data = match r {
                            Ok(d) => d,
                            // A file truncated under us ends here; the caller re-checks identity.
                            Err(e) => return Poll::Ready(Some(Err(e))),
                        };
                        let n = data.len() as u64;
                        f.offset += n;
                        f.remaining -= n;
                        // Hyper asks for the next frame only once the socket took this one;
                        // with TCP_NOTSENT_LOWAT that tracks bytes leaving, not buffering.
                        f.progress.advance(n);
                        f.metrics.sent_bytes.add(n);
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Bytes(b) => b.is_none(),
            ReqBody::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}

/// Digests of a byte range: the CRC32C always, the MD5 when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeDigest {
    /// CRC32C.
    pub crc32c: u32,
    /// MD5, when asked for.
    pub md5: Option<[u8; 16]>,
}

/// Digests of a file range in one read, in [`BLOCK_BYTES`] blocks on a blocking thread. The
/// MD5 costs about 1.5 CPU-s/GiB more and is only asked for where the store does not validate
/// the CRC32C itself (or to compare with an object already in the bucket).
pub async fn digest_range(
    file: Arc<File>,
    offset: u64,
    len: u64,
    with_md5: bool,
) -> io::Result<RangeDigest> {
    use md5::Digest as _;
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; (len as usize).min(BLOCK_BYTES)];
        let (mut crc, mut pos, end) = (0u32, offset, offset + len);
        let mut md5 = with_md5.then(md5::Md5::new);
        while pos < end {
            let n = ((end - pos) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], pos)?;
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            if let Some(h) = md5.as_mut() {
                h.update(&buf[..n]);
            }
            pos += n as u64;
        }
        Ok(RangeDigest {
            crc32c: crc,
            md5: md5.map(|h| h.finalize().into()),
        })
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn streams_exact_range_in_blocks_and_counts_progress() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(BLOCK_BYTES * 2 + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        let progress = Arc::new(Progress::default());
        let metrics = Arc::new(Metrics::default());
        let len = BLOCK_BYTES as u64 + 50;
        let body = ReqBody::File(FileBody::new(
            file.clone(),
            10,
            len,
            progress.clone(),
            Arc::new(RateLimiter::unlimited()),
            metrics.clone(),
        ));
        assert_eq!(body.size_hint().exact(), Some(len));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &data[10..10 + len as usize]);
        assert_eq!(progress.sent(), len);
        assert_eq!(metrics.sent_bytes.value(), len);
        let d = digest_range(file.clone(), 10, len, false).await.unwrap();
        assert_eq!(d.crc32c, crc32c::crc32c(&data[10..10 + len as usize]));
        assert_eq!(d.md5, None);
        use md5::Digest as _;
        let with = digest_range(file, 10, len, true).await.unwrap();
        let want: [u8; 16] = md5::Md5::digest(&data[10..10 + len as usize]).into();
        assert_eq!(with.md5, Some(want));
    }
}
