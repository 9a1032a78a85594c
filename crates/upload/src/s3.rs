//! The S3 operations the agent needs, signed with SigV4 and sent through our [`Transport`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use backhaul_telemetry::Metrics;

use backhaul_spool::PartRecord;
use bytes::Bytes;
use http::Request;
use time::OffsetDateTime;

use crate::body::ReqBody;
use crate::config::{UploadSettings, UrlStyle};
use crate::creds::CredentialsProvider;
use crate::progress::Deadline;
use crate::sigv4::{self, SignRequest, UNSIGNED_PAYLOAD};
use crate::transport::{Response, Target, Transport, parse_url};
use crate::{Error, Resign, xml};

/// What HeadObject says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHead {
    /// Size in bytes.
    pub size: u64,
    /// ETag, quotes stripped.
    pub etag: String,
    /// `x-amz-checksum-crc32c`, if the server keeps one.
    pub crc32c: Option<String>,
}

/// A part as ListParts reports it (some servers omit the ETag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPart {
    /// Part number.
    pub number: u32,
    /// Size.
    pub size: u64,
    /// ETag, quotes stripped.
    pub etag: Option<String>,
}

/// A PutObject's answer: the ETag, and the CRC32C the store echoes (S3 does when the request
/// carried one; a store that validated it has exactly the bytes that CRC describes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutAck {
    /// ETag, unquoted (an MD5 for plain single-part objects on most stores).
    pub etag: String,
    /// `x-amz-checksum-crc32c` of the response, when present.
    pub crc32c: Option<String>,
}

/// The result of CompleteMultipartUpload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// ETag, quotes stripped.
    pub etag: String,
    /// Composite CRC32C, if the server computed one.
    pub crc32c: Option<String>,
}

/// What CreateBucket proved about the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owned {
    /// Created now, or already ours: usable without asking again.
    Yes,
    /// It exists (`BucketAlreadyExists`), but whether these credentials may use it is open.
    Unknown,
}

/// An S3 bucket client.
#[derive(Debug)]
pub struct S3Client {
    transport: Arc<Transport>,
    target: Target,
    base_path: String,
    bucket: String,
    region: String,
    style: UrlStyle,
    creds: Arc<CredentialsProvider>,
    request_timeout: Duration,
    metrics: Arc<Metrics>,
    /// The store's clock minus ours, in seconds, learned from a `RequestTimeTooSkewed`:
    /// requests are signed at the store's time from then on.
    clock_offset: AtomicI64,
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').to_owned()
}

impl S3Client {
    /// A client for the configured endpoint and bucket.
    pub fn new(
        settings: &UploadSettings,
        transport: Arc<Transport>,
        creds: Arc<CredentialsProvider>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let (mut target, base_path) = parse_url(&settings.endpoint)?;
        if settings.url_style == UrlStyle::VirtualHosted {
            target.host = format!("{}.{}", settings.bucket, target.host);
        }
        Ok(Self {
            transport,
            target,
            base_path,
            bucket: settings.bucket.clone(),
            region: settings.region.clone(),
            style: settings.url_style,
            creds,
            request_timeout: settings.request_timeout,
            metrics,
            clock_offset: AtomicI64::new(0),
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The credentials (shared with CloudWatch publishing and `/status`).
    pub fn credentials(&self) -> &Arc<CredentialsProvider> {
        &self.creds
    }

    /// The longest a request with a body of `bytes` may take to reach the store at the
    /// goodput of the last minute (a floor when there is none): credentials that expire
    /// sooner are not signed with.
    fn send_time(&self, bytes: u64) -> Duration {
        let mbps = self.metrics.goodput.mbps(Instant::now(), 60);
        let bytes_per_second = (mbps * 1e6 / 8.0).max(MIN_SEND_RATE);
        self.request_timeout.min(SEND_MARGIN)
            + Duration::from_secs_f64(bytes as f64 / bytes_per_second)
    }

    /// The transport (shared with CloudWatch publishing).
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }

    fn path(&self, key: Option<&str>) -> String {
        let mut p = self.base_path.clone();
        if self.style != UrlStyle::VirtualHosted {
            p.push('/');
            p.push_str(&sigv4::uri_encode(&self.bucket, false));
        }
        p.push('/');
        if let Some(k) = key {
            p.push_str(&sigv4::uri_encode(k, true));
        }
        p
    }

    /// Signs and sends one request; maps non-2xx answers to [`Error::Status`].
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        method: &str,
        op: &'static str,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(&str, String)],
        body: ReqBody,
        deadline: Option<Deadline<'_>>,
    ) -> Result<Response, Error> {
        let content_length = http_body::Body::size_hint(&body).exact().unwrap_or(0);
        let path = self.path(key);
        let offset = self.clock_offset.load(Ordering::Relaxed);
        let now = OffsetDateTime::now_utc() + time::Duration::seconds(offset);
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), self.target.authority()),
            ("x-amz-date".into(), sigv4::amz_date(now)),
            ("x-amz-content-sha256".into(), UNSIGNED_PAYLOAD.into()),
        ];
        for (k, v) in extra {
            headers.push(((*k).to_owned(), v.clone()));
        }
        let creds = self
            .creds
            .get(&self.transport, self.send_time(content_length))
            .await?;
        if let Some(token) = creds.as_ref().and_then(|c| c.session_token()) {
            headers.push(("x-amz-security-token".into(), token.to_owned()));
        }
        let mut builder = Request::builder().method(method);
        let q = sigv4::canonical_query(query);
        builder = builder.uri(if q.is_empty() {
            path.clone()
        } else {
            format!("{path}?{q}")
        });
        if let Some(c) = &creds {
            let auth = sigv4::authorization(
                &SignRequest {
                    method,
                    canonical_uri: &path,
                    query,
                    headers: &headers,
                    payload_hash: UNSIGNED_PAYLOAD,
                    region: &self.region,
                    service: "s3",
                },
                c,
                now,
            );
            builder = builder.header(http::header::AUTHORIZATION, auth);
        }
        for (k, v) in &headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if method != "GET" && method != "HEAD" && method != "DELETE" || content_length > 0 {
            builder = builder.header(http::header::CONTENT_LENGTH, content_length);
        }
        let key_s = key.unwrap_or(&self.bucket).to_owned();
        let req = builder.body(body).map_err(|e| Error::Protocol {
            op,
            key: key_s.clone(),
            detail: format!("cannot build request: {e}"),
        })?;
        let deadline = deadline.unwrap_or(Deadline::Total(self.request_timeout));
        let resp = self
            .transport
            .send(&self.target, req, op, &key_s, deadline)
            .await?;
        let theirs = store_time(
            resp.headers
                .get(http::header::DATE)
                .and_then(|v| v.to_str().ok()),
        );
        let host_now = OffsetDateTime::now_utc();
        // `Date` has whole seconds: the store's time is half a second past it on average.
        let skew = theirs.map(|t| (t - host_now).as_seconds_f64() + 0.5);
        if let Some(skew) = skew {
            self.metrics.clock_skew_seconds.set(skew);
            self.metrics.clock_skew_answers.inc();
        }
        if resp.status.is_success() {
            // CompleteMultipartUpload may answer 200 and put the error in the body.
            if op == "CompleteMultipartUpload" && resp.body.windows(7).any(|w| w == b"<Error>") {
                let (code, message) = xml::error_code(&resp.body);
                return Err(Error::Status {
                    op,
                    key: key_s,
                    status: 500,
                    code,
                    message,
                });
            }
            return Ok(resp);
        }
        let (mut code, message) = xml::error_code(&resp.body);
        // Judged against this host's own clock: whether it is off does not depend on the
        // offset requests are signed with.
        if let Some(detail) = clock_skew(resp.status.as_u16(), &code, &message, theirs, host_now) {
            if let Some(skew) = skew {
                let learned = skew.round() as i64;
                // Within a minute of what was applied, the refusal is not about our clock.
                if (learned - offset).abs() > 60 {
                    self.clock_offset.store(learned, Ordering::Relaxed);
                    tracing::warn!(
                        store_ahead_seconds = learned,
                        "the store refused this host's clock; signing at the store's time from now on (fix the clock: chronyc tracking)"
                    );
                    return Err(Error::Resign {
                        op,
                        key: key_s,
                        why: Resign::Clock {
                            store_ahead_seconds: learned,
                        },
                    });
                }
            }
            return Err(Error::ClockSkew {
                op,
                key: key_s,
                detail,
            });
        }
        if let Some(used) = &creds
            && refuses_credentials(resp.status.as_u16(), &code)
            && self.creds.after_refusal(used, &self.transport).await
        {
            return Err(Error::Resign {
                op,
                key: key_s,
                why: Resign::Credentials {
                    code: if code.is_empty() { "403".into() } else { code },
                },
            });
        }
        if code.is_empty() {
            code = match resp.status.as_u16() {
                404 if key.is_some() => "NoSuchKey".into(),
                404 => "NoSuchBucket".into(),
                403 => "AccessDenied".into(),
                _ => String::new(),
            };
        }
        Err(Error::Status {
            op,
            key: key_s,
            status: resp.status.as_u16(),
            code,
            message,
        })
    }

    /// HeadBucket: Ok if the bucket exists and the credentials may see it.
    pub async fn head_bucket(&self) -> Result<(), Error> {
        self.call("HEAD", "HeadBucket", None, &[], &[], ReqBody::empty(), None)
            .await
            .map(|_| ())
    }

    /// CreateBucket (already existing and owned by us is fine).
    pub async fn create_bucket(&self) -> Result<Owned, Error> {
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        match self
            .call(
                "PUT",
                "CreateBucket",
                None,
                &[],
                &[],
                ReqBody::bytes(body),
                None,
            )
            .await
        {
            Err(Error::Status { code, .. }) if code == "BucketAlreadyOwnedByYou" => Ok(Owned::Yes),
            Err(Error::Status { code, .. }) if code == "BucketAlreadyExists" => Ok(Owned::Unknown),
            other => other.map(|_| Owned::Yes),
        }
    }

    /// PutObject of a whole (small) chunk with its CRC32C (and Content-MD5 when given), only if
    /// no object has the key yet (`If-None-Match: *`; a taken key answers 412
    /// `PreconditionFailed`); returns what the store said about the object it stored.
    pub async fn put_object(
        &self,
        key: &str,
        body: ReqBody,
        crc32c_b64: &str,
        md5_b64: Option<&str>,
        deadline: Deadline<'_>,
    ) -> Result<PutAck, Error> {
        let mut extra = vec![
            ("x-amz-checksum-crc32c", crc32c_b64.to_owned()),
            ("if-none-match", "*".to_owned()),
        ];
        if let Some(m) = md5_b64 {
            extra.push(("content-md5", m.to_owned()));
        }
        let resp = self
            .call(
                "PUT",
                "PutObject",
                Some(key),
                &[],
                &extra,
                body,
                Some(deadline),
            )
            .await?;
        let header = |name: &str| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(unquote)
        };
        Ok(PutAck {
            etag: header("etag").unwrap_or_default(),
            crc32c: header("x-amz-checksum-crc32c"),
        })
    }

    /// CreateMultipartUpload with CRC32C as the checksum algorithm; returns the upload id.
    pub async fn create_multipart(&self, key: &str) -> Result<String, Error> {
        let q = [("uploads".to_owned(), String::new())];
        let extra = [("x-amz-checksum-algorithm", "CRC32C".to_owned())];
        let resp = self
            .call(
                "POST",
                "CreateMultipartUpload",
                Some(key),
                &q,
                &extra,
                ReqBody::empty(),
                None,
            )
            .await?;
        let leaves = xml::leaves(&resp.body).map_err(|detail| Error::Protocol {
            op: "CreateMultipartUpload",
            key: key.to_owned(),
            detail,
        })?;
        xml::first(&leaves, "InitiateMultipartUploadResult/UploadId")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| Error::Protocol {
                op: "CreateMultipartUpload",
                key: key.to_owned(),
                detail: "no UploadId in the response".into(),
            })
    }

    /// UploadPart with its CRC32C (and Content-MD5 when given); returns the ETag.
    #[allow(clippy::too_many_arguments)]
    pub async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        body: ReqBody,
        crc32c_b64: &str,
        md5_b64: Option<&str>,
        deadline: Deadline<'_>,
    ) -> Result<String, Error> {
        let q = [
            ("partNumber".to_owned(), number.to_string()),
            ("uploadId".to_owned(), upload_id.to_owned()),
        ];
        let mut extra = vec![("x-amz-checksum-crc32c", crc32c_b64.to_owned())];
        if let Some(m) = md5_b64 {
            extra.push(("content-md5", m.to_owned()));
        }
        let resp = self
            .call(
                "PUT",
                "UploadPart",
                Some(key),
                &q,
                &extra,
                body,
                Some(deadline),
            )
            .await?;
        let etag = resp
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(unquote);
        etag.filter(|e| !e.is_empty())
            .ok_or_else(|| Error::Protocol {
                op: "UploadPart",
                key: key.to_owned(),
                detail: format!("part {number}: no ETag in the response"),
            })
    }

    /// ListParts, following pagination.
    pub async fn list_parts(&self, key: &str, upload_id: &str) -> Result<Vec<ServerPart>, Error> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut q = vec![("uploadId".to_owned(), upload_id.to_owned())];
            if let Some(m) = &marker {
                q.push(("part-number-marker".to_owned(), m.clone()));
            }
            let resp = self
                .call(
                    "GET",
                    "ListParts",
                    Some(key),
                    &q,
                    &[],
                    ReqBody::empty(),
                    None,
                )
                .await?;
            let leaves = xml::leaves(&resp.body).map_err(|detail| Error::Protocol {
                op: "ListParts",
                key: key.to_owned(),
                detail,
            })?;
            // moto names the root ListPartsResponse; AWS and s3s say ListPartsResult.
            let root = if xml::first(&leaves, "ListPartsResponse/IsTruncated").is_some() {
                "ListPartsResponse"
            } else {
                "ListPartsResult"
            };
            for rec in xml::records(&leaves, &format!("{root}/Part")) {
                let get = |n: &str| rec.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                let (Some(number), Some(size)) = (
                    get("PartNumber").and_then(|v| v.parse().ok()),
                    get("Size").and_then(|v| v.parse().ok()),
                ) else {
                    continue;
                };
                out.push(ServerPart {
                    number,
                    size,
                    etag: get("ETag").map(unquote).filter(|e| !e.is_empty()),
                });
            }
            let truncated = xml::first(&leaves, &format!("{root}/IsTruncated")) == Some("true");
            let next =
                xml::first(&leaves, &format!("{root}/NextPartNumberMarker")).map(str::to_owned);
            match (truncated, next) {
                (true, Some(n)) if Some(&n) != marker.as_ref() => marker = Some(n),
                _ => break,
            }
        }
        out.sort_by_key(|p| p.number);
        Ok(out)
    }

    /// CompleteMultipartUpload with every part's ETag and CRC32C, only if no object has the
    /// key yet (`If-None-Match: *`).
    pub async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[PartRecord],
    ) -> Result<Completed, Error> {
        let mut body = String::from(
            "<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">",
        );
        for p in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>\"{}\"</ETag><ChecksumCRC32C>{}</ChecksumCRC32C></Part>",
                p.number, p.etag, p.crc32c
            ));
        }
        body.push_str("</CompleteMultipartUpload>");
        let q = [("uploadId".to_owned(), upload_id.to_owned())];
        let resp = self
            .call(
                "POST",
                "CompleteMultipartUpload",
                Some(key),
                &q,
                &[("if-none-match", "*".to_owned())],
                ReqBody::bytes(Bytes::from(body)),
                None,
            )
            .await?;
        let leaves = xml::leaves(&resp.body).map_err(|detail| Error::Protocol {
            op: "CompleteMultipartUpload",
            key: key.to_owned(),
            detail,
        })?;
        Ok(Completed {
            etag: xml::first(&leaves, "CompleteMultipartUploadResult/ETag")
                .map(unquote)
                .unwrap_or_default(),
            crc32c: xml::first(&leaves, "CompleteMultipartUploadResult/ChecksumCRC32C")
                .map(str::to_owned),
        })
    }

    /// AbortMultipartUpload; an upload the server no longer knows counts as aborted.
    pub async fn abort(&self, key: &str, upload_id: &str) -> Result<(), Error> {
        let q = [("uploadId".to_owned(), upload_id.to_owned())];
        match self
            .call(
                "DELETE",
                "AbortMultipartUpload",
                Some(key),
                &q,
                &[],
                ReqBody::empty(),
                None,
            )
            .await
        {
            Err(e) if e.is_no_such_upload() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// DeleteObject (only of objects this agent just wrote: the integrity probe's scratch
    /// objects and a PutObject the store corrupted).
    pub async fn delete_object(&self, key: &str) -> Result<(), Error> {
        self.call(
            "DELETE",
            "DeleteObject",
            Some(key),
            &[],
            &[],
            ReqBody::empty(),
            None,
        )
        .await
        .map(|_| ())
    }

    /// One page of a bucket listing (`op`) under `prefix`: the XML leaves of the answer.
    async fn list_page(
        &self,
        op: &'static str,
        prefix: &str,
        query: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Error> {
        let resp = self
            .call("GET", op, None, query, &[], ReqBody::empty(), None)
            .await?;
        xml::leaves(&resp.body).map_err(|detail| Error::Protocol {
            op,
            key: prefix.to_owned(),
            detail,
        })
    }

    /// ListMultipartUploads under `prefix`, following pagination.
    pub async fn list_multipart_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, Error> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut q = vec![
                ("uploads".to_owned(), String::new()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some((k, u)) = &markers {
                q.push(("key-marker".to_owned(), k.clone()));
                q.push(("upload-id-marker".to_owned(), u.clone()));
            }
            let leaves = self.list_page("ListMultipartUploads", prefix, &q).await?;
            let root = "ListMultipartUploadsResult";
            for rec in xml::records(&leaves, &format!("{root}/Upload")) {
                let get = |n: &str| rec.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                let (Some(key), Some(upload_id)) = (get("Key"), get("UploadId")) else {
                    continue;
                };
                out.push(OpenUpload {
                    key: key.to_owned(),
                    upload_id: upload_id.to_owned(),
                    initiated: get("Initiated").and_then(|t| {
                        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                            .ok()
                    }),
                });
            }
            let truncated = xml::first(&leaves, &format!("{root}/IsTruncated")) == Some("true");
            let next = (
                xml::first(&leaves, &format!("{root}/NextKeyMarker")),
                xml::first(&leaves, &format!("{root}/NextUploadIdMarker")),
            );
            match (truncated, next) {
                (true, (Some(k), Some(u)))
                    if markers.as_ref() != Some(&(k.to_owned(), u.to_owned())) =>
                {
                    markers = Some((k.to_owned(), u.to_owned()));
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// HeadObject with checksum mode; `None` when the object does not exist.
    pub async fn head_object(&self, key: &str) -> Result<Option<ObjectHead>, Error> {
        let extra = [("x-amz-checksum-mode", "ENABLED".to_owned())];
        match self
            .call(
                "HEAD",
                "HeadObject",
                Some(key),
                &[],
                &extra,
                ReqBody::empty(),
                None,
            )
            .await
        {
            Ok(resp) => {
                let h = |n: &str| resp.headers.get(n).and_then(|v| v.to_str().ok());
                Ok(Some(ObjectHead {
                    size: h("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                    etag: h("etag").map(unquote).unwrap_or_default(),
                    crc32c: h("x-amz-checksum-crc32c").map(str::to_owned),
                }))
            }
            Err(Error::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GetObject of `len` bytes from `offset` into memory: the read-back proof reads an object
    /// a part at a time, so memory stays at one part per read.
    pub async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes, Error> {
        let range = format!("bytes={offset}-{}", offset + len.max(1) - 1);
        let body = self
            .call(
                "GET",
                "GetObject",
                Some(key),
                &[],
                &[("range", range)],
                ReqBody::empty(),
                None,
            )
            .await?
            .body;
        if body.len() as u64 != len {
            return Err(Error::Protocol {
                op: "GetObject",
                key: key.to_owned(),
                detail: format!(
                    "asked for {len} bytes from offset {offset}, got {}",
                    body.len()
                ),
            });
        }
        Ok(body)
    }

    /// ListObjectsV2 under `prefix`, following pagination: the keys.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(t) = &token {
                q.push(("continuation-token".to_owned(), t.clone()));
            }
            let leaves = self.list_page("ListObjectsV2", prefix, &q).await?;
            let root = "ListBucketResult";
            for rec in xml::records(&leaves, &format!("{root}/Contents")) {
                if let Some((_, k)) = rec.iter().find(|(n, _)| n == "Key") {
                    out.push(k.clone());
                }
            }
            let truncated = xml::first(&leaves, &format!("{root}/IsTruncated")) == Some("true");
            let next = xml::first(&leaves, &format!("{root}/NextContinuationToken"));
            match (truncated, next) {
                (true, Some(n)) if token.as_deref() != Some(n) => token = Some(n.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// GetObject of a whole object into memory (verification and tests; not the upload path).
    pub async fn get_object(&self, key: &str) -> Result<Bytes, Error> {
        Ok(self
            .call(
                "GET",
                "GetObject",
                Some(key),
                &[],
                &[],
                ReqBody::empty(),
                None,
            )
            .await?
            .body)
    }
}

/// RFC 7231's IMF-fixdate, the form of an HTTP `Date` (always GMT).
pub(crate) const HTTP_DATE: &[time::format_description::BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
);

/// The store's time from an answer's `Date`.
fn store_time(date: Option<&str>) -> Option<OffsetDateTime> {
    time::PrimitiveDateTime::parse(date?, HTTP_DATE)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// Whether an error answer refuses the credentials themselves: expired, unknown (a key
/// rotated away) or not matching (a secret rotated); a 403 without a body (HEAD) may be any.
fn refuses_credentials(status: u16, code: &str) -> bool {
    matches!(status, 400 | 403)
        && matches!(
            code,
            "ExpiredToken"
                | "TokenRefreshRequired"
                | "InvalidToken"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "InvalidClientTokenId"
        )
        || (status == 403 && code.is_empty())
}

/// A request whose body takes longer than this plus its bytes at the current goodput is
/// unusual; the margin covers connecting and the store's answer.
const SEND_MARGIN: Duration = Duration::from_secs(30);
/// The goodput assumed when there is none to go by (128 KiB/s).
const MIN_SEND_RATE: f64 = 128.0 * 1024.0;

/// How far apart the two clocks may be before S3 refuses a signature.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);

/// Whether an error answer is the store refusing our clock rather than our credentials: S3's
/// `RequestTimeTooSkewed` (some stores put it in a 403's message only), or a 403 without a
/// body (HeadObject, HeadBucket) whose `Date` is further from ours than S3 allows. Returns
/// what to tell the operator.
fn clock_skew(
    status: u16,
    code: &str,
    message: &str,
    theirs: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Option<String> {
    let clocks = |t: OffsetDateTime| {
        format!(
            "store time {t}, this host {now}, {:.0} s apart",
            (now - t).abs().as_seconds_f64()
        )
    };
    let named = code == "RequestTimeTooSkewed"
        || (status == 403 && message.contains("RequestTimeTooSkewed"))
        || (status == 403 && message.to_ascii_lowercase().contains("too skewed"));
    if named {
        return Some(theirs.map_or_else(|| format!("{code}: {message}"), clocks));
    }
    let t = theirs.filter(|_| status == 403 && code.is_empty())?;
    ((now - t).abs() > MAX_CLOCK_SKEW).then(|| clocks(t))
}

/// A multipart upload the store holds open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// When it was created, if the store says.
    pub initiated: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UploadConfig;

    fn client(endpoint: &str, style: UrlStyle) -> S3Client {
        let mut c = UploadConfig::new(endpoint, "site-video");
        c.url_style = style;
        let settings = c.validate().unwrap();
        S3Client::new(
            &settings,
            Arc::new(Transport::new(Default::default())),
            Arc::new(CredentialsProvider::fixed(crate::Credentials::new(
                "a", "b", None,
            ))),
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    /// A clock two years off reads as a credentials problem unless the answer is recognised.
    #[test]
    fn a_skewed_clock_is_told_apart_from_bad_credentials() {
        let now = OffsetDateTime::from_unix_timestamp(1_765_000_000).unwrap();
        let date = store_time(Some("Sat, 06 Dec 2025 05:46:40 GMT"));
        assert!(date.is_some());
        let named = clock_skew(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            date,
            now + time::Duration::days(730),
        )
        .unwrap();
        assert!(named.contains("apart"), "{named}");
        assert!(clock_skew(403, "AccessDenied", "RequestTimeTooSkewed", None, now).is_some());
        // HeadObject's 403 has no body: the store's Date decides.
        assert!(clock_skew(403, "", "", date, now + time::Duration::days(730)).is_some());
        assert_eq!(clock_skew(403, "", "", date, now), None);
        assert_eq!(
            clock_skew(403, "SignatureDoesNotMatch", "", date, now),
            None
        );
        assert_eq!(clock_skew(403, "", "", None, now), None);
    }

    #[test]
    fn path_and_virtual_hosted_urls() {
        let p = client("http://127.0.0.1:9000", UrlStyle::Auto);
        assert_eq!(p.target.authority(), "127.0.0.1:9000");
        assert_eq!(
            p.path(Some("SITE 1/cam/a.mp4")),
            "/site-video/SITE%201/cam/a.mp4"
        );
        let v = client("https://s3.eu-west-1.amazonaws.com", UrlStyle::Auto);
        assert_eq!(
            v.target.authority(),
            "site-video.s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(v.path(Some("k")), "/k");
        assert_eq!(v.path(None), "/");
        let base = client("https://storage.example.net/s3", UrlStyle::Path);
        assert_eq!(base.path(Some("k")), "/s3/site-video/k");
        let forced = client("https://storage.example.net", UrlStyle::VirtualHosted);
        assert_eq!(forced.target.authority(), "site-video.storage.example.net");
    }
}
