//! Integration tests of the uploader against real S3 servers started by the tests themselves:
//! the embedded s3s-fs server and moto's server (`pip install 'moto[server]'`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod upload {
    pub mod bad_input;
    pub mod cloudwatch;
    pub mod credentials;
    pub mod drain;
    pub mod faults;
    pub mod loss;
    pub mod resume;
    pub mod support;
    pub mod verify;
}
