//! The workspace's seeded random numbers ([`qbench_kernels::rng`], re-exported here so
//! model code names one module) and the draws that belong to models: weight
//! initialisation.

pub use qbench_kernels::rng::*;

/// He (Kaiming) normal: std = √(2 / fan_in), right for layers followed by ReLU.
pub fn he_normal(rng: &mut Rng, n: usize, fan_in: usize) -> Vec<f32> {
    rng.normals(n, (2.0 / fan_in as f32).sqrt())
}
