//! The lab's cloud side for a run: the S3 server (restartable), rclone for bucket listings, and
//! what the bucket holds at the end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use super::{BUCKET, S3_ACCESS_KEY, S3_PORT, S3_SECRET_KEY, WEBHOOK_PORT, open_log, scrub_env};
use crate::Error;
use crate::peers::S3Server;
use crate::topology::{Invocation, Lab, Node};

/// The S3 server in the cloud namespace (restartable for the `s3` action).
pub(super) struct S3 {
    pub(super) kind: S3Server,
    backhaul: Option<PathBuf>,
    root: PathBuf,
    log: PathBuf,
    /// Where it listens: the cloud's address, or its inner address behind a tunnel.
    addr: String,
    pub(super) child: Option<Child>,
}

impl S3 {
    pub(super) fn start(&mut self, lab: &mut Lab, invocation: &Invocation) -> Result<(), Error> {
        let log = open_log(&self.log)?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("open", &self.log, e))?;
        let listen = format!("{}:{S3_PORT}", self.addr);
        let mut c = match (self.kind, &self.backhaul) {
            (S3Server::Embedded, Some(exe)) => {
                let mut c = lab.command(Node::Cloud, &exe.to_string_lossy());
                c.args(["s3-server", "--listen", &listen, "--root"])
                    .arg(&self.root);
                c
            }
            _ => {
                let mut c = lab.command(Node::Cloud, "moto_server");
                c.args(["-H", &self.addr, "-p", &S3_PORT.to_string()]);
                c
            }
        };
        scrub_env(&mut c);
        let child = c
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Error::Peer {
                peer: "s3",
                message: e.to_string(),
            })?;
        lab.track("s3", child.id())?;
        self.child = Some(child);
        wait_tcp(lab, invocation, &listen, 30.0).map_err(|e| Error::Peer {
            peer: "s3",
            message: format!("{e}; see {}", self.log.display()),
        })
    }

    pub(super) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs the server, so this pid is the server itself.
            let _ignored = child.kill();
            let _ignored = child.wait();
        }
    }
}

fn wait_tcp(lab: &Lab, invocation: &Invocation, addr: &str, secs: f64) -> Result<(), Error> {
    let argv = invocation.argv("wait-tcp");
    let mut args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
    let secs = secs.to_string();
    args.extend(["--addr", addr, "--timeout", &secs]);
    lab.exec(Node::Cloud, &argv[0], &args).map(drop)
}

/// Whether `exe` has the `s3-server` subcommand (added to the binary separately).
fn has_s3_server(exe: &Path) -> bool {
    std::process::Command::new(exe)
        .args(["s3-server", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs rclone inside `node` with a scrubbed environment; returns stdout.
fn rclone(lab: &Lab, node: Node, args: &[&str]) -> Result<String, Error> {
    let mut c = lab.command(node, "rclone");
    c.args(args);
    scrub_env(&mut c);
    let output = c.output().map_err(|source| Error::Spawn {
        command: format!("rclone {}", args.join(" ")),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("rclone {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

fn rclone_config(path: &Path, addr: &str) -> Result<(), Error> {
    let text = format!(
        "[lab]\ntype = s3\nprovider = Other\naccess_key_id = {S3_ACCESS_KEY}\n\
         secret_access_key = {S3_SECRET_KEY}\nendpoint = http://{addr}:{S3_PORT}\n\
         force_path_style = true\nregion = us-east-1\n"
    );
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

/// Object sizes in the bucket, by file name (the last key component).
fn list_bucket(lab: &Lab, rclone_conf: &Path) -> Result<BTreeMap<String, u64>, Error> {
    let conf = rclone_conf.to_string_lossy();
    let remote = format!("lab:{BUCKET}");
    let out = rclone(
        lab,
        Node::Cloud,
        &["--config", &conf, "lsjson", "-R", "--files-only", &remote],
    )?;
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Name")]
        name: String,
        #[serde(rename = "Size")]
        size: u64,
    }
    let entries: Vec<Entry> = serde_json::from_str(&out).map_err(|source| Error::State {
        path: PathBuf::from("rclone lsjson"),
        source,
    })?;
    Ok(entries.into_iter().map(|e| (e.name, e.size)).collect())
}

/// Files under `dir` (recursively, hidden ones skipped), by file name.
fn files_under(dir: &Path) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        match e.metadata() {
            Ok(m) if m.is_dir() => found.extend(files_under(&e.path())),
            Ok(m) => {
                found.insert(name, m.len());
            }
            Err(_) => {}
        }
    }
    found
}

/// The cloud's peers for one run: the S3 server, rclone's config for it, and the webhook
/// receiver writing the alerts it gets to `alerts`.
pub(super) struct Cloud {
    pub(super) s3: S3,
    pub(super) rclone_conf: PathBuf,
    pub(super) alerts: PathBuf,
}

impl Cloud {
    /// Starts the S3 server (the embedded one when the backhaul binary has it), creates the
    /// bucket, and starts the webhook receiver.
    pub(super) fn start(
        lab: &mut Lab,
        invocation: &Invocation,
        asked: S3Server,
        backhaul: Option<&Path>,
        out: &Path,
        addr: &str,
    ) -> Result<Self, Error> {
        let kind = match (asked, backhaul) {
            (S3Server::Embedded, Some(exe)) if has_s3_server(exe) => S3Server::Embedded,
            (S3Server::Embedded, _) => {
                tracing::warn!(
                    "the backhaul binary has no `s3-server` subcommand; using moto_server"
                );
                S3Server::Moto
            }
            (S3Server::Moto, _) => S3Server::Moto,
        };
        let mut s3 = S3 {
            kind,
            backhaul: backhaul.map(Path::to_owned),
            root: out.join("bucket-root"),
            log: out.join("s3.log"),
            addr: addr.to_owned(),
            child: None,
        };
        if kind == S3Server::Embedded {
            std::fs::create_dir_all(s3.root.join(BUCKET))
                .map_err(|e| Error::io("create directory", &s3.root, e))?;
        }
        s3.start(lab, invocation)?;
        let rclone_conf = out.join("rclone.conf");
        rclone_config(&rclone_conf, addr)?;
        let conf = rclone_conf.to_string_lossy().into_owned();
        rclone(
            lab,
            Node::Cloud,
            &["--config", &conf, "mkdir", &format!("lab:{BUCKET}")],
        )?;

        let alerts = out.join("alerts.jsonl");
        let argv = invocation.argv("webhook");
        let listen = format!("{addr}:{WEBHOOK_PORT}");
        let child = lab
            .command(Node::Cloud, &argv[0])
            .args(&argv[1..])
            .args(["--listen", &listen, "--out"])
            .arg(&alerts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(open_log(&out.join("webhook.log"))?)
            .spawn()
            .map_err(|e| Error::Peer {
                peer: "webhook",
                message: e.to_string(),
            })?;
        lab.track("webhook", child.id())?;
        wait_tcp(lab, invocation, &listen, 10.0)?;
        Ok(Self {
            s3,
            rclone_conf,
            alerts,
        })
    }

    /// Object sizes in the bucket, by file name.
    pub(super) fn objects(&self, lab: &Lab) -> Result<BTreeMap<String, u64>, Error> {
        match self.s3.kind {
            // s3s-fs answers a recursive ListObjectsV2 (no delimiter) with no nested keys, so
            // count its objects where it stores them: plain files under <root>/<bucket>.
            S3Server::Embedded => Ok(files_under(&self.s3.root.join(BUCKET))),
            S3Server::Moto => list_bucket(lab, &self.rclone_conf),
        }
    }
}
