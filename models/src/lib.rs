//! qbench-models: tensors, the graph IR, the fp32 executor, training, file formats and
//! the zoo of real models with real data.
//!
//! Tensors, the IR, the graph passes shared by every consumer (`passes`: constant
//! folding, BatchNorm folding, Conv + activation fusion), the one interpreter (`plan`,
//! generic over the value type), the fp32 executor (NHWC inside, packed convs on the kernels crate),
//! ONNX import/export through tract-onnx's protobuf types with a tract cross-check, the
//! IDX reader and datasets, the trainer (`train`: gradients, SGD/Adam, the architectures
//! of the zoo models qbench trains), the zoo manifests, fetching large models into a
//! cache, the sentence-transformers BERT encoder (MiniLM) built from safetensors, and the
//! seeded RNG (`rng`) behind every initialisation, shuffle and split. `budget` holds the
//! memory budget and the one checked size computation behind every tensor sized by a
//! file (see `UNTRUSTED.md`); `shapes` infers every tensor's shape before a run, so the
//! budget is checked at plan time.

pub mod atomic;
pub mod bert;
pub mod budget;
pub mod data;
pub mod error;
pub mod exec;
pub mod fetch;
pub mod idx;
pub mod ir;
pub mod onnx;
pub mod passes;
pub mod plan;
pub mod rng;
pub mod rotten_tomatoes;
pub mod shapes;
pub mod tensor;
pub mod train;
pub mod zoo;
