//! `backhaul status`: asks the running agent for its `/status` document and prints it as a
//! summary (or as JSON with `--json`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use backhaul_upload::{SimpleRequest, Transport, TransportConfig};

use crate::cli::StatusArgs;
use crate::config;
use crate::exit::ConfigInvalid;
use crate::status::Status;

/// How long to wait for the agent; it answers from memory.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `backhaul status`.
pub fn main(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let url = match &args.url {
        Some(u) => format!("{}/status", u.trim_end_matches('/')),
        None => status_url(&args.config)?,
    };
    let body = fetch(&url, TIMEOUT)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        out.write_all(&body)?;
    } else {
        let status: Status = serde_json::from_slice(&body).with_context(|| {
            format!("{url} did not answer with a backhaul status document (another service on that port?)")
        })?;
        out.write_all(status.human().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

/// GETs the agent's `/status` document at `url`.
pub fn fetch(url: &str, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let transport = Transport::new(TransportConfig {
            connect_timeout: timeout,
            ..TransportConfig::default()
        });
        transport
            .simple(SimpleRequest {
                method: "GET",
                url,
                headers: &[],
                body: Vec::new(),
                timeout,
            })
            .await
    })
    .with_context(|| {
        format!(
            "the agent is not answering at {url}\n  help: is `backhaul run` running? \
             (systemctl status backhaul); --url must point at its metrics.listen address"
        )
    })
    .map(|b| b.to_vec())
}

/// `http://<metrics.listen>/status` of the config, with a wildcard address asked on loopback.
fn status_url(path: &std::path::Path) -> anyhow::Result<String> {
    let cfg = config::load(path)?;
    url_of(&cfg).ok_or_else(|| {
        anyhow::Error::new(ConfigInvalid(format!(
            "{}: metrics.listen is \"off\", so the agent serves no /status\n  help: set \
             metrics.listen = \"127.0.0.1:9464\" and restart the agent, or pass --url",
            path.display()
        )))
    })
}

/// The agent's `/status` URL from its config (`None` with `metrics.listen = "off"`).
pub fn url_of(cfg: &config::Config) -> Option<String> {
    let listen = cfg.metrics_listen?;
    let addr = if listen.ip().is_unspecified() {
        let loopback = match listen {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        SocketAddr::new(loopback, listen.port())
    } else {
        listen
    };
    Some(format!("http://{addr}/status"))
}
