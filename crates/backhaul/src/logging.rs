use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::{LogArgs, LogFormat};
use crate::env::Stderr;

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

/// Installs the global subscriber on stderr: human lines (coloured only on a terminal; under
/// systemd's journal without a timestamp and with each line's syslog priority, `<3>` error to
/// `<7>` debug, so `journalctl -p err` finds the errors) or JSON lines.
pub fn init(
    args: &LogArgs,
    config_format: Option<LogFormat>,
    config_level: Option<&str>,
    stderr: Stderr,
) {
    let level = args.log_level.as_deref().or(config_level).unwrap_or("info");
    // Flags are checked by clap and the file by `config::parse`; this fallback is for the
    // commands' built-in defaults only.
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr.colour);
    let format = args
        .log_format
        .or(config_format)
        .unwrap_or(LogFormat::Human);
    let installed = match (format, stderr.journal) {
        (LogFormat::Human, false) => builder.try_init(),
        (LogFormat::Human, true) => builder
            .event_format(Journald(
                tracing_subscriber::fmt::format()
                    .without_time()
                    .with_ansi(false),
            ))
            .try_init(),
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
    };
    if installed.is_err() {
        // Only the first subscriber of a process counts; later calls keep it.
        tracing::debug!("log subscriber already installed");
    }
}

/// The syslog priority journald reads from a line's `<N>` prefix.
fn priority(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        tracing::Level::DEBUG | tracing::Level::TRACE => 7,
    }
}

/// A line format for the journal: the priority prefix, then the inner format's line.
struct Journald<F>(F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities_follow_syslog() {
        assert_eq!(priority(tracing::Level::ERROR), 3);
        assert_eq!(priority(tracing::Level::WARN), 4);
        assert_eq!(priority(tracing::Level::INFO), 6);
        assert_eq!(priority(tracing::Level::DEBUG), 7);
        assert_eq!(priority(tracing::Level::TRACE), 7);
    }

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
