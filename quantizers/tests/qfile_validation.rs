//! Quantized files are validated on load (issue 18, item 3): a valid file written by
//! `save::save` is corrupted here, one field of its `qbench.model` metadata or one tensor
//! at a time, and loading it (then planning and running it, as `eval` would) must give a
//! clean error that names the file, the layer (or tensor) and the key: never a panic,
//! never a silent acceptance.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_quantizers::{prepare, save, Backend, QConfig, QConfigMap, QExecutor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde_json::{json, Value};

fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// x[N,2,6,6] → Conv 3x3 pad 1 (4 out, bias) → Relu → MaxPool 2 → Flatten → Gemm (36 → 5).
fn small_cnn() -> Graph {
    let mut rng = Rng::new(18);
    let mut t = |shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        Tensor::new(shape, rng.uniforms_f32(n, -scale, scale)).unwrap()
    };
    let mut init = BTreeMap::new();
    init.insert("w1".to_string(), t(vec![4, 2, 3, 3], 0.5));
    init.insert("b1".to_string(), t(vec![4], 0.1));
    init.insert("w2".to_string(), t(vec![5, 36], 0.3));
    init.insert("b2".to_string(), t(vec![5], 0.1));
    let conv = Op::Conv {
        spatial: Spatial {
            pads: [1, 1, 1, 1],
            ..Spatial::default()
        },
        group: 1,
    };
    let pool = Op::MaxPool {
        spatial: Spatial {
            kernel: Some([2, 2]),
            strides: [2, 2],
            ..Spatial::default()
        },
    };
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    Graph {
        name: "small_cnn".into(),
        inputs: vec![ValueInfo {
            name: "x".into(),
            dims: vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(6),
                Dim::Fixed(6),
            ],
        }],
        outputs: vec![ValueInfo {
            name: "y".into(),
            dims: vec![],
        }],
        initializers: init,
        nodes: vec![
            node("conv", conv, &["x", "w1", "b1"], &["c"]),
            node("relu", Op::Relu, &["c"], &["r"]),
            node("pool", pool, &["r"], &["p"]),
            node("flat", Op::Flatten { axis: 1 }, &["p"], &["f"]),
            node("fc", gemm, &["f", "w2", "b2"], &["y"]),
        ],
    }
}

fn input(batch: usize, seed: u64) -> Tensor {
    let n = batch * 72;
    Tensor::new(
        vec![batch, 2, 6, 6],
        Rng::new(seed).uniforms_f32(n, -1.0, 1.0),
    )
    .unwrap()
}

/// A scratch file path for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qbench-qfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The bytes of a valid static model (fbgemm: per-channel weights, 7-bit activations)
/// written by the crate's own save path (to a file of its own: tests run in parallel),
/// with a zoo path as its recipe's source.
fn valid_file(test: &str) -> Vec<u8> {
    let g = small_cnn();
    let mut p = prepare(
        &g,
        Backend::Fbgemm,
        QConfigMap::global(QConfig::preset(Backend::Fbgemm)),
    )
    .unwrap();
    p.calibrate([input(4, 1), input(4, 2)].iter(), |_, _| {})
        .unwrap();
    let mut m = p.convert().unwrap();
    m.recipe.source = "models/zoo/small-cnn/model.onnx".into();
    let path = scratch(&format!("{test}.valid.safetensors"));
    save::save(&m, &path).unwrap();
    std::fs::read(&path).unwrap()
}

/// A saved file taken apart: its metadata strings, the `qbench.model` JSON and ONNX
/// skeleton, and its other tensors.
struct Parts {
    meta: BTreeMap<String, String>,
    json: Value,
    onnx: Vec<u8>,
    tensors: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Parts {
    fn open(bytes: &[u8]) -> Parts {
        let st = SafeTensors::deserialize(bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let meta = header.metadata().clone().unwrap().into_iter().collect();
        let mut tensors = BTreeMap::new();
        for (name, t) in st.tensors() {
            tensors.insert(name, (t.dtype(), t.shape().to_vec(), t.data().to_vec()));
        }
        let (_, _, blob) = tensors.remove("qbench.model").unwrap();
        let mut raw = Vec::new();
        flate2::read::DeflateDecoder::new(&blob[..])
            .read_to_end(&mut raw)
            .unwrap();
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        let json = serde_json::from_slice(&raw[4..4 + len]).unwrap();
        let onnx = raw[4 + len..].to_vec();
        Parts {
            meta,
            json,
            onnx,
            tensors,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&self.json).unwrap();
        let mut raw = (json.len() as u32).to_le_bytes().to_vec();
        raw.extend(json);
        raw.extend(&self.onnx);
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&raw).unwrap();
        let blob = z.finish().unwrap();
        let mut views = vec![(
            "qbench.model".to_string(),
            TensorView::new(Dtype::U8, vec![blob.len()], &blob).unwrap(),
        )];
        for (name, (dtype, shape, data)) in &self.tensors {
            views.push((
                name.clone(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            ));
        }
        let meta = self.meta.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).unwrap()
    }

    /// The JSON of the layer of node `name`.
    fn layer(&mut self, name: &str) -> &mut Value {
        self.json["layers"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|l| l["node"] == name)
            .unwrap()
    }

    /// Replaces tensor `name`'s shape and data (same dtype).
    fn set_tensor(&mut self, name: &str, shape: Vec<usize>, data: Vec<u8>) {
        let t = self.tensors.get_mut(name).unwrap();
        t.1 = shape;
        t.2 = data;
    }
}

/// Loads `bytes` from a file, then plans and runs the model, as `eval` would: `Ok` when
/// all of it worked, the error's text when one step refused, "PANIC: ..." on a panic.
fn outcome(bytes: &[u8], path: &Path) -> Result<(), String> {
    std::fs::write(path, bytes).unwrap();
    let run = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let m = save::load(path).map_err(|e| e.to_string())?;
        let exec = QExecutor::new(&m).map_err(|e| e.to_string())?;
        exec.run(&[input(1, 3)]).map_err(|e| e.to_string())?;
        Ok(())
    }));
    match run {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("PANIC: {msg}"))
        }
    }
}

/// Corrupts a valid file with `edit`, and checks that loading it is refused with an
/// error naming the file and every one of `names`. With `QBENCH_QFILE_SURVEY` set, every
/// case prints its verdict and none fails the test (to survey a tree case by case).
fn assert_refused(test: &str, edit: impl FnOnce(&mut Parts), names: &[&str]) {
    let mut parts = Parts::open(&valid_file(test));
    edit(&mut parts);
    let path = scratch(&format!("{test}.safetensors"));
    let verdict = verdict(outcome(&parts.to_bytes(), &path), &path, names);
    eprintln!(
        "case {test}: {}",
        match &verdict {
            Ok(err) => format!("refused: {err}"),
            Err(why) => format!("FAIL: {why}"),
        }
    );
    if let Err(why) = verdict {
        if std::env::var_os("QBENCH_QFILE_SURVEY").is_none() {
            panic!("{test}: {why}");
        }
    }
}

/// `Ok(error)` when `outcome` is a clean refusal naming `path` and `names` (and not the
/// source model), else why not.
fn verdict(outcome: Result<(), String>, path: &Path, names: &[&str]) -> Result<String, String> {
    let err = match outcome {
        Ok(()) => return Err("the corrupt file was accepted".into()),
        Err(e) if e.starts_with("PANIC") => return Err(e),
        Err(e) => e,
    };
    let file = path.display().to_string();
    if !err.contains(&file) {
        return Err(format!("the error does not name {file}: {err}"));
    }
    if let Some(name) = names.iter().find(|n| !err.contains(**n)) {
        return Err(format!("the error does not name {name}: {err}"));
    }
    if err.contains("models/zoo") {
        return Err(format!("the error names the source model: {err}"));
    }
    Ok(err)
}

#[test]
fn the_valid_file_loads_plans_and_runs() {
    let bytes = valid_file("valid");
    // Taken apart and put back together unchanged, it still loads: the corruptions
    // below are the only difference.
    let parts = Parts::open(&bytes);
    let acts: Vec<&String> = parts.json["activations"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(acts, ["f", "r", "x", "y"], "the tensors the tests corrupt");
    let again = parts.to_bytes();
    for (i, b) in [bytes, again].iter().enumerate() {
        outcome(b, &scratch(&format!("valid-{i}.safetensors"))).unwrap();
    }
}

#[test]
fn empty_activation_scales_are_refused() {
    assert_refused(
        "empty_activation_scales",
        |p| p.json["activations"]["x"]["scales"] = json!([]),
        &["\"x\"", "scales"],
    );
    assert_refused(
        "empty_activation_zero_points",
        |p| p.json["activations"]["r"]["zero_points"] = json!([]),
        &["\"r\"", "zero_points"],
    );
}

#[test]
fn a_conv_weight_of_rank_3_is_refused() {
    assert_refused(
        "conv_rank_3",
        |p| {
            p.layer("conv")["weight_shape"] = json!([4, 2, 9]);
            let data = p.tensors["conv.weight"].2.clone();
            p.set_tensor("conv.weight", vec![4, 2, 9], data);
        },
        &["\"conv\"", "weight_shape"],
    );
}

#[test]
fn a_linear_weight_of_rank_1_is_refused() {
    assert_refused(
        "linear_rank_1",
        |p| {
            p.layer("fc")["weight_shape"] = json!([180]);
            let data = p.tensors["fc.weight"].2.clone();
            p.set_tensor("fc.weight", vec![180], data);
        },
        &["\"fc\"", "weight_shape"],
    );
}

#[test]
fn a_per_channel_layer_with_a_scalar_weight_is_refused() {
    for layer in ["conv", "fc"] {
        assert_refused(
            &format!("scalar_weight_{layer}"),
            |p| {
                p.layer(layer)["weight_shape"] = json!([]);
                p.set_tensor(&format!("{layer}.weight"), vec![], vec![1]);
            },
            &[&format!("\"{layer}\""), "weight_shape"],
        );
    }
}

#[test]
fn zero_and_negative_weight_scales_are_refused() {
    for (name, v) in [("zero", json!(0.0)), ("negative", json!(-1.0))] {
        assert_refused(
            &format!("weight_scale_{name}"),
            |p| p.layer("conv")["weight_q"]["scales"][1] = v,
            &["\"conv\"", "weight_q.scales[1]"],
        );
    }
    assert_refused(
        "activation_scale_zero",
        |p| p.json["activations"]["f"]["scales"][0] = json!(0.0),
        &["\"f\"", "scales[0]"],
    );
}

#[test]
fn non_finite_scales_are_refused() {
    // JSON has no NaN or Inf, but a number beyond f32's range reads as Inf.
    assert_refused(
        "weight_scale_inf",
        |p| p.layer("fc")["weight_q"]["scales"][2] = json!(1e300),
        &["\"fc\"", "weight_q.scales[2]"],
    );
    assert_refused(
        "activation_scale_inf",
        |p| p.json["activations"]["y"]["scales"][0] = json!(1e300),
        &["\"y\"", "scales[0]"],
    );
}

#[test]
fn zero_points_out_of_range_are_refused() {
    // qint8 weights: 200 is not an i8.
    assert_refused(
        "weight_zero_point_200",
        |p| p.layer("conv")["weight_q"]["zero_points"][0] = json!(200),
        &["\"conv\"", "weight_q.zero_points[0]"],
    );
    // quint8 activations: -1 is not a u8; 200 is a u8 but outside fbgemm's 0..=127.
    for (name, v) in [("minus_1", -1), ("200", 200), ("300", 300)] {
        assert_refused(
            &format!("activation_zero_point_{name}"),
            |p| p.json["activations"]["r"]["zero_points"][0] = json!(v),
            &["\"r\"", "zero_points[0]"],
        );
    }
    // A grid outside its dtype: qmax 255 for qint8 weights.
    assert_refused(
        "weight_qmax_255",
        |p| p.layer("fc")["weight_q"]["spec"]["qmax"] = json!(255),
        &["\"fc\"", "weight_q.spec"],
    );
}

#[test]
fn per_channel_counts_must_match_the_output_channels() {
    assert_refused(
        "conv_three_scales",
        |p| {
            let q = &mut p.layer("conv")["weight_q"];
            q["scales"].as_array_mut().unwrap().pop();
            q["zero_points"].as_array_mut().unwrap().pop();
        },
        &["\"conv\"", "weight_q.scales"],
    );
    assert_refused(
        "fc_zero_points_short",
        |p| {
            p.layer("fc")["weight_q"]["zero_points"]
                .as_array_mut()
                .unwrap()
                .pop();
        },
        &["\"fc\"", "weight_q.zero_points"],
    );
    assert_refused(
        "conv_axis_1",
        |p| {
            p.layer("conv")["weight_q"]["spec"]["granularity"] = json!({"per_channel": {"axis": 1}})
        },
        &["\"conv\"", "axis"],
    );
    assert_refused(
        "conv_bias_short",
        |p| {
            let data = p.tensors["conv.bias"].2[..12].to_vec();
            p.set_tensor("conv.bias", vec![3], data);
        },
        &["\"conv\"", "bias"],
    );
    assert_refused(
        "conv_bias_nan",
        |p| {
            let t = p.tensors.get_mut("conv.bias").unwrap();
            t.2[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
        },
        &["\"conv\"", "conv.bias", "NaN"],
    );
}

#[test]
fn weight_data_must_match_the_weight_shape() {
    assert_refused(
        "conv_weight_short",
        |p| {
            let data = p.tensors["conv.weight"].2[..48].to_vec();
            p.set_tensor("conv.weight", vec![4, 2, 3, 2], data);
        },
        &["\"conv\"", "weight_shape"],
    );
    // Zero output channels: shape and data agree (0 bytes), and so did the per-channel
    // scale count (0), but there is nothing to run.
    assert_refused(
        "conv_zero_channels",
        |p| {
            let l = p.layer("conv");
            l["weight_shape"] = json!([0, 2, 3, 3]);
            l["weight_q"]["scales"] = json!([]);
            l["weight_q"]["zero_points"] = json!([]);
            p.set_tensor("conv.weight", vec![0, 2, 3, 3], vec![]);
        },
        &["\"conv\"", "weight_shape"],
    );
    // The weight's input channels against the graph's: 3 x 3 x 3 weights on 2 channels.
    assert_refused(
        "conv_in_channels",
        |p| {
            p.layer("conv")["weight_shape"] = json!([4, 3, 3, 3]);
            p.set_tensor("conv.weight", vec![4, 3, 3, 3], vec![1; 108]);
        },
        &["\"conv\"", "weight_shape"],
    );
}

#[test]
fn unknown_and_mismatched_layer_kinds_are_refused() {
    assert_refused(
        "kind_lstm",
        |p| p.layer("fc")["kind"] = json!("lstm"),
        &["\"fc\"", "layers[1].kind"],
    );
    assert_refused(
        "conv_as_linear",
        |p| p.layer("conv")["kind"] = json!("linear"),
        &["\"conv\"", "kind"],
    );
    assert_refused(
        "linear_as_conv",
        |p| p.layer("fc")["kind"] = json!("conv"),
        &["\"fc\"", "kind"],
    );
}

#[test]
fn a_layer_must_name_a_node_of_the_graph() {
    assert_refused(
        "ghost_node",
        |p| {
            p.layer("fc")["node"] = json!("ghost");
            for part in ["weight", "bias"] {
                let t = p.tensors.remove(&format!("fc.{part}")).unwrap();
                p.tensors.insert(format!("ghost.{part}"), t);
            }
            for pair in p.json["graph_bias_inputs"].as_array_mut().unwrap() {
                if pair[1] == "fc" {
                    pair[1] = json!("ghost");
                }
            }
        },
        &["\"ghost\"", "node"],
    );
    assert_refused(
        "input_elsewhere",
        |p| p.layer("fc")["input"] = json!("p"),
        &["\"fc\"", "input"],
    );
    assert_refused(
        "relu_not_a_relu",
        |p| p.layer("conv")["relu"] = json!("pool"),
        &["\"conv\"", "relu"],
    );
    assert_refused(
        "activation_of_no_tensor",
        |p| {
            let q = p.json["activations"]["x"].clone();
            p.json["activations"]["nowhere"] = q;
        },
        &["\"nowhere\""],
    );
}

#[test]
fn duplicated_layer_names_are_refused() {
    assert_refused(
        "duplicate_layer",
        |p| {
            let conv = p.layer("conv").clone();
            p.json["layers"].as_array_mut().unwrap().push(conv);
        },
        &["\"conv\"", "layers[2]"],
    );
}

#[test]
fn metadata_parse_errors_name_the_key_path() {
    assert_refused(
        "scales_not_a_list",
        |p| p.layer("fc")["weight_q"]["scales"] = json!("abc"),
        &["\"fc\"", "layers[1].weight_q.scales"],
    );
    assert_refused(
        "activation_scale_null",
        |p| p.json["activations"]["x"]["scales"][0] = Value::Null,
        &["activations.x.scales[0]"],
    );
}

#[test]
fn errors_name_the_quantized_file_not_its_source() {
    // A skeleton that is not ONNX: the error names the quantized file (the source's path
    // is in the recipe, and `assert_refused` checks it is not named).
    assert_refused("bad_skeleton", |p| p.onnx = vec![0xff; 16], &["ONNX"]);
    // A recipe the file cannot run.
    assert_refused(
        "recipe_method",
        |p| {
            let mut r: Value = serde_json::from_str(&p.meta["recipe"]).unwrap();
            r["method"] = json!("int3");
            p.meta.insert("recipe".into(), r.to_string());
        },
        &["recipe.method"],
    );
    // `fp32` names the baseline in results files; a quantized file made "by" it is refused.
    assert_refused(
        "recipe_method_fp32",
        |p| {
            let mut r: Value = serde_json::from_str(&p.meta["recipe"]).unwrap();
            r["method"] = json!("fp32");
            p.meta.insert("recipe".into(), r.to_string());
        },
        &["recipe.method", "baseline"],
    );
}
