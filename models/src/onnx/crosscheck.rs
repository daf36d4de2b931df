//! The cross-check against tract: the same ONNX file and inputs through our executor and
//! through tract-onnx (optimised, fp32), compared output by output.
//!
//! Tolerance ([`CROSSCHECK_REL_TOL`]): the max absolute difference, relative to the largest
//! magnitude of tract's output, must be ≤ 1e-4. Both sides sum the same products in
//! different orders (different GEMM blockings, BatchNorm folded or not, NHWC vs NCHW), so
//! they differ by a few ulps per accumulation; over the ≤ 50 layers of these CNNs that
//! stays far below 1e-4 of the output range, while a wrong op is off by O(1).

use std::path::Path;

use tract_onnx::prelude::*;

use crate::error::{ModelError, Result};
use crate::exec::{Executor, Options};
use crate::tensor::Tensor;

/// Relative tolerance of [`CrossCheck::passes`] (see the module docs).
pub const CROSSCHECK_REL_TOL: f32 = 1e-4;

/// What the cross-check found, over all outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossCheck {
    /// max |ours − tract| over every output element.
    pub max_abs_diff: f32,
    /// max |tract| over every output element (the scale of `rel_diff`).
    pub max_abs_ref: f32,
    /// `max_abs_diff / max(max_abs_ref, f32::MIN_POSITIVE)`.
    pub rel_diff: f32,
    /// Every row (last axis) of every output has the same argmax on both sides.
    pub argmax_agree: bool,
    /// Our outputs are all finite.
    pub finite: bool,
    /// Output shapes (ours; tract's are checked equal).
    pub shapes: Vec<Vec<usize>>,
}

impl CrossCheck {
    pub fn passes(&self) -> bool {
        self.finite && self.argmax_agree && self.rel_diff <= CROSSCHECK_REL_TOL
    }
}

/// A tract plan for one ONNX file at fixed input shapes: optimised once, run many times
/// (what a benchmark against tract needs; [`run_tract`] is the one-shot form).
pub struct TractPlan {
    file: String,
    plan: std::sync::Arc<TypedRunnableModel>,
}

impl TractPlan {
    /// Loads `model_path` into tract with the inputs' shapes fixed to `shapes` (f32).
    pub fn new(model_path: &Path, shapes: &[&[usize]]) -> Result<TractPlan> {
        let file = model_path.display().to_string();
        let model =
            tract_onnx::onnx()
                .model_for_path(model_path)
                .map_err(|e| ModelError::Tract {
                    file: file.clone(),
                    msg: format!("{e:?}"),
                })?;
        Self::optimise(model, file, shapes)
    }

    /// The same from an in-memory `ModelProto` (an export never written to disk); `what`
    /// names it in errors where a file name would go.
    pub fn from_proto(
        proto: &tract_onnx::pb::ModelProto,
        what: &str,
        shapes: &[&[usize]],
    ) -> Result<TractPlan> {
        let model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| ModelError::Tract {
                file: what.to_string(),
                msg: format!("{e:?}"),
            })?;
        Self::optimise(model, what.to_string(), shapes)
    }

    fn optimise(
        mut model: tract_onnx::prelude::InferenceModel,
        file: String,
        shapes: &[&[usize]],
    ) -> Result<TractPlan> {
        let terr = |e: anyhow_like::Error| ModelError::Tract {
            file: file.clone(),
            msg: format!("{e:?}"),
        };
        for (i, s) in shapes.iter().enumerate() {
            model = model
                .with_input_fact(i, f32::fact(*s).into())
                .map_err(terr)?;
        }
        let plan = model
            .into_optimized()
            .map_err(terr)?
            .into_runnable()
            .map_err(terr)?;
        Ok(TractPlan { file, plan })
    }

    /// Runs the plan on `inputs` (of the shapes it was made for).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let terr = |e: anyhow_like::Error| ModelError::Tract {
            file: self.file.clone(),
            msg: format!("{e:?}"),
        };
        let tv: TVec<TValue> = inputs
            .iter()
            .map(|t| Ok(tract_onnx::prelude::Tensor::from_shape(t.shape(), t.f32s()?)?.into()))
            .collect::<std::result::Result<_, anyhow_like::Error>>()
            .map_err(terr)?;
        let outs = self.plan.run(tv).map_err(terr)?;
        outs.iter()
            .map(|o| {
                let o = o.cast_to::<f32>().map_err(terr)?;
                let v = o.to_plain_array_view::<f32>().map_err(terr)?;
                Tensor::new(v.shape().to_vec(), v.iter().copied().collect())
            })
            .collect()
    }
}

/// Runs tract on `model_path` with `inputs` (shapes fixed from the inputs).
pub fn run_tract(model_path: &Path, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
    TractPlan::new(model_path, &shapes)?.run(inputs)
}

/// Error type of tract's API (`anyhow::Error`, re-exported through tract).
mod anyhow_like {
    pub type Error = tract_onnx::prelude::TractError;
}

/// Runs our executor (single thread) and tract on the same file and inputs and compares.
pub fn crosscheck(model_path: impl AsRef<Path>, inputs: &[Tensor]) -> Result<CrossCheck> {
    let path = model_path.as_ref();
    let graph = super::load(path)?;
    let ours = Executor::new(&graph, Options::default())?.run(inputs)?;
    let theirs = run_tract(path, inputs)?;
    compare(&ours, &theirs).map_err(|msg| ModelError::Tract {
        file: path.display().to_string(),
        msg,
    })
}

/// Compares two output lists (ours, reference).
pub fn compare(ours: &[Tensor], theirs: &[Tensor]) -> std::result::Result<CrossCheck, String> {
    if ours.len() != theirs.len() {
        return Err(format!(
            "{} outputs vs tract's {}",
            ours.len(),
            theirs.len()
        ));
    }
    let mut r = CrossCheck {
        max_abs_diff: 0.0,
        max_abs_ref: 0.0,
        rel_diff: 0.0,
        argmax_agree: true,
        finite: true,
        shapes: Vec::new(),
    };
    for (a, b) in ours.iter().zip(theirs) {
        if a.shape() != b.shape() {
            return Err(format!(
                "output shape {:?} vs tract's {:?}",
                a.shape(),
                b.shape()
            ));
        }
        let (av, bv) = (
            a.f32s().map_err(|e| e.to_string())?,
            b.f32s().map_err(|e| e.to_string())?,
        );
        for (&x, &y) in av.iter().zip(bv) {
            r.finite &= x.is_finite();
            let d = (x - y).abs();
            // NaN never compares greater: make it count.
            r.max_abs_diff = if d.is_nan() {
                f32::INFINITY
            } else {
                r.max_abs_diff.max(d)
            };
            r.max_abs_ref = r.max_abs_ref.max(y.abs());
        }
        r.argmax_agree &= a.argmax_rows().map_err(|e| e.to_string())?
            == b.argmax_rows().map_err(|e| e.to_string())?;
        r.shapes.push(a.shape().to_vec());
    }
    r.rel_diff = r.max_abs_diff / r.max_abs_ref.max(f32::MIN_POSITIVE);
    Ok(r)
}
