use super::support::run;

#[test]
fn demo_runs_the_agent_end_to_end() {
    let out = run(&[
        "demo",
        "--chunks",
        "4",
        "--chunk-mib",
        "6",
        "--interval-ms",
        "50",
        "--log-level",
        "warn",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("uploaded and verified: 4/4 chunks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("byte-identical in the bucket: 4/4"),
        "{stdout}"
    );
    assert!(stdout.contains("demo OK"), "{stdout}");
}
