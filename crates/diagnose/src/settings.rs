//! Thresholds and windows of the rules. Every key carries its unit.

use serde::Deserialize;

use crate::Error;

/// Default seconds after a WAN MTU change within which a new fault is attributed to it.
pub const DEFAULT_ATTRIBUTION_WINDOW_SECONDS: u64 = 600;
/// Default seconds a WAN MTU change waits for the probe round it triggers before it is
/// reported as `mtu_drift` on its own: if that round finds the path broken, the one alert is
/// the breakage naming the change.
pub const DEFAULT_MTU_DRIFT_HOLD_SECONDS: u64 = 10;
/// Default seconds of recent stalls, errors and ICMP the rules look at.
pub const DEFAULT_SIGNAL_WINDOW_SECONDS: u64 = 120;
/// Default seconds after which the latest probe result no longer counts.
pub const DEFAULT_PROBE_STALE_SECONDS: u64 = 60;
/// Default consecutive large-probe failures that prove large packets are dropped (one failure
/// is enough when the prober's path-MTU search confirms it).
pub const DEFAULT_LARGE_PROBE_FAILURES: u32 = 3;
/// Default largest probe that counts as "small" (the IPv4 minimum reassembly size).
pub const DEFAULT_SMALL_PROBE_MAX_BYTES: u32 = 576;
/// Default seconds of observations the store keeps.
pub const DEFAULT_RETENTION_SECONDS: u64 = 7200;
/// Default upload errors within the signal window that make the endpoint unreachable.
pub const DEFAULT_ENDPOINT_ERRORS: u32 = 3;
/// Default fraction of the expected rate below which goodput counts as degraded.
pub const DEFAULT_DEGRADED_FRACTION: f64 = 0.25;
/// Default seconds goodput must stay degraded before `uplink_degraded` opens.
pub const DEFAULT_DEGRADED_SUSTAIN_SECONDS: u64 = 300;
/// Default VPN flaps within the flap window that open `vpn_flapping`.
pub const DEFAULT_VPN_FLAPS: u32 = 2;
/// Default seconds over which VPN flaps are counted.
pub const DEFAULT_VPN_FLAP_WINDOW_SECONDS: u64 = 600;
/// Default seconds of flap hold-down: an incident that comes back this soon after it cleared is
/// the same incident, flapping; a flapping incident resolves only after this long stable.
pub const DEFAULT_FLAP_HOLD_DOWN_SECONDS: u64 = 120;
/// Default spool disk usage (percent) that opens `disk_pressure` as a warning.
pub const DEFAULT_DISK_WARNING_PERCENT: f64 = 85.0;
/// Default spool disk usage (percent) that makes it critical.
pub const DEFAULT_DISK_CRITICAL_PERCENT: f64 = 95.0;
/// Default time-to-full (seconds) below which the disk is a warning.
pub const DEFAULT_DISK_WARNING_TIME_TO_FULL_SECONDS: u64 = 7200;
/// Default time-to-full (seconds) below which the disk — and any incident that stops uploads —
/// is critical.
pub const DEFAULT_DISK_CRITICAL_TIME_TO_FULL_SECONDS: u64 = 1800;

/// Rule thresholds (the `[diagnose]` table; every key optional).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Seconds after a WAN MTU change within which a new fault is attributed to it.
    pub attribution_window_seconds: u64,
    /// Seconds a WAN MTU change waits for its probe round before `mtu_drift` opens alone.
    pub mtu_drift_hold_seconds: u64,
    /// Seconds of recent stalls, errors and ICMP the rules look at.
    pub signal_window_seconds: u64,
    /// Seconds after which the latest probe result no longer counts.
    pub probe_stale_seconds: u64,
    /// Consecutive large-probe failures that prove large packets are dropped.
    pub large_probe_failures: u32,
    /// Largest probe that counts as small.
    pub small_probe_max_bytes: u32,
    /// Seconds of observations the store keeps.
    pub retention_seconds: u64,
    /// Upload errors within the signal window that make the endpoint unreachable.
    pub endpoint_errors: u32,
    /// Fraction of the expected rate below which goodput is degraded.
    pub degraded_fraction: f64,
    /// Seconds goodput must stay degraded.
    pub degraded_sustain_seconds: u64,
    /// VPN flaps within the flap window that open `vpn_flapping`.
    pub vpn_flaps: u32,
    /// Seconds over which VPN flaps are counted.
    pub vpn_flap_window_seconds: u64,
    /// Seconds of flap hold-down: a fault back this soon after its incident cleared re-opens
    /// that incident (no new page), and a flapping incident resolves after this long stable.
    pub flap_hold_down_seconds: u64,
    /// Disk usage percent for a warning.
    pub disk_warning_percent: f64,
    /// Disk usage percent for critical.
    pub disk_critical_percent: f64,
    /// Time-to-full seconds for a warning.
    pub disk_warning_time_to_full_seconds: u64,
    /// Time-to-full seconds for critical (also escalates incidents that stop uploads).
    pub disk_critical_time_to_full_seconds: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attribution_window_seconds: DEFAULT_ATTRIBUTION_WINDOW_SECONDS,
            mtu_drift_hold_seconds: DEFAULT_MTU_DRIFT_HOLD_SECONDS,
            signal_window_seconds: DEFAULT_SIGNAL_WINDOW_SECONDS,
            probe_stale_seconds: DEFAULT_PROBE_STALE_SECONDS,
            large_probe_failures: DEFAULT_LARGE_PROBE_FAILURES,
            small_probe_max_bytes: DEFAULT_SMALL_PROBE_MAX_BYTES,
            retention_seconds: DEFAULT_RETENTION_SECONDS,
            endpoint_errors: DEFAULT_ENDPOINT_ERRORS,
            degraded_fraction: DEFAULT_DEGRADED_FRACTION,
            degraded_sustain_seconds: DEFAULT_DEGRADED_SUSTAIN_SECONDS,
            vpn_flaps: DEFAULT_VPN_FLAPS,
            vpn_flap_window_seconds: DEFAULT_VPN_FLAP_WINDOW_SECONDS,
            flap_hold_down_seconds: DEFAULT_FLAP_HOLD_DOWN_SECONDS,
            disk_warning_percent: DEFAULT_DISK_WARNING_PERCENT,
            disk_critical_percent: DEFAULT_DISK_CRITICAL_PERCENT,
            disk_warning_time_to_full_seconds: DEFAULT_DISK_WARNING_TIME_TO_FULL_SECONDS,
            disk_critical_time_to_full_seconds: DEFAULT_DISK_CRITICAL_TIME_TO_FULL_SECONDS,
        }
    }
}

impl Settings {
    /// Checks that the thresholds make sense together.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |key, reason: &str| {
            Err(Error::Setting {
                key,
                reason: reason.into(),
            })
        };
        if self.large_probe_failures == 0 {
            return bad("large_probe_failures", "must be at least 1");
        }
        if self.endpoint_errors == 0 {
            return bad("endpoint_errors", "must be at least 1");
        }
        if self.vpn_flaps == 0 {
            return bad("vpn_flaps", "must be at least 1");
        }
        if self.mtu_drift_hold_seconds > self.attribution_window_seconds {
            return bad(
                "mtu_drift_hold_seconds",
                "must not exceed attribution_window_seconds (a held change must still be attributable)",
            );
        }
        if self.retention_seconds < self.attribution_window_seconds
            || self.retention_seconds < self.signal_window_seconds
            || self.retention_seconds < self.degraded_sustain_seconds
        {
            return bad(
                "retention_seconds",
                "must cover the attribution, signal and degraded windows",
            );
        }
        if !(self.degraded_fraction > 0.0 && self.degraded_fraction < 1.0) {
            return bad("degraded_fraction", "must be between 0 and 1");
        }
        let pct = 0.0..=100.0;
        if !pct.contains(&self.disk_warning_percent)
            || !pct.contains(&self.disk_critical_percent)
            || self.disk_warning_percent > self.disk_critical_percent
        {
            return bad(
                "disk_warning_percent",
                "watermarks are percentages with warning <= critical",
            );
        }
        if self.disk_critical_time_to_full_seconds > self.disk_warning_time_to_full_seconds {
            return bad(
                "disk_critical_time_to_full_seconds",
                "must not exceed disk_warning_time_to_full_seconds",
            );
        }
        Ok(())
    }

    pub(crate) fn ms(seconds: u64) -> u64 {
        seconds.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keys_are_checked() {
        Settings::default().validate().unwrap();
        let s: Settings = serde_json::from_str(r#"{"attribution_window_seconds": 300}"#).unwrap();
        assert_eq!(s.attribution_window_seconds, 300);
        assert_eq!(s.large_probe_failures, DEFAULT_LARGE_PROBE_FAILURES);
        assert!(serde_json::from_str::<Settings>(r#"{"window": 1}"#).is_err());
        let bad = Settings {
            large_probe_failures: 0,
            ..Settings::default()
        };
        assert!(bad.validate().is_err());
    }
}
