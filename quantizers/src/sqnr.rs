//! Per-layer SQNR: for every int8 layer, `10·log10(Σx² / Σ(x − x̂)²)` between the fp32
//! model's output of that layer and the quantized model's (dequantized), over the same
//! inputs. The worst layer is where accuracy goes.

use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;

use crate::error::Result;
use crate::model::QuantizedModel;
use crate::probe::Probe;
use crate::runtime::QExecutor;

/// One layer's signal-to-quantization-noise ratio.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerSqnr {
    pub layer: String,
    pub tensor: String,
    /// In dB; infinite when the outputs are identical.
    pub sqnr_db: f64,
}

/// SQNR of `x̂` against `x`.
pub fn sqnr_db(x: &[f32], xq: &[f32]) -> f64 {
    let (mut signal, mut noise) = (0f64, 0f64);
    for (&a, &b) in x.iter().zip(xq) {
        signal += (a as f64) * (a as f64);
        noise += (a as f64 - b as f64).powi(2);
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

/// SQNR of every int8 layer's output on `input` (one batch, NCHW), `fp32` being the
/// original (unquantized) graph.
pub fn per_layer_sqnr(
    fp32: &Graph,
    model: &QuantizedModel,
    exec: &QExecutor,
    input: &Tensor,
) -> Result<Vec<LayerSqnr>> {
    let name = fp32
        .inputs
        .first()
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let reference = Probe::new(fp32)?.run(&[(name, input.clone())])?;
    let quantized = exec.run_traced(std::slice::from_ref(input))?;
    let mut out = Vec::new();
    for l in &model.layers {
        if let (Some(x), Some(xq)) = (reference.get(&l.output), quantized.get(&l.output)) {
            out.push(LayerSqnr {
                layer: l.node.clone(),
                tensor: l.output.clone(),
                sqnr_db: sqnr_db(x.f32s()?, xq.f32s()?),
            });
        }
    }
    Ok(out)
}
