mod repeats;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

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

/// The target of the lines that sum up held-back repeats; they are never held back themselves.
const SUMMARY_TARGET: &str = "backhaul::repeats";
/// How often closed windows are summed up.
const SUMMARY_TICK: Duration = Duration::from_secs(5);

/// The installed subscriber's windows, for [`flush`].
static REPEATS: OnceLock<Arc<repeats::Repeats>> = OnceLock::new();

/// Sums up what the log held back and has not said yet; called once before the process exits.
pub fn flush() {
    if let Some(r) = REPEATS.get() {
        for s in r.close_all(Instant::now()) {
            summarise(&s);
        }
    }
}

/// Installs the global subscriber on stderr: human lines (coloured only on a terminal; under
/// systemd's journal without a timestamp and with each line's syslog priority, `<3>` error to
/// `<7>` debug, so `journalctl -p err` finds the errors) or JSON lines. Warnings and errors
/// are bounded per cause in every format ([`repeats`]).
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
    let repeats = Arc::new(repeats::Repeats::default());
    let installed = match (format, stderr.journal) {
        (LogFormat::Human, false) => builder
            .event_format(Limited::new(tracing_subscriber::fmt::format(), &repeats))
            .try_init(),
        (LogFormat::Human, true) => builder
            .event_format(Limited::new(
                Journald(
                    tracing_subscriber::fmt::format()
                        .without_time()
                        .with_ansi(false),
                ),
                &repeats,
            ))
            .try_init(),
        (LogFormat::Json, _) => builder
            .json()
            .event_format(Limited::new(
                tracing_subscriber::fmt::format().json().flatten_event(true),
                &repeats,
            ))
            .try_init(),
    };
    if installed.is_err() {
        // Only the first subscriber of a process counts; later calls keep it.
        tracing::debug!("log subscriber already installed");
        return;
    }
    let _first = REPEATS.set(repeats.clone());
    let spawned = std::thread::Builder::new()
        .name("log-repeats".into())
        .spawn(move || {
            loop {
                std::thread::sleep(SUMMARY_TICK);
                for s in repeats.close_expired(Instant::now()) {
                    summarise(&s);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the log's repeat summaries; held-back repeats are not summed up");
    }
}

/// One line for a closed window, at the level of the lines it held back.
fn summarise(s: &repeats::Summary) {
    match s.level {
        tracing::Level::ERROR => tracing::error!(target: SUMMARY_TARGET, held = s.held, "{s}"),
        _ => tracing::warn!(target: SUMMARY_TARGET, held = s.held, "{s}"),
    }
}

/// Writes nothing for a line [`repeats::Repeats`] holds back (the fmt layer then writes an
/// empty buffer, which is no write at all), else the inner format's line.
struct Limited<F> {
    inner: F,
    repeats: Arc<repeats::Repeats>,
}

impl<F> Limited<F> {
    fn new(inner: F, repeats: &Arc<repeats::Repeats>) -> Self {
        Self {
            inner,
            repeats: repeats.clone(),
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for Limited<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().target() != SUMMARY_TARGET
            && self.repeats.admit(event, Instant::now()) == repeats::Verdict::Hold
        {
            return Ok(());
        }
        self.inner.format_event(ctx, writer, event)
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
