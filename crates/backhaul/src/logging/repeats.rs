//! Repeated warnings and errors, bounded per cause. During an outage every retry and every
//! chunk attempt fails for the same reason; a log that repeats it once a second buries
//! everything else and costs the journal's rate limit. Per cause (the line's call site and the
//! values of its cause fields: error class, incident kind, destination, interface) the first
//! [`PER_WINDOW`] lines of a [`WINDOW`] are written; the rest are counted and summed up in one
//! line when the window closes ("… 37 more in the last 60 s"), or when the process exits.
//! Info and debug lines are never held back: they are not repeats of a failure.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::Level;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};

/// Lines of one cause written per window.
pub const PER_WINDOW: u32 = 5;
/// How long a cause's window lasts from its first line.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The fields whose values make two lines of one call site different causes.
const CAUSE_FIELDS: [&str; 5] = ["class", "kind", "destination", "interface", "incident"];

/// Whether a line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Write,
    Hold,
}

/// A closed window that held lines back: what the summary line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub level: Level,
    pub target: &'static str,
    /// The held-back lines' message.
    pub message: String,
    /// Their cause fields, `class=connect`.
    pub cause: String,
    pub held: u32,
    /// How long the window was open.
    pub window: Duration,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "… {} more \"{}\"", self.held, self.message)?;
        if !self.cause.is_empty() {
            write!(f, " ({})", self.cause)?;
        }
        write!(
            f,
            " from {} in the last {} s",
            self.target,
            self.window.as_secs()
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Cause {
    callsite: Identifier,
    fields: String,
}

#[derive(Debug)]
struct Window {
    opened: Instant,
    written: u32,
    held: u32,
    level: Level,
    target: &'static str,
    message: String,
}

/// The per-cause windows.
#[derive(Debug, Default)]
pub struct Repeats {
    windows: Mutex<HashMap<Cause, Window>>,
}

impl Repeats {
    /// Whether `event`, seen at `now`, is written or held back.
    pub fn admit(&self, event: &tracing::Event<'_>, now: Instant) -> Verdict {
        let meta = event.metadata();
        if *meta.level() > Level::WARN {
            return Verdict::Write;
        }
        let mut seen = Seen::default();
        event.record(&mut seen);
        let cause = Cause {
            callsite: meta.callsite(),
            fields: seen.cause,
        };
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window = windows.entry(cause).or_insert_with(|| Window {
            opened: now,
            written: 0,
            held: 0,
            level: *meta.level(),
            target: meta.target(),
            message: seen.message,
        });
        if window.written < PER_WINDOW {
            window.written += 1;
            Verdict::Write
        } else {
            window.held += 1;
            Verdict::Hold
        }
    }

    /// Closes the windows older than [`WINDOW`] at `now` and returns a summary for each that
    /// held lines back.
    pub fn close_expired(&self, now: Instant) -> Vec<Summary> {
        self.close(now, WINDOW)
    }

    /// Closes every window (the process is about to exit), with the same summaries.
    pub fn close_all(&self, now: Instant) -> Vec<Summary> {
        self.close(now, Duration::ZERO)
    }

    fn close(&self, now: Instant, older_than: Duration) -> Vec<Summary> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut summaries = Vec::new();
        windows.retain(|cause, w| {
            let open = now.saturating_duration_since(w.opened);
            if open < older_than {
                return true;
            }
            if w.held > 0 {
                summaries.push(Summary {
                    level: w.level,
                    target: w.target,
                    message: std::mem::take(&mut w.message),
                    cause: cause.fields.clone(),
                    held: w.held,
                    window: open,
                });
            }
            false
        });
        summaries
    }
}

/// The message and the cause fields of one event.
#[derive(Default)]
struct Seen {
    message: String,
    cause: String,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else if CAUSE_FIELDS.contains(&field.name()) {
            if !self.cause.is_empty() {
                self.cause.push(' ');
            }
            let _infallible = write!(self.cause, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tracing_subscriber::layer::{Context, SubscriberExt as _};

    use super::*;

    /// A subscriber that asks `Repeats` about every event at a clock the test moves.
    struct Probe {
        repeats: Arc<Repeats>,
        now: Arc<Mutex<Instant>>,
        written: Arc<Mutex<Vec<String>>>,
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Probe {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let now = *self.now.lock().unwrap();
            if self.repeats.admit(event, now) == Verdict::Write {
                let mut seen = Seen::default();
                event.record(&mut seen);
                self.written.lock().unwrap().push(seen.message);
            }
        }
    }

    #[test]
    fn a_cause_writes_five_lines_a_window_and_sums_up_the_rest() {
        let start = Instant::now();
        let repeats = Arc::new(Repeats::default());
        let now = Arc::new(Mutex::new(start));
        let written = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Probe {
            repeats: repeats.clone(),
            now: now.clone(),
            written: written.clone(),
        });
        let retry = |class: &str| tracing::warn!(class, attempt = 1, "request failed; retrying");
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..40 {
                *now.lock().unwrap() = start + Duration::from_secs(i);
                retry("connect");
                if i % 10 == 0 {
                    // Another cause of the same line has its own window.
                    retry("timeout");
                }
                tracing::info!("uploaded");
            }
            assert!(
                repeats
                    .close_expired(start + Duration::from_secs(59))
                    .is_empty()
            );
            let summaries = repeats.close_expired(start + Duration::from_secs(60));
            assert_eq!(summaries.len(), 1, "{summaries:?}");
            assert_eq!(summaries[0].held, 35);
            assert_eq!(summaries[0].level, Level::WARN);
            assert_eq!(
                summaries[0].to_string(),
                format!(
                    "… 35 more \"request failed; retrying\" (class=connect) from {} in the last 60 s",
                    module_path!()
                )
            );
            // A new window writes again; at exit, whatever it held is summed up too.
            *now.lock().unwrap() = start + Duration::from_secs(61);
            for _ in 0..7 {
                retry("connect");
            }
            let last = repeats.close_all(start + Duration::from_secs(71));
            assert_eq!(last.len(), 1, "{last:?}");
            assert_eq!((last[0].held, last[0].window.as_secs()), (2, 10));
        });
        let written = written.lock().unwrap();
        let retries = written.iter().filter(|m| m.contains("retrying")).count();
        assert_eq!(
            retries,
            5 + 4 + 5,
            "5 connect, 4 timeout, then the new window's 5"
        );
        assert_eq!(written.iter().filter(|m| *m == "uploaded").count(), 40);
    }
}
