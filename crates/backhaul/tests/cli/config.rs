use super::support::run;

fn write(dir: &tempfile::TempDir, text: &str) -> String {
    let p = dir.path().join("site.toml");
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

const GOOD: &str = "[site]\nname = \"SITE-2847\"\n[spool]\ndir = \"/tmp\"\n[upload]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"video\"\n";

#[test]
fn config_check_accepts_good_and_default_configs() {
    let d = tempfile::tempdir().unwrap();
    let out = run(&["config", "check", &write(&d, GOOD)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok (site SITE-2847"));
    let default = run(&["config", "default"]);
    assert!(default.status.success());
    let example = String::from_utf8_lossy(&default.stdout).into_owned();
    // As printed (and as the package installs it) it names no site: refused until edited.
    let out = run(&["config", "check", &write(&d, &example)]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("site.name is still the example's placeholder")
            && said.contains("help: edit "),
        "{said}"
    );
    let edited = example
        .replace("\"EDIT-ME\"", "\"SITE-2847\"")
        .replace(
            "https://s3.EDIT-ME.invalid",
            "https://s3.eu-west-1.amazonaws.com",
        )
        .replace("\"edit-me\"", "\"site-video\"");
    let out = run(&["config", "check", &write(&d, &edited)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn config_errors_exit_78_with_file_line_and_help() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        (
            GOOD.replace(
                "bucket = \"video\"",
                "bucket = \"video\"\nparts_in_flight = 0",
            ),
            ":8:1: upload.parts_in_flight",
        ),
        (
            GOOD.replace("[spool]\n", "[spool]\nsettle = 3\n"),
            ":4:1: unknown field `settle`",
        ),
        (GOOD.replace("\"SITE-2847\"", "SITE-2847"), ":2:8:"),
        (
            GOOD.replace(
                "dir = \"/tmp\"",
                "dir = \"/tmp\"\nkey_template = \"{site}/{nme}\"",
            ),
            "unknown placeholder {nme}",
        ),
        (
            GOOD.replace(
                "dir = \"/tmp\"",
                "dir = \"/tmp\"\nkey_template = \"{site}//{name}\"",
            ),
            ":5:1: spool.key_template: must not contain '//'",
        ),
        (
            GOOD.replace(
                "dir = \"/tmp\"",
                "dir = \"/tmp\"\nkey_template = \"{site}/{path}/\"",
            ),
            ":5:1: spool.key_template",
        ),
        (
            GOOD.replace("dir = \"/tmp\"", "dir = \"/tmp\"\ndefault_camera = \"..\""),
            ":5:1: spool.default_camera",
        ),
        (
            GOOD.replace(
                "bucket = \"video\"",
                "bucket = \"video\"\nretry_base_milliseconds = 5000\nretry_max_seconds = 2",
            ),
            ":9:1: upload.retry_max_seconds",
        ),
        (
            format!("{GOOD}[log]\nlevel = \"verbose\"\n"),
            ":9:1: log.level",
        ),
        (
            format!("{GOOD}[metrics]\nlisten = \"0.0.0.0:9464\"\n"),
            ":9:1: metrics.listen",
        ),
    ];
    for (text, expected) in cases {
        let path = write(&d, &text);
        let out = run(&["config", "check", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        assert!(
            err.contains(&format!("{path}{expected}")) || err.contains(expected),
            "want {expected}: {err}"
        );
        assert!(err.contains("help:"), "{err}");
    }
    // Serving metrics to the network is possible, when asked for.
    let remote = write(
        &d,
        &format!("{GOOD}[metrics]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n"),
    );
    assert!(run(&["config", "check", &remote]).status.success());
    // A flag is checked like the file.
    let out = run(&[
        "run",
        "--drain",
        "--log-level",
        "verbose",
        "--config",
        &remote,
    ]);
    assert_eq!(
        out.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["config", "check", "/nonexistent/site.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/site.toml"));
}

#[test]
fn run_with_missing_spool_dir_says_so_and_exits_78() {
    let d = tempfile::tempdir().unwrap();
    let text = GOOD.replace("dir = \"/tmp\"", "dir = \"/nonexistent/spool\"");
    let out = run(&["run", "--drain", "--config", &write(&d, &text)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("/nonexistent/spool") && err.contains("help:"),
        "{err}"
    );
}

/// An EMF file the agent could not append to (a missing directory, or one the packaged unit
/// may not write) is flagged by `config check`, not discovered as a warning every interval.
#[test]
fn config_check_flags_an_emf_path_the_agent_cannot_write() {
    let d = tempfile::tempdir().unwrap();
    for (emf, expected) in [
        (d.path().join("missing/metrics.emf"), "does not exist"),
        (
            d.path().join("metrics.emf"),
            "outside the paths the packaged unit may write",
        ),
    ] {
        let cfg = format!("{GOOD}[metrics]\nemf_path = \"{}\"\n", emf.display());
        let out = run(&["config", "check", &write(&d, &cfg)]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{said}");
        assert!(
            said.contains("warning: metrics.emf_path") && said.contains(expected),
            "{said}"
        );
    }
}

/// An operator who may not read the config (0640 root:backhaul, not in the group) is told how
/// to get at the agent anyway, not to "check the path".
#[test]
fn an_unreadable_config_says_how_to_reach_the_agent_anyway() {
    use std::os::unix::fs::PermissionsExt as _;
    let d = tempfile::tempdir().unwrap();
    let path = write(&d, GOOD);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = if super::support::is_root() {
        // Root reads any file: ask as an unprivileged user.
        let mut c = std::process::Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(super::support::exe());
        c
    } else {
        std::process::Command::new(super::support::exe())
    };
    let out = cmd.args(["status", "--config", &path]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{said}");
    assert!(
        said.contains("cannot read config")
            && said.contains("usermod -aG backhaul")
            && said.contains("backhaul status --url"),
        "{said}"
    );
}

/// `config check` says where credentials will come from, as its shell sees the environment and
/// the shared files, without running a helper; a source that cannot work is a warning naming
/// what is missing (the service's drop-in may set more), never a secret or a helper's
/// arguments.
#[test]
fn config_check_names_the_credential_source_without_running_it() {
    let d = tempfile::tempdir().unwrap();
    let aws_config = d.path().join("aws-config");
    std::fs::write(
        &aws_config,
        "[profile site]\ncredential_process = /usr/local/bin/aws_signing_helper credential-process --private-key /etc/backhaul/site.key\n",
    )
    .unwrap();
    let check = |credentials: &str, envs: &[(&str, &str)]| {
        let cfg = write(
            &d,
            &format!("{GOOD}credentials = \"{credentials}\"\nprofile = \"site\"\n"),
        );
        let out = std::process::Command::new(super::support::exe())
            .args(["config", "check", &cfg])
            .env_clear()
            .env("HOME", d.path())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let with_file = [("AWS_CONFIG_FILE", aws_config.to_str().unwrap())];
    let said = check("process", &with_file);
    assert!(
        said.contains(
            "\ncredentials: credential_process of profile site: /usr/local/bin/aws_signing_helper\n"
        ),
        "{said}"
    );
    assert!(
        !said.contains("site.key"),
        "a helper's arguments are not shown: {said}"
    );
    let said = check("chain", &with_file);
    assert!(
        said.contains("\ncredentials: chain: credential_process of profile site"),
        "{said}"
    );
    let said = check("assume-role", &with_file);
    assert!(
        said.contains("warning: credentials: credentials = \"assume-role\", but profile `site` has no role_arn"),
        "{said}"
    );
    let said = check("chain", &[]);
    assert!(
        said.contains("warning: credentials: credentials = \"chain\" finds nothing"),
        "{said}"
    );
    let said = check(
        "container",
        &[
            (
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "http://localhost:8090/2016-11-01/credentialprovider/",
            ),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "tes-secret"),
        ],
    );
    assert!(
        said.contains("credentials: container credentials endpoint http://localhost:8090/2016-11-01/credentialprovider/"),
        "{said}"
    );
    assert!(!said.contains("tes-secret"), "{said}");
}
