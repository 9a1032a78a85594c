//! The Debian package (issue #13). `scripts/build-deb --binary` packages the binary under test
//! (so the test needs no release build), lintian must find no error in it, and it is installed
//! on this machine with `dpkg -i`: files, modes, the `backhaul` user, the spool and state
//! directories, `backhaul --version` and `config check` of the installed example. Then an
//! upgrade (reinstall) and a purge must both leave the spool and the state alone, and a fresh
//! install after the purge gets them back. Root only: without root the test says SKIP on
//! stderr (uncaptured), and on CI (root) it cannot be skipped.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::support::{PACKAGE_LOCK, exe, is_root};

const SPOOL: &str = "/var/spool/backhaul";
const STATE: &str = "/var/lib/backhaul";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not be started: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout) + &text(&out.stderr)
}

/// Builds the package from the binary under test into `dir`; returns its path.
pub(super) fn build_deb(dir: &Path) -> PathBuf {
    let out = Command::new(repo().join("scripts/build-deb"))
        .arg("--binary")
        .arg(exe())
        .arg("--out-dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "build-deb: {}", text(&out.stderr));
    PathBuf::from(text(&out.stdout).trim())
}

/// `(uid, gid, home, shell)` of a user, if it exists.
fn user(name: &str) -> Option<(u32, u32, String, String)> {
    let out = run("getent", &["passwd", name]);
    let line = text(&out.stdout);
    let f: Vec<&str> = line.trim().split(':').collect();
    (out.status.success() && f.len() == 7).then(|| {
        (
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[5].to_owned(),
            f[6].to_owned(),
        )
    })
}

fn group_exists(name: &str) -> bool {
    run("getent", &["group", name]).status.success()
}

/// Mode bits (`0o7777`), uid and gid of a path, not following a final symlink.
fn stat(path: &str) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    (m.permissions().mode() & 0o7777, m.uid(), m.gid())
}

fn package_known() -> bool {
    // Installed, or removed with its config files kept: either way not ours to purge.
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Status}", "backhaul"]);
    let status = text(&out.stdout);
    out.status.success() && !matches!(status.trim(), "" | "not-installed")
}

/// Purges the package on drop, also when an assertion failed halfway, and removes the spool
/// and state directories that a purge deliberately keeps (this test created them: it refuses
/// to start when they exist).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        Command::new("dpkg")
            .args(["--purge", "backhaul"])
            .output()
            .ok();
        for dir in [SPOOL, STATE] {
            std::fs::remove_dir_all(dir).ok();
        }
        // A purge that failed halfway may have left the account.
        if user("backhaul").is_some() {
            Command::new("userdel").arg("backhaul").output().ok();
        }
        if group_exists("backhaul") {
            Command::new("groupdel").arg("backhaul").output().ok();
        }
    }
}

/// Hidden commands at each level: this one, netplan's detached verifier, the lab's internal
/// processes.
const HIDDEN: [&str; 4] = ["package-files", "apply-run", "tcp-recv", "wait-tcp"];

/// The hidden `package-files` command covers the whole command line: the subcommands of the
/// binary and those the `netplan` and `lab` crates own, and no hidden command. Needs no root.
#[test]
fn package_files_cover_every_subcommand_but_the_hidden_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(exe())
        .arg("package-files")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let man = dir.path().join("man");
    for page in [
        "backhaul.1",
        "backhaul-run.1",
        "backhaul-config-check.1",
        "backhaul-netplan-apply.1",
        "backhaul-lab-up.1",
    ] {
        assert!(man.join(page).is_file(), "no man page {page}");
    }
    let top = std::fs::read_to_string(man.join("backhaul.1")).unwrap();
    assert!(top.contains("netplan") && top.contains("journal"), "{top}");
    for (file, words) in [
        ("backhaul.bash", &["netplan", "--ticket", "--config"][..]),
        ("_backhaul", &["netplan", "--ticket"]),
        ("backhaul.fish", &["netplan", "-l ticket"]),
    ] {
        let body = std::fs::read_to_string(dir.path().join("completions").join(file)).unwrap();
        for word in words {
            assert!(body.contains(word), "{file} lacks {word}");
        }
        for hidden in HIDDEN {
            assert!(!body.contains(hidden), "{file} offers the hidden {hidden}");
        }
    }
    for page in std::fs::read_dir(&man).unwrap() {
        let name = page.unwrap().file_name().to_string_lossy().into_owned();
        for hidden in HIDDEN {
            assert!(
                !name.contains(hidden),
                "man page {name} of a hidden command"
            );
        }
    }
}

#[test]
fn deb_installs_a_working_agent_and_purge_keeps_the_spool() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: the package test cannot be skipped there"
        );
        // Straight to stderr: libtest captures eprintln!, not the stream itself.
        let skip = "SKIP deb_installs_a_working_agent_and_purge_keeps_the_spool: needs root \
                    (dpkg -i)\n";
        std::io::stderr().write_all(skip.as_bytes()).ok();
        return;
    }
    let _serial = PACKAGE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        !package_known() && user("backhaul").is_none() && !group_exists("backhaul"),
        "backhaul is already installed, or its user exists, on this machine; this test installs \
         and purges the package. Leftovers of an earlier run: dpkg --purge backhaul"
    );
    for dir in [SPOOL, STATE, "/etc/backhaul"] {
        assert!(
            !Path::new(dir).exists(),
            "{dir} exists; this test would purge the package around it. Leftovers of an earlier \
             run: rm -rf {SPOOL} {STATE} /etc/backhaul"
        );
    }

    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path());
    let arch = ok("dpkg", &["--print-architecture"]);
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!(
            "backhaul_{}-1_{}.deb",
            env!("CARGO_PKG_VERSION"),
            arch.trim()
        )
    );
    let deb = deb.to_str().unwrap().to_owned();
    let fields = ok("dpkg-deb", &["--field", &deb]);
    assert!(fields.contains("\nDepends: libc6 (>= 2."), "{fields}");
    assert!(fields.contains("adduser"), "{fields}");

    // lintian: no error. Its warnings and infos are in the output (and docs/packaging.md).
    let lintian = Command::new("lintian")
        .arg(&deb)
        .output()
        .expect("lintian (Debian: lintian) must be installed; scripts/test installs it");
    let report = text(&lintian.stdout) + &text(&lintian.stderr);
    println!("lintian {deb}:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    let _installed = Installed;
    ok("dpkg", &["-i", &deb]);

    // The user: a system account without a login, at home in the state directory.
    let (uid, gid, home, shell) = user("backhaul").expect("postinst creates user backhaul");
    assert!(
        uid < 1000 && home == STATE && shell.ends_with("nologin"),
        "{uid} {home} {shell}"
    );
    assert!(group_exists("backhaul"));

    for (path, mode, owner) in [
        ("/usr/bin/backhaul", 0o755, (0, 0)),
        ("/etc/backhaul/site.toml", 0o640, (0, gid)),
        ("/lib/systemd/system/backhaul.service", 0o644, (0, 0)),
        ("/usr/sbin/netplan-guarded", 0o755, (0, 0)),
        ("/usr/lib/backhaul/netplan-shim", 0o755, (0, 0)),
        (
            "/usr/share/bash-completion/completions/backhaul",
            0o644,
            (0, 0),
        ),
        ("/usr/share/zsh/vendor-completions/_backhaul", 0o644, (0, 0)),
        (
            "/usr/share/fish/vendor_completions.d/backhaul.fish",
            0o644,
            (0, 0),
        ),
        ("/usr/share/man/man1/backhaul.1.gz", 0o644, (0, 0)),
        (
            "/usr/share/man/man1/backhaul-netplan-apply.1.gz",
            0o644,
            (0, 0),
        ),
        ("/usr/share/man/man8/netplan-guarded.8.gz", 0o644, (0, 0)),
        ("/usr/share/doc/backhaul/copyright", 0o644, (0, 0)),
        ("/usr/share/doc/backhaul/changelog.Debian.gz", 0o644, (0, 0)),
        ("/usr/share/doc/backhaul/README.md", 0o644, (0, 0)),
        (
            "/usr/share/doc/backhaul/examples/remediation.conf",
            0o644,
            (0, 0),
        ),
        (SPOOL, 0o750, (uid, gid)),
        (STATE, 0o750, (uid, gid)),
    ] {
        let (m, u, g) = stat(path);
        assert_eq!(
            (m, (u, g)),
            (mode, owner),
            "{path}: mode {m:o}, owner {u}:{g}"
        );
    }
    let shipped = std::fs::read_to_string("/etc/backhaul/site.toml").unwrap();
    assert_eq!(
        shipped,
        std::fs::read_to_string(repo().join("docs/site.example.toml")).unwrap()
    );
    assert_eq!(ok("/usr/bin/backhaul", &["config", "default"]), shipped);
    let unit = std::fs::read_to_string("/lib/systemd/system/backhaul.service").unwrap();
    assert_eq!(
        unit,
        std::fs::read_to_string(repo().join("packaging/backhaul.service")).unwrap()
    );
    assert!(
        unit.contains(&format!("ReadWritePaths={SPOOL} {STATE}")),
        "the unit's writable paths are the directories the package creates"
    );
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "backhaul"]);
    assert!(conffiles.contains("/etc/backhaul/site.toml"), "{conffiles}");
    // Enabled (deb-systemd-helper writes the link without systemd as PID 1), not started.
    let wants = "/etc/systemd/system/multi-user.target.wants/backhaul.service";
    assert!(
        std::fs::symlink_metadata(wants).is_ok(),
        "{wants} missing: not enabled"
    );

    // The version and the source revision it was built from.
    let version = ok("/usr/bin/backhaul", &["--version"]);
    assert!(
        version.starts_with(&format!("backhaul {} (", env!("CARGO_PKG_VERSION")))
            && version.ends_with(")\n"),
        "{version}"
    );
    // The installed example names no site: a forgotten site fails instead of uploading.
    let check = run(
        "/usr/bin/backhaul",
        &["config", "check", "/etc/backhaul/site.toml"],
    );
    let said = text(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{said}");
    assert!(
        said.starts_with("error: /etc/backhaul/site.toml:")
            && said.contains("site.name is still the example's placeholder")
            && said.contains("help: edit /etc/backhaul/site.toml"),
        "{said}"
    );

    // An admin opens the spool to the cameras' group; a chunk and the journal are in it.
    std::fs::set_permissions(SPOOL, std::fs::Permissions::from_mode(0o770)).unwrap();
    let chunk = Path::new(SPOOL).join("cam1/0815.mp4");
    let journal = Path::new(SPOOL).join(".backhaul/journal.sqlite");
    let record = Path::new(STATE).join("netplan-apply/marker");
    for (path, body) in [
        (&chunk, "chunk"),
        (&journal, "journal"),
        (&record, "record"),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
        ok(
            "chown",
            &[
                "-R",
                "backhaul:backhaul",
                path.parent().unwrap().to_str().unwrap(),
            ],
        );
    }
    let kept = || {
        for (path, body) in [
            (&chunk, "chunk"),
            (&journal, "journal"),
            (&record, "record"),
        ] {
            assert_eq!(
                std::fs::read_to_string(path).unwrap(),
                body,
                "{}",
                path.display()
            );
        }
        assert_eq!(
            stat(SPOOL).0,
            0o770,
            "the admin's mode of {SPOOL} was reset"
        );
    };

    // Upgrade (the same version again runs the upgrade path: postinst configure <old>).
    ok("dpkg", &["-i", &deb]);
    kept();
    assert_eq!(stat(SPOOL).1, uid);

    let purge = ok("dpkg", &["--purge", "backhaul"]);
    kept();
    for dir in [SPOOL, STATE] {
        assert!(purge.contains(&format!("kept {dir}")), "{purge}");
        assert!(purge.contains(&format!("rm -rf {dir}")), "{purge}");
    }
    for gone in ["/usr/bin/backhaul", "/etc/backhaul", wants] {
        assert!(
            std::fs::symlink_metadata(gone).is_err(),
            "{gone} survived the purge"
        );
    }
    assert!(user("backhaul").is_none() && !group_exists("backhaul"));
    assert!(!package_known());

    // A fresh install after the purge takes the kept files back for the new user. It may get
    // the old UID again; make sure it does not, as on a machine that made other users since.
    let orphan = (60000..65000)
        .find(|id| user(&id.to_string()).is_none())
        .unwrap()
        .to_string();
    ok(
        "chown",
        &["-R", &format!("{orphan}:{orphan}"), SPOOL, STATE],
    );
    ok("dpkg", &["-i", &deb]);
    let (uid, gid, _, _) = user("backhaul").unwrap();
    kept();
    for path in [
        Path::new(SPOOL),
        &chunk,
        &journal,
        Path::new(STATE),
        &record,
    ] {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!((m.uid(), m.gid()), (uid, gid), "{}", path.display());
    }
    ok("dpkg", &["--purge", "backhaul"]);
    kept();
    // `_installed` removes what the purges kept.
}
