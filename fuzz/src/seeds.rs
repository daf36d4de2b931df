//! The valid inputs each format's mutations start from.
//!
//! - ONNX: the tiny hand-built models ([`crate::onnx_seeds`]) and the zoo's small trained
//!   models (mlp-mnist, digit-cnn, resnet-fashion). The "light" ImageNet layouts are left
//!   out: a 224×224 dry run costs a second a case.
//! - safetensors: files produced in-process by the quantizers crate from the tiny seeds
//!   (dynamic per-tensor and per-channel, static with calibrated activations, fp16), and
//!   mlp-mnist quantized dynamically: exactly what `qbench quantize` writes.
//! - IDX: small image and label files built in code, and the MNIST test labels.
//! - results: `reports/baseline.json`, a real sweep's results file, and the same file
//!   cut to its first cells (most cases: a 200 KB file costs 50 ms a case, and an edit
//!   lands in the header, config or runs more often in a short file).
//! - thresholds: `ci/thresholds.toml`, the gate's real rules.
//!
//! Seeds are built the same way in the parent and in every child, so a case number names
//! the same input in both. Tiny seeds are listed several times so that they get most of
//! the cases (they run a hundred times faster than the zoo's).

use std::path::{Path, PathBuf};

use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_quantizers::{Backend, DynamicOptions, QConfig, QConfigMap};

use crate::format::Format;

/// One seed input.
pub struct Seed {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The workspace root (the fuzz crate's parent), where the zoo and fixtures are.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("fuzz/ has a parent")
        .to_path_buf()
}

fn read(rel: &str) -> Option<Seed> {
    let path = workspace_root().join(rel);
    match std::fs::read(&path) {
        Ok(bytes) => Some(Seed {
            name: rel.to_string(),
            bytes,
        }),
        Err(e) => {
            eprintln!("qbench-fuzz: seed {} skipped: {e}", path.display());
            None
        }
    }
}

/// The seeds of `format`; never empty for a fuzzed format.
pub fn for_format(format: Format) -> Vec<Seed> {
    match format {
        Format::Onnx => onnx(),
        Format::Safetensors => safetensors(),
        Format::Idx => idx(),
        Format::Results => results(),
        Format::Thresholds => read("ci/thresholds.toml").into_iter().collect(),
        Format::Selftest => vec![Seed {
            name: "selftest".into(),
            bytes: Vec::new(),
        }],
    }
}

fn tiny_weighted() -> Vec<Seed> {
    let mut out = Vec::new();
    for _ in 0..4 {
        out.extend(
            crate::onnx_seeds::all()
                .into_iter()
                .map(|(name, bytes)| Seed { name, bytes }),
        );
    }
    out
}

fn onnx() -> Vec<Seed> {
    let mut out = tiny_weighted();
    for rel in [
        "models/zoo/mlp-mnist/model.onnx",
        "models/zoo/digit-cnn/model.onnx",
        "models/zoo/resnet-fashion/model.onnx",
    ] {
        out.extend(read(rel));
    }
    out
}

/// Quantized files made from the tiny seeds and mlp-mnist (module docs).
fn safetensors() -> Vec<Seed> {
    let mut out = Vec::new();
    let mut sources: Vec<(String, Vec<u8>)> = crate::onnx_seeds::all();
    sources.extend(read("models/zoo/mlp-mnist/model.onnx").map(|s| (s.name, s.bytes)));
    for (name, bytes) in sources {
        let Ok(graph) = qbench_models::onnx::from_bytes(&bytes, &name) else {
            continue;
        };
        let big = name.contains("mlp-mnist");
        let mut models = Vec::new();
        let mut dynamic = DynamicOptions::new(Backend::Fbgemm);
        dynamic.op_types = vec!["Gemm".into(), "MatMul".into(), "Conv".into()];
        models.push((
            "dynamic",
            qbench_quantizers::quantize_dynamic(&graph, &dynamic),
        ));
        if !big {
            dynamic.per_channel = true;
            models.push((
                "dynamic-per-channel",
                qbench_quantizers::quantize_dynamic(&graph, &dynamic),
            ));
            models.push(("static", quantize_static(&graph)));
            models.push(("fp16", qbench_quantizers::fp16::quantize_fp16(&graph)));
        }
        for (method, m) in models {
            let bytes = m.and_then(|m| qbench_quantizers::save::to_bytes(&m));
            match bytes {
                Ok(bytes) => out.push(Seed {
                    name: format!("{name}.{method}.safetensors"),
                    bytes,
                }),
                // Some tiny seeds have nothing to quantize for some methods.
                Err(_) => continue,
            }
        }
    }
    out
}

/// Static quantization calibrated on one random batch of the graph's input.
fn quantize_static(
    graph: &qbench_models::ir::Graph,
) -> qbench_quantizers::Result<qbench_quantizers::QuantizedModel> {
    let backend = Backend::Fbgemm;
    let mut p =
        qbench_quantizers::prepare(graph, backend, QConfigMap::global(QConfig::preset(backend)))?;
    let shape: Vec<usize> = graph
        .inputs
        .first()
        .map(|vi| {
            vi.dims
                .iter()
                .map(|d| match d {
                    qbench_models::ir::Dim::Fixed(n) => *n,
                    qbench_models::ir::Dim::Symbolic(_) => 1,
                })
                .collect()
        })
        .unwrap_or_default();
    let n = shape.iter().product();
    let batch = Tensor::new(shape, Rng::new(7).uniforms_f32(n, -1.0, 1.0))?;
    p.calibrate(std::iter::once(&batch), |_, _| {})?;
    p.convert()
}

fn idx() -> Vec<Seed> {
    use qbench_models::idx::encode_idx;
    let mut out = vec![
        Seed {
            name: "images-3x4x4".into(),
            bytes: encode_idx(&[3, 4, 4], &(0..48).collect::<Vec<u8>>()),
        },
        Seed {
            name: "labels-5".into(),
            bytes: encode_idx(&[5], &[0, 1, 2, 3, 9]),
        },
    ];
    // The real MNIST test labels, decompressed (the mutator gzips on its own).
    if let Some(s) = read("models/data/mnist/t10k-labels-idx1-ubyte.gz") {
        let mut plain = Vec::new();
        use std::io::Read;
        if flate2::read::GzDecoder::new(&s.bytes[..])
            .read_to_end(&mut plain)
            .is_ok()
        {
            out.push(Seed {
                name: "mnist-t10k-labels".into(),
                bytes: plain,
            });
        }
    }
    out
}

/// The baseline, and three times the baseline cut to its first 6 cells.
fn results() -> Vec<Seed> {
    let Some(full) = read("reports/baseline.json") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&full.bytes) {
        if let Some(cells) = v.get_mut("cells").and_then(|c| c.as_array_mut()) {
            cells.truncate(6);
            let bytes = serde_json::to_vec_pretty(&v).expect("a Value serialises");
            for _ in 0..3 {
                out.push(Seed {
                    name: "reports/baseline.json (6 cells)".into(),
                    bytes: bytes.clone(),
                });
            }
        }
    }
    out.push(full);
    out
}
