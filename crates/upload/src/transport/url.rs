//! URLs the transport accepts: S3 and CloudWatch endpoints (`scheme://host[:port][/path]`),
//! and the URLs of one-off requests (alert receivers), which may also carry `user:password@`
//! (sent as basic auth, as amtool and curl do) and a query (webhook tokens). Whatever carries a
//! secret is shown only through [`redact`]: logs, errors, `/status` and `config check` never
//! print a password or a query value. A secret in the path (some chat webhooks put one there)
//! cannot be told from a path and is shown as written.

use base64::Engine as _;

use crate::Error;

/// What a hidden secret is shown as.
const HIDDEN: &str = "***";

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
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.bracketed_host(),
            _ => self.host_port(),
        }
    }

    /// `host:port` with the port always written (a CONNECT request's target).
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.bracketed_host(), self.port)
    }

    /// The host, an IPv6 literal in brackets.
    fn bracketed_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// A URL as written: its scheme, its `user[:password]` if any, `host[:port]`, and the rest
/// (path, query, fragment).
struct Split<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    hostport: &'a str,
    tail: &'a str,
}

/// `None` without `://`.
fn split(url: &str) -> Option<Split<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    Some(Split {
        scheme,
        userinfo,
        hostport,
        tail,
    })
}

/// Whether the URL names its port (`http://proxy:3128`), rather than leaving the scheme's.
pub(super) fn names_port(url: &str) -> bool {
    split(url).is_some_and(|s| match s.hostport.strip_prefix('[') {
        Some(v6) => v6.split_once(']').is_some_and(|(_, p)| p.starts_with(':')),
        None => s.hostport.contains(':'),
    })
}

/// Splits `scheme://host[:port][/path]` into a target and the base path (without trailing `/`).
pub fn parse_url(url: &str) -> Result<(Target, String), Error> {
    let bad = |reason: &str| Error::Endpoint {
        endpoint: redact(url),
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

/// A one-off request's URL, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUrl {
    /// Where it goes.
    pub target: Target,
    /// The request target: the path (at least `/`) and the query, as written.
    pub path_and_query: String,
    /// `Basic …` from the URL's `user:password@`.
    pub authorization: Option<String>,
    /// The URL with its secrets hidden ([`redact`]), for messages.
    pub shown: String,
}

/// Parses `scheme://[user[:password]@]host[:port][/path][?query]`; a `#fragment` is refused
/// (it is never sent, so it is a mistake).
pub fn parse_request_url(url: &str) -> Result<RequestUrl, Error> {
    let shown = redact(url);
    let bad = |reason: &str| Error::Endpoint {
        endpoint: shown.clone(),
        reason: reason.to_owned(),
    };
    if url.contains('#') {
        return Err(bad("must not contain a #fragment"));
    }
    let Split {
        scheme,
        userinfo,
        hostport,
        tail,
    } = split(url).ok_or_else(|| bad("must start with http:// or https://"))?;
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    // The path is sent as written: a trailing `/` can be significant (instance metadata's
    // role listing, Greengrass' credential provider).
    let (target, _) = parse_url(&format!("{scheme}://{hostport}{path}"))?;
    let authorization = match userinfo {
        Some(u) => {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            let (user, password) = (
                percent_decode(user).ok_or_else(|| bad("bad %-escape in the user name"))?,
                percent_decode(password).ok_or_else(|| bad("bad %-escape in the password"))?,
            );
            if user.is_empty() {
                return Err(bad("has `@` but no user name before it"));
            }
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {pair}"))
        }
        None => None,
    };
    let mut path_and_query = if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    };
    if let Some(q) = query {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    Ok(RequestUrl {
        target,
        path_and_query,
        authorization,
        shown,
    })
}

/// `url` with the password of its `user:password@` and the value of every query parameter
/// replaced by `***` (a parameter without `=` is hidden whole).
pub fn redact(url: &str) -> String {
    let Some(Split {
        scheme,
        userinfo,
        hostport,
        tail,
    }) = split(url)
    else {
        return url.to_owned();
    };
    let authority = match userinfo {
        Some(userinfo) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}:{HIDDEN}@{hostport}")
        }
        None => hostport.to_owned(),
    };
    let tail = tail.split('#').next().unwrap_or_default();
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let hidden: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}={HIDDEN}"),
                    None => HIDDEN.to_owned(),
                })
                .collect();
            format!("{path}?{}", hidden.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `%XX` escapes decoded; `None` for a broken escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show() {
        assert_eq!(
            redact("https://alice:s3cret@am.example.net:9093/"),
            "https://alice:***@am.example.net:9093/"
        );
        assert_eq!(
            redact("https://hooks.example.net/backhaul?token=abc&site=x&flag#frag"),
            "https://hooks.example.net/backhaul?token=***&site=***&***"
        );
        assert_eq!(redact("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(redact("no scheme"), "no scheme");
        // The endpoints' parser refuses credentials without printing them.
        let e = parse_url("http://user:pw@host").unwrap_err().to_string();
        assert!(e.contains("user:***@host") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn request_urls_carry_basic_auth_and_a_query() {
        let u =
            parse_request_url("https://al%40ice:p%3Ass@am.example.net:9093/api/v2/alerts").unwrap();
        assert_eq!(u.target.authority(), "am.example.net:9093");
        assert_eq!(u.path_and_query, "/api/v2/alerts");
        // base64("al@ice:p:ss")
        assert_eq!(u.authorization.as_deref(), Some("Basic YWxAaWNlOnA6c3M="));
        assert_eq!(
            u.shown,
            "https://al%40ice:***@am.example.net:9093/api/v2/alerts"
        );
        let u = parse_request_url("http://127.0.0.1:8080?token=t0k").unwrap();
        assert_eq!(
            (u.path_and_query.as_str(), u.authorization),
            ("/?token=t0k", None)
        );
        assert_eq!(u.shown, "http://127.0.0.1:8080?token=***");
        let u = parse_request_url("http://localhost:8090/2016-11-01/credentialprovider/").unwrap();
        assert_eq!(u.path_and_query, "/2016-11-01/credentialprovider/");
        for bad in [
            "ftp://x",
            "http://:pw@host/",
            "http://u:%zz@host/",
            "http://host/#x",
            "http://host:port/",
        ] {
            let e = parse_request_url(bad).unwrap_err().to_string();
            assert!(!e.contains("pw") && !e.contains("%zz"), "{bad}: {e}");
        }
    }

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
