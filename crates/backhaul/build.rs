//! The source revision for `--version` and `backhaul_build_info`: `git rev-parse` of the tree
//! being built, `unknown` outside a git checkout (a source tarball).

use std::process::Command;

fn main() {
    let git = std::path::Path::new("../../.git");
    for watched in ["HEAD", "refs/heads", "packed-refs"] {
        let p = git.join(watched);
        if p.exists() {
            println!("cargo:rerun-if-changed={}", p.display());
        }
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BACKHAUL_REVISION={revision}");
}
