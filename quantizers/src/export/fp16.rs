//! The ONNX form of an fp16 model: the weights stored as FLOAT16 initializers, each
//! followed by a `Cast` to float, and the graph otherwise unchanged. It computes in f32
//! on the f16-rounded weights, which is exactly what the fp16 method means (PyTorch's
//! `dtype=torch.float16` dynamic quantization stores weights in f16, computes in f32);
//! an engine folds the casts at load.

use tract_onnx::pb;
use tract_onnx::pb::tensor_proto::DataType;

use super::{node, raw_tensor};
use crate::error::{QuantError, Result};
use crate::model::{Method, QuantizedModel};

/// The ONNX form of an fp16 model (module docs).
pub fn to_model_proto(model: &QuantizedModel) -> Result<pb::ModelProto> {
    if model.recipe.method != Method::Fp16 {
        return Err(QuantError::Config {
            key: "method".into(),
            msg: format!(
                "the fp16 export takes fp16 models, not {}",
                model.recipe.method.name()
            ),
        });
    }
    let mut proto = qbench_models::onnx::to_model_proto(&model.graph);
    let g = proto
        .graph
        .as_mut()
        .expect("models' exporter always writes a graph");
    let mut casts = Vec::new();
    for t in g.initializer.iter_mut() {
        if !model.fp16_weights.contains(&t.name) {
            continue;
        }
        let w = model
            .graph
            .initializers
            .get(&t.name)
            .ok_or_else(|| QuantError::Config {
                key: t.name.clone(),
                msg: "fp16 weight is not an initializer of the graph".into(),
            })?;
        let raw = w
            .f32s()?
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let name = t.name.clone();
        let f16_name = format!("{name}::f16");
        *t = raw_tensor(&f16_name, w.shape(), DataType::Float16, raw);
        let mut cast = node(format!("{name}::cast"), "Cast", vec![f16_name], vec![name]);
        cast.attribute.push(pb::AttributeProto {
            name: "to".into(),
            r#type: pb::attribute_proto::AttributeType::Int as i32,
            i: DataType::Float as i64,
            ..Default::default()
        });
        casts.push(cast);
    }
    casts.append(&mut g.node);
    g.node = casts;
    g.name = format!("{}:fp16", g.name);
    Ok(proto)
}
