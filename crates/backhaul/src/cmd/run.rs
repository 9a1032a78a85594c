//! `backhaul run`: the daemon (or `--drain`, one pass).

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use backhaul_spool::Spool;
use backhaul_telemetry::{CounterDeltas, EmfTarget, Metrics, emf_lines};
use backhaul_upload::cloudwatch::CloudWatch;
use backhaul_upload::{RunMode, RunReport, UploaderParts, build_uploader};
use tokio::sync::watch;

use crate::cli::RunArgs;
use crate::config::{self, Config};
use crate::env::ProcessEnv;
use crate::exit::ConfigInvalid;
use crate::status::StatusBoard;
use crate::{logging, metrics_server};

/// Entry point.
pub fn main(args: RunArgs, env: ProcessEnv) -> anyhow::Result<ExitCode> {
    let cfg = config::load(&args.config)?;
    logging::init(
        &args.log,
        cfg.log_format,
        cfg.log_level.as_deref(),
        env.stderr,
    );
    let mode = if args.drain {
        RunMode::Drain
    } else {
        RunMode::Daemon
    };
    let rt = runtime()?;
    rt.block_on(async {
        let shutdown = shutdown_on_signals();
        let metrics = Arc::new(Metrics::default());
        let report = agent(cfg, &env, mode, shutdown, metrics, |_| {}).await?;
        print_failures(&report);
        Ok(if report.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::exit::FAILURE)
        })
    })
}

/// A small multi-threaded runtime: the agent is I/O bound and sites have few cores.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // File reads run on blocking threads; a few suffice, and every extra thread is another
        // malloc arena that keeps freed part buffers resident.
        .max_blocking_threads(4)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A channel that turns true on Ctrl-C or SIGTERM.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        // SIGHUP would end the process by default; reloading is not cheap to do right (the
        // spool, uploader and monitor are built from the config at start), so say so instead.
        let hup = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(mut s) => {
                    while s.recv().await.is_some() {
                        tracing::warn!(
                            "SIGHUP: the configuration is read only at start; restart the agent to apply changes (systemctl restart backhaul)"
                        );
                    }
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = hup => {}
        }
        tracing::info!("shutdown requested; finishing journal writes");
        tx.send(true).ok();
    });
    rx
}

fn print_failures(report: &RunReport) {
    for (name, err) in &report.failed {
        eprintln!(
            "error: chunk {name} not uploaded: {err}\n  help: it stays in the spool; fix the cause and run again"
        );
    }
}

/// Runs the agent until `shutdown` (daemon) or until the spool is drained. `on_start` gets the
/// bound metrics address, if any.
pub async fn agent(
    cfg: Config,
    env: &ProcessEnv,
    mode: RunMode,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    on_start: impl FnOnce(Option<std::net::SocketAddr>),
) -> anyhow::Result<RunReport> {
    let spool = Spool::open(cfg.spool.clone(), metrics.clone()).map_err(|e| match e {
        // Their messages say what to do; the configuration is fine.
        backhaul_spool::Error::JournalCorrupt { .. }
        | backhaul_spool::Error::Locked { .. }
        | backhaul_spool::Error::JournalOpen {
            cause:
                backhaul_spool::OpenCause::NoSpace
                | backhaul_spool::OpenCause::ReadOnly
                | backhaul_spool::OpenCause::NotWritable,
            ..
        } => anyhow::Error::new(e),
        _ => anyhow::Error::new(ConfigInvalid(format!(
            "{e:#}\n  help: the spool directory must exist and be readable by the agent (spool.dir = {})",
            cfg.spool.dir.display()
        )))
        .context(format!("cannot open spool {}", cfg.spool.dir.display())),
    })?;
    let spool = Arc::new(spool);
    let outbox = Arc::new(
        backhaul_spool::Outbox::open(spool.journal_path())
            .context("cannot open the alert outbox in the journal")?,
    );
    let creds = Arc::new(cfg.credentials(env));
    let (uploader, chunks) = build_uploader(
        UploaderParts {
            settings: cfg.upload.clone(),
            creds: creds.clone(),
            ca_bundle: env.aws.ca_bundle.clone(),
            proxy_env: env.proxy.clone(),
            zone: backhaul_upload::ZoneSource::System,
        },
        spool.clone(),
        metrics.clone(),
    )?;
    let board = Arc::new(StatusBoard::new(cfg.site.clone()));
    board.set_integrity(chunks.integrity.clone());
    board.set_limiter(chunks.limiter.clone());
    board.set_credentials(creds.clone());
    board.set_disk(spool.disk_feed());
    let bound = match cfg.metrics_listen {
        Some(addr) => Some(
            metrics_server::serve(addr, metrics.clone(), board.clone(), shutdown.clone())
                .await
                .with_context(|| format!("cannot listen for metrics on {addr} (metrics.listen)"))?,
        ),
        None => None,
    };
    if let Some(a) = bound {
        tracing::info!(address = %a, "serving /metrics, /status and the status page at /");
        tokio::spawn(crate::status::history::sample(
            board.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    on_start(bound);
    spawn_publishers(
        &cfg,
        creds.clone(),
        metrics.clone(),
        chunks.client.transport().clone(),
        shutdown.clone(),
    );
    // Kept so the agent does not return (and drop the runtime) before the supervisor has
    // told systemd STOPPING=1.
    let supervisor = match crate::service::Notifier::from_env() {
        Ok(Some(notifier)) => Some(tokio::spawn(crate::service::supervise(
            notifier,
            metrics.clone(),
            board.clone(),
            uploader.ready(),
            shutdown.clone(),
        ))),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e,
                "NOTIFY_SOCKET is set but unusable; systemd will not hear READY=1 or watchdog pings");
            None
        }
    };
    let stopping = shutdown.clone();
    let inventory = match cfg.inventory.clone() {
        Some(inventory) => {
            warn_about_degraded_monitoring(&inventory);
            inventory
        }
        None => {
            tracing::info!(
                path_rules = %backhaul_diagnose::Kind::names(true),
                "no [inventory] in the config: the path rules and probes are off; credentials, the store, the disk and goodput are watched and alerted on"
            );
            backhaul_diagnose::Inventory::site_only(&endpoint_host(&cfg.upload.endpoint))
        }
    }
    .with_endpoint_url(&cfg.upload.endpoint);
    tokio::spawn(crate::monitor::run(
        crate::monitor::Monitor {
            cfg: cfg.monitor.clone(),
            inventory,
            settings: cfg.diagnose.clone(),
            site: cfg.site.clone(),
            stall_timeout_seconds: cfg.upload.stall_timeout.as_secs(),
            outbox,
            disk: spool.disk_feed(),
            remediation: cfg.remediation.clone(),
            upload_errors: chunks.errors.subscribe(),
            credentials: creds.clone(),
        },
        metrics.clone(),
        board,
        chunks.client.transport().clone(),
        shutdown.clone(),
    ));
    tracing::info!(spool = %cfg.spool.dir.display(), bucket = %cfg.upload.bucket, mode = ?mode, "agent started");
    // One watcher, one readiness tracker: the spool's. The uploader only claims what it
    // journals (drain mode rescans through the same spool instead).
    let watcher = {
        let (spool, shutdown) = (spool.clone(), shutdown.clone());
        async move {
            match mode {
                RunMode::Daemon => spool.watch(shutdown).await,
                RunMode::Drain => std::future::pending().await,
            }
        }
    };
    let run = uploader.run(mode, shutdown);
    tokio::pin!(run);
    let report = tokio::select! {
        r = &mut run => r?,
        // The watcher ends on shutdown, or with an error that stops the agent.
        r = watcher => {
            r.context("the spool watcher failed")?;
            run.await?
        }
    };
    if let Some(supervisor) = supervisor {
        // On shutdown it is already past its loop; a drained spool ends without a signal.
        if *stopping.borrow() {
            if let Err(e) = supervisor.await {
                tracing::warn!(error = %e, "the systemd notify task ended abnormally");
            }
        } else {
            supervisor.abort();
        }
    }
    Ok(report)
}

fn spawn_publishers(
    cfg: &Config,
    creds: Arc<backhaul_upload::CredentialsProvider>,
    metrics: Arc<Metrics>,
    transport: Arc<backhaul_upload::Transport>,
    mut shutdown: watch::Receiver<bool>,
) {
    if cfg.emf_path.is_none() && cfg.cloudwatch.is_none() {
        return;
    }
    let emf = cfg.emf_path.clone();
    let target = EmfTarget {
        namespace: cfg.namespace.clone(),
        site: cfg.site.clone(),
    };
    let cw = cfg
        .cloudwatch
        .as_ref()
        .map(|(endpoint, region)| CloudWatch {
            endpoint: endpoint.clone(),
            region: region.clone(),
            namespace: cfg.namespace.clone(),
            site: cfg.site.clone(),
            creds,
        });
    let interval = cfg.publish_interval;
    // One per sink: a sink that failed sends the missed change with its next publish.
    let (mut emf_sent, mut cw_sent) = (CounterDeltas::default(), CounterDeltas::default());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let snapshot = metrics.snapshot(Instant::now());
            if let Some(path) = &emf {
                let ts = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                let mut lines = emf_lines(&emf_sent.data(&snapshot), &target, ts).join("\n");
                lines.push('\n');
                // One write of the whole interval: the CloudWatch agent never reads half of it.
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(lines.as_bytes()));
                match written {
                    Ok(()) => emf_sent.advance(&snapshot),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot append EMF metrics");
                    }
                }
            }
            if let Some(cw) = &cw {
                match cw.publish(&transport, &cw_sent.data(&snapshot)).await {
                    Ok(()) => cw_sent.advance(&snapshot),
                    Err(e) => {
                        tracing::warn!(endpoint = %cw.endpoint, error = %e, "PutMetricData failed");
                    }
                }
            }
        }
    });
}

/// The upload endpoint's host, as alerts name it (the endpoint itself if it does not parse,
/// which `config check` would have refused).
fn endpoint_host(endpoint: &str) -> String {
    backhaul_upload::parse_request_url(endpoint)
        .map_or_else(|_| endpoint.to_owned(), |u| u.target.host)
}

/// Says once, at start, which inventory interfaces this host lacks, so a misnamed interface
/// shows up in the first log lines instead of as a silent gap at 08:30. (A missing
/// CAP_NET_RAW is reported by the monitor when its first probe cannot open a socket.)
fn warn_about_degraded_monitoring(inventory: &backhaul_diagnose::Inventory) {
    for i in inventory.interfaces() {
        if crate::probe::read_sys(&i.name, "mtu").is_none() {
            tracing::warn!(
                interface = %i.name,
                role = i.role.as_str(),
                "inventory interface not found on this host: its MTU and state are not watched; \
                 fix the name in [inventory] interfaces (see `ip -br link`)"
            );
        }
    }
}
