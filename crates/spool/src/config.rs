use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, KeyTemplate, Pattern};

/// Default seconds a chunk's size and mtime must stay unchanged before it counts as written.
pub const DEFAULT_SETTLE_SECONDS: u64 = 5;
/// Default seconds between full rescans of the spool (the safety net under inotify).
pub const DEFAULT_RESCAN_INTERVAL_SECONDS: u64 = 30;
/// Default file-name patterns that are never uploaded.
pub const DEFAULT_IGNORE: &[&str] = &["*.part", "*.tmp", ".*"];
/// Default object key template.
/// `{path}` keeps the directories below the camera, so `cam5/a/x.mp4` and `cam5/b/x.mp4` never
/// share a key.
pub const DEFAULT_KEY_TEMPLATE: &str = "{site}/{camera}/{date}/{path}";
/// Default disk usage (percent) that raises a warning.
pub const DEFAULT_DISK_WARNING_PERCENT: f64 = 85.0;
/// Default disk usage (percent) that raises critical.
pub const DEFAULT_DISK_CRITICAL_PERCENT: f64 = 95.0;
/// Default seconds of disk history behind the fill rate: a few 2-minute camera chunks, so one
/// chunk landing before its upload does not read as the disk filling.
pub const DEFAULT_FILL_RATE_WINDOW_SECONDS: u64 = 300;
/// Default days a finished chunk's journal row is kept (for `sqlite3` readers and audits)
/// before compaction deletes it.
pub const DEFAULT_JOURNAL_RETENTION_DAYS: u64 = 7;

/// What happens to a chunk file once its object is verified in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AfterUpload {
    /// Delete it.
    #[default]
    Delete,
    /// Move it into `retain_dir`.
    Retain,
}

/// Which ready chunk is uploaded next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// The newest ready chunk first when it is newer than anything started so far (live data
    /// keeps the dashboard current); otherwise the backlog drains oldest first.
    #[default]
    Freshness,
    /// Strictly oldest first.
    Fifo,
}

/// What the agent may do when the spool disk passes the critical watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFullPolicy {
    /// Never delete an un-uploaded chunk; raise critical and keep trying.
    #[default]
    Keep,
    /// Delete the oldest un-uploaded chunk while usage is above critical (counted in
    /// `backhaul_chunks_dropped_total`).
    DropOldest,
}

/// The `[spool]` table as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory the cameras write chunks into.
    pub dir: PathBuf,
    /// SQLite journal file; default `<dir>/.backhaul/journal.sqlite`.
    pub journal: Option<PathBuf>,
    /// Seconds a chunk must stay unchanged before upload (when not renamed in).
    #[serde(default = "default_settle")]
    pub settle_seconds: u64,
    /// Seconds between full rescans.
    #[serde(default = "default_rescan")]
    pub rescan_interval_seconds: u64,
    /// File-name patterns never uploaded.
    #[serde(default = "default_ignore")]
    pub ignore: Vec<String>,
    /// `delete` or `retain`.
    #[serde(default)]
    pub after_upload: AfterUpload,
    /// Where verified chunks go with `after_upload = "retain"`.
    pub retain_dir: Option<PathBuf>,
    /// `freshness` or `fifo`.
    #[serde(default)]
    pub order: Order,
    /// Object key template; placeholders `{site}`, `{camera}`, `{date}`, `{hour}`,
    /// `{path}` (below the camera directory), `{name}` (file name only).
    #[serde(default = "default_key_template")]
    pub key_template: String,
    /// Camera name for chunks written at the top of the spool rather than in a subdirectory.
    #[serde(default = "default_camera")]
    pub default_camera: String,
    /// Disk usage percent that raises a warning.
    #[serde(default = "default_warning")]
    pub disk_warning_percent: f64,
    /// Disk usage percent that raises critical.
    #[serde(default = "default_critical")]
    pub disk_critical_percent: f64,
    /// `keep` (default) or `drop-oldest`.
    #[serde(default)]
    pub disk_full_policy: DiskFullPolicy,
    /// Seconds of disk history the fill rate (and time-to-full) is computed over.
    #[serde(default = "default_fill_window")]
    pub fill_rate_window_seconds: u64,
    /// Days the journal keeps rows of finished chunks (removed, retained, gone, dropped).
    #[serde(default = "default_journal_retention")]
    pub journal_retention_days: u64,
}

fn default_settle() -> u64 {
    DEFAULT_SETTLE_SECONDS
}
fn default_rescan() -> u64 {
    DEFAULT_RESCAN_INTERVAL_SECONDS
}
/// Whether a pattern matches any name a camera could write (a camera directory, a chunk,
/// names with and without dots).
fn ignores_everything(p: &Pattern) -> bool {
    ["cam1", "0815.mp4", "x", "a.b.c", "2025-11-12T08-15-00Z.ts"]
        .iter()
        .all(|name| p.matches(name))
}

fn default_ignore() -> Vec<String> {
    DEFAULT_IGNORE.iter().map(|s| s.to_string()).collect()
}
fn default_key_template() -> String {
    DEFAULT_KEY_TEMPLATE.into()
}
fn default_camera() -> String {
    "default".into()
}
fn default_warning() -> f64 {
    DEFAULT_DISK_WARNING_PERCENT
}
fn default_critical() -> f64 {
    DEFAULT_DISK_CRITICAL_PERCENT
}
fn default_fill_window() -> u64 {
    DEFAULT_FILL_RATE_WINDOW_SECONDS
}
fn default_journal_retention() -> u64 {
    DEFAULT_JOURNAL_RETENTION_DAYS
}

impl SpoolConfig {
    /// A config with every default, for `dir`.
    pub fn with_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            journal: None,
            settle_seconds: DEFAULT_SETTLE_SECONDS,
            rescan_interval_seconds: DEFAULT_RESCAN_INTERVAL_SECONDS,
            ignore: default_ignore(),
            after_upload: AfterUpload::Delete,
            retain_dir: None,
            order: Order::Freshness,
            key_template: DEFAULT_KEY_TEMPLATE.into(),
            default_camera: default_camera(),
            disk_warning_percent: DEFAULT_DISK_WARNING_PERCENT,
            disk_critical_percent: DEFAULT_DISK_CRITICAL_PERCENT,
            disk_full_policy: DiskFullPolicy::Keep,
            fill_rate_window_seconds: DEFAULT_FILL_RATE_WINDOW_SECONDS,
            journal_retention_days: DEFAULT_JOURNAL_RETENTION_DAYS,
        }
    }

    /// Checks the values and produces the settings the spool runs with.
    ///
    /// Errors name the config key; the caller adds file and line.
    pub fn validate(&self, site: &str) -> Result<SpoolSettings, (&'static str, String)> {
        if self.settle_seconds > 3600 {
            return Err(("settle_seconds", "must be at most 3600".into()));
        }
        if self.rescan_interval_seconds == 0 {
            return Err(("rescan_interval_seconds", "must be at least 1".into()));
        }
        let pct = 0.0..=100.0;
        if !pct.contains(&self.disk_warning_percent) || !pct.contains(&self.disk_critical_percent) {
            return Err((
                "disk_warning_percent",
                "watermarks are percentages (0-100)".into(),
            ));
        }
        if self.disk_warning_percent > self.disk_critical_percent {
            return Err((
                "disk_warning_percent",
                format!(
                    "warning ({}) must not exceed critical ({})",
                    self.disk_warning_percent, self.disk_critical_percent
                ),
            ));
        }
        if !(10..=86_400).contains(&self.fill_rate_window_seconds) {
            return Err((
                "fill_rate_window_seconds",
                format!(
                    "{} is outside 10-86400; a few camera chunk intervals (default {}) keeps \
                     bursts of chunk writes from reading as a fast fill",
                    self.fill_rate_window_seconds, DEFAULT_FILL_RATE_WINDOW_SECONDS
                ),
            ));
        }
        if self.journal_retention_days > 3650 {
            return Err((
                "journal_retention_days",
                format!(
                    "{} is more than 10 years; the journal grows with every day kept (default {})",
                    self.journal_retention_days, DEFAULT_JOURNAL_RETENTION_DAYS
                ),
            ));
        }
        let retain_dir = match (self.after_upload, &self.retain_dir) {
            (AfterUpload::Retain, None) => {
                return Err((
                    "retain_dir",
                    "after_upload = \"retain\" needs retain_dir".into(),
                ));
            }
            (AfterUpload::Retain, Some(d)) if d.starts_with(&self.dir) => {
                return Err(("retain_dir", "must be outside the spool directory".into()));
            }
            (_, d) => d.clone(),
        };
        if self.default_camera.is_empty()
            || self.default_camera.contains('/')
            || self.default_camera == "."
            || self.default_camera == ".."
        {
            return Err((
                "default_camera",
                "must be a non-empty name without '/', and not '.' or '..'".into(),
            ));
        }
        if self
            .journal
            .as_ref()
            .is_some_and(|j| j.as_os_str().is_empty())
        {
            return Err((
                "journal",
                "is empty: SQLite would keep the journal in a temporary file and lose it at \
                 every stop (and with it what is uploaded); remove the key for the default \
                 <dir>/.backhaul/journal.sqlite or name a file"
                    .into(),
            ));
        }
        if let Some(all) = self
            .ignore
            .iter()
            .find(|p| ignores_everything(&Pattern::new(*p)))
        {
            return Err((
                "ignore",
                format!(
                    "`{all}` ignores every file: nothing would ever be uploaded; name what to \
                     skip (the default is {DEFAULT_IGNORE:?})"
                ),
            ));
        }
        let key = KeyTemplate::parse(&self.key_template, site).map_err(|e| match e {
            Error::KeyTemplate { reason, .. } => ("key_template", reason),
            other => ("key_template", other.to_string()),
        })?;
        Ok(SpoolSettings {
            journal: self
                .journal
                .clone()
                .unwrap_or_else(|| default_journal(&self.dir)),
            dir: self.dir.clone(),
            settle: Duration::from_secs(self.settle_seconds),
            rescan_interval: Duration::from_secs(self.rescan_interval_seconds),
            ignore: self.ignore.iter().map(Pattern::new).collect(),
            after_upload: self.after_upload,
            retain_dir,
            order: self.order,
            key,
            default_camera: self.default_camera.clone(),
            disk_warning_percent: self.disk_warning_percent,
            disk_critical_percent: self.disk_critical_percent,
            disk_full_policy: self.disk_full_policy,
            fill_rate_window: Duration::from_secs(self.fill_rate_window_seconds),
            journal_retention: Duration::from_secs(self.journal_retention_days * 86_400),
        })
    }
}

/// The journal's default location: a dot directory inside the spool, on the same filesystem,
/// skipped by every scan whatever the ignore patterns say.
pub fn default_journal(dir: &Path) -> PathBuf {
    dir.join(".backhaul").join("journal.sqlite")
}

/// Validated spool settings.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Spool directory.
    pub dir: PathBuf,
    /// Journal file.
    pub journal: PathBuf,
    /// Settle time.
    pub settle: Duration,
    /// Rescan interval.
    pub rescan_interval: Duration,
    /// Ignored name patterns.
    pub ignore: Vec<Pattern>,
    /// Delete or retain.
    pub after_upload: AfterUpload,
    /// Retain directory.
    pub retain_dir: Option<PathBuf>,
    /// Upload order.
    pub order: Order,
    /// Object key template.
    pub key: KeyTemplate,
    /// Camera for top-level chunks.
    pub default_camera: String,
    /// Warning watermark.
    pub disk_warning_percent: f64,
    /// Critical watermark.
    pub disk_critical_percent: f64,
    /// Disk-full policy.
    pub disk_full_policy: DiskFullPolicy,
    /// History the fill rate is computed over.
    pub fill_rate_window: Duration,
    /// How long finished rows stay in the journal.
    pub journal_retention: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_put_journal_inside_spool() {
        let s = SpoolConfig::with_dir("/var/spool/backhaul")
            .validate("SITE-1")
            .unwrap();
        assert_eq!(
            s.journal,
            PathBuf::from("/var/spool/backhaul/.backhaul/journal.sqlite")
        );
        assert_eq!(s.settle, Duration::from_secs(DEFAULT_SETTLE_SECONDS));
        assert_eq!(s.order, Order::Freshness);
    }

    /// An empty journal path would make SQLite use a temporary database (durability off
    /// without a word); a pattern that ignores every name would upload nothing.
    #[test]
    fn rejects_an_empty_journal_path_and_ignoring_everything() {
        let mut c = SpoolConfig::with_dir("/s");
        c.journal = Some(PathBuf::new());
        assert_eq!(c.validate("x").unwrap_err().0, "journal");
        for all in ["*", "**", "*?*"] {
            let mut c = SpoolConfig::with_dir("/s");
            c.ignore = vec!["*.part".into(), all.into()];
            let (key, msg) = c.validate("x").unwrap_err();
            assert_eq!(key, "ignore", "{all}");
            assert!(msg.contains("ignores every file"), "{msg}");
        }
        let mut c = SpoolConfig::with_dir("/s");
        c.ignore = vec!["*.mp4".into(), "tmp*".into()];
        c.validate("x")
            .expect("patterns that skip some files are fine");
    }

    #[test]
    fn rejects_inverted_watermarks_and_retain_without_dir() {
        let mut c = SpoolConfig::with_dir("/s");
        c.disk_warning_percent = 96.0;
        assert_eq!(c.validate("x").unwrap_err().0, "disk_warning_percent");
        let mut c = SpoolConfig::with_dir("/s");
        c.after_upload = AfterUpload::Retain;
        assert_eq!(c.validate("x").unwrap_err().0, "retain_dir");
        c.retain_dir = Some("/s/kept".into());
        assert_eq!(c.validate("x").unwrap_err().0, "retain_dir");
    }

    #[test]
    fn rejects_templates_and_cameras_that_give_unsafe_keys() {
        for (template, camera) in [
            ("{site}//{name}", "default"),
            ("{site}/{camera}/{name}/", "default"),
            ("{site}/{camera}/{path}", ".."),
            ("{site}/{camera}/{path}", "."),
        ] {
            let mut c = SpoolConfig::with_dir("/s");
            c.key_template = template.into();
            c.default_camera = camera.into();
            let key = c.validate("x").unwrap_err().0;
            assert!(
                key == "key_template" || key == "default_camera",
                "{template} {camera}: {key}"
            );
        }
    }
}
