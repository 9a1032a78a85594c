//! Exit codes: 0 success, 1 runtime failure, 64 usage error, 78 bad configuration
//! (sysexits.h `EX_USAGE`/`EX_CONFIG`). A closed stdout (`backhaul … | head`) exits 0.

use std::fmt;
use std::process::ExitCode;

/// Runtime failure.
pub const FAILURE: u8 = 1;
/// Usage error (sysexits `EX_USAGE`).
pub const USAGE: u8 = 64;
/// Bad configuration (sysexits `EX_CONFIG`).
pub const CONFIG: u8 = 78;

/// A configuration problem, already formatted with file:line and a `help:` line.
#[derive(Debug)]
pub struct ConfigInvalid(pub String);

impl fmt::Display for ConfigInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigInvalid {}

/// Prints an error chain and picks the exit code.
pub fn report(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            if err.chain().any(|c| c.is::<ConfigInvalid>()) {
                ExitCode::from(CONFIG)
            } else {
                ExitCode::from(FAILURE)
            }
        }
    }
}
