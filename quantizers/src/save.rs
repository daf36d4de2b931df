//! Saves a [`QuantizedModel`] to safetensors and loads it back bit-identically.
//!
//! Layout of the file:
//! - tensors `<node>.weight` (I8, the int8 layer's weights), `<node>.bias` (F32), and for
//!   fp16 models `<initializer>` (F16);
//! - tensor `graph.onnx` (U8): the fused fp32 graph as ONNX, with the weights stored
//!   above taken out of its initializers and declared as graph inputs instead (so the
//!   skeleton stays a valid ONNX graph without carrying float weights);
//! - metadata (JSON strings): `format`, `recipe` (method, backend, qconfig, calibration
//!   size, fusions, version), `layers` (per int8 layer: kind, fused ReLU, tensors, weight
//!   qparams), `activations` (qparams per tensor), `shapes`, `graph_weight_inputs`,
//!   `fp16_initializers`.
//!
//! Scales travel as JSON numbers: serde_json writes the shortest decimal that parses
//! back to the same f32, so a loaded model computes exactly what the saved one did.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use qbench_models::ir::{Dim, ValueInfo};
use qbench_models::onnx;
use qbench_models::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{QuantError, Result};
use crate::model::{QLayer, QuantizedModel, Recipe};
use crate::qparams::QParams;

const FORMAT: &str = "qbench-quantized-1";

fn file_err(path: &Path, msg: impl Into<String>) -> QuantError {
    QuantError::File {
        file: path.display().to_string(),
        msg: msg.into(),
    }
}

/// The file's bytes (see the module docs for the layout).
pub fn to_bytes(model: &QuantizedModel) -> Result<Vec<u8>> {
    let mut skeleton = model.graph.clone();
    let mut weight_inputs = Vec::new();
    for l in &model.layers {
        if !skeleton.initializers.contains_key(&l.weight_name)
            && !weight_inputs.contains(&l.weight_name)
            && skeleton
                .nodes
                .iter()
                .any(|n| n.inputs.contains(&l.weight_name))
        {
            weight_inputs.push(l.weight_name.clone());
        }
    }
    let mut fp16_tensors: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for name in &model.fp16_weights {
        let t = skeleton
            .initializers
            .remove(name)
            .ok_or_else(|| QuantError::Config {
                key: name.clone(),
                msg: "fp16 weight is not an initializer of the graph".into(),
            })?;
        let bytes = t
            .f32s()?
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        fp16_tensors.push((name.clone(), bytes, t.shape().to_vec()));
        weight_inputs.push(name.clone());
    }
    for name in &weight_inputs {
        let shape = model
            .layers
            .iter()
            .find(|l| &l.weight_name == name)
            .map(|l| l.weight_shape.clone())
            .or_else(|| {
                fp16_tensors
                    .iter()
                    .find(|(n, ..)| n == name)
                    .map(|(_, _, s)| s.clone())
            })
            .unwrap_or_default();
        skeleton.inputs.push(ValueInfo {
            name: name.clone(),
            dims: shape.into_iter().map(Dim::Fixed).collect(),
        });
    }
    let graph_bytes = onnx::export::to_bytes(&skeleton);

    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    owned.push((
        "graph.onnx".into(),
        Dtype::U8,
        vec![graph_bytes.len()],
        graph_bytes,
    ));
    for l in &model.layers {
        owned.push((
            format!("{}.weight", l.node),
            Dtype::I8,
            l.weight_shape.clone(),
            l.weight.iter().map(|&v| v as u8).collect(),
        ));
        if let Some(b) = &l.bias {
            owned.push((
                format!("{}.bias", l.node),
                Dtype::F32,
                vec![b.len()],
                b.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
        }
    }
    for (name, bytes, shape) in fp16_tensors {
        owned.push((name, Dtype::F16, shape, bytes));
    }
    let json = |v: &dyn erased::Json| v.to_json();
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("recipe".to_string(), json(&model.recipe)?),
        ("layers".to_string(), json(&model.layers)?),
        ("activations".to_string(), json(&model.activations)?),
        ("shapes".to_string(), json(&model.shapes)?),
        ("graph_weight_inputs".to_string(), json(&weight_inputs)?),
        ("fp16_initializers".to_string(), json(&model.fp16_weights)?),
    ]
    .into_iter()
    .collect();
    let views = owned
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| QuantError::Config {
                    key: name.clone(),
                    msg: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| QuantError::Config {
        key: "safetensors".into(),
        msg: e.to_string(),
    })
}

/// Writes the model atomically.
pub fn save(model: &QuantizedModel, path: &Path) -> Result<()> {
    let bytes = to_bytes(model)?;
    qbench_models::atomic::write_atomic(path, &bytes).map_err(|e| file_err(path, e.to_string()))
}

/// Reads a model written by [`save`]; every error names the file and what is wrong.
pub fn load(path: &Path) -> Result<QuantizedModel> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, e.to_string()))?;
    from_bytes(&bytes, path)
}

/// Parses the bytes of a saved model; `path` names it in errors.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<QuantizedModel> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| file_err(path, format!("not a safetensors file: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| file_err(path, "no qbench metadata (not a qbench quantized model)"))?;
    let field = |key: &str| -> Result<&String> {
        meta.get(key)
            .ok_or_else(|| file_err(path, format!("metadata key {key:?} is missing")))
    };
    if field("format")? != FORMAT {
        return Err(file_err(
            path,
            format!("format {:?}, expected {FORMAT:?}", field("format")?),
        ));
    }
    fn parse<T: serde::de::DeserializeOwned>(path: &Path, key: &str, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| file_err(path, format!("metadata key {key:?}: {e}")))
    }
    let recipe: Recipe = parse(path, "recipe", field("recipe")?)?;
    let mut layers: Vec<QLayer> = parse(path, "layers", field("layers")?)?;
    let activations: BTreeMap<String, QParams> = parse(path, "activations", field("activations")?)?;
    let shapes: BTreeMap<String, Vec<usize>> = parse(path, "shapes", field("shapes")?)?;
    let weight_inputs: Vec<String> =
        parse(path, "graph_weight_inputs", field("graph_weight_inputs")?)?;
    let fp16_weights: Vec<String> = parse(path, "fp16_initializers", field("fp16_initializers")?)?;

    let tensor = |name: &str, dtype: Dtype| {
        let t = st
            .tensor(name)
            .map_err(|_| file_err(path, format!("tensor {name:?} is missing")))?;
        if t.dtype() != dtype {
            return Err(file_err(
                path,
                format!("tensor {name:?} is {:?}, expected {dtype:?}", t.dtype()),
            ));
        }
        Ok(t)
    };
    let graph_view = tensor("graph.onnx", Dtype::U8)?;
    let mut graph = onnx::from_bytes(graph_view.data(), &path.display().to_string())?;
    graph.inputs.retain(|i| !weight_inputs.contains(&i.name));
    for l in &mut layers {
        let w = tensor(&format!("{}.weight", l.node), Dtype::I8)?;
        if w.shape() != l.weight_shape.as_slice() {
            return Err(file_err(
                path,
                format!(
                    "{}.weight has shape {:?}, expected {:?}",
                    l.node,
                    w.shape(),
                    l.weight_shape
                ),
            ));
        }
        l.weight = w.data().iter().map(|&b| b as i8).collect();
        let want_scales = match l.weight_q.spec.granularity {
            crate::qparams::Granularity::PerTensor => 1,
            crate::qparams::Granularity::PerChannel { .. } => l.weight_shape[0],
        };
        if l.weight_q.scales.len() != want_scales || l.weight_q.zero_points.len() != want_scales {
            return Err(file_err(
                path,
                format!(
                    "layer {:?}: {} weight scales, expected {want_scales}",
                    l.node,
                    l.weight_q.scales.len()
                ),
            ));
        }
        let bias_name = format!("{}.bias", l.node);
        l.bias = match st.tensor(&bias_name) {
            Ok(_) => {
                let b = tensor(&bias_name, Dtype::F32)?;
                Some(
                    b.data()
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                )
            }
            Err(_) => None,
        };
    }
    for name in &fp16_weights {
        let t = tensor(name, Dtype::F16)?;
        let data = t
            .data()
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        graph
            .initializers
            .insert(name.clone(), Tensor::new(t.shape().to_vec(), data)?);
    }
    Ok(QuantizedModel {
        graph,
        recipe,
        layers,
        activations,
        shapes,
        fp16_weights,
    })
}

/// JSON for the metadata values, through one object-safe door.
mod erased {
    use crate::error::{QuantError, Result};

    pub trait Json {
        fn to_json(&self) -> Result<String>;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<String> {
            serde_json::to_string(self).map_err(|e| QuantError::Config {
                key: "metadata".into(),
                msg: e.to_string(),
            })
        }
    }
}
