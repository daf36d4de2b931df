//! qbench-fuzz: a stable-Rust fuzz driver for qbench's untrusted inputs (issue 18).
//!
//! Structure-aware mutations of valid seeds ([`mutate`], [`seeds`]) of five formats
//! ([`format`]) run through qbench's real entry points in-process ([`targets`]) inside
//! `catch_unwind`, under a counting allocator with a budget ([`alloc`]), in child
//! processes so a signal or abort is a finding, not the end of the run ([`child`],
//! [`supervise`], [`driver`]). Failing inputs are saved and can be replayed ([`findings`],
//! [`replay`]). The binary's `main.rs` holds the CLI and installs the allocator.

pub mod alloc;
pub mod case;
pub mod child;
pub mod driver;
pub mod findings;
pub mod format;
pub mod frames;
pub mod harness_adapter;
pub mod mutate;
pub mod onnx_seeds;
pub mod protocol;
pub mod replay;
pub mod seeds;
pub mod selftest;
pub mod supervise;
pub mod targets;
