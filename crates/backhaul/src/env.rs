//! Process state — environment variables, home directory, local time offset — read once here
//! and passed down, so library code and tests never consult the process environment.

use std::path::PathBuf;

use backhaul_upload::AwsEnv;

/// What the process inherited.
#[derive(Debug, Clone)]
pub struct ProcessEnv {
    /// AWS variables (credentials chain, CA bundle).
    pub aws: AwsEnv,
    /// The local UTC offset at start (bandwidth timetables use local time).
    pub utc_offset: time::UtcOffset,
    /// This executable, to start helper processes (the netplan apply's detached verifier).
    pub exe: PathBuf,
}

impl ProcessEnv {
    /// Reads the environment. Call before starting threads.
    pub fn read() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self {
            aws: AwsEnv::from_lookup(|k| std::env::var(k).ok(), home),
            utc_offset: time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC),
            exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("backhaul")),
        }
    }
}
