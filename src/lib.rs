//! pprof-exporter: Go `net/http/pprof` heap and goroutine profiles as Prometheus
//! metrics, broken down by function and goroutine stack.
//!
//! The pipeline, one module per stage:
//! `config` -> `scrape` -> `decode` -> `aggregate` -> `expose`, with `target` running
//! the per-target loop that strings them together, `inspect` offering the same
//! aggregation on the command line, and `telemetry` holding logging set-up.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod decode;
pub mod process;
