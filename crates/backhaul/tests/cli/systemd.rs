//! The package under a real systemd, as an operator meets it: systemd 252 booted as PID 1 in
//! its own namespaces over an overlay of `/` with a tmpfs upper (`tests/systemd/boot.sh`; the
//! host is untouched, see docs/packaging.md "A real systemd in the tests"), the `.deb` from
//! `scripts/build-deb` installed with `dpkg -i` inside it, and then `systemctl enable --now`
//! (READY=1, STATUS=), a chunk uploaded through the hardened unit, the watchdog restarting a
//! SIGSTOPped agent, a config error that fails once and stays failed with the error in
//! `systemctl status` and `journalctl -p err` (no escape codes), an upgrade under a running
//! agent, and a purge. Root only: without root, or without overlayfs or systemd here, the test
//! says SKIP in one line.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::deb::build_deb;
use super::support::{PACKAGE_LOCK, is_root};

const SITE_TOML: &str = "[site]\nname = \"SITE-SYSTEMD-TEST\"\n\
    [spool]\ndir = \"/var/spool/backhaul\"\nsettle_seconds = 1\n\
    [upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"video\"\nregion = \"us-east-1\"\n\
    credentials = \"static\"\naccess_key_id = \"BACKHAULDEMOKEY\"\n\
    secret_access_key = \"backhaul-demo-secret-key\"\n\
    [metrics]\nlisten = \"127.0.0.1:9464\"\n";

/// A watchdog the test can wait out (the unit's own is 10 minutes).
const WATCHDOG_DROP_IN: &str = "[Service]\nWatchdogSec=3\n";

fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/systemd")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Why this machine cannot boot the instance, if it cannot.
fn unsupported() -> Option<String> {
    if !is_root() {
        return Some("needs root (namespaces, overlay mounts)".into());
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("systemd is not installed (/lib/systemd/systemd)".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        return Some("this kernel has no overlayfs".into());
    }
    None
}

/// One booted systemd; powered off and removed on drop, whatever the test did.
struct Instance {
    name: String,
}

impl Instance {
    fn boot() -> Self {
        let name = format!("backhaul-cli-{}", std::process::id());
        let instance = Self { name };
        let out = instance
            .script("boot.sh")
            .arg("--restart")
            .output()
            .unwrap();
        assert!(out.status.success(), "boot.sh: {}", text(&out));
        assert!(
            text(&out).contains("SYSTEM_STATE=running"),
            "the instance did not boot cleanly: {}",
            text(&out)
        );
        instance
    }

    fn script(&self, name: &str) -> Command {
        let mut c = Command::new(scripts().join(name));
        // A strict boot: a degraded system would hide a unit of ours that failed.
        c.env("BH_NAME", &self.name).env("BH_STRICT", "1");
        c
    }

    /// `sh -c script` inside the instance.
    fn sh(&self, script: &str) -> Output {
        self.script("enter.sh")
            .args(["sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Like [`Instance::sh`], and it must succeed; its output.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", text(&out));
        text(&out)
    }

    /// Writes `bytes` to `path` inside the instance.
    fn put(&self, path: &str, bytes: &[u8]) {
        let mut child = self
            .script("enter.sh")
            .args(["sh", "-c", &format!("cat > '{path}'")])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(bytes).unwrap();
        assert!(child.wait().unwrap().success(), "writing {path}");
    }

    /// `systemctl show -P property backhaul`.
    fn property(&self, property: &str) -> String {
        self.ok(&format!("systemctl show -P {property} backhaul"))
            .trim()
            .to_owned()
    }

    fn eventually(&self, what: &str, within: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "{what}: not within {within:?}\n{}",
            text(&self.sh(
                "systemctl status backhaul --no-pager; journalctl -u backhaul -n 40 --no-pager"
            ))
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ignored = self.script("down.sh").output();
    }
}

#[test]
fn deb_under_a_real_systemd_starts_restarts_fails_once_and_upgrades() {
    if let Some(why) = unsupported() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root on a machine that can boot systemd: this test cannot be skipped there ({why})"
        );
        let line = format!(
            "SKIP deb_under_a_real_systemd_starts_restarts_fails_once_and_upgrades: {why}\n"
        );
        std::io::stderr().write_all(line.as_bytes()).ok();
        return;
    }
    // The overlay's lower layer is the live root: the host's package test must not install
    // or purge underneath it.
    let _serial = PACKAGE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let work = tempfile::tempdir().unwrap();
    let deb = std::fs::read(build_deb(work.path())).unwrap();
    let sys = Instance::boot();

    sys.put("/tmp/backhaul.deb", &deb);
    sys.ok("dpkg -i /tmp/backhaul.deb");
    // As installed, the config names no site: the unit fails once and says what to edit.
    assert!(!sys.sh("systemctl start backhaul").status.success());
    assert_eq!(sys.property("ExecMainStatus"), "78");
    let errors = sys.ok("journalctl -u backhaul -p err --no-pager -o cat");
    assert!(
        errors.contains("still the example's placeholder")
            && errors.contains("help: edit /etc/backhaul/site.toml"),
        "{errors}"
    );
    // The store the site uploads to, as a unit of its own inside the instance.
    sys.ok(
        "mkdir -p /srv/s3 && systemd-run --unit=s3 --property=Type=exec /usr/bin/backhaul \
         s3-server --listen 127.0.0.1:9000 --root /srv/s3 --bucket video",
    );
    sys.put("/etc/backhaul/site.toml", SITE_TOML.as_bytes());
    sys.put("/tmp/watchdog.conf", WATCHDOG_DROP_IN.as_bytes());
    sys.ok(
        "install -Dm644 /tmp/watchdog.conf /etc/systemd/system/backhaul.service.d/watchdog.conf \
         && systemctl daemon-reload",
    );

    // Type=notify: `systemctl start` returns once the agent said READY=1.
    sys.ok("systemctl enable --now backhaul");
    assert_eq!(sys.property("ActiveState"), "active");
    assert_eq!(sys.property("SubState"), "running");
    sys.eventually("STATUS= reaches systemd", Duration::from_secs(10), || {
        !sys.property("StatusText").is_empty()
    });

    // A chunk through the hardened unit: recorded as the cameras' user, uploaded, deleted.
    sys.ok(
        "runuser -u backhaul -- sh -c 'mkdir -p /var/spool/backhaul/cam1 && \
         head -c 300000 /dev/urandom > /var/spool/backhaul/cam1/a.mp4'",
    );
    sys.eventually(
        "the chunk is in the bucket and gone from the spool",
        Duration::from_secs(30),
        || {
            sys.sh("find /srv/s3/video -name a.mp4 | grep -q . && ! test -e /var/spool/backhaul/cam1/a.mp4")
                .status
                .success()
        },
    );

    // The watchdog: a stopped agent sends no WATCHDOG=1, systemd kills and restarts it.
    let stopped = sys.property("MainPID");
    sys.ok(&format!("kill -STOP {stopped}"));
    sys.eventually(
        "the watchdog restarts a stopped agent",
        Duration::from_secs(20),
        || {
            sys.property("ActiveState") == "active"
                && sys.property("MainPID") != stopped
                && sys.property("MainPID") != "0"
        },
    );
    assert!(
        sys.ok("journalctl -u backhaul --no-pager -o cat")
            .contains("Watchdog timeout"),
        "systemd logged no watchdog timeout"
    );
    let restarts: u32 = sys.property("NRestarts").parse().unwrap();
    assert_eq!(restarts, 1);

    // A config error: exit 78, one start, the unit failed and stays failed.
    sys.put(
        "/etc/backhaul/site.toml",
        SITE_TOML
            .replace("bucket = \"video\"", "bucket = 5")
            .as_bytes(),
    );
    let out = sys.sh("systemctl restart backhaul");
    assert!(!out.status.success(), "restart with a bad config succeeded");
    // Longer than RestartSec=5s: a restart would have happened by now.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(sys.property("ActiveState"), "failed");
    assert_eq!(sys.property("ExecMainStatus"), "78");
    assert_eq!(sys.property("NRestarts"), "0", "restarted after exit 78");
    let status = text(&sys.sh("systemctl status backhaul --no-pager -n 20"));
    assert!(
        status.contains("error: /etc/backhaul/site.toml:8:10: invalid type"),
        "the error is not in systemctl status:\n{status}"
    );
    let errors = sys.ok("journalctl -u backhaul -p err --no-pager -o cat");
    assert!(
        errors.contains("error: /etc/backhaul/site.toml:8:10: invalid type"),
        "journalctl -p err holds no config error:\n{errors}"
    );
    let all = sys.ok("journalctl -u backhaul --no-pager -o cat");
    assert!(
        !all.contains('\u{1b}'),
        "escape codes in the journal:\n{all}"
    );

    // Mended, started again; then an upgrade under the running agent restarts it.
    sys.put("/etc/backhaul/site.toml", SITE_TOML.as_bytes());
    sys.ok("systemctl start backhaul");
    let before = sys.property("MainPID");
    sys.ok("dpkg -i /tmp/backhaul.deb");
    assert_eq!(sys.property("ActiveState"), "active");
    assert_ne!(
        sys.property("MainPID"),
        before,
        "the upgrade did not restart the agent"
    );
    assert!(
        sys.ok("cat /etc/backhaul/site.toml")
            .contains("SITE-SYSTEMD-TEST"),
        "the upgrade replaced the site's config"
    );

    // Purge: stopped, unit gone, config gone (the store runs the same binary: stopped first).
    sys.ok("systemctl stop s3 && dpkg --purge backhaul");
    assert_eq!(sys.property("LoadState"), "not-found");
    assert!(
        !sys.sh("pgrep -x backhaul").status.success(),
        "an agent still runs after the purge"
    );
    assert!(!sys.sh("test -e /etc/backhaul").status.success());
}
