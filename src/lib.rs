//! pprof-exporter: Go `net/http/pprof` heap and goroutine profiles as Prometheus
//! metrics, broken down by function and goroutine stack.
//!
//! The pipeline, one module per stage:
//! [`config`] -> [`scrape`] -> [`decode`] -> [`aggregate`] -> [`expose`], with
//! [`target`] running the per-target loop that strings them together, [`process`]
//! reading the target's memory from `/proc`, [`inspect`] offering the same aggregation
//! on the command line (with [`cores`] to run its passes on two cores), [`telemetry`]
//! setting up logs, and [`synth`] generating profiles for tests and benchmarks.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aggregate;
pub mod config;
pub mod cores;
pub mod decode;
pub mod expose;
pub mod inspect;
pub mod probe;
pub mod process;
pub mod scrape;
pub mod synth;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod web;
