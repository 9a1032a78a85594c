//! URLs the transport accepts: S3 and CloudWatch endpoints (`scheme://host[:port][/path]`).

use crate::Error;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// HTTPS or plain HTTP.
    pub https: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Target {
    /// `host:port` as it goes into the `Host` header (default ports omitted).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.https, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

/// Splits `scheme://host[:port][/path]` into a target and the base path (without trailing `/`).
pub fn parse_url(url: &str) -> Result<(Target, String), Error> {
    let bad = |reason: &str| Error::Endpoint {
        endpoint: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(bad("must start with http:// or https://"));
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/').to_owned()),
        None => (rest, String::new()),
    };
    if hostport.contains('@') || hostport.contains('?') || path.contains('?') {
        return Err(bad("must not contain credentials or a query"));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed IPv6 literal"))?;
        (h.to_owned(), p.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        None if https => 443,
        None => 80,
    };
    Ok((Target { https, host, port }, path))
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let (t, p) = parse_url("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, p.as_str()),
            (false, "127.0.0.1", 9000, "")
        );
        assert_eq!(t.authority(), "127.0.0.1:9000");
        let (t, p) = parse_url("https://s3.eu-west-1.amazonaws.com/base/").unwrap();
        assert_eq!(
            (t.port, p.as_str(), t.authority().as_str()),
            (443, "/base", "s3.eu-west-1.amazonaws.com")
        );
        let (t, _) = parse_url("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority().as_str()),
            ("::1", "[::1]:8080")
        );
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://user:pw@host").is_err());
        assert!(parse_url("http://host:port").is_err());
    }
}
