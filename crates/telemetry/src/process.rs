//! The standard `process_*` metrics, as Prometheus' client libraries export them, read from
//! `/proc/self`, and `backhaul_build_info`. Dashboards and fleet rules use them as for any
//! exporter: memory and descriptors growing, restarts (`process_start_time_seconds`), which
//! build runs where.

use crate::{Sample, SampleKind};

/// `USER_HZ`, the unit of the CPU times in `/proc/<pid>/stat`: 100 in the kernel's ABI.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// `backhaul_build_info{version,revision} 1`.
pub fn build_info(version: &str, revision: &str) -> Sample {
    Sample {
        name: "backhaul_build_info",
        help: "The running build: its version and source revision (always 1).",
        kind: SampleKind::Gauge,
        labels: vec![
            ("revision", revision.to_owned()),
            ("version", version.to_owned()),
        ],
        value: 1.0,
    }
}

/// The `process_*` samples this process can read now (none that it cannot).
pub fn process_samples() -> Vec<Sample> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let mut out = Vec::new();
    let mut push = |name, help, kind, value: Option<f64>| {
        if let Some(value) = value {
            out.push(Sample {
                name,
                help,
                kind,
                labels: Vec::new(),
                value,
            });
        }
    };
    let stat = read("/proc/self/stat");
    // The fields after the command name, which may itself hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(')'))
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu = field(14)
        .zip(field(15))
        .map(|(user, system)| (user + system) / CLOCK_TICKS_PER_SECOND);
    push(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        SampleKind::Counter,
        cpu,
    );
    let status = read("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        Some(
            line[key.len()..]
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()?
                * 1024.0,
        )
    };
    push(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        SampleKind::Gauge,
        kib("VmRSS:"),
    );
    push(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        SampleKind::Gauge,
        kib("VmSize:"),
    );
    // The listing's own descriptor is in it.
    let open = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1) as f64);
    push(
        "process_open_fds",
        "Number of open file descriptors.",
        SampleKind::Gauge,
        open,
    );
    let max = read("/proc/self/limits").and_then(|l| {
        let line = l.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    });
    push(
        "process_max_fds",
        "Maximum number of open file descriptors.",
        SampleKind::Gauge,
        max,
    );
    let boot = read("/proc/stat").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let start = boot
        .zip(field(22))
        .map(|(boot, ticks)| boot + ticks / CLOCK_TICKS_PER_SECOND);
    push(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.",
        SampleKind::Gauge,
        start,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_like_any_exporter() {
        let samples = process_samples();
        let value = |name: &str| {
            samples
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value)
                .unwrap_or_else(|| panic!("{name} missing"))
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        let info = build_info("0.1.0", "abc123");
        assert_eq!(
            info.labels,
            [
                ("revision", "abc123".to_owned()),
                ("version", "0.1.0".to_owned())
            ]
        );
    }
}
