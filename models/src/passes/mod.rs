//! Graph passes, written once and used by the fp32 executor, the quantizers and the
//! trainer: constant folding ([`constants`]), BatchNormalization folding into the Conv
//! before it ([`batch_norm`]), and Conv + activation fusion ([`activation`]).
//!
//! Each pass is the only implementation of its rewrite: the executor's fp32 numbers, the
//! static quantizer's folded weights (hence its weight qparams) and the QAT trainer's
//! folded forward pass agree bit for bit because they call the same functions.

pub mod activation;
pub mod batch_norm;
pub mod constants;

pub use activation::{fuse_activations, sole_relu_reader, Activation, FusedNode};
pub use batch_norm::{fold_batch_norms, BnFold, Reach};
pub use constants::{fold_constants, OutputNodes};
