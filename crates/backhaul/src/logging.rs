use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber: human or JSON lines on stderr.
pub fn init(args: &LogArgs, config_format: Option<LogFormat>, config_level: Option<&str>) {
    let level = args.log_level.as_deref().or(config_level).unwrap_or("info");
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match args
        .log_format
        .or(config_format)
        .unwrap_or(LogFormat::Human)
    {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        // Only the first subscriber of a process counts; later calls keep it.
        tracing::debug!("log subscriber already installed");
    }
}
