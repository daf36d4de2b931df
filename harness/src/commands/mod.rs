//! The commands that are one job each: evaluate, inspect, cross-check, quantize, train,
//! fetch, and describe the machine. The measuring commands live with what they measure
//! ([`crate::bench`], [`crate::sweep`]), and the CI commands in [`crate::ci`].

pub mod crosscheck;
pub mod eval;
pub mod fetch;
pub mod inspect;
pub mod machine;
pub mod quantize;
pub mod train;
