//! The shared config and credentials files (INI).

use super::Credentials;

/// Reads `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token` of one section
/// of an INI-style AWS credentials or config file.
pub fn parse_profile(text: &str, section: &str) -> Option<Credentials> {
    let mut current = String::new();
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        if current != section {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_owned();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    Some(Credentials::new(&key?, &secret?, token.as_deref()))
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
}
