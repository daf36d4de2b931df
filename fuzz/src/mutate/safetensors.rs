//! Structure-aware mutation of quantized `.safetensors` files (`qbench quantize`'s
//! output, format `qbench-quantized-2`, see quantizers/src/save.rs).
//!
//! A file is split into its JSON header and its tensors. One edit hits one layer of the
//! format: the safetensors header itself (dtypes, shapes, data offsets, the header length
//! field), the `recipe` metadata string, the JSON inside the deflated `qbench.model` blob
//! (layers, weight shapes, scale and zero-point lists, activation qparams, shapes), the
//! ONNX skeleton inside that blob (through [`super::onnx`]), or a tensor's data. After an
//! edit of the blob or of tensor data the file is laid out again with consistent offsets,
//! so the edit reaches the loader's checks instead of stopping at the container.

use std::io::{Read, Write};

use qbench_models::rng::Rng;
use serde_json::{Map, Value};

use super::Draw;

/// The blob tensor of format 2.
const BLOB: &str = "qbench.model";

/// A split file: the header (tensor entries and `__metadata__`) and each tensor's bytes.
struct File {
    header: Map<String, Value>,
    /// Tensor names in data order, with their bytes.
    tensors: Vec<(String, Vec<u8>)>,
}

fn split(bytes: &[u8]) -> Option<File> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: Map<String, Value> =
        serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data = &bytes[8 + n..];
    let mut tensors: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (name, entry) in &header {
        let Some(off) = entry.get("data_offsets").and_then(Value::as_array) else {
            continue;
        };
        let a = off.first()?.as_u64()? as usize;
        let b = off.get(1)?.as_u64()? as usize;
        tensors.push((a, name.clone(), data.get(a..b)?.to_vec()));
    }
    tensors.sort_by_key(|t| t.0);
    Some(File {
        header,
        tensors: tensors.into_iter().map(|(_, n, d)| (n, d)).collect(),
    })
}

/// Lays the tensors out again and writes the header with their offsets.
fn join(mut f: File) -> Vec<u8> {
    let mut data = Vec::new();
    for (name, bytes) in &f.tensors {
        let (a, b) = (data.len(), data.len() + bytes.len());
        data.extend(bytes);
        if let Some(Value::Object(e)) = f.header.get_mut(name) {
            e.insert("data_offsets".into(), Value::from(vec![a, b]));
            // The blob is a U8 vector: its shape is its length, which an edit changes.
            if name == BLOB {
                e.insert("shape".into(), Value::from(vec![bytes.len()]));
            }
        }
    }
    raw(&Value::Object(f.header), &data)
}

/// `header` serialised (padded to 8 bytes as safetensors writes it), then `data`.
fn raw(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut json = serde_json::to_vec(header).expect("a Value serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + data.len());
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(data);
    out
}

/// Mutates the quantized file `seed` into `out`; returns the labels.
pub fn mutate(rng: &mut Rng, seed: &[u8], out: &mut Vec<u8>) -> Vec<String> {
    let Some(mut f) = split(seed) else {
        out.extend_from_slice(seed);
        return vec![super::bytes(rng, out)];
    };
    let mut labels = Vec::new();
    let bytes = match rng.below(10) {
        0..=3 => {
            labels.extend(blob_json(rng, &mut f));
            join(f)
        }
        4 | 5 => {
            labels.extend(blob_onnx(rng, &mut f));
            join(f)
        }
        6 => {
            labels.extend(recipe(rng, &mut f));
            join(f)
        }
        7 => {
            labels.push(tensor_data(rng, &mut f));
            join(f)
        }
        8 => {
            // The header as it is read: offsets, shapes and dtypes edited after layout.
            let joined = join(f);
            let n = u64::from_le_bytes(joined[..8].try_into().expect("8 bytes")) as usize;
            let mut header: Value =
                serde_json::from_slice(&joined[8..8 + n]).expect("join wrote JSON");
            let edits = 1 + rng.below(2);
            labels.extend(super::json::mutate(rng, &mut header, edits));
            raw(&header, &joined[8 + n..])
        }
        _ => {
            let mut b = join(f);
            let v = [u64::MAX, 1 << 32, 0, 7, (b.len() as u64).saturating_add(1)][rng.below(5)];
            b[..8].copy_from_slice(&v.to_le_bytes());
            labels.push(format!("header length field = {v}"));
            b
        }
    };
    out.extend(bytes);
    if rng.one_in(8) {
        labels.push(super::bytes(rng, out));
    }
    labels
}

/// The blob's (JSON, ONNX), if it inflates.
fn inflate(blob: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(blob)
        .take(64 << 20)
        .read_to_end(&mut raw)
        .ok()?;
    let len = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let json = raw.get(4..4 + len)?.to_vec();
    let onnx = raw[4 + len..].to_vec();
    Some((json, onnx))
}

fn deflate(json: &[u8], onnx: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(&(json.len() as u32).to_le_bytes())
        .and_then(|()| z.write_all(json))
        .and_then(|()| z.write_all(onnx))
        .expect("writing to a Vec");
    z.finish().expect("writing to a Vec")
}

fn blob_mut(f: &mut File) -> Option<&mut Vec<u8>> {
    f.tensors
        .iter_mut()
        .find(|(n, _)| n == BLOB)
        .map(|(_, d)| d)
}

/// Edits the `qbench.model` JSON (layers, qparams, shapes).
fn blob_json(rng: &mut Rng, f: &mut File) -> Vec<String> {
    let Some(blob) = blob_mut(f) else {
        return vec!["no blob".into()];
    };
    let Some((json, onnx)) = inflate(blob) else {
        return vec!["blob does not inflate".into()];
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&json) else {
        return vec!["blob JSON does not parse".into()];
    };
    let edits = 1 + rng.below(3);
    let labels = super::json::mutate(rng, &mut v, edits)
        .into_iter()
        .map(|l| format!("{BLOB} {l}"))
        .collect();
    let json = serde_json::to_vec(&v).expect("a Value serialises");
    *blob = deflate(&json, &onnx);
    labels
}

/// Edits the ONNX skeleton inside the blob.
fn blob_onnx(rng: &mut Rng, f: &mut File) -> Vec<String> {
    let Some(blob) = blob_mut(f) else {
        return vec!["no blob".into()];
    };
    let Some((json, onnx)) = inflate(blob) else {
        return vec!["blob does not inflate".into()];
    };
    let mut mutated = Vec::new();
    let labels = super::onnx::mutate(rng, &onnx, &mut mutated)
        .into_iter()
        .map(|l| format!("{BLOB} skeleton {l}"))
        .collect();
    *blob = deflate(&json, &mutated);
    labels
}

/// Edits the recipe (a JSON string inside the header's metadata).
fn recipe(rng: &mut Rng, f: &mut File) -> Vec<String> {
    let Some(Value::Object(meta)) = f.header.get_mut("__metadata__") else {
        return vec!["no metadata".into()];
    };
    let Some(Value::String(text)) = meta.get_mut("recipe") else {
        return vec!["no recipe".into()];
    };
    let Ok(mut v) = serde_json::from_str::<Value>(text) else {
        return vec!["recipe does not parse".into()];
    };
    let labels = super::json::mutate(rng, &mut v, 1)
        .into_iter()
        .map(|l| format!("recipe {l}"))
        .collect();
    *text = v.to_string();
    labels
}

/// Bytes per element of a safetensors dtype.
fn dtype_size(dtype: &str) -> usize {
    match dtype {
        "F32" | "I32" | "U32" => 4,
        "F16" | "BF16" | "I16" | "U16" => 2,
        "F64" | "I64" | "U64" => 8,
        _ => 1,
    }
}

/// Changes one tensor's shape (rank, a dim, or zero elements) and resizes its data to
/// match, so the container stays valid and the edit reaches qbench's own checks of
/// weight shapes, bias lengths and scale counts; or, sometimes, cuts the data alone.
fn tensor_data(rng: &mut Rng, f: &mut File) -> String {
    if f.tensors.is_empty() {
        return "no tensors".into();
    }
    let k = rng.below(f.tensors.len());
    let (name, data) = &mut f.tensors[k];
    let Some(Value::Object(entry)) = f.header.get_mut(name.as_str()) else {
        return format!("tensor {name:?} has no header entry");
    };
    let size = dtype_size(entry.get("dtype").and_then(Value::as_str).unwrap_or("U8"));
    let mut shape: Vec<usize> = entry
        .get("shape")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect()
        })
        .unwrap_or_default();
    let what = match rng.below(6) {
        0 => {
            shape.pop();
            "rank -1"
        }
        1 => {
            shape.insert(rng.below(shape.len() + 1), 1);
            "rank +1"
        }
        2 => {
            shape.clear();
            "rank 0"
        }
        3 if !shape.is_empty() => {
            let at = rng.below(shape.len());
            shape[at] = 0;
            "a dim 0"
        }
        4 if !shape.is_empty() => {
            let at = rng.below(shape.len());
            shape[at] = if rng.one_in(2) {
                shape[at].saturating_add(1)
            } else {
                shape[at].saturating_sub(1)
            };
            "a dim ±1"
        }
        _ => {
            let keep = rng.below(data.len().max(1));
            data.truncate(keep);
            return format!("tensor {name:?} data cut to {keep} bytes");
        }
    };
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .unwrap_or(usize::MAX);
    if n > 1 << 20 {
        return format!("tensor {name:?}: {what} left alone (too large)");
    }
    data.resize(n * size, 1);
    entry.insert("shape".into(), Value::from(shape.clone()));
    format!("tensor {name:?}: {what} -> {shape:?}")
}
