//! Optimizers: SGD with (heavy-ball) momentum and Adam, both with L2 weight decay added
//! to the gradient of parameters that decay (Gemm/Conv weights), PyTorch's definitions:
//!
//! - SGD: `g = ∇ + λ·w; v = μ·v + g; w −= lr·v` (first step: `v = g`);
//! - Adam: `g = ∇ + λ·w; m = β1·m + (1−β1)·g; v = β2·v + (1−β2)·g²;
//!   w −= lr · (m / (1−β1ᵗ)) / (√(v / (1−β2ᵗ)) + ε)`.
//!
//! Parameters without a gradient (BatchNorm running statistics) are left alone.

use super::network::Param;

/// One update of every parameter from its gradient; `lr` is this step's learning rate
/// (a schedule may change it between steps).
pub trait Optimizer {
    fn step(&mut self, params: &mut [Param], grads: &[Vec<f32>], lr: f32);
}

fn decayed(p: &Param, g: &[f32], i: usize, wd: f32) -> f32 {
    if p.decays() && wd != 0.0 {
        g[i] + wd * p.value[i]
    } else {
        g[i]
    }
}

#[derive(Clone, Debug)]
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    velocity: Vec<Vec<f32>>,
}

impl Sgd {
    pub fn new(momentum: f32, weight_decay: f32) -> Sgd {
        Sgd {
            momentum,
            weight_decay,
            velocity: Vec::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &mut [Param], grads: &[Vec<f32>], lr: f32) {
        if self.velocity.is_empty() {
            self.velocity = vec![Vec::new(); params.len()];
        }
        for ((p, g), v) in params.iter_mut().zip(grads).zip(&mut self.velocity) {
            if !p.trainable() || g.is_empty() {
                continue;
            }
            let first = v.is_empty();
            if first {
                *v = vec![0.0; g.len()];
            }
            for (i, vi) in v.iter_mut().enumerate() {
                let d = decayed(p, g, i, self.weight_decay);
                *vi = if first { d } else { self.momentum * *vi + d };
                p.value[i] -= lr * *vi;
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Adam {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// β1 = 0.9, β2 = 0.999, ε = 1e-8 (the paper's and PyTorch's defaults).
    pub fn new(weight_decay: f32) -> Adam {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            t: 0,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &mut [Param], grads: &[Vec<f32>], lr: f32) {
        if self.m.is_empty() {
            self.m = vec![Vec::new(); params.len()];
            self.v = vec![Vec::new(); params.len()];
        }
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t);
        let c2 = 1.0 - self.beta2.powi(self.t);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            if !p.trainable() || g.is_empty() {
                continue;
            }
            if m.is_empty() {
                *m = vec![0.0; g.len()];
                *v = vec![0.0; g.len()];
            }
            for (i, (mi, vi)) in m.iter_mut().zip(v.iter_mut()).enumerate() {
                let d = decayed(p, g, i, self.weight_decay);
                *mi = self.beta1 * *mi + (1.0 - self.beta1) * d;
                *vi = self.beta2 * *vi + (1.0 - self.beta2) * d * d;
                p.value[i] -= lr * (*mi / c1) / ((*vi / c2).sqrt() + self.eps);
            }
        }
    }
}
