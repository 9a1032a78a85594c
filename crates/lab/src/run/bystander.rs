//! Another application on the site: one bulk TCP stream from the site to the cloud for the
//! whole run (the lab's own `tcp-send` and `tcp-recv`), opened before any fault, so the report
//! shows what a black hole does to the site's other traffic, and what the agent's remediation
//! does for it. Its connection is the kernel's, with no MSS clamp of ours and no reconnects.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{open_log, scrub_env};
use crate::topology::{CLOUD_ADDR, Invocation, Lab, Node};
use crate::{Error, probe};

/// The receiver's port in the cloud.
const PORT: u16 = 5201;
/// Long enough to outlast any run; both ends are killed when it ends.
const FOREVER_SECONDS: &str = "1000000";

/// The running stream.
pub(super) struct Bystander {
    progress: PathBuf,
    children: Vec<Child>,
}

impl Bystander {
    /// Starts the receiver, waits until it listens, then starts the sender.
    pub(super) fn start(lab: &mut Lab, invocation: &Invocation, out: &Path) -> Result<Self, Error> {
        let progress = out.join("bystander.progress");
        let addr = format!("{CLOUD_ADDR}:{PORT}");
        let log = out.join("bystander.log");
        let mut spawn = |node: Node, args: &[&str]| -> Result<Child, Error> {
            let argv = invocation.argv(args[0]);
            let mut c = lab.command(node, &argv[0]);
            c.args(&argv[1..]).args(&args[1..]);
            scrub_env(&mut c);
            let out = open_log(&log)?;
            let err = out.try_clone().map_err(|e| Error::io("open", &log, e))?;
            let child = c
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| Error::Peer {
                    peer: "bystander",
                    message: e.to_string(),
                })?;
            lab.track("bystander", child.id())?;
            Ok(child)
        };
        let progress_arg = progress.to_string_lossy().into_owned();
        let recv = spawn(
            Node::Cloud,
            &[
                "tcp-recv",
                "--listen",
                &addr,
                "--progress",
                &progress_arg,
                "--timeout",
                FOREVER_SECONDS,
            ],
        )?;
        let mut children = vec![recv];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !progress.exists() {
            if Instant::now() >= deadline {
                return Err(Error::Peer {
                    peer: "bystander",
                    message: format!(
                        "the receiver did not start listening on {addr}; see {}",
                        log.display()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        children.push(spawn(
            Node::Site,
            &[
                "tcp-send",
                "--to",
                &addr,
                "--seconds",
                FOREVER_SECONDS,
                "--timeout",
                FOREVER_SECONDS,
            ],
        )?);
        Ok(Self { progress, children })
    }

    /// Bytes received so far.
    pub(super) fn received(&self) -> u64 {
        probe::read_progress(&self.progress).0
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ignored = c.kill();
            let _ignored = c.wait();
        }
    }
}
