//! Export of the IR as ONNX through `tract_onnx::pb`: opset 14 (IR version 8), or the
//! newest opset a graph's ops need when that is later ([`export_opset`]: 17 for
//! LayerNormalization, 20 for Gelu; every other exported op means the same from 14 to 20).
//!
//! Ops stored in an older-opset form are written in their opset-14 form: Clip bounds and
//! Unsqueeze/Squeeze axes become constant inputs, legacy Softmax (coerce to 2-D) becomes
//! Shape → Flatten → Softmax → Reshape (import folds it back, so export → import gives the
//! same graph), Dropout becomes Identity. Tensors are written as little-endian `raw_data`.

use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType as A;

use crate::error::{ModelError, Result};
use crate::ir::{AutoPad, CastTo, Dim, Graph, Op, Spatial, ValueInfo};
use crate::tensor::{Data, Tensor};

/// The opset an export declares unless the graph needs a newer one ([`export_opset`]).
pub const EXPORT_OPSET: i64 = 14;

/// The opset `g` is exported at: [`EXPORT_OPSET`], or the first opset that defines every
/// op of the graph in the form we write.
pub fn export_opset(g: &Graph) -> i64 {
    g.nodes
        .iter()
        .map(|n| match &n.op {
            Op::LayerNorm { .. } => 17,
            Op::Gelu { .. } => 20,
            // Axes given as an input: ReduceMean takes them so only from opset 18.
            Op::ReduceMean { axes: None, .. } if n.inputs.len() > 1 => 18,
            _ => EXPORT_OPSET,
        })
        .fold(EXPORT_OPSET, i64::max)
}

pub fn tensor_to_proto(name: &str, t: &Tensor) -> pb::TensorProto {
    let (data_type, raw_data) = match t.data() {
        Data::F32(v) => (
            pb::tensor_proto::DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        Data::I64(v) => (
            pb::tensor_proto::DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    pb::TensorProto {
        name: name.to_string(),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

fn value_info(vi: &ValueInfo) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = vi
        .dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => Value::DimValue(*v as i64),
                Dim::Symbolic(s) => Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: vi.name.clone(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attr(name: &str, ty: A) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: ty as i32,
        ..Default::default()
    }
}

fn int(name: &str, i: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        i,
        ..attr(name, A::Int)
    }
}

fn float(name: &str, f: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        f,
        ..attr(name, A::Float)
    }
}

fn ints(name: &str, v: impl IntoIterator<Item = usize>) -> pb::AttributeProto {
    pb::AttributeProto {
        ints: v.into_iter().map(|x| x as i64).collect(),
        ..attr(name, A::Ints)
    }
}

fn tensor_attr(name: &str, t: &Tensor) -> pb::AttributeProto {
    pb::AttributeProto {
        t: Some(tensor_to_proto("", t)),
        ..attr(name, A::Tensor)
    }
}

fn spatial_attrs(sp: &Spatial, with_dilations: bool) -> Vec<pb::AttributeProto> {
    let mut v = Vec::new();
    if let Some(k) = sp.kernel {
        v.push(ints("kernel_shape", k));
    }
    v.push(ints("strides", sp.strides));
    if with_dilations {
        v.push(ints("dilations", sp.dilations));
    }
    match sp.auto_pad {
        AutoPad::NotSet => v.push(ints("pads", sp.pads)),
        a => {
            let s = match a {
                AutoPad::Valid => "VALID",
                AutoPad::SameUpper => "SAME_UPPER",
                _ => "SAME_LOWER",
            };
            v.push(pb::AttributeProto {
                s: s.as_bytes().to_vec(),
                ..attr("auto_pad", A::String)
            });
        }
    }
    if sp.ceil_mode {
        v.push(int("ceil_mode", 1));
    }
    v
}

/// The graph as an ONNX `ModelProto`.
pub fn to_model_proto(g: &Graph) -> pb::ModelProto {
    let opset = export_opset(g);
    let mut initializer: Vec<pb::TensorProto> = g
        .initializers
        .iter()
        .map(|(n, t)| tensor_to_proto(n, t))
        .collect();
    let mut node = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let mut inputs = n.inputs.clone();
        let mut attribute = Vec::new();
        let mut op_type = n.op.onnx_name().to_string();
        let extra_const = |suffix: &str, t: Tensor, initializer: &mut Vec<pb::TensorProto>| {
            let name = format!("{}::{suffix}", n.name);
            initializer.push(tensor_to_proto(&name, &t));
            name
        };
        match &n.op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                attribute = vec![
                    float("alpha", *alpha),
                    float("beta", *beta),
                    int("transA", *trans_a as i64),
                    int("transB", *trans_b as i64),
                ];
            }
            Op::Conv { spatial, group } => {
                attribute = spatial_attrs(spatial, true);
                attribute.push(int("group", *group as i64));
                // A fused-relu marker never reaches the IR; only X, W, B are exported.
                inputs.truncate(3);
            }
            Op::BatchNorm { epsilon } => attribute = vec![float("epsilon", *epsilon)],
            Op::Clip { min, max } if min.is_some() || max.is_some() => {
                inputs.truncate(1);
                let lo = extra_const(
                    "min",
                    Tensor::scalar(min.unwrap_or(f32::MIN)),
                    &mut initializer,
                );
                let hi = extra_const(
                    "max",
                    Tensor::scalar(max.unwrap_or(f32::MAX)),
                    &mut initializer,
                );
                inputs.extend([lo, hi]);
            }
            Op::HardSigmoid { alpha, beta } => {
                attribute = vec![float("alpha", *alpha), float("beta", *beta)]
            }
            Op::MaxPool { spatial } => attribute = spatial_attrs(spatial, true),
            Op::AveragePool {
                spatial,
                count_include_pad,
            } => {
                attribute = spatial_attrs(spatial, false);
                attribute.push(int("count_include_pad", *count_include_pad as i64));
            }
            Op::Lrn {
                alpha,
                beta,
                bias,
                size,
            } => {
                attribute = vec![
                    float("alpha", *alpha),
                    float("beta", *beta),
                    float("bias", *bias),
                    int("size", *size as i64),
                ];
            }
            Op::Flatten { axis } | Op::Concat { axis } | Op::Gather { axis } => {
                attribute = vec![int("axis", *axis)]
            }
            Op::Transpose { perm: Some(p) } => attribute = vec![ints("perm", p.iter().copied())],
            Op::Softmax {
                axis,
                legacy: false,
            } => attribute = vec![int("axis", *axis)],
            Op::Softmax { axis, legacy: true } => {
                // Opset-13 Softmax is per axis; the old one flattened at `axis` first.
                let x = &n.inputs[0];
                let p = |s: &str| format!("{}::{s}", n.name);
                node.push(pb::NodeProto {
                    name: p("shape"),
                    op_type: "Shape".into(),
                    input: vec![x.clone()],
                    output: vec![p("shape")],
                    ..Default::default()
                });
                node.push(pb::NodeProto {
                    name: p("flatten"),
                    op_type: "Flatten".into(),
                    input: vec![x.clone()],
                    output: vec![p("flat")],
                    attribute: vec![int("axis", *axis)],
                    ..Default::default()
                });
                node.push(pb::NodeProto {
                    name: p("softmax"),
                    op_type: "Softmax".into(),
                    input: vec![p("flat")],
                    output: vec![p("soft")],
                    attribute: vec![int("axis", 1)],
                    ..Default::default()
                });
                op_type = "Reshape".into();
                inputs = vec![p("soft"), p("shape")];
            }
            Op::Constant { value } => attribute = vec![tensor_attr("value", value)],
            Op::ConstantOfShape { value } => attribute = vec![tensor_attr("value", value)],
            Op::Unsqueeze { axes: Some(ax) } | Op::Squeeze { axes: Some(ax) } => {
                let name = extra_const("axes", Tensor::from_i64s(ax.clone()), &mut initializer);
                inputs.truncate(1);
                inputs.push(name);
            }
            Op::LayerNorm { axis, epsilon } => {
                attribute = vec![int("axis", *axis), float("epsilon", *epsilon)]
            }
            Op::Gelu { tanh: true } => {
                attribute = vec![pb::AttributeProto {
                    s: b"tanh".to_vec(),
                    ..attr("approximate", A::String)
                }]
            }
            Op::ReduceSum {
                axes,
                keepdims,
                noop_with_empty_axes,
            }
            | Op::ReduceMean {
                axes,
                keepdims,
                noop_with_empty_axes,
            } => {
                attribute = vec![int("keepdims", *keepdims as i64)];
                if *noop_with_empty_axes {
                    attribute.push(int("noop_with_empty_axes", 1));
                }
                let axes_as_input = matches!(n.op, Op::ReduceSum { .. }) || opset >= 18;
                match axes {
                    // Empty axes: no axes input/attribute, which means "all" (or no-op).
                    Some(ax) if ax.is_empty() => inputs.truncate(1),
                    Some(ax) if axes_as_input => {
                        let name =
                            extra_const("axes", Tensor::from_i64s(ax.clone()), &mut initializer);
                        inputs.truncate(1);
                        inputs.push(name);
                    }
                    Some(ax) => {
                        inputs.truncate(1);
                        attribute.push(pb::AttributeProto {
                            ints: ax.clone(),
                            ..attr("axes", A::Ints)
                        });
                    }
                    None => {}
                }
            }
            Op::LpNormalization { axis, p } => {
                attribute = vec![int("axis", *axis), int("p", i64::from(*p))]
            }
            Op::Cast { to } => {
                let t = match to {
                    CastTo::F32 => pb::tensor_proto::DataType::Float,
                    CastTo::I64 => pb::tensor_proto::DataType::Int64,
                };
                attribute = vec![int("to", t as i64)]
            }
            _ => {}
        }
        node.push(pb::NodeProto {
            name: n.name.clone(),
            op_type,
            input: inputs,
            output: n.outputs.clone(),
            attribute,
            ..Default::default()
        });
    }
    pb::ModelProto {
        // IR version 9 came with opset 19 (ONNX 1.14).
        ir_version: if opset >= 19 { 9 } else { 8 },
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "qbench".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: g.name.clone(),
            node,
            initializer,
            input: g.inputs.iter().map(value_info).collect(),
            output: g.outputs.iter().map(value_info).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The graph as ONNX protobuf bytes.
pub fn to_bytes(g: &Graph) -> Vec<u8> {
    to_model_proto(g).encode_to_vec()
}

/// Writes the graph as an ONNX file (through a temp file and a rename, so a reader never
/// sees half a model).
pub fn save(g: &Graph, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let io = |source| ModelError::Io {
        file: path.to_path_buf(),
        source,
    };
    crate::atomic::write_atomic(path, &to_bytes(g)).map_err(io)
}
