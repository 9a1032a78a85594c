//! The container credentials protocol: a local HTTP endpoint hands out role credentials
//! (ECS's agent, AWS IoT Greengrass' Token Exchange Service, `needroleshere`, IAM Roles
//! Anywhere's `aws_signing_helper serve` behind a relative URI). The endpoint is named by
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` or `_RELATIVE_URI`; the token, if any, by
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at every request: it rotates) or
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{AwsEnv, Credentials, parse_expiration};
use crate::Error;
use crate::transport::{SimpleRequest, Transport, parse_request_url};

/// Where a relative URI points (ECS's agent).
const RELATIVE_BASE: &str = "http://169.254.170.2";
/// A local agent answers at once or not at all.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the environment names a container endpoint.
pub(super) fn configured(env: &AwsEnv) -> bool {
    env.container_full_uri.is_some() || env.container_relative_uri.is_some()
}

/// Fetches credentials from the endpoint the environment names.
pub(super) async fn credentials(
    env: &AwsEnv,
    transport: &Arc<Transport>,
) -> Result<Credentials, Error> {
    let fail = |why: String| Error::Credentials {
        detail: format!("container credentials endpoint: {why}"),
    };
    let url = match (&env.container_relative_uri, &env.container_full_uri) {
        (Some(rel), _) => format!("{RELATIVE_BASE}{rel}"),
        (None, Some(full)) => {
            allowed(full).map_err(fail)?;
            full.clone()
        }
        (None, None) => {
            return Err(fail(
                "AWS_CONTAINER_CREDENTIALS_FULL_URI and _RELATIVE_URI are unset".into(),
            ));
        }
    };
    let token = match (&env.container_token_file, &env.container_token) {
        (Some(file), _) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| {
                    fail(format!(
                        "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE {}: {e}",
                        file.display()
                    ))
                })?
                .trim()
                .to_owned(),
        ),
        (None, token) => token.clone(),
    };
    if token.as_deref().is_some_and(|t| t.contains(['\r', '\n'])) {
        return Err(fail("the authorization token holds a line break".into()));
    }
    let headers: Vec<(&str, &str)> = token
        .as_deref()
        .map(|t| ("authorization", t))
        .into_iter()
        .collect();
    let body = transport
        .simple(SimpleRequest {
            method: "GET",
            url: &url,
            headers: &headers,
            body: Vec::new(),
            timeout: CONTAINER_TIMEOUT,
        })
        .await
        .map_err(|e| fail(crate::redact(&e.to_string())))?;
    parse(&body).map_err(fail)
}

/// The SDKs' rule: a full URI is HTTPS, or HTTP to this host or to the ECS/EKS agents'
/// link-local addresses; anything else could hand the token to a stranger.
fn allowed(full: &str) -> Result<(), String> {
    let url = parse_request_url(full).map_err(|e| format!("{e}"))?;
    if url.target.https {
        return Ok(());
    }
    let host = url.target.host.as_str();
    let agents: [IpAddr; 3] = [
        [169, 254, 170, 2].into(),
        [169, 254, 170, 23].into(),
        [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23].into(),
    ];
    let ok = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || agents.contains(&ip));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI {} is plain HTTP to another host; use https, or a loopback or the agent's link-local address",
            url.shown
        ))
    }
}

fn parse(body: &[u8]) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
        expiration: Option<String>,
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("answered no credentials JSON ({e})"))?;
    let mut c = Credentials::new(&a.access_key_id, &a.secret_access_key, a.token.as_deref());
    if let Some(e) = a.expiration {
        c.expires_at = Some(
            parse_expiration(&e)
                .ok_or_else(|| format!("answered an Expiration that is not a time: {e:?}"))?,
        );
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_a_local_agent_gets_the_token() {
        for ok in [
            "https://creds.example.com/x",
            "http://127.0.0.1:8080/creds",
            "http://localhost:8080/2016-11-01/credentialprovider/",
            "http://169.254.170.23/v1/credentials",
            "http://[::1]:9/x",
            "http://[fd00:ec2::23]/v1/credentials",
        ] {
            assert_eq!(allowed(ok), Ok(()), "{ok}");
        }
        for bad in ["http://192.0.2.7/creds", "http://[2001:db8::1]/x"] {
            assert!(allowed(bad).is_err(), "{bad}");
        }
    }
}
