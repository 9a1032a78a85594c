//! Metric names, the in-process registry and its encoders.
//!
//! Owns: every metric backhaul exports (name, help, unit in the name), the lock-free counters
//! and gauges behind them, the goodput windows, the standard `process_*` metrics of this
//! process (`process.rs`, from `/proc/self`), and the two wire formats that read them —
//! Prometheus text exposition and CloudWatch Embedded Metric Format (EMF) JSON lines, and what
//! CloudWatch gets from a snapshot (`cloudwatch.rs`: counters as per-interval changes, labels
//! as dimensions), which the EMF encoder and `PutMetricData` both send.
//!
//! Does not own: serving `/metrics` over HTTP (the binary), calling CloudWatch's
//! `PutMetricData` API (`backhaul-upload`, the only crate that speaks HTTP), or deciding what a
//! value means (`backhaul-diagnose`). Producers (`spool`, `upload`) update the fields of
//! [`Metrics`]; readers take a [`Snapshot`] and encode it.

mod cloudwatch;
mod emf;
mod goodput;
mod metrics;
mod process;
mod prometheus;

pub use cloudwatch::{CounterDeltas, Datum};
pub use emf::{EmfTarget, emf_lines};
pub use goodput::Goodput;
pub use metrics::{
    ActiveIncident, Counter, Gauge, LabeledCounter, Metrics, Sample, SampleKind, Snapshot,
};
pub use process::{build_info, process_samples};
pub use prometheus::prometheus_text;
