//! `qbench`: quantize neural networks to int8, measure what it costs and gains, and
//! compare. The binary (`main.rs`) only calls [`cli::run`]; everything else is here, so
//! tests and other commands use it by type.
//!
//! Layers, each using only those listed before it:
//! - services: [`machine`] (the CPU fingerprint), [`output`] (atomic writes and
//!   provenance), [`results`] (the results-file contract), [`progress`], [`fetch`],
//!   [`target`] (a named model and its data), [`pipeline`] (building a quantized model),
//!   [`timing`] (interleaved measurement, statistics, thread pools), [`embed_metrics`];
//! - work: [`bench`], [`sweep`], [`report`], [`ci`], [`commands`];
//! - [`cli`]: flags into validated plans, and dispatch.

pub mod bench;
pub mod ci;
pub mod cli;
pub mod commands;
pub mod embed_metrics;
pub mod fetch;
pub mod machine;
pub mod output;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod results;
pub mod sweep;
pub mod target;
pub mod timing;
