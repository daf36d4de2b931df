//! Weight packing for the int8 steps: conv and GEMM weights packed for the active rung,
//! biases on the int32 grid and requantization multipliers.

use qbench_kernels::gemm::{MatB, PackedB, Requant};
use qbench_kernels::{Affine, ConvWeights, PackedConv, Window};
use qbench_models::ir::{Node, Op};

use crate::error::{QuantError, Result};
use crate::model::QLayer;
use crate::qparams::QParams;

pub(super) struct Requantize {
    pub(super) bias: Vec<i32>,
    pub(super) multiplier: Vec<f32>,
    pub(super) out: Affine,
    pub(super) qmin: u8,
    pub(super) qmax: u8,
}

impl Requantize {
    pub(super) fn params(&self) -> Requant<'_> {
        Requant {
            bias: Some(&self.bias),
            multiplier: &self.multiplier,
            out_zero_point: self.out.zero_point,
            qmin: self.qmin,
            qmax: self.qmax,
        }
    }
}

pub(super) fn layer_err(node: &Node, msg: impl Into<String>) -> QuantError {
    QuantError::Layer {
        layer: node.name.clone(),
        op: node.op.onnx_name().to_string(),
        msg: msg.into(),
    }
}

pub(super) fn affine(qp: &QParams) -> Affine {
    Affine::new(qp.scales[0], qp.zero_points[0])
}

/// `sa · sw[c] / s_out`, computed in f64 and rounded once.
pub(crate) fn multipliers(sa: f32, sw: &[f32], so: f32) -> Vec<f32> {
    sw.iter()
        .map(|&w| (sa as f64 * w as f64 / so as f64) as f32)
        .collect()
}

pub(super) fn weight_zero_points(qp: &QParams) -> Vec<i32> {
    if qp.zero_points.iter().all(|&z| z == 0) {
        vec![0]
    } else {
        qp.zero_points.clone()
    }
}

pub(super) fn pack_linear(layer: &QLayer) -> Result<PackedB> {
    let [n, k] = [layer.weight_shape[0], layer.weight_shape[1]];
    let zps = weight_zero_points(&layer.weight_q);
    Ok(PackedB::new(&MatB {
        data: &layer.weight,
        rows: k,
        cols: n,
        zero_points: &zps,
        transposed: true,
    })?)
}

pub(super) fn pack_conv(layer: &QLayer, node: &Node, in_shape: &[usize]) -> Result<PackedConv> {
    let Op::Conv { spatial, group } = &node.op else {
        return Err(layer_err(node, "not a Conv"));
    };
    let s = &layer.weight_shape;
    let kernel = [s[2], s[3]];
    if in_shape.len() != 4 {
        return Err(layer_err(
            node,
            format!("input shape {in_shape:?} is not 4-D"),
        ));
    }
    let pads = spatial.resolve_pads(kernel, in_shape[2], in_shape[3]);
    let window = Window::new(kernel[0], kernel[1])
        .stride(spatial.strides[0], spatial.strides[1])
        .dilation(spatial.dilations[0], spatial.dilations[1])
        .pads(pads);
    let zps = weight_zero_points(&layer.weight_q);
    let w = ConvWeights {
        data: &layer.weight,
        out_channels: s[0],
        in_channels_per_group: s[1],
        kernel,
        zero_points: &zps,
    };
    Ok(PackedConv::new(&w, *group, window)?)
}
