//! STS: `AssumeRoleWithWebIdentity` (a token file from an OIDC issuer, unsigned) and
//! `AssumeRole` (signed with the source credentials of a profile's `role_arn`).

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::{Credentials, parse_expiration};
use crate::Error;
use crate::query::{QueryCall, post};
use crate::transport::Transport;
use crate::xml;

const STS_TIMEOUT: Duration = Duration::from_secs(15);

/// Where STS answers and the region of its signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sts {
    /// `AWS_ENDPOINT_URL_STS`, else the region's endpoint.
    pub endpoint: String,
    /// The signing region.
    pub region: String,
}

/// The role to assume and how.
pub(super) struct Role<'a> {
    pub arn: &'a str,
    pub session_name: &'a str,
    /// `duration_seconds` of the profile; STS' default (1 h) when unset.
    pub duration_seconds: Option<u32>,
    pub external_id: Option<&'a str>,
}

impl Sts {
    /// `AssumeRoleWithWebIdentity` with the token read from `token_file` now (it rotates).
    pub(super) async fn with_web_identity(
        &self,
        transport: &Arc<Transport>,
        role: &Role<'_>,
        token_file: &std::path::Path,
    ) -> Result<Credentials, Error> {
        let token = std::fs::read_to_string(token_file).map_err(|e| Error::Credentials {
            detail: format!(
                "cannot read the web identity token file {}: {e}",
                token_file.display()
            ),
        })?;
        let mut pairs = role_pairs("AssumeRoleWithWebIdentity", role);
        pairs.push(("WebIdentityToken".into(), token.trim().to_owned()));
        self.call(transport, "AssumeRoleWithWebIdentity", role, &pairs, None)
            .await
    }

    /// `AssumeRole`, signed with `source`.
    pub(super) async fn assume_role(
        &self,
        transport: &Arc<Transport>,
        role: &Role<'_>,
        source: &Credentials,
    ) -> Result<Credentials, Error> {
        let mut pairs = role_pairs("AssumeRole", role);
        if let Some(id) = role.external_id {
            pairs.push(("ExternalId".into(), id.to_owned()));
        }
        self.call(transport, "AssumeRole", role, &pairs, Some(source))
            .await
    }

    async fn call(
        &self,
        transport: &Arc<Transport>,
        action: &str,
        role: &Role<'_>,
        pairs: &[(String, String)],
        source: Option<&Credentials>,
    ) -> Result<Credentials, Error> {
        let fail = |why: String| Error::Credentials {
            detail: format!("STS {action} of {} at {}: {why}", role.arn, self.endpoint),
        };
        let body = post(
            transport,
            &QueryCall {
                endpoint: &self.endpoint,
                region: &self.region,
                service: "sts",
                pairs,
                timeout: STS_TIMEOUT,
            },
            source,
            OffsetDateTime::now_utc(),
        )
        .await
        .map_err(|e| match e {
            Error::Status {
                status, message, ..
            } => fail(format!("HTTP {status}: {message}")),
            other => fail(crate::redact(&other.to_string())),
        })?;
        parse(&body, action).map_err(fail)
    }
}

fn role_pairs(action: &str, role: &Role<'_>) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("Action".to_owned(), action.to_owned()),
        ("Version".to_owned(), "2011-06-15".to_owned()),
        ("RoleArn".to_owned(), role.arn.to_owned()),
        ("RoleSessionName".to_owned(), role.session_name.to_owned()),
    ];
    if let Some(d) = role.duration_seconds {
        pairs.push(("DurationSeconds".into(), d.to_string()));
    }
    pairs
}

/// The credentials of an `<{action}Response>`.
fn parse(body: &[u8], action: &str) -> Result<Credentials, String> {
    let leaves = xml::leaves(body)?;
    let at = |leaf: &str| {
        xml::first(
            &leaves,
            &format!("{action}Response/{action}Result/Credentials/{leaf}"),
        )
        .ok_or_else(|| format!("the answer has no Credentials/{leaf}"))
    };
    let mut c = Credentials::new(
        at("AccessKeyId")?,
        at("SecretAccessKey")?,
        Some(at("SessionToken")?),
    );
    let exp = at("Expiration")?;
    c.expires_at =
        Some(parse_expiration(exp).ok_or_else(|| format!("Expiration {exp:?} is not a time"))?);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_credentials_of_either_answer() {
        let body = br#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <SessionToken>tok</SessionToken>
      <SecretAccessKey>sec</SecretAccessKey>
      <Expiration>2026-12-07T10:00:00Z</Expiration>
      <AccessKeyId>ASIAWEB</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
</AssumeRoleWithWebIdentityResponse>"#;
        let c = parse(body, "AssumeRoleWithWebIdentity").unwrap();
        assert_eq!(c.access_key_id, "ASIAWEB");
        assert_eq!(c.session_token(), Some("tok"));
        assert!(c.expires_at.is_some());
        assert!(parse(body, "AssumeRole").is_err());
    }
}
