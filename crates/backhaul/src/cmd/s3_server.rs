//! `backhaul s3-server`: the embedded s3s-fs store as its own process, so labs can run it in
//! the cloud namespace and benchmarks can measure clients against it side by side.

use std::process::ExitCode;

use anyhow::Context as _;
use backhaul_upload::embedded::{EMBEDDED_ACCESS_KEY, EMBEDDED_SECRET_KEY, EmbeddedS3};

use crate::cli::S3ServerArgs;
use crate::env::ProcessEnv;
use crate::logging;

/// Entry point.
pub fn main(args: S3ServerArgs, env: &ProcessEnv) -> anyhow::Result<ExitCode> {
    logging::init(&args.log, None, Some("warn"), env.stderr);
    let rt = super::run::runtime()?;
    rt.block_on(async {
        let server = EmbeddedS3::start(&args.root, args.listen).await?;
        for b in &args.buckets {
            server.create_bucket(b).with_context(|| format!("cannot create bucket {b}"))?;
        }
        println!(
            "s3-server: {} (root {}), access key {EMBEDDED_ACCESS_KEY}, secret key {EMBEDDED_SECRET_KEY}",
            server.endpoint(),
            args.root.display()
        );
        let mut stop = super::run::shutdown_on_signals();
        stop.changed().await.ok();
        Ok(ExitCode::SUCCESS)
    })
}
