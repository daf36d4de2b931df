//! Tiny hand-built ONNX models, the fast seeds of the ONNX and quantized-file formats.
//!
//! The zoo's models are seeds too, but they take milliseconds a case; these take
//! microseconds, and each is the smallest graph around one op family the issue found
//! crashes in: MatMul (wrapping element counts), Conv + BatchNorm (bias and channel
//! counts), Reshape (targets from a tensor), pooling (pads and kernels), ConstantOfShape
//! and Range (sizes computed at load time), Gemm (weights and transposes). Built through
//! tract-onnx's protobuf types because some edges (a shape tensor, an opset) are easier
//! to state in ONNX than in the IR.

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_shape_proto::{dimension, Dimension};

fn vi(name: &str, dims: &[i64]) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            denotation: String::new(),
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            denotation: String::new(),
                            value: Some(dimension::Value::DimValue(d)),
                        })
                        .collect(),
                }),
            })),
        }),
        ..Default::default()
    }
}

/// An f32 initializer of `dims` holding 0.1, 0.2, … (not all equal, so folds differ).
fn f32s(name: &str, dims: &[i64]) -> pb::TensorProto {
    let n: i64 = dims.iter().product();
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: 1,
        float_data: (0..n).map(|i| 0.1 * (1 + i % 7) as f32).collect(),
        ..Default::default()
    }
}

fn i64s(name: &str, values: &[i64]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: vec![values.len() as i64],
        data_type: 7,
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

/// A rank-0 int64 initializer (Range's operands are scalars).
fn scalar(name: &str, v: i64) -> pb::TensorProto {
    pb::TensorProto {
        dims: Vec::new(),
        ..i64s(name, &[v])
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    }
}

fn node(op: &str, ins: &[&str], outs: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: format!("{op}_{}", outs.first().copied().unwrap_or("none")),
        op_type: op.into(),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn model(
    name: &str,
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
    inputs: Vec<pb::ValueInfoProto>,
    outputs: Vec<pb::ValueInfoProto>,
) -> Vec<u8> {
    pb::ModelProto {
        ir_version: 7,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: name.into(),
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

/// `(name, bytes)` of every tiny seed.
pub fn all() -> Vec<(String, Vec<u8>)> {
    let seeds = [
        (
            "matmul-self",
            model(
                "matmul-self",
                vec![node("MatMul", &["x", "x"], &["y"], vec![])],
                vec![],
                vec![vi("x", &[1, 4, 4])],
                vec![vi("y", &[1, 4, 4])],
            ),
        ),
        (
            "conv-bn-relu-gemm",
            model(
                "conv-bn-relu-gemm",
                vec![
                    node(
                        "Conv",
                        &["x", "w", "b"],
                        &["c"],
                        vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
                    ),
                    node(
                        "BatchNormalization",
                        &["c", "gamma", "beta", "mean", "var"],
                        &["n"],
                        vec![],
                    ),
                    node("Relu", &["n"], &["r"], vec![]),
                    node("Flatten", &["r"], &["f"], vec![int("axis", 1)]),
                    node(
                        "Gemm",
                        &["f", "fc_w", "fc_b"],
                        &["y"],
                        vec![int("transB", 1)],
                    ),
                ],
                vec![
                    f32s("w", &[3, 2, 3, 3]),
                    f32s("b", &[3]),
                    f32s("gamma", &[3]),
                    f32s("beta", &[3]),
                    f32s("mean", &[3]),
                    f32s("var", &[3]),
                    f32s("fc_w", &[4, 75]),
                    f32s("fc_b", &[4]),
                ],
                vec![vi("x", &[1, 2, 5, 5])],
                vec![vi("y", &[1, 4])],
            ),
        ),
        (
            "reshape-matmul",
            model(
                "reshape-matmul",
                vec![
                    node("Reshape", &["x", "shape"], &["r"], vec![]),
                    node("MatMul", &["r", "w"], &["y"], vec![]),
                ],
                vec![i64s("shape", &[2, 3]), f32s("w", &[3, 2])],
                vec![vi("x", &[1, 6])],
                vec![vi("y", &[2, 2])],
            ),
        ),
        (
            "pools",
            model(
                "pools",
                vec![
                    node(
                        "MaxPool",
                        &["x"],
                        &["m"],
                        vec![ints("kernel_shape", &[2, 2]), ints("strides", &[1, 1])],
                    ),
                    node(
                        "AveragePool",
                        &["m"],
                        &["a"],
                        vec![ints("kernel_shape", &[2, 2]), ints("pads", &[0, 0, 1, 1])],
                    ),
                    node("GlobalAveragePool", &["a"], &["y"], vec![]),
                ],
                vec![],
                vec![vi("x", &[1, 1, 6, 6])],
                vec![vi("y", &[1, 1, 1, 1])],
            ),
        ),
        (
            "constant-of-shape-range",
            model(
                "constant-of-shape-range",
                vec![
                    node("ConstantOfShape", &["shape"], &["c"], vec![]),
                    node("Range", &["start", "limit", "delta"], &["r"], vec![]),
                    node("Add", &["x", "c"], &["a"], vec![]),
                    node("Shape", &["a"], &["s"], vec![]),
                ],
                vec![
                    i64s("shape", &[2, 3]),
                    scalar("start", 0),
                    scalar("limit", 6),
                    scalar("delta", 1),
                ],
                vec![vi("x", &[2, 3])],
                vec![vi("a", &[2, 3]), vi("r", &[6]), vi("s", &[2])],
            ),
        ),
        (
            "gemm-transpose",
            model(
                "gemm-transpose",
                vec![
                    node("Transpose", &["x"], &["t"], vec![ints("perm", &[1, 0])]),
                    node("Gemm", &["t", "w", "b"], &["y"], vec![]),
                    node("Softmax", &["y"], &["s"], vec![int("axis", 1)]),
                ],
                vec![f32s("w", &[2, 3]), f32s("b", &[3])],
                vec![vi("x", &[2, 4])],
                vec![vi("s", &[4, 3])],
            ),
        ),
    ];
    seeds.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}
