use tracing_subscriber::EnvFilter;

use crate::cli::{LogArgs, LogFormat};

/// Installs the global subscriber: human or JSON lines on stderr.
/// Levels a filter directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Checks a log filter: every comma-separated directive is a level (`info`) or
/// `target=level` (`backhaul_upload=debug`). A bare word that is not a level is what
/// tracing reads as "only this target", so `level = "verbose"` would silence the agent.
pub fn parse_filter(s: &str) -> Result<String, String> {
    for d in s.split(',').map(str::trim) {
        let level = match d.split_once('=') {
            Some((target, level)) if !target.is_empty() => level,
            _ => d,
        };
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "`{d}` is not a level or target=level; levels are {}",
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

pub fn init(args: &LogArgs, config_format: Option<LogFormat>, config_level: Option<&str>) {
    let level = args.log_level.as_deref().or(config_level).unwrap_or("info");
    // Flags are checked by clap and the file by `config::parse`; this fallback is for the
    // commands' built-in defaults only.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_that_would_silence_the_agent_are_refused() {
        for ok in ["info", "WARN", "backhaul_upload=debug,info", "off"] {
            assert!(parse_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "", "info,", "=debug", "backhaul=loud"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
