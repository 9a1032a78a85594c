//! Integration tests of backhaul-netplan: the fixture corpus (with real `netplan generate` as
//! the oracle), input loading and the CLI, and property tests over the parser.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

mod netplan {
    pub mod corpus;
    pub mod inputs;
    pub mod props;
}
