//! EC2 instance metadata (IMDSv2): a session token, the role's name, its credentials.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::Credentials;
use crate::Error;
use crate::transport::{SimpleRequest, Transport};

/// IMDS must answer quickly; off EC2 it never answers at all.
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn credentials(
    endpoint: Option<&str>,
    transport: &Arc<Transport>,
) -> Result<Credentials, Error> {
    let base = endpoint.unwrap_or("http://169.254.169.254");
    let token = transport
        .simple(SimpleRequest {
            method: "PUT",
            url: &format!("{base}/latest/api/token"),
            headers: &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
            body: Vec::new(),
            timeout: IMDS_TIMEOUT,
        })
        .await?;
    let token = String::from_utf8_lossy(&token).trim().to_owned();
    let auth = [("x-aws-ec2-metadata-token", token.as_str())];
    let get = |url: String| {
        let transport = transport.clone();
        async move {
            transport
                .simple(SimpleRequest {
                    method: "GET",
                    url: &url,
                    headers: &auth,
                    body: Vec::new(),
                    timeout: IMDS_TIMEOUT,
                })
                .await
        }
    };
    let roles = get(format!("{base}/latest/meta-data/iam/security-credentials/")).await?;
    let role = String::from_utf8_lossy(&roles)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    if role.is_empty() {
        return Err(Error::Credentials {
            detail: "instance has no IAM role".into(),
        });
    }
    let body = get(format!(
        "{base}/latest/meta-data/iam/security-credentials/{role}"
    ))
    .await?;
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Imds {
        access_key_id: String,
        secret_access_key: String,
        token: String,
        expiration: String,
    }
    let v: Imds = serde_json::from_slice(&body).map_err(|e| Error::Credentials {
        detail: format!("instance metadata answered unreadable JSON: {e}"),
    })?;
    let expires_at = time::OffsetDateTime::parse(
        &v.expiration,
        &time::format_description::well_known::Rfc3339,
    )
    .ok()
    .map(SystemTime::from);
    Ok(Credentials {
        access_key_id: v.access_key_id,
        secret_access_key: v.secret_access_key,
        session_token: Some(v.token),
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{AwsEnv, CredentialSource, CredentialsProvider};
    use super::*;

    /// IMDS does not run off EC2; a loopback stand-in answers the three IMDSv2 calls.
    #[tokio::test]
    async fn imds_v2_token_role_and_credentials() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("PUT /latest/api/token") {
                    "tok-123".to_owned()
                } else if !req
                    .to_ascii_lowercase()
                    .contains("x-aws-ec2-metadata-token: tok-123")
                {
                    String::new()
                } else if req.starts_with("GET /latest/meta-data/iam/security-credentials/ ") {
                    "site-role\n".to_owned()
                } else if req
                    .starts_with("GET /latest/meta-data/iam/security-credentials/site-role ")
                {
                    r#"{"Code":"Success","AccessKeyId":"ASIAIMDS","SecretAccessKey":"s","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#.to_owned()
                } else {
                    String::new()
                };
                let status = if body.is_empty() {
                    "401 Unauthorized"
                } else {
                    "200 OK"
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let env = AwsEnv {
            imds_endpoint: Some(format!("http://{addr}")),
            ..Default::default()
        };
        let p = CredentialsProvider::new(CredentialSource::Imds, None, None, env);
        let transport = Arc::new(Transport::new(Default::default()));
        let c = p.get(&transport, Duration::ZERO).await.unwrap().unwrap();
        assert_eq!(c.access_key_id, "ASIAIMDS");
        assert_eq!(c.session_token(), Some("t"));
        assert!(c.valid_for(SystemTime::now(), Duration::from_secs(3600)));
    }
}
