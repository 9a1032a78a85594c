//! What a scenario run puts under test and against what: the uploader and the S3 server. Plain
//! domain types below the runner, the report and the CLI, which all name them.

/// Which uploader a scenario run puts under test. The `backhaul-*` variants are the agent with
/// one thing changed against the scenario, so that one report holds them side by side (issue
/// #12's table: each remediation mode, and the kernel's MTU probing instead of remediation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Uploader {
    /// `backhaul run` with a generated site config.
    Backhaul,
    /// backhaul with `[remediation] mode = "route-mtu"`, whatever the scenario says.
    BackhaulRouteMtu,
    /// backhaul with `[remediation] mode = "restore-declared"`, whatever the scenario says.
    BackhaulRestoreDeclared,
    /// backhaul with the kernel's `net.ipv4.tcp_mtu_probing = 1` in the site namespace.
    BackhaulMtuProbing,
    /// `rclone move` of the spool on a loop (the incumbent).
    Rclone,
}

impl Uploader {
    /// Every uploader, in the order `both` runs them.
    pub const ALL: [Uploader; 2] = [Uploader::Backhaul, Uploader::Rclone];

    /// The name used on the command line, in report directories and in `comparison.json`.
    pub fn name(self) -> &'static str {
        match self {
            Uploader::Backhaul => "backhaul",
            Uploader::BackhaulRouteMtu => "backhaul-route-mtu",
            Uploader::BackhaulRestoreDeclared => "backhaul-restore-declared",
            Uploader::BackhaulMtuProbing => "backhaul-mtu-probing",
            Uploader::Rclone => "rclone",
        }
    }

    /// Whether it is the agent (needs the backhaul binary).
    pub fn is_backhaul(self) -> bool {
        self != Uploader::Rclone
    }
}

/// Which S3 server runs in the cloud namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum S3Server {
    /// `backhaul s3-server` (s3s-fs); falls back to moto if the binary lacks it.
    Embedded,
    /// `moto_server` from PyPI.
    Moto,
}
