//! AWS Signature Version 4, header form, for S3 and CloudWatch.
//!
//! Ours rather than a crate's: `rusty-s3` signs only presigned S3 URLs (the service name `s3` is
//! hard-coded), and CloudWatch's `PutMetricData` needs header signing of a form body. One small
//! signer, checked against AWS's published example and against the real servers in the tests.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::Credentials;

/// `x-amz-content-sha256` value for bodies we do not hash (their integrity is carried by
/// `x-amz-checksum-crc32c`, which is cheaper than SHA-256 by two orders of magnitude).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Hex SHA-256 of a byte string.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut m = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// Percent-encodes per SigV4: everything but `A-Z a-z 0-9 - . _ ~` (and `/` when
/// `keep_slash`, for S3 object paths).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A request to sign.
#[derive(Debug)]
pub struct SignRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Already-encoded path, exactly as sent.
    pub canonical_uri: &'a str,
    /// Raw (unencoded) query pairs.
    pub query: &'a [(String, String)],
    /// Headers to sign, names lowercase (`host` included).
    pub headers: &'a [(String, String)],
    /// `x-amz-content-sha256` value / payload hash.
    pub payload_hash: &'a str,
    /// Region.
    pub region: &'a str,
    /// Service (`s3`, `monitoring`).
    pub service: &'a str,
}

/// The canonical query string: pairs encoded, sorted by key then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `YYYYMMDDTHHMMSSZ`.
pub fn amz_date(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Signs a request; returns the `Authorization` header value. The caller must send
/// `x-amz-date` = [`amz_date`]`(at)` and every header in `req.headers` unchanged.
pub fn authorization(req: &SignRequest<'_>, creds: &Credentials, at: OffsetDateTime) -> String {
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method,
        req.canonical_uri,
        canonical_query(req.query),
        canonical_headers,
        signed_headers,
        req.payload_hash
    );
    let date = &amz_date(at)[..8];
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        amz_date(at),
        sha256_hex(canonical_request.as_bytes())
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key()).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, req.region.as_bytes());
    let k_service = hmac(&k_region, req.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex(&hmac(&k_signing, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// The "GET Object" example of the AWS S3 SigV4 documentation
    /// (sig-v4-header-based-auth.html), signature published there.
    #[test]
    fn matches_aws_documented_get_object_example() {
        let creds = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        );
        let empty = sha256_hex(b"");
        let headers = vec![
            (
                "host".to_owned(),
                "examplebucket.s3.amazonaws.com".to_owned(),
            ),
            ("range".to_owned(), "bytes=0-9".to_owned()),
            ("x-amz-content-sha256".to_owned(), empty.clone()),
            ("x-amz-date".to_owned(), "20130524T000000Z".to_owned()),
        ];
        let req = SignRequest {
            method: "GET",
            canonical_uri: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: &empty,
            region: "us-east-1",
            service: "s3",
        };
        let auth = authorization(&req, &creds, datetime!(2013-05-24 00:00:00 UTC));
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn encodes_keys_and_queries() {
        assert_eq!(
            uri_encode("SITE 1/cam/Tür.mp4", true),
            "SITE%201/cam/T%C3%BCr.mp4"
        );
        assert_eq!(uri_encode("a/b+c", false), "a%2Fb%2Bc");
        let q = vec![
            ("uploadId".to_owned(), "x/y".to_owned()),
            ("partNumber".to_owned(), "2".to_owned()),
        ];
        assert_eq!(canonical_query(&q), "partNumber=2&uploadId=x%2Fy");
        assert_eq!(
            canonical_query(&[("uploads".to_owned(), String::new())]),
            "uploads="
        );
    }
}
