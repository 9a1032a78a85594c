//! Walking the sources: the configured one, or the chain in the SDKs' order; a profile read as
//! the SDKs read it (`role_arn` first, then keys, then `credential_process`), and the
//! credentials a role is assumed with.

use std::sync::Arc;

use super::profile::Profile;
use super::sts::{Role, Sts};
use super::{
    CredentialSource, Credentials, CredentialsProvider, MAX_ROLE_CHAIN, container, imds, process,
};
use crate::Error;
use crate::transport::Transport;

impl CredentialsProvider {
    /// Where credentials will come from, judged from the configuration, the environment and
    /// the shared files alone (nothing is contacted and no helper runs): what `config check`
    /// says. `Err` names what is missing for the configured source.
    pub fn describe(&self) -> Result<String, String> {
        use CredentialSource as S;
        let env = &self.env;
        let env_keys = env.keys().is_some();
        let web = match (&env.web_identity_token_file, &env.role_arn) {
            (Some(f), Some(arn)) => Some(format!(
                "web identity: STS AssumeRoleWithWebIdentity of {arn} with the token in {}",
                f.display()
            )),
            _ => None,
        };
        let profile = self.load_profile(&self.profile);
        let from_profile = |p: &Profile, want: Option<S>| -> Option<String> {
            let name = &self.profile;
            let role = p.get("role_arn").map(|arn| match p.get("source_profile") {
                Some(src) => format!(
                    "assume-role of profile {name}: {arn} with source_profile {src}'s credentials"
                ),
                None => match p.get("web_identity_token_file") {
                    Some(f) => {
                        format!("web identity of profile {name}: {arn} with the token in {f}")
                    }
                    None => format!(
                        "assume-role of profile {name}: {arn} with credential_source {}",
                        p.get("credential_source").unwrap_or("(unset)")
                    ),
                },
            });
            let process = p.get("credential_process").map(|cmd| {
                format!(
                    "credential_process of profile {name}: {}",
                    cmd.split_whitespace().next().unwrap_or("")
                )
            });
            let keys = p
                .static_keys()
                .map(|k| format!("profile {name}'s keys ({})", k.access_key_id));
            match want {
                Some(S::Process) => process,
                Some(S::AssumeRole) => role,
                Some(_) | None => role.or(keys).or(process),
            }
        };
        let files = || {
            [&env.shared_credentials_file, &env.config_file]
                .iter()
                .filter_map(|f| f.as_ref().map(|f| f.display().to_string()))
                .collect::<Vec<_>>()
                .join(" nor ")
        };
        let missing_profile = || format!("profile `{}` is in neither {}", self.profile, files());
        let container = || {
            let uri = env.container_relative_uri.as_ref().map_or_else(
                || env.container_full_uri.clone().unwrap_or_default(),
                |rel| format!("http://169.254.170.2{rel}"),
            );
            format!("container credentials endpoint {}", crate::redact(&uri))
        };
        let imds = || {
            format!(
                "instance metadata at {}",
                env.imds_endpoint
                    .as_deref()
                    .unwrap_or("http://169.254.169.254")
            )
        };
        match self.source {
            S::Static => Ok("static keys in the config (for labs and demos)".into()),
            S::Anonymous => Ok("none: requests are not signed".into()),
            S::Env if env_keys => Ok("the environment (AWS_ACCESS_KEY_ID)".into()),
            S::Env => Err("credentials = \"env\", but AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are unset".into()),
            S::WebIdentity => web
                .or_else(|| profile.as_ref().and_then(|p| from_profile(p, Some(S::AssumeRole))).filter(|l| l.starts_with("web identity")))
                .ok_or_else(|| "credentials = \"web-identity\", but AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN are unset and the profile has no web_identity_token_file".into()),
            S::Profile | S::Process | S::AssumeRole => {
                let p = profile.as_ref().ok_or_else(missing_profile)?;
                let want = (self.source != S::Profile).then_some(self.source);
                from_profile(p, want).ok_or_else(|| match self.source {
                    S::Process => format!("credentials = \"process\", but profile `{}` has no credential_process", self.profile),
                    S::AssumeRole => format!("credentials = \"assume-role\", but profile `{}` has no role_arn", self.profile),
                    S::Profile | S::Chain | S::Static | S::Env | S::WebIdentity | S::Container | S::Imds | S::Anonymous => {
                        format!("profile `{}` has no keys, credential_process or role_arn", self.profile)
                    }
                })
            }
            S::Container if container::configured(env) => Ok(container()),
            S::Container => Err("credentials = \"container\", but AWS_CONTAINER_CREDENTIALS_FULL_URI and _RELATIVE_URI are unset".into()),
            S::Imds => Ok(imds()),
            S::Chain => {
                let first = if env_keys {
                    Some("the environment (AWS_ACCESS_KEY_ID)".to_owned())
                } else {
                    web.or_else(|| profile.as_ref().and_then(|p| from_profile(p, None)))
                        .or_else(|| container::configured(env).then(container))
                };
                match first {
                    Some(line) => Ok(format!("chain: {line}")),
                    None if env.imds_disabled => Err(format!(
                        "credentials = \"chain\" finds nothing: no AWS_* keys, no web identity, {}, no container endpoint, and instance metadata is off",
                        missing_profile()
                    )),
                    None => Ok(format!(
                        "chain: nothing configured but {}, which answers on EC2 (or a local `aws_signing_helper serve`) only",
                        imds()
                    )),
                }
            }
        }
    }

    /// Walks the configured source (or the chain); the credentials and where they came from.
    pub(super) async fn resolve(
        &self,
        transport: &Arc<Transport>,
    ) -> Result<(Credentials, String), Error> {
        use CredentialSource as S;
        let mut tried = Vec::new();
        let chain = self.source == S::Chain;
        match self.source {
            S::Static => {
                return self
                    .fixed
                    .clone()
                    .map(|c| (c, "static keys in the config".to_owned()))
                    .ok_or_else(|| Error::Credentials {
                        detail:
                            "credentials = \"static\" needs access_key_id and secret_access_key"
                                .into(),
                    });
            }
            S::Anonymous => {
                return Err(Error::Credentials {
                    detail: "credentials = \"anonymous\" signs nothing".into(),
                });
            }
            S::Chain
            | S::Env
            | S::Profile
            | S::Process
            | S::WebIdentity
            | S::AssumeRole
            | S::Container
            | S::Imds => {}
        }
        if chain || self.source == S::Env {
            match self.env.keys() {
                Some(c) => return Ok((c, "environment".into())),
                None => tried
                    .push("environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY unset)".to_owned()),
            }
        }
        if (chain || self.source == S::WebIdentity)
            && let (Some(file), Some(arn)) = (&self.env.web_identity_token_file, &self.env.role_arn)
        {
            let session = self.session_name();
            let role = Role {
                arn,
                session_name: &session,
                duration_seconds: None,
                external_id: None,
            };
            // Configured but failing is an answer: the chain stops here, as the SDKs do.
            let c = self
                .sts(None)
                .with_web_identity(transport, &role, file)
                .await?;
            return Ok((c, format!("web identity ({arn})")));
        }
        if self.source == S::WebIdentity {
            tried.push("web identity (AWS_WEB_IDENTITY_TOKEN_FILE/AWS_ROLE_ARN unset)".to_owned());
        }
        if matches!(
            self.source,
            S::Chain | S::Profile | S::Process | S::AssumeRole | S::WebIdentity
        ) {
            match self.load_profile(&self.profile) {
                Some(p) => {
                    if let Some(found) = self
                        .profile_credentials(&p, &self.profile, transport, 0)
                        .await?
                    {
                        return Ok(found);
                    }
                    tried.push(format!(
                        "profile `{}` (no keys, credential_process or role_arn{})",
                        self.profile,
                        match self.source {
                            S::Process => " — credentials = \"process\" needs credential_process",
                            S::AssumeRole => " — credentials = \"assume-role\" needs role_arn",
                            S::WebIdentity => " — credentials = \"web-identity\" needs web_identity_token_file and role_arn",
                            S::Chain | S::Profile | S::Static | S::Env | S::Container | S::Imds | S::Anonymous => "",
                        }
                    ));
                }
                None => tried.push(format!(
                    "profile `{}` in the shared credentials/config files",
                    self.profile
                )),
            }
        }
        if chain || self.source == S::Container {
            if container::configured(&self.env) {
                let c = container::credentials(&self.env, transport).await?;
                return Ok((c, "container credentials endpoint".into()));
            }
            tried.push(
                "container endpoint (AWS_CONTAINER_CREDENTIALS_FULL_URI/_RELATIVE_URI unset)"
                    .to_owned(),
            );
        }
        if (chain && !self.env.imds_disabled) || self.source == S::Imds {
            match imds::credentials(self.env.imds_endpoint.as_deref(), transport).await {
                Ok(c) => return Ok((c, "instance metadata".into())),
                Err(e) => tried.push(format!("instance metadata ({e})")),
            }
        }
        Err(Error::Credentials {
            detail: format!("tried {}", tried.join(", ")),
        })
    }

    /// What profile `name` yields, as the SDKs read it: `role_arn` first (its source from
    /// `source_profile`, `credential_source` or `web_identity_token_file`), then static keys,
    /// then `credential_process`. `None` when the profile holds none of them, or not the one
    /// the setting asks for.
    async fn profile_credentials(
        &self,
        p: &Profile,
        name: &str,
        transport: &Arc<Transport>,
        depth: usize,
    ) -> Result<Option<(Credentials, String)>, Error> {
        use CredentialSource as S;
        let want =
            |s: S| self.source == s || matches!(self.source, S::Chain | S::Profile) || depth > 0;
        if let Some(arn) = p.get("role_arn") {
            let session = p
                .get("role_session_name")
                .map_or_else(|| self.session_name(), str::to_owned);
            let duration_seconds = match p.get("duration_seconds") {
                Some(d) => Some(d.parse::<u32>().map_err(|_| Error::Credentials {
                    detail: format!(
                        "profile `{name}`: duration_seconds = {d:?} is not a number of seconds"
                    ),
                })?),
                None => None,
            };
            let role = Role {
                arn,
                session_name: &session,
                duration_seconds,
                external_id: p.get("external_id"),
            };
            let sts = self.sts(p.get("region"));
            if let Some(file) = p.get("web_identity_token_file") {
                if !want(S::WebIdentity) {
                    return Ok(None);
                }
                let c = sts
                    .with_web_identity(transport, &role, std::path::Path::new(file))
                    .await?;
                return Ok(Some((c, format!("web identity of profile {name} ({arn})"))));
            }
            if !want(S::AssumeRole) {
                return Ok(None);
            }
            let source = self.role_source(p, name, transport, depth).await?;
            let c = sts.assume_role(transport, &role, &source).await?;
            return Ok(Some((c, format!("assume-role of profile {name} ({arn})"))));
        }
        if let Some(c) = p.static_keys() {
            // Keys answer the chain and `profile`, and a role's source at any depth.
            return Ok(want(S::Profile).then(|| (c, format!("profile {name}"))));
        }
        if let Some(cmd) = p.get("credential_process") {
            if !want(S::Process) {
                return Ok(None);
            }
            let c = process::credentials(cmd).await?;
            return Ok(Some((c, format!("credential_process of profile {name}"))));
        }
        Ok(None)
    }

    /// The credentials `AssumeRole` is signed with: `source_profile`'s (which may itself
    /// assume a role), or `credential_source`'s.
    async fn role_source(
        &self,
        p: &Profile,
        name: &str,
        transport: &Arc<Transport>,
        depth: usize,
    ) -> Result<Credentials, Error> {
        let fail = |detail: String| Error::Credentials { detail };
        if depth >= MAX_ROLE_CHAIN {
            return Err(fail(format!(
                "profile `{name}`: source_profile chains deeper than {MAX_ROLE_CHAIN} (a loop?)"
            )));
        }
        if let Some(src) = p.get("source_profile") {
            let sp = self.load_profile(src).ok_or_else(|| {
                fail(format!(
                    "profile `{name}`: source_profile `{src}` does not exist"
                ))
            })?;
            // A profile naming itself holds the keys its role is assumed with.
            if src == name {
                return sp.static_keys().ok_or_else(|| {
                    fail(format!(
                        "profile `{name}` is its own source_profile but holds no keys"
                    ))
                });
            }
            let found = Box::pin(self.profile_credentials(&sp, src, transport, depth + 1)).await?;
            return found.map(|(c, _)| c).ok_or_else(|| {
                fail(format!(
                    "profile `{name}`: source_profile `{src}` holds no keys, credential_process or role_arn"
                ))
            });
        }
        match p.get("credential_source") {
            Some("Environment") => self.env.keys().ok_or_else(|| {
                fail(format!(
                    "profile `{name}`: credential_source = Environment, but AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are unset"
                ))
            }),
            Some("Ec2InstanceMetadata") => {
                imds::credentials(self.env.imds_endpoint.as_deref(), transport).await
            }
            Some("EcsContainer") => container::credentials(&self.env, transport).await,
            Some(other) => Err(fail(format!(
                "profile `{name}`: credential_source = {other:?}; use Environment, Ec2InstanceMetadata or EcsContainer"
            ))),
            None => Err(fail(format!(
                "profile `{name}` has role_arn but neither source_profile nor credential_source"
            ))),
        }
    }

    /// Profile `name` from the shared files this provider reads.
    fn load_profile(&self, name: &str) -> Option<Profile> {
        Profile::load(
            name,
            self.env.shared_credentials_file.as_ref(),
            self.env.config_file.as_ref(),
        )
    }

    fn sts(&self, profile_region: Option<&str>) -> Sts {
        let region = profile_region
            .map(str::to_owned)
            .or_else(|| self.env.region.clone())
            .unwrap_or_else(|| self.default_region.clone());
        Sts {
            endpoint: self
                .env
                .sts_endpoint
                .clone()
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            region,
        }
    }

    fn session_name(&self) -> String {
        self.env
            .role_session_name
            .clone()
            .unwrap_or_else(|| "backhaul".to_owned())
    }
}
