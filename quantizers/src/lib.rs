//! qbench-quantizers: quantization parameters, observers, backend qconfigs, fusion and the
//! dynamic, static and QAT pipelines.

pub mod error;
pub mod observer;
pub mod qconfig;
pub mod qparams;

pub use error::{QuantError, Result};
