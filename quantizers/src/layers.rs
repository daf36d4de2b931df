//! Finds the layers that can run in int8 (Conv, Gemm, MatMul with constant weights) and
//! reads their float weights in the layout the kernels pack: Conv as ONNX stores it
//! (`[c_out, c_in/groups, kh, kw]`), Gemm/MatMul as `[n, k]` with Gemm's `alpha` folded
//! into the weights and `beta` into the bias. Then quantizes them with a qconfig.

use std::collections::HashMap;

use qbench_models::ir::{Graph, Node, Op};

use crate::error::{check_finite, Result};
use crate::model::{LayerKind, QLayer};
use crate::qconfig::QConfig;
use crate::qparams::{Granularity, QSpec};

/// A quantizable layer's float weights.
#[derive(Clone, Debug)]
pub struct FloatLayer {
    pub node: String,
    pub op_type: &'static str,
    pub kind: LayerKind,
    pub input: String,
    pub output: String,
    pub weight_name: String,
    pub weight_shape: Vec<usize>,
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

/// The float layer of `node`, or `None` when it is not an int8-able Conv/Gemm/MatMul
/// (activation weights, transposed A, a bias that is not a per-column vector, ...).
pub fn float_layer(graph: &Graph, node: &Node) -> Option<FloatLayer> {
    let init = |i: usize| {
        node.inputs
            .get(i)
            .filter(|n| !n.is_empty())
            .and_then(|n| graph.initializers.get(n))
    };
    let w = init(1)?;
    let wd = w.f32s().ok()?;
    let base = |kind, weight_shape, weight, bias| FloatLayer {
        node: node.name.clone(),
        op_type: node.op.onnx_name(),
        kind,
        input: node.inputs[0].clone(),
        output: node.outputs[0].clone(),
        weight_name: node.inputs[1].clone(),
        weight_shape,
        weight,
        bias,
    };
    match &node.op {
        Op::Conv { .. } if w.rank() == 4 => {
            let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
                Some(_) => Some(init(2)?.f32s().ok()?.to_vec()),
                None => None,
            };
            Some(base(LayerKind::Conv, w.shape().to_vec(), wd.to_vec(), bias))
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a: false,
            trans_b,
        } if w.rank() == 2 => {
            let (n, k) = if *trans_b {
                (w.shape()[0], w.shape()[1])
            } else {
                (w.shape()[1], w.shape()[0])
            };
            let mut nk = if *trans_b {
                wd.to_vec()
            } else {
                transpose(wd, k, n)
            };
            nk.iter_mut().for_each(|x| *x *= alpha);
            let bias = match node.inputs.get(2).filter(|b| !b.is_empty()) {
                Some(_) => {
                    let c = init(2)?;
                    let ok = c.len() == n && c.shape().iter().rev().skip(1).all(|&d| d == 1);
                    if !ok {
                        return None;
                    }
                    Some(c.f32s().ok()?.iter().map(|v| v * beta).collect())
                }
                None => None,
            };
            Some(base(LayerKind::Linear, vec![n, k], nk, bias))
        }
        Op::MatMul if w.rank() == 2 => {
            let (k, n) = (w.shape()[0], w.shape()[1]);
            Some(base(
                LayerKind::Linear,
                vec![n, k],
                transpose(wd, k, n),
                None,
            ))
        }
        _ => None,
    }
}

/// `rows × cols` row-major → `cols × rows`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// The Relu that is the only reader of `tensor`: the rule the fp32 executor fuses by.
pub use qbench_models::passes::sole_relu_reader;

/// Quantizes a float layer's weights with `config`'s weight observer and spec
/// (per-channel on the output channel, axis 0 in both layouts).
pub fn quantize_layer(layer: &FloatLayer, config: &QConfig, relu: Option<&Node>) -> Result<QLayer> {
    check_finite(&layer.node, "weights", &layer.weight)?;
    if let Some(b) = &layer.bias {
        check_finite(&layer.node, "bias", b)?;
    }
    let spec = QSpec {
        granularity: match config.weight.spec.granularity {
            Granularity::PerTensor => Granularity::PerTensor,
            Granularity::PerChannel { .. } => Granularity::PerChannel { axis: 0 },
        },
        ..config.weight.spec
    };
    let mut obs = config.weight.observer.build(spec, &layer.node)?;
    obs.observe(&layer.weight_shape, &layer.weight)?;
    let weight_q = obs.qparams()?;
    let weight = weight_q
        .quantize_tensor(&layer.weight_shape, &layer.weight)
        .into_iter()
        .map(|q| q as i8)
        .collect();
    Ok(QLayer {
        node: layer.node.clone(),
        kind: layer.kind,
        relu: relu.map(|r| r.name.clone()),
        input: layer.input.clone(),
        output: relu.map_or_else(|| layer.output.clone(), |r| r.outputs[0].clone()),
        weight_name: layer.weight_name.clone(),
        weight_shape: layer.weight_shape.clone(),
        weight,
        weight_q,
        bias: layer.bias.clone(),
    })
}

/// Drops the float weights of int8 layers from the graph's initializers when no fp32
/// node still reads them, so a saved model does not carry them.
pub fn strip_int8_weights(graph: &mut Graph, layers: &[QLayer]) {
    let int8: HashMap<&str, &str> = layers
        .iter()
        .map(|l| (l.node.as_str(), l.weight_name.as_str()))
        .collect();
    for l in layers {
        let read_elsewhere = graph.nodes.iter().any(|n| {
            int8.get(n.name.as_str()) != Some(&l.weight_name.as_str())
                && n.inputs.contains(&l.weight_name)
        });
        if !read_elsewhere {
            graph.initializers.remove(&l.weight_name);
        }
    }
}
