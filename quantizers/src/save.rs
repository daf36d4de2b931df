//! Saves a [`QuantizedModel`] to safetensors and loads it back bit-identically.
//!
//! Layout of the file (format `qbench-quantized-2`):
//! - tensors `<node>.weight` (I8, the int8 layer's weights), `<node>.bias` (F32), and for
//!   fp16 models `<initializer>` (F16): what any safetensors reader sees by name;
//! - metadata (JSON strings, readable in the header): `format` and `recipe` (method,
//!   backend, qconfig, calibration size, fusions, version);
//! - tensor `qbench.model` (U8): deflate of `u32 LE length ‖ JSON ‖ ONNX`, where the JSON
//!   holds `layers` (per int8 layer: kind, fused ReLU, tensors, weight qparams),
//!   `activations` (qparams per tensor), `shapes`, `graph_weight_inputs`,
//!   `fp16_initializers` and `graph_bias_inputs`, and the ONNX is the fused fp32 graph
//!   with the weights stored above (and the int8 layers' float biases, stored once as
//!   `<node>.bias`) taken out of its initializers and declared as graph inputs instead, so
//!   the skeleton stays a valid ONNX graph without carrying float weights; load puts them
//!   back.
//!
//! Why compressed: the skeleton and the per-tensor qparams are about 20 KB of text and
//! protobuf whatever the model's size, a fifth of a small model's int8 file; deflated
//! they are a few KB (the int8 weights themselves are stored raw, as safetensors means).
//! Files of format `qbench-quantized-1` (the same parts as metadata strings and a
//! `graph.onnx` tensor) still load.
//!
//! Loading checks the model against its graph ([`crate::validate`]) before returning it,
//! and every load error names the file first.
//!
//! Scales travel as JSON numbers: serde_json writes the shortest decimal that parses
//! back to the same f32, so a loaded model computes exactly what the saved one did.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

use qbench_models::ir::{Dim, ValueInfo};
use qbench_models::onnx;
use qbench_models::tensor::Tensor;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{QuantError, Result};
use crate::model::{QLayer, QuantizedModel, Recipe};
use crate::qparams::QParams;
use crate::validate::{self, Invalid};
use erased::Json;

const FORMAT: &str = "qbench-quantized-2";
/// The first format: the parts of [`Parts`] as metadata strings and a `graph.onnx` tensor.
const FORMAT_1: &str = "qbench-quantized-1";
/// The tensor holding the deflated skeleton and JSON (format 2).
const BLOB: &str = "qbench.model";

/// The parts of a model besides its weights, as stored in the deflated blob.
#[derive(serde::Serialize, serde::Deserialize)]
struct Parts {
    layers: Vec<QLayer>,
    activations: BTreeMap<String, QParams>,
    shapes: BTreeMap<String, Vec<usize>>,
    graph_weight_inputs: Vec<String>,
    fp16_initializers: Vec<String>,
    /// `(initializer, layer)`: float biases taken out of the skeleton, rebuilt from the
    /// layer's `<node>.bias` at load (format 1 kept them in the skeleton).
    #[serde(default)]
    graph_bias_inputs: Vec<(String, String)>,
}

fn deflate(json: &[u8], onnx: &[u8]) -> Result<Vec<u8>> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let len = u32::try_from(json.len()).map_err(|_| QuantError::Config {
        key: "metadata".into(),
        msg: "more than 4 GiB of metadata".into(),
    })?;
    let io = |e: std::io::Error| QuantError::Config {
        key: BLOB.into(),
        msg: e.to_string(),
    };
    z.write_all(&len.to_le_bytes()).map_err(io)?;
    z.write_all(json).map_err(io)?;
    z.write_all(onnx).map_err(io)?;
    z.finish().map_err(io)
}

/// The blob's (JSON, ONNX) bytes.
fn inflate(blob: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut raw = Vec::new();
    // A crafted blob could inflate without end; no real skeleton comes near 1 GiB.
    flate2::read::DeflateDecoder::new(blob)
        .take(1 << 30)
        .read_to_end(&mut raw)
        .map_err(|e| file_err(path, format!("tensor {BLOB:?} does not inflate: {e}")))?;
    let bad = || file_err(path, format!("tensor {BLOB:?} is truncated"));
    let len = raw.get(..4).ok_or_else(bad)?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let json = raw.get(4..4 + len).ok_or_else(bad)?.to_vec();
    let onnx = raw[4 + len..].to_vec();
    Ok((json, onnx))
}

fn file_err(path: &Path, msg: impl Into<String>) -> QuantError {
    QuantError::File {
        file: path.display().to_string(),
        msg: msg.into(),
    }
}

/// The file's bytes (see the module docs for the layout).
pub fn to_bytes(model: &QuantizedModel) -> Result<Vec<u8>> {
    // A file qbench writes is one it loads: the same checks as load, before writing.
    validate::check(model).map_err(|e| QuantError::Config {
        key: "model".into(),
        msg: format!("refusing to save an invalid model: {e}"),
    })?;
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
    // An int8 layer's float bias is stored once, as `<node>.bias`: the skeleton's copy
    // (same bits, read by no other node) becomes a graph input and is rebuilt at load.
    let mut bias_inputs: Vec<(String, String)> = Vec::new();
    for l in &model.layers {
        let Some(bias) = &l.bias else { continue };
        let Some(node) = skeleton.nodes.iter().find(|n| n.name == l.node) else {
            continue;
        };
        let Some(name) = node.inputs.get(2).filter(|n| !n.is_empty()).cloned() else {
            continue;
        };
        let same_bits = skeleton.initializers.get(&name).is_some_and(|t| {
            t.f32s().is_ok_and(|v| {
                v.len() == bias.len() && v.iter().zip(bias).all(|(a, b)| a.to_bits() == b.to_bits())
            })
        });
        let read_elsewhere = skeleton
            .nodes
            .iter()
            .any(|n| n.name != l.node && n.inputs.contains(&name));
        if !same_bits || read_elsewhere || bias_inputs.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if let Some(t) = skeleton.initializers.remove(&name) {
            skeleton.inputs.push(ValueInfo {
                name: name.clone(),
                dims: t.shape().iter().map(|&d| Dim::Fixed(d)).collect(),
            });
            bias_inputs.push((name, l.node.clone()));
        }
    }
    let graph_bytes = onnx::export::to_bytes(&skeleton);
    let parts = Parts {
        graph_bias_inputs: bias_inputs,
        layers: model.layers.clone(),
        activations: model.activations.clone(),
        shapes: model.shapes.clone(),
        graph_weight_inputs: weight_inputs,
        fp16_initializers: model.fp16_weights.clone(),
    };
    let blob = deflate(parts.to_json()?.as_bytes(), &graph_bytes)?;

    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    owned.push((BLOB.into(), Dtype::U8, vec![blob.len()], blob));
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
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("recipe".to_string(), model.recipe.to_json()?),
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
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| QuantError::Config {
        key: "safetensors".into(),
        msg: e.to_string(),
    })?;
    canonical_header(bytes)
}

/// The same file with its JSON header's keys in sorted order. `safetensors::serialize`
/// takes the metadata as a `HashMap` and writes it in that map's (per-process random)
/// order, so two saves of one model differed in their bytes; sorted, a model has one
/// file, which caches, hashes and diffs as users expect. The tensors' data and their
/// offsets (relative to the end of the header) are untouched; the header is padded with
/// spaces to a multiple of 8 bytes, as the crate does.
fn canonical_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    #[derive(serde::Serialize, serde::Deserialize)]
    #[serde(untagged)]
    enum Entry {
        Metadata(BTreeMap<String, String>),
        Tensor(BTreeMap<String, serde_json::Value>),
    }
    let bad = |msg: String| QuantError::Config {
        key: "safetensors".into(),
        msg,
    };
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or_else(|| bad("serialized file shorter than its header length".into()))?;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| bad("serialized header runs past the file".into()))?;
    let entries: BTreeMap<String, Entry> =
        serde_json::from_slice(header).map_err(|e| bad(format!("serialized header: {e}")))?;
    let mut json = serde_json::to_vec(&entries).map_err(|e| bad(e.to_string()))?;
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + bytes.len() - 8 - n);
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    Ok(out)
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

/// Parses the bytes of a saved model and checks it against its graph
/// ([`crate::validate`]) before returning it: the one entry point every load goes
/// through. `path` names the file in every error, first.
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<QuantizedModel> {
    read(bytes, path).map_err(|e| match e {
        QuantError::File { .. } => e,
        // Errors of the crates below (the skeleton's import, a tensor's shape) name the
        // file when they were given it, and get it here when they were not.
        other if other.to_string().starts_with(&path.display().to_string()) => other,
        other => file_err(path, other.to_string()),
    })
}

/// Parses metadata `key`'s JSON `text`. A value of the wrong type or an unknown variant
/// is named by its key path inside the JSON (`layers[1].weight_q.scales`), and by its
/// layer when it is inside one, as [`crate::validate`] names what it refuses.
fn parse<T: serde::de::DeserializeOwned>(path: &Path, key: &str, text: &str) -> Result<T> {
    use serde_path_to_error::Segment;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| file_err(path, format!("metadata key {key:?} is not JSON: {e}")))?;
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let at = e.path().to_string();
        let full = match at.as_str() {
            "." => key.to_string(),
            _ if key == BLOB => at,
            p if p.starts_with('[') => format!("{key}{p}"),
            p => format!("{key}.{p}"),
        };
        // The layer: `layers[i]` of the blob, or `[i]` of format 1's `layers` string.
        let mut segs = e.path().iter();
        let layers = match (key, segs.next()) {
            (BLOB, Some(Segment::Map { key })) if key == "layers" => {
                value.get("layers").zip(segs.next())
            }
            ("layers", first) => Some(&value).zip(first),
            _ => None,
        };
        let subject = layers.and_then(|(layers, seg)| match seg {
            Segment::Seq { index } => layers
                .get(index)
                .and_then(|l| l.get("node"))
                .and_then(|n| n.as_str())
                .map(validate::layer_subject),
            _ => None,
        });
        let invalid = Invalid {
            subject,
            key: full,
            msg: e.into_inner().to_string(),
        };
        file_err(path, invalid.to_string())
    })
}

/// [`from_bytes`] before its errors are made to name the file.
fn read(bytes: &[u8], path: &Path) -> Result<QuantizedModel> {
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
    let format = field("format")?;
    let recipe: Recipe = parse(path, "recipe", field("recipe")?)?;
    let (parts, graph_bytes) = match format.as_str() {
        FORMAT => {
            let blob = st
                .tensor(BLOB)
                .map_err(|_| file_err(path, format!("tensor {BLOB:?} is missing")))?;
            let (json, onnx) = inflate(blob.data(), path)?;
            let json = std::str::from_utf8(&json)
                .map_err(|_| file_err(path, format!("tensor {BLOB:?}: JSON is not UTF-8")))?;
            (parse::<Parts>(path, BLOB, json)?, onnx)
        }
        FORMAT_1 => {
            let parts = Parts {
                layers: parse(path, "layers", field("layers")?)?,
                activations: parse(path, "activations", field("activations")?)?,
                shapes: parse(path, "shapes", field("shapes")?)?,
                graph_weight_inputs: parse(
                    path,
                    "graph_weight_inputs",
                    field("graph_weight_inputs")?,
                )?,
                fp16_initializers: parse(path, "fp16_initializers", field("fp16_initializers")?)?,
                graph_bias_inputs: Vec::new(),
            };
            let g = st
                .tensor("graph.onnx")
                .map_err(|_| file_err(path, "tensor \"graph.onnx\" is missing"))?;
            (parts, g.data().to_vec())
        }
        other => {
            return Err(file_err(
                path,
                format!("format {other:?}, expected {FORMAT:?} (or the older {FORMAT_1:?})"),
            ))
        }
    };
    let Parts {
        mut layers,
        activations,
        shapes,
        graph_weight_inputs: weight_inputs,
        fp16_initializers: fp16_weights,
        graph_bias_inputs: bias_inputs,
    } = parts;

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
    let mut graph = onnx::from_bytes(&graph_bytes, &path.display().to_string())?;
    for (i, l) in layers.iter_mut().enumerate() {
        let name = format!("{}.weight", l.node);
        let w = tensor(&name, Dtype::I8)?;
        if w.shape() != l.weight_shape.as_slice() {
            let invalid = Invalid {
                subject: Some(validate::layer_subject(&l.node)),
                key: format!("layers[{i}].weight_shape"),
                msg: format!(
                    "{:?}, but tensor {name:?} has shape {:?}",
                    l.weight_shape,
                    w.shape()
                ),
            };
            return Err(file_err(path, invalid.to_string()));
        }
        l.weight = w.data().iter().map(|&b| b as i8).collect();
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
    for (i, (name, node)) in bias_inputs.iter().enumerate() {
        // Named as the layer whose `<node>.bias` is put back as initializer `name`.
        let bad = |msg: String| {
            let invalid = Invalid {
                subject: Some(validate::layer_subject(node)),
                key: format!("graph_bias_inputs[{i}]"),
                msg: format!("bias {name:?}: {msg}"),
            };
            file_err(path, invalid.to_string())
        };
        let bias = layers
            .iter()
            .find(|l| &l.node == node)
            .and_then(|l| l.bias.clone())
            .ok_or_else(|| bad(format!("no layer {node:?} with a tensor \"{node}.bias\"")))?;
        let dims = graph
            .inputs
            .iter()
            .find(|i| &i.name == name)
            .map(|i| {
                i.dims
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(v) => Ok(*v),
                        _ => Err(bad("a symbolic dim in the skeleton".into())),
                    })
                    .collect::<Result<Vec<usize>>>()
            })
            .transpose()?
            .ok_or_else(|| bad("not an input of the skeleton".into()))?;
        // Checked here: the shape is the file's, and an element count that wraps could
        // match the bias's length.
        if dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(bias.len()) {
            return Err(bad(format!(
                "the skeleton declares shape {dims:?}, but tensor \"{node}.bias\" has {} values",
                bias.len()
            )));
        }
        let t = Tensor::new(dims, bias).map_err(|e| bad(e.to_string()))?;
        graph.initializers.insert(name.clone(), t);
    }
    graph.inputs.retain(|i| {
        !weight_inputs.contains(&i.name) && !bias_inputs.iter().any(|(n, _)| *n == i.name)
    });
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
    let model = QuantizedModel {
        graph,
        recipe,
        layers,
        activations,
        shapes,
        fp16_weights,
    };
    validate::check(&model).map_err(|e| file_err(path, e.to_string()))?;
    Ok(model)
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
