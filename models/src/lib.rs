//! qbench-models: tensors, the graph IR, the fp32 executor, training, file formats and
//! the zoo of real models with real data.
//!
//! Built so far: tensors, the IR, the fp32 executor (NHWC inside, packed convs on the
//! kernels crate), ONNX import/export through tract-onnx's protobuf types with a tract
//! cross-check, the IDX reader and datasets, and the zoo manifests. Not yet: training
//! and the trained zoo models (see the open models issue).

pub mod data;
pub mod error;
pub mod exec;
pub mod idx;
pub mod ir;
pub mod onnx;
pub mod tensor;
pub mod train;
pub mod zoo;
