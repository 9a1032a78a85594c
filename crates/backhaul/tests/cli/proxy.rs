//! Egress through a forward proxy, as rclone, the AWS CLI and curl do it: a real tinyproxy on
//! loopback, the store behind nginx over HTTPS with a private CA (`upload.ca_file`). Uploads
//! go through a CONNECT tunnel (`https_proxy`), the plain-HTTP webhook through the proxy in
//! absolute form (`http_proxy`), and `no_proxy` sends everything direct. The proxy's log is the
//! proof of which way each request went. An alert receiver behind nginx that asks for a client
//! certificate shows the per-receiver TLS settings at work.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backhaul_spool::test_util::{pattern_bytes, write_chunk};
use backhaul_upload::test_util::{S3Peer, free_port};

use super::support::{BUCKET, KillOnDrop, LOOPBACK_WAN_INVENTORY, exe, receiver, site_config};

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} does not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(program: &str, args: &[&str], dir: &Path) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 it signed (`leaf.pem`); returns the CA's
/// PEM.
fn certificates(dir: &Path) -> PathBuf {
    run(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=backhaul-test-ca",
        ],
        dir,
    );
    issue(
        dir,
        "leaf",
        "/CN=127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    dir.join("ca.pem")
}

/// `<name>.pem` and `<name>.key`, signed by the CA in `dir`, with these X.509v3 extensions.
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions).unwrap();
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    for args in [
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ][..],
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    ] {
        run("openssl", args, dir);
    }
}

/// nginx running these `server` blocks, its logs and temporary files in `dir`.
fn nginx(dir: &Path, servers: &str, ports: &[u16]) -> KillOnDrop {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{}}\nhttp {{\n  access_log {d}/nginx-access.log;\n  \
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  client_max_body_size 0;\n{servers}}}\n"
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-e", &format!("{d}/nginx-error.log"), "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (nginx-light) is installed");
    let guard = KillOnDrop(child);
    for port in ports {
        wait_for_port(*port, "nginx");
    }
    guard
}

/// nginx terminating TLS on `port` in front of the store at `upstream`.
fn tls_store(dir: &Path, port: u16, upstream: &str) -> KillOnDrop {
    let d = dir.display();
    nginx(
        dir,
        &format!(
            "  server {{\n    listen 127.0.0.1:{port} ssl;\n    \
             ssl_certificate {d}/leaf.pem;\n    ssl_certificate_key {d}/leaf.key;\n    \
             location / {{\n      proxy_pass {upstream};\n      proxy_http_version 1.1;\n      \
             proxy_set_header Host $http_host;\n      proxy_request_buffering off;\n    }}\n  }}\n"
        ),
        &[port],
    )
}

/// tinyproxy on `port`, allowed to CONNECT to `tls_port`; its log lists every request.
fn tinyproxy(dir: &Path, port: u16, tls_port: u16) -> (KillOnDrop, PathBuf) {
    let log = dir.join("tinyproxy.log");
    let conf = dir.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nAllow 127.0.0.1\nMaxClients 64\n\
             LogFile \"{}\"\nLogLevel Connect\nConnectPort {tls_port}\nDisableViaHeader Yes\n",
            log.display()
        ),
    )
    .unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tinyproxy is installed");
    let guard = KillOnDrop(child);
    wait_for_port(port, "tinyproxy");
    (guard, log)
}

/// The requests tinyproxy relayed: `CONNECT 127.0.0.1:443`, `POST http://…/hook`.
fn relayed(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("): ").map(|(_, r)| r.to_owned()))
        .filter(|r| !r.starts_with(' '))
        .collect()
}

fn wait_uploaded(chunk: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while chunk.exists() {
        assert!(
            Instant::now() < deadline,
            "{} was not uploaded:\n{}",
            chunk.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent, its log in `log`.
fn agent(cfg: &Path, log: &Path, env: &[(&str, String)]) -> KillOnDrop {
    let mut cmd = Command::new(exe());
    cmd.args(["run", "--config"])
        .arg(cfg)
        .stderr(std::fs::File::create(log).unwrap())
        .env_remove("AWS_CA_BUNDLE");
    for v in [
        "https_proxy",
        "HTTPS_PROXY",
        "http_proxy",
        "HTTP_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    KillOnDrop(cmd.spawn().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_and_alerts_go_through_a_forward_proxy_unless_no_proxy_says_otherwise() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (tls, tp, hook) = (free_port(), free_port(), free_port());
    let _nginx = tls_store(dir.path(), tls, &peer.endpoint());
    let (_proxy, log) = tinyproxy(dir.path(), tp, tls);
    let hooks = receiver(hook);
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // Loopback declared as a 1500-byte WAN: an incident at once, so an alert goes out.
    let extra = format!(
        "[metrics]\nlisten = \"off\"\n[monitor]\nwebhook_url = \"http://127.0.0.1:{hook}/hook\"\n\
         {LOOPBACK_WAN_INVENTORY}"
    );
    let cfg = site_config(
        dir.path(),
        &spool,
        &peer,
        &format!("https://127.0.0.1:{tls}"),
        &format!("ca_file = \"{}\"", ca.display()),
        &extra,
    );
    let proxy = format!("http://127.0.0.1:{tp}");

    let first_log = dir.path().join("agent-1.log");
    let mut first = agent(
        &cfg,
        &first_log,
        &[
            ("https_proxy", proxy.clone()),
            ("http_proxy", proxy.clone()),
        ],
    );
    write_chunk(&spool, "cam1/a.mp4", &pattern_bytes(1, 300_000));
    wait_uploaded(&spool.join("cam1/a.mp4"), &first_log);
    let (_, alert, _) = hooks
        .recv_timeout(Duration::from_secs(30))
        .expect("the webhook gets the alert through the proxy");
    assert_eq!(alert["kind"], "mtu_drift", "{alert}");
    first.0.kill().ok();
    first.0.wait().ok();
    let through = relayed(&log);
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT 127.0.0.1:{tls} "))),
        "no CONNECT tunnel to the store: {through:#?}"
    );
    assert!(
        through
            .iter()
            .any(|r| r.starts_with(&format!("POST http://127.0.0.1:{hook}/hook "))),
        "the webhook did not go through the proxy: {through:#?}"
    );
    let nginx_saw = std::fs::read_to_string(dir.path().join("nginx-access.log")).unwrap();
    assert!(nginx_saw.contains("PUT /"), "{nginx_saw}");

    // no_proxy names the host: everything goes direct, the proxy sees nothing new.
    let before = relayed(&log).len();
    let second_log = dir.path().join("agent-2.log");
    let _second = agent(
        &cfg,
        &second_log,
        &[
            ("https_proxy", proxy.clone()),
            ("http_proxy", proxy),
            ("no_proxy", "localhost,127.0.0.0/8".into()),
        ],
    );
    write_chunk(&spool, "cam1/b.mp4", &pattern_bytes(2, 300_000));
    wait_uploaded(&spool.join("cam1/b.mp4"), &second_log);
    assert_eq!(relayed(&log).len(), before, "{:#?}", relayed(&log));
}

/// A webhook behind nginx that asks for a client certificate, under a private CA, with a
/// certificate for a name while the URL says 127.0.0.1: `[monitor.webhook_tls]` carries the CA,
/// the site's certificate and the name, and the alert arrives with the site's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_reaches_a_receiver_that_asks_for_a_client_certificate() {
    let peer = S3Peer::embedded(BUCKET).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    issue(
        d,
        "receiver",
        "/CN=alerts.example.test",
        "subjectAltName=DNS:alerts.example.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    issue(
        d,
        "site",
        "/CN=SITE-2847",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    let (tls, hook) = (free_port(), free_port());
    let hooks = receiver(hook);
    let dd = d.display();
    let _nginx = nginx(
        d,
        &format!(
            "  server {{\n    listen 127.0.0.1:{tls} ssl;\n    \
             ssl_certificate {dd}/receiver.pem;\n    ssl_certificate_key {dd}/receiver.key;\n    \
             ssl_client_certificate {dd}/ca.pem;\n    ssl_verify_client on;\n    \
             location / {{\n      proxy_pass http://127.0.0.1:{hook};\n      \
             proxy_set_header X-Client-Subject $ssl_client_s_dn;\n    }}\n  }}\n"
        ),
        &[tls],
    );
    let spool = d.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let tls_table = |cert: bool| {
        format!(
            "[monitor.webhook_tls]\nca_file = \"{dd}/ca.pem\"\nserver_name = \"alerts.example.test\"\n{}",
            if cert {
                format!("cert_file = \"{dd}/site.pem\"\nkey_file = \"{dd}/site.key\"\n")
            } else {
                format!("cert_file = \"{dd}/site.pem\"\n")
            }
        )
    };
    let config = |name: &str, cert: bool| {
        let extra = format!(
            "[metrics]\nlisten = \"off\"\n[monitor]\nwebhook_url = \"https://127.0.0.1:{tls}/hook\"\n\
             {}{LOOPBACK_WAN_INVENTORY}",
            tls_table(cert)
        );
        let cfg = site_config(d, &spool, &peer, &peer.endpoint(), "", &extra);
        let named = d.join(name);
        std::fs::rename(cfg, &named).unwrap();
        named
    };

    // Half an identity is refused where it is written, before the agent starts.
    let half = config("half.toml", false);
    let out = Command::new(exe())
        .args(["config", "check"])
        .arg(&half)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    let line = std::fs::read_to_string(&half)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("cert_file"))
        .unwrap()
        + 1;
    assert!(
        said.contains(&format!(
            "half.toml:{line}:1: monitor.webhook_tls.cert_file is set without"
        )),
        "{said}"
    );

    let cfg = config("site.toml", true);
    let log = d.join("agent.log");
    let _agent = agent(&cfg, &log, &[]);
    let (_, alert, head) = hooks
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "no alert through mutual TLS:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
    assert_eq!(alert["kind"], "mtu_drift", "{alert}");
    assert!(
        head.contains("x-client-subject: cn=site-2847"),
        "nginx saw no client certificate: {head}"
    );
}
