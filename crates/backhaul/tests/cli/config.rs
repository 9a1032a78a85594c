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
    let out = run(&[
        "config",
        "check",
        &write(&d, &String::from_utf8_lossy(&default.stdout)),
    ]);
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
