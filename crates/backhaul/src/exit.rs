//! Exit codes: 0 success, 1 runtime failure, 64 usage error, 75 the spool is another
//! process's (sysexits.h `EX_TEMPFAIL`), 78 bad configuration (`EX_USAGE`/`EX_CONFIG`). A closed stdout (`backhaul … | head`) exits 0.

use std::fmt;
use std::process::ExitCode;

use crate::env::Stderr;

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
/// The final error as written to stderr: under systemd's journal every line (the help lines
/// too) carries the error priority, so `journalctl -p err` shows why the agent stopped.
fn fatal(text: &str, stderr: Stderr) -> String {
    if !stderr.journal {
        return text.to_owned();
    }
    text.lines()
        .map(|l| format!("<3>{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn report(result: anyhow::Result<ExitCode>, stderr: Stderr) -> ExitCode {
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
            eprintln!("{}", fatal(&format!("error: {err:#}"), stderr));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_error_is_at_error_priority_in_the_journal() {
        let text = "error: /etc/backhaul/site.toml:8:10: invalid type\n  help: see `backhaul config default`";
        let journal = Stderr {
            colour: false,
            journal: true,
        };
        assert_eq!(
            fatal(text, journal),
            "<3>error: /etc/backhaul/site.toml:8:10: invalid type\n<3>  help: see `backhaul config default`"
        );
        let pipe = Stderr {
            colour: false,
            journal: false,
        };
        assert_eq!(fatal(text, pipe), text);
    }
}
