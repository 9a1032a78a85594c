//! One module per subcommand.

pub mod check;
pub mod config;
pub mod demo;
pub mod diagnose;
pub mod journal;
pub mod lab;
pub mod netplan;
pub mod package_files;
pub mod run;
pub mod s3_server;
pub mod status;
