//! ONNX export of a [`QuantizedModel`] in the forms users meet, and [`tract_check`], which
//! runs an export in tract and compares it with [`crate::QExecutor`].
//!
//! - Static models, two forms: [`qoperator`] (QLinearConv, MatMulInteger + rescale, u8
//!   MaxPool: what tract runs on its own int8 kernels) and [`qdq`] (the float graph with
//!   QuantizeLinear/DequantizeLinear pairs, ONNX Runtime's exchange format). Both follow
//!   the executor's plan ([`crate::QExecutor::placements`]): a node that ran in int8 there
//!   is int8 in the file, an fp32 fallback node is written as it is, with
//!   DequantizeLinear/QuantizeLinear exactly where a value changes domain.
//! - Dynamic models, one form ([`dynamic`]): the activation quantized in plain ops +
//!   MatMulInteger / ConvInteger + the f32 dequantization (ONNX Runtime's
//!   `quantize_dynamic` uses DynamicQuantizeLinear instead; [`dynamic`] says why not
//!   here). It is their "QOperator" form; there is no QDQ form of a dynamic model.
//! - fp16 models, one form ([`fp16`]): FLOAT16 initializers cast to float.

pub mod dynamic;
pub mod fp16;
pub mod qdq;
pub mod qoperator;
pub mod tract_check;

use std::path::Path;

use prost::Message;
use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;
/// The protobuf type of an export, for callers without a tract-onnx dependency.
pub use tract_onnx::pb::ModelProto;

use crate::error::{QuantError, Result};
use crate::model::{Method, QuantizedModel};

/// The two ONNX forms of a quantized model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    QOperator,
    Qdq,
}

impl Form {
    pub fn from_name(s: &str) -> Option<Form> {
        match s {
            "qoperator" => Some(Form::QOperator),
            "qdq" => Some(Form::Qdq),
            _ => None,
        }
    }
}

/// The model in `form` as an ONNX `ModelProto`. Dynamic and fp16 models have one form
/// each, asked for as [`Form::QOperator`] (the form whose operators compute the
/// quantized arithmetic); asking for their QDQ form is an error that says so.
pub fn to_model_proto(model: &QuantizedModel, form: Form) -> Result<pb::ModelProto> {
    match (model.recipe.method, form) {
        (Method::Static | Method::Qat, Form::QOperator) => qoperator::to_model_proto(model),
        (Method::Static | Method::Qat, Form::Qdq) => qdq::to_model_proto(model),
        (Method::Dynamic, Form::QOperator) => dynamic::to_model_proto(model),
        (Method::Fp16, Form::QOperator) => fp16::to_model_proto(model),
        (Method::Fp32, _) => Err(QuantError::Config {
            key: "method".into(),
            msg: "an fp32 model is not quantized: there is no quantized form to export".into(),
        }),
        (m @ (Method::Dynamic | Method::Fp16), Form::Qdq) => Err(QuantError::Config {
            key: "form".into(),
            msg: format!(
                "a {} model has no QDQ form; export it as qoperator ({})",
                m.name(),
                if m == Method::Dynamic {
                    "quantization in plain ops + MatMulInteger/ConvInteger"
                } else {
                    "FLOAT16 weights cast to float"
                }
            ),
        }),
    }
}

/// The model in `form` as the bytes of an ONNX file, so a caller can refuse before it
/// writes anything.
pub fn to_bytes(model: &QuantizedModel, form: Form) -> Result<Vec<u8>> {
    Ok(to_model_proto(model, form)?.encode_to_vec())
}

/// Writes the model in `form` as an ONNX file (temp file + rename).
pub fn save(model: &QuantizedModel, form: Form, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(model, form)?;
    qbench_models::atomic::write_atomic(path, &bytes).map_err(|e| QuantError::Config {
        key: path.display().to_string(),
        msg: format!("cannot write the ONNX export: {e}"),
    })
}

/// The static forms need activation qparams, which only static (and QAT) models have.
pub(crate) fn require_static(model: &QuantizedModel) -> Result<()> {
    match model.recipe.method {
        Method::Static | Method::Qat => Ok(()),
        m => Err(QuantError::Config {
            key: "method".into(),
            msg: format!(
                "the static (QOperator/QDQ) export takes static models, not {}",
                m.name()
            ),
        }),
    }
}

pub(crate) fn raw_tensor(
    name: &str,
    dims: &[usize],
    dt: DataType,
    raw: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        raw_data: raw,
        ..Default::default()
    }
}

pub(crate) fn f32_tensor(name: &str, dims: &[usize], v: &[f32]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Float,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub(crate) fn i32_tensor(name: &str, dims: &[usize], v: &[i32]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Int32,
        v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

pub(crate) fn i8_tensor(name: &str, dims: &[usize], v: &[i8]) -> pb::TensorProto {
    raw_tensor(
        name,
        dims,
        DataType::Int8,
        v.iter().map(|&x| x as u8).collect(),
    )
}

pub(crate) fn u8_tensor(name: &str, dims: &[usize], v: &[u8]) -> pb::TensorProto {
    raw_tensor(name, dims, DataType::Uint8, v.to_vec())
}

pub(crate) fn node(
    name: impl Into<String>,
    op: &str,
    inputs: Vec<String>,
    outputs: Vec<String>,
) -> pb::NodeProto {
    pb::NodeProto {
        name: name.into(),
        op_type: op.to_string(),
        input: inputs,
        output: outputs,
        ..Default::default()
    }
}

/// The proto nodes models' exporter writes for each graph node (some ops become several
/// proto nodes, e.g. legacy Softmax), so fallback nodes keep their exact fp32 form.
pub(crate) fn proto_nodes_per_node(
    model: &QuantizedModel,
    base: &pb::ModelProto,
) -> Vec<Vec<pb::NodeProto>> {
    let g = base
        .graph
        .as_ref()
        .expect("models' exporter always writes a graph");
    let mut per = Vec::with_capacity(model.graph.nodes.len());
    let mut it = g.node.iter();
    for n in &model.graph.nodes {
        let mut group = Vec::new();
        for p in it.by_ref() {
            group.push(p.clone());
            if p.name == n.name {
                break;
            }
        }
        per.push(group);
    }
    per
}
