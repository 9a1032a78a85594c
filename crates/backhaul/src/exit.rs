//! Exit codes: 0 success, 1 runtime failure, 64 usage error, 75 the spool is another
//! process's (sysexits.h `EX_TEMPFAIL`), 78 bad configuration (`EX_USAGE`/`EX_CONFIG`). A closed stdout (`backhaul … | head`) exits 0.

use std::fmt;
use std::process::ExitCode;

/// Runtime failure.
pub const FAILURE: u8 = 1;
/// Usage error (sysexits `EX_USAGE`).
pub const USAGE: u8 = 64;
/// Another agent owns the spool (sysexits `EX_TEMPFAIL`): try again once it is gone.
pub const TEMPFAIL: u8 = 75;
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
            let locked = err.chain().any(|c| {
                matches!(
                    c.downcast_ref::<backhaul_spool::Error>(),
                    Some(backhaul_spool::Error::Locked { .. })
                )
            });
            if locked {
                ExitCode::from(TEMPFAIL)
            } else if err.chain().any(|c| c.is::<ConfigInvalid>()) {
                ExitCode::from(CONFIG)
            } else {
                ExitCode::from(FAILURE)
            }
        }
    }
}
