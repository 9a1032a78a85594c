//! The AWS Query API (CloudWatch's `PutMetricData`, STS): a form-encoded POST, signed with
//! SigV4 over the body's hash, or unsigned (`AssumeRoleWithWebIdentity`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;

use crate::Error;
use crate::creds::Credentials;
use crate::sigv4::{self, SignRequest};
use crate::transport::{SimpleRequest, Transport, parse_url};

/// One Query API call.
pub(crate) struct QueryCall<'a> {
    /// The service's endpoint, e.g. `https://sts.eu-west-1.amazonaws.com`.
    pub endpoint: &'a str,
    /// The region in the signature's scope.
    pub region: &'a str,
    /// The service in the signature's scope (`monitoring`, `sts`).
    pub service: &'a str,
    /// The form's pairs, unencoded.
    pub pairs: &'a [(String, String)],
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// `k=v&…`, each part percent-encoded.
pub(crate) fn form_body(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                sigv4::uri_encode(k, false),
                sigv4::uri_encode(v, false)
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Sends `call`, signed with `creds` when given; the answer's body, or the service's error.
pub(crate) async fn post(
    transport: &Arc<Transport>,
    call: &QueryCall<'_>,
    creds: Option<&Credentials>,
    now: OffsetDateTime,
) -> Result<Bytes, Error> {
    let body = form_body(call.pairs);
    let (target, base) = parse_url(call.endpoint)?;
    let path = if base.is_empty() {
        "/".to_owned()
    } else {
        format!("{base}/")
    };
    let mut headers = vec![
        (
            "content-type".to_owned(),
            "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
        ),
        ("host".to_owned(), target.authority()),
        ("x-amz-date".to_owned(), sigv4::amz_date(now)),
    ];
    if let Some(t) = creds.and_then(|c| c.session_token()) {
        headers.push(("x-amz-security-token".to_owned(), t.to_owned()));
    }
    let mut send: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != "host")
        .cloned()
        .collect();
    if let Some(c) = creds {
        let payload_hash = sigv4::sha256_hex(body.as_bytes());
        let auth = sigv4::authorization(
            &SignRequest {
                method: "POST",
                canonical_uri: &path,
                query: &[],
                headers: &headers,
                payload_hash: &payload_hash,
                region: call.region,
                service: call.service,
            },
            c,
            now,
        );
        send.push(("authorization".to_owned(), auth));
    }
    let hdrs: Vec<(&str, &str)> = send.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let url = format!(
        "{}{}",
        call.endpoint.trim_end_matches('/'),
        if base.is_empty() { "/" } else { "" }
    );
    transport
        .simple(SimpleRequest {
            method: "POST",
            url: &url,
            headers: &hdrs,
            body: body.into_bytes(),
            timeout: call.timeout,
        })
        .await
}
