//! The shared config and credentials files (INI): a profile's settings, merged the way the
//! AWS SDKs merge them (the credentials file's `[name]` over the config file's
//! `[profile name]`, or `[default]` in both).

use std::collections::HashMap;
use std::path::PathBuf;

use super::Credentials;

/// One profile's settings, keys lowercased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Profile(HashMap<String, String>);

impl Profile {
    /// Reads profile `name` from the two files; `None` when neither has it.
    pub(super) fn load(
        name: &str,
        credentials_file: Option<&PathBuf>,
        config_file: Option<&PathBuf>,
    ) -> Option<Self> {
        let read = |f: Option<&PathBuf>| f.and_then(|f| std::fs::read_to_string(f).ok());
        let config_section = if name == "default" {
            "default".to_owned()
        } else {
            format!("profile {name}")
        };
        let from_config = read(config_file).and_then(|t| section(&t, &config_section));
        let from_credentials = read(credentials_file).and_then(|t| section(&t, name));
        if from_config.is_none() && from_credentials.is_none() {
            return None;
        }
        let mut merged = from_config.unwrap_or_default();
        merged.extend(from_credentials.unwrap_or_default());
        Some(Self(merged))
    }

    /// A setting's value, if set and not empty.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Static keys, when the profile holds them.
    pub(super) fn static_keys(&self) -> Option<Credentials> {
        Some(Credentials::new(
            self.get("aws_access_key_id")?,
            self.get("aws_secret_access_key")?,
            self.get("aws_session_token"),
        ))
    }
}

/// The `key = value` pairs of `[section]` in an INI text, keys lowercased.
fn section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut current = String::new();
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.split_whitespace().collect::<Vec<_>>().join(" ");
            if current == section {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if current != section {
            continue;
        }
        if let (Some(map), Some((k, v))) = (found.as_mut(), line.split_once('=')) {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    found
}

/// Reads `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of one section
/// of an INI-style AWS credentials or config file.
pub fn parse_profile(text: &str, name: &str) -> Option<Credentials> {
    Profile(section(text, name)?).static_keys()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_profile() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n\
                    [site]\n# comment\naws_access_key_id=C\naws_secret_access_key = D\naws_session_token = E\n";
        assert_eq!(
            parse_profile(text, "default"),
            Some(Credentials::new("A", "B", None))
        );
        assert_eq!(
            parse_profile(text, "site"),
            Some(Credentials::new("C", "D", Some("E")))
        );
        assert_eq!(parse_profile(text, "missing"), None);
    }

    #[test]
    fn the_credentials_file_wins_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let (creds, config) = (dir.path().join("credentials"), dir.path().join("config"));
        std::fs::write(&creds, "[site]\naws_access_key_id = FROM-CREDENTIALS\n").unwrap();
        std::fs::write(
            &config,
            "[profile  site]\naws_access_key_id = FROM-CONFIG\nRole_Arn = arn:aws:iam::1:role/r\n\
             [profile other]\nregion = x\n",
        )
        .unwrap();
        let p = Profile::load("site", Some(&creds), Some(&config)).unwrap();
        assert_eq!(p.get("aws_access_key_id"), Some("FROM-CREDENTIALS"));
        assert_eq!(p.get("role_arn"), Some("arn:aws:iam::1:role/r"));
        assert_eq!(Profile::load("nope", Some(&creds), Some(&config)), None);
        // A section with no settings still exists (a profile of only a region elsewhere).
        assert!(Profile::load("other", None, Some(&config)).is_some());
    }
}
