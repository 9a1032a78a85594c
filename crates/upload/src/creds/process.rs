//! `credential_process`: a command of the profile whose standard output is the credentials
//! (IAM Roles Anywhere's `aws_signing_helper credential-process`, a vault agent). Run through
//! `sh -c` as the AWS SDKs do on Unix; its standard error is passed through to the agent's.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use super::{Credentials, parse_expiration};
use crate::Error;

/// A helper that has not answered by now is hung (a PKCS#11 token waiting for a PIN).
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `command` and reads its credentials.
pub(super) async fn credentials(command: &str) -> Result<Credentials, Error> {
    let fail = |why: String| Error::Credentials {
        detail: format!("credential_process `{}` {why}", first_word(command)),
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("could not start: {e}")))?;
    let out = tokio::time::timeout(PROCESS_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            fail(format!(
                "did not finish within {} s",
                PROCESS_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| fail(format!("failed: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "exited with {} (its error output is in the agent's log)",
            out.status
        )));
    }
    parse(&out.stdout).map_err(fail)
}

/// The program's name, never its arguments (they may carry a secret).
fn first_word(command: &str) -> &str {
    command.split_whitespace().next().unwrap_or("")
}

/// Reads the output format of `credential_process` (Version 1).
fn parse(stdout: &[u8]) -> Result<Credentials, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Output {
        version: u32,
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
        expiration: Option<String>,
    }
    let o: Output =
        serde_json::from_slice(stdout).map_err(|e| format!("printed no credentials JSON ({e})"))?;
    if o.version != 1 {
        return Err(format!(
            "printed Version {}; only Version 1 is defined",
            o.version
        ));
    }
    let mut c = Credentials::new(
        &o.access_key_id,
        &o.secret_access_key,
        o.session_token.as_deref(),
    );
    if let Some(e) = o.expiration {
        c.expires_at =
            Some(parse_expiration(&e).ok_or_else(|| {
                format!("printed an Expiration that is not an RFC 3339 time: {e:?}")
            })?);
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_version_1_output_and_names_only_the_program_on_failure() {
        let c = credentials(
            r#"printf '{"Version":1,"AccessKeyId":"ASIAPROC","SecretAccessKey":"s","SessionToken":"t","Expiration":"2099-01-01T00:00:00Z"}'"#,
        )
        .await
        .unwrap();
        assert_eq!(c.access_key_id, "ASIAPROC");
        assert_eq!(c.session_token(), Some("t"));
        assert!(c.expires_at.is_some());

        let e = credentials("false --secret hunter2").await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("`false` exited"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = credentials("echo '{\"Version\":2}'").await.unwrap_err();
        assert!(e.to_string().contains("no credentials JSON"), "{e}");
    }
}
