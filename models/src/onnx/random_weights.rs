//! Seeded random weights for graphs whose weights are built by `ConstantOfShape` (the
//! onnx package's "light" models, `zoo/light/`: real layouts, every weight one constant).
//!
//! With constant weights every class gets the same logit and a final Softmax is flat, so
//! a cross-check of such a file shows only that the graph imports and runs. Replacing each
//! weight with seeded random values gives real per-class differences: what the light-model
//! test and `qbench crosscheck` compare instead. (Without trained normalisation the logits
//! are then large and a final Softmax saturates to one-hot rows; the crosscheck compares
//! its input too.)

use crate::error::{ModelError, Result};
use crate::ir::{Graph, Op};
use crate::rng::Lcg;
use crate::tensor::Tensor;

/// Uniform values in [-1, 1) from the seeded LCG ([`Lcg`]), so runs are reproducible
/// from `seed`.
pub fn uniform(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Lcg::new(seed);
    let n: usize = shape.iter().product();
    let v = (0..n).map(|_| rng.uniform_f32()).collect();
    Tensor::new(shape.to_vec(), v)
}

/// Replaces every f32 `ConstantOfShape` node whose shape is an initializer by an
/// initializer of seeded random values: He-scaled uniform (±√(6/fan_in)) for ≥ 2-D
/// weights, in [0.5, 1.5] for 1-D ones so BatchNorm variances stay positive. The k-th
/// replaced weight (1-based, graph order) is drawn from [`uniform`] with seed `seed + k`.
/// Returns how many were replaced (0 leaves the graph as it was).
pub fn randomize_constant_weights(g: &mut Graph, seed: u64) -> Result<usize> {
    let nodes = std::mem::take(&mut g.nodes);
    let mut replaced = 0u64;
    for n in nodes {
        let shape = match (&n.op, n.inputs.first().and_then(|s| g.initializers.get(s))) {
            (Op::ConstantOfShape { value }, Some(s)) if value.is_f32() => {
                let dims = s.i64s()?;
                let exec_err = |msg: String| ModelError::Exec {
                    node: n.name.clone(),
                    op: "ConstantOfShape".into(),
                    msg,
                };
                let shape: Vec<usize> = dims
                    .iter()
                    .map(|&d| usize::try_from(d).ok())
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        exec_err(format!("shape {dims:?} is not a valid tensor shape"))
                    })?;
                crate::budget::check_shape(&"the weight", &shape, 4)
                    .map_err(|e| exec_err(e.to_string()))?;
                shape
            }
            _ => {
                g.nodes.push(n);
                continue;
            }
        };
        replaced += 1;
        let r = uniform(&shape, seed.wrapping_add(replaced))?;
        let v: Vec<f32> = if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let a = (6.0 / fan_in.max(1) as f32).sqrt();
            r.f32s()?.iter().map(|x| x * a).collect()
        } else {
            r.f32s()?.iter().map(|x| 1.0 + 0.5 * x).collect()
        };
        let output = n.outputs.first().cloned().unwrap_or_default();
        g.initializers.insert(output, Tensor::new(shape, v)?);
    }
    Ok(replaced as usize)
}
