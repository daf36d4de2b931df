//! qbench-models: tensors, the graph IR, the fp32 executor, training, file formats and
//! the zoo of real models with real data.
//!
//! Work in progress (see the open models issue): the modules below are being written.

pub mod data;
pub mod error;
pub mod exec;
pub mod idx;
pub mod ir;
pub mod onnx;
pub mod tensor;
pub mod zoo;
