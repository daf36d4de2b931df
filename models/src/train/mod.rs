//! Training: reverse-mode gradients over an IR [`Graph`](crate::ir::Graph), softmax
//! cross-entropy, SGD with momentum and Adam, and the epoch loop.
//!
//! The trainer works on the same graph the executor and the ONNX exporter use, so a
//! trained model is saved with `onnx::save` and evaluated by `exec::Executor` unchanged.
//! Activations are NCHW (ONNX's layout, so every weight is used in its ONNX layout with
//! no repacking); convolutions are im2col + the kernels crate's fp32 GEMM, per sample.
//!
//! Determinism: the batch is split into fixed groups of samples ([`GROUP`]) that rayon
//! runs in parallel; each group's weight-gradient partial is summed in group order, so
//! the result is bit-identical whatever the number of threads.
//!
//! Files: `network` (`compile`: graph → steps; `forward`; `backward`; `shapes`), `conv`,
//! `linear`, `batchnorm`,
//! `pool`, `simple` (Relu, Add, Flatten), `loss`, `optim`, `init` (He-normal on the
//! workspace's seeded RNG, [`crate::rng`]),
//! `builder` (graphs with initialised weights), `arch` (the zoo models qbench trains),
//! `fit` (the epoch loop and evaluation).

pub mod arch;
mod batchnorm;
pub mod builder;
mod conv;
pub mod fit;
pub mod init;
mod linear;
pub mod loss;
pub mod network;
pub mod optim;
mod pool;
mod simple;

pub use fit::{
    evaluate, fit, fit_with, predict, EpochReport, FitConfig, OptimizerKind, StepProgress,
};
pub use network::{FakeQuantizer, Grads, Mode, Network, Param, ParamKind, QatPlan, Tape};
pub use optim::{Adam, Optimizer, Sgd};

/// Samples per parallel task. Fixed (not derived from the thread count) so that the
/// order of floating-point sums, hence every trained weight, does not depend on it.
pub const GROUP: usize = 8;

/// A dense NCHW (or `[n, features]`) f32 activation.
#[derive(Clone, Debug, PartialEq)]
pub struct Buf {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Buf {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Buf {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Buf { shape, data }
    }

    pub fn zeros(shape: Vec<usize>) -> Buf {
        let n = shape.iter().product();
        Buf {
            shape,
            data: vec![0.0; n],
        }
    }

    /// Values per sample (everything after the batch dimension).
    pub fn per_sample(&self) -> usize {
        self.shape[1..].iter().product()
    }
}

/// Adds `src` into `dst` element-wise.
pub(crate) fn add_into(dst: &mut [f32], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}

/// Sums per-group partials in group order (the deterministic reduction).
pub(crate) fn sum_partials(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut total = vec![0.0; len];
    for p in &parts {
        add_into(&mut total, p);
    }
    total
}
