//! Forward proxies, as curl reads them: `https_proxy`/`HTTPS_PROXY` for HTTPS targets,
//! `http_proxy` (lower case only, as curl: `HTTP_PROXY` can be set by a CGI request header) for
//! plain HTTP, `no_proxy`/`NO_PROXY` for the exceptions, or `upload.proxy` and
//! `upload.no_proxy` from the config for every scheme. No target is exempt unless `no_proxy`
//! says so: not loopback, not the instance-metadata address.
//!
//! HTTPS goes through the proxy in a `CONNECT` tunnel (TLS end to end, the proxy sees only the
//! host and port); plain HTTP is sent to the proxy in absolute form. A proxy's `user:password@`
//! becomes `Proxy-Authorization: Basic`, and is shown only redacted.

use std::net::IpAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::url::{Target, names_port, parse_request_url};
use crate::Error;

/// The proxy variables of the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyEnv {
    /// `https_proxy`, else `HTTPS_PROXY`.
    pub https_proxy: Option<String>,
    /// `http_proxy`.
    pub http_proxy: Option<String>,
    /// `no_proxy`, else `NO_PROXY`.
    pub no_proxy: Option<String>,
}

impl ProxyEnv {
    /// Reads the variables through `get` (the binary passes `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let first = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| get(n).filter(|v| !v.trim().is_empty()))
        };
        Self {
            https_proxy: first(&["https_proxy", "HTTPS_PROXY"]),
            http_proxy: first(&["http_proxy"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]),
        }
    }
}

/// One proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Where the proxy listens.
    pub target: Target,
    /// `Basic …` from the proxy URL's `user:password@`.
    pub authorization: Option<String>,
    /// The proxy URL with its password hidden.
    pub shown: String,
}

impl Proxy {
    /// Parses `http://[user:password@]host[:port]`; an HTTPS proxy (TLS to the proxy itself)
    /// is refused, as is a path.
    pub fn parse(url: &str) -> Result<Self, Error> {
        // curl's default: a proxy given without a scheme is an HTTP proxy.
        let full = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let u = parse_request_url(&full)?;
        let bad = |reason: &str| Error::Endpoint {
            endpoint: u.shown.clone(),
            reason: reason.to_owned(),
        };
        if u.target.https {
            return Err(bad(
                "is an HTTPS proxy (TLS to the proxy), which is not supported; use http://",
            ));
        }
        if u.path_and_query != "/" {
            return Err(bad("a proxy URL has no path or query"));
        }
        let mut target = u.target;
        if !names_port(&full) {
            // curl's default port for a proxy.
            target.port = 1080;
        }
        Ok(Self {
            target,
            authorization: u.authorization,
            shown: u.shown,
        })
    }

    /// Opens a `CONNECT` tunnel to `to` over `tcp` (a connection to this proxy).
    pub(super) async fn connect_tunnel(
        &self,
        tcp: &mut TcpStream,
        to: &Target,
        op: &'static str,
    ) -> Result<(), Error> {
        let authority = to.host_port();
        let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        let fail = |message: String| Error::Connect {
            op,
            endpoint: self.shown.clone(),
            source: std::io::Error::other(message),
        };
        tcp.write_all(request.as_bytes())
            .await
            .map_err(|e| fail(format!("CONNECT {authority}: {e}")))?;
        // Read the answer's head byte by byte: nothing after it may be consumed, it belongs to
        // the TLS handshake.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > MAX_CONNECT_ANSWER_BYTES {
                return Err(fail(format!(
                    "CONNECT {authority}: the proxy's answer has no end"
                )));
            }
            let b = tcp
                .read_u8()
                .await
                .map_err(|e| fail(format!("CONNECT {authority}: {e}")))?;
            head.push(b);
        }
        let head = String::from_utf8_lossy(&head);
        let status = head.lines().next().unwrap_or_default();
        let code = status.split_whitespace().nth(1).unwrap_or_default();
        match code {
            "200" => Ok(()),
            "407" => Err(fail(format!(
                "CONNECT {authority}: the proxy wants credentials ({status}); put user:password@ in the proxy URL"
            ))),
            _ => Err(fail(format!(
                "CONNECT {authority}: the proxy refused ({status}); check its allowed ports and hosts (tinyproxy: ConnectPort, squid: SSL_ports)"
            ))),
        }
    }
}

/// Longest CONNECT answer head accepted.
const MAX_CONNECT_ANSWER_BYTES: usize = 16 * 1024;

/// Which proxy each scheme uses, and the exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    https: Option<Proxy>,
    http: Option<Proxy>,
    no_proxy: Vec<NoProxy>,
}

/// What `upload.proxy` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Not set: the environment's variables decide.
    #[default]
    Environment,
    /// `"off"` (or empty): no proxy, whatever the environment says.
    Off,
    /// One proxy for every scheme.
    Url(String),
}

impl Proxies {
    /// No proxy at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// The proxies in effect: `setting` and `no_proxy` from the config, else `env`.
    pub fn resolve(
        setting: &ProxySetting,
        no_proxy: Option<&str>,
        env: &ProxyEnv,
    ) -> Result<Self, Error> {
        let parse = |url: &Option<String>| url.as_deref().map(Proxy::parse).transpose();
        let (https, http) = match setting {
            ProxySetting::Off => (None, None),
            ProxySetting::Url(url) => {
                let p = Proxy::parse(url)?;
                (Some(p.clone()), Some(p))
            }
            ProxySetting::Environment => (parse(&env.https_proxy)?, parse(&env.http_proxy)?),
        };
        let list = no_proxy.or(env.no_proxy.as_deref()).unwrap_or_default();
        Ok(Self {
            https,
            http,
            no_proxy: list
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(NoProxy::parse)
                .collect(),
        })
    }

    /// The proxy for `target`, if one applies.
    pub fn for_target(&self, target: &Target) -> Option<&Proxy> {
        let proxy = if target.https {
            self.https.as_ref()
        } else {
            self.http.as_ref()
        }?;
        let host = target.host.to_ascii_lowercase();
        (!self.no_proxy.iter().any(|e| e.matches(&host))).then_some(proxy)
    }

    /// One line for the start-up log and `config check`, secrets hidden.
    pub fn describe(&self) -> Option<String> {
        if self.https.is_none() && self.http.is_none() {
            return None;
        }
        let show = |p: &Option<Proxy>| p.as_ref().map_or("direct".to_owned(), |p| p.shown.clone());
        let mut line = format!(
            "https via {}, http via {}",
            show(&self.https),
            show(&self.http)
        );
        if !self.no_proxy.is_empty() {
            let list: Vec<String> = self.no_proxy.iter().map(NoProxy::to_string).collect();
            line.push_str(&format!(", direct to {}", list.join(",")));
        }
        Some(line)
    }
}

/// One `no_proxy` entry, with curl's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxy {
    /// `*`: every host.
    All,
    /// An address, or a network in CIDR notation.
    Net(IpAddr, u8),
    /// A name: itself and every name under it (`example.com`, `.example.com`).
    Domain(String),
}

impl NoProxy {
    fn parse(entry: &str) -> Self {
        if entry == "*" {
            return Self::All;
        }
        let bare = entry.trim_start_matches('[').trim_end_matches(']');
        let (addr, bits) = match bare.split_once('/') {
            Some((a, b)) => (a, b.parse().ok()),
            None => (bare, None),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            return Self::Net(ip, bits.unwrap_or(max).min(max));
        }
        Self::Domain(entry.trim_start_matches('.').to_ascii_lowercase())
    }

    /// Whether `host` (lower case, without brackets) is exempt.
    fn matches(&self, host: &str) -> bool {
        match self {
            Self::All => true,
            Self::Net(net, bits) => host
                .parse::<IpAddr>()
                .is_ok_and(|ip| same_network(*net, ip, *bits)),
            Self::Domain(d) => {
                host == d
                    || host
                        .strip_suffix(d.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            }
        }
    }
}

impl std::fmt::Display for NoProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Net(ip, bits) if *bits == if ip.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{ip}")
            }
            Self::Net(ip, bits) => write!(f, "{ip}/{bits}"),
            Self::Domain(d) => f.write_str(d),
        }
    }
}

/// Whether `a` and `b` share their first `bits` bits (never across address families).
fn same_network(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(https: bool, host: &str) -> Target {
        Target {
            https,
            host: host.into(),
            port: if https { 443 } else { 80 },
        }
    }

    #[test]
    fn the_environment_is_read_as_curl_reads_it() {
        let env = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            ProxyEnv::from_lookup(move |k| {
                vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
        };
        let e = env(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("HTTP_PROXY", "http://cgi-injected:1"),
            ("NO_PROXY", "example.net"),
        ]);
        assert_eq!(e.https_proxy.as_deref(), Some("http://p:3128"));
        assert_eq!(
            e.http_proxy, None,
            "HTTP_PROXY in capitals is ignored, as by curl"
        );
        assert_eq!(e.no_proxy.as_deref(), Some("example.net"));
        let e = env(&[("https_proxy", "http://a:1"), ("HTTPS_PROXY", "http://b:2")]);
        assert_eq!(e.https_proxy.as_deref(), Some("http://a:1"));
    }

    #[test]
    fn no_proxy_names_hosts_domains_and_networks_and_nothing_else() {
        let env = ProxyEnv {
            https_proxy: Some("http://u:pw@proxy.example.net:3128".into()),
            http_proxy: Some("proxy.example.net".into()),
            no_proxy: Some(".internal.example, 10.0.0.0/8, ::1, 169.254.169.254".into()),
        };
        let p = Proxies::resolve(&ProxySetting::Environment, None, &env).unwrap();
        let via =
            |https: bool, host: &str| p.for_target(&target(https, host)).map(|p| p.target.port);
        assert_eq!(via(true, "s3.eu-west-1.amazonaws.com"), Some(3128));
        assert_eq!(via(false, "s3.eu-west-1.amazonaws.com"), Some(1080));
        assert_eq!(via(true, "store.internal.example"), None);
        assert_eq!(via(true, "internal.example"), None);
        assert_eq!(via(true, "notinternal.example"), Some(3128));
        assert_eq!(via(true, "10.20.30.40"), None);
        assert_eq!(via(true, "11.0.0.1"), Some(3128));
        assert_eq!(via(true, "::1"), None);
        assert_eq!(via(false, "169.254.169.254"), None);
        // Loopback is proxied unless named: curl's rule.
        assert_eq!(via(true, "127.0.0.1"), Some(3128));
        let shown = p.describe().unwrap();
        assert!(
            shown.contains("u:***@proxy.example.net:3128") && !shown.contains("pw"),
            "{shown}"
        );
        // The config wins over the environment, and "off" means direct.
        let p = Proxies::resolve(&ProxySetting::Off, None, &env).unwrap();
        assert_eq!(p.for_target(&target(true, "s3.example")), None);
        let p = Proxies::resolve(
            &ProxySetting::Url("http://cfg:8080".into()),
            Some("*"),
            &env,
        )
        .unwrap();
        assert_eq!(p.for_target(&target(true, "s3.example")), None);
        assert!(Proxy::parse("https://tls-proxy:443").is_err());
        assert!(Proxy::parse("http://p:3128/path").is_err());
        let p = Proxy::parse("http://al:pw@p:3128").unwrap();
        assert_eq!(p.authorization.as_deref(), Some("Basic YWw6cHc="));
    }
}
