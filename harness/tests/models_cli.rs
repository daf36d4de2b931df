//! The model commands of the `qbench` binary end to end: `eval`, `inspect`, `crosscheck`
//! on the real zoo and data, and their errors on bad names, missing and corrupted files
//! and bad flags (clean messages naming the culprit, non-zero exit, never a panic).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use qbench_models::data::{self, Split};
use qbench_models::onnx::crosscheck::run_tract;
use qbench_models::tensor::Tensor;

fn qbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qbench"))
        .args(args)
        // Keep error output to the message itself: a backtrace would hide a real panic
        // among frames that merely look alike.
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("qbench runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts a clean failure: non-zero exit, no panic, and stderr mentioning each of `names`.
fn assert_clean_error(out: &Output, names: &[&str]) {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    for name in names {
        assert!(err.contains(name), "stderr does not name {name:?}: {err}");
    }
}

fn repo_file(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
        .display()
        .to_string()
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("qbench-models-cli-{}-{name}", std::process::id()))
}

#[test]
fn eval_json_on_a_slice_matches_an_independent_tract_count() {
    let out = qbench(&["eval", "digit-cnn", "--json", "--limit", "500"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let obj = v.as_object().unwrap();
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["metric", "model", "samples", "value"], "{v}");
    assert_eq!(v["model"], "digit-cnn");
    assert_eq!(v["metric"], "top1");
    assert_eq!(v["samples"], 500);
    let value = v["value"].as_f64().unwrap();
    assert!((0.98..=1.0).contains(&value), "{v}");

    // The same 500 images through tract (another engine, same file): the count of
    // correct predictions must be the one qbench reported.
    let ds = data::mnist(Split::Test).unwrap().take(500);
    let input = Tensor::new(ds.shape().to_vec(), ds.images().to_vec()).unwrap();
    let model = repo_file("models/zoo/digit-cnn/model.onnx");
    let logits = &run_tract(model.as_ref(), &[input]).unwrap()[0];
    let correct = logits
        .argmax_rows()
        .unwrap()
        .iter()
        .zip(ds.labels())
        .filter(|(p, l)| **p == usize::from(**l))
        .count();
    assert_eq!((value * 500.0).round() as usize, correct, "{v}");
}

#[test]
fn inspect_lists_conv_nodes_shapes_and_parameters() {
    let model = repo_file("models/zoo/light/light_squeezenet.onnx");
    let out = qbench(&["inspect", &model, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    let convs: Vec<_> = nodes.iter().filter(|n| n["op"] == "Conv").collect();
    assert_eq!(convs.len(), 26, "{v}");
    // Every conv output has a shape from the dry run, NCHW at batch 1.
    for c in &convs {
        let shape = c["outputs"][0]["shape"].as_array().unwrap();
        assert_eq!(shape.len(), 4, "{c}");
        assert_eq!(shape[0], 1, "{c}");
    }
    // SqueezeNet 1.1's 1,235,496 weights, all built by ConstantOfShape at load time.
    assert_eq!(v["parameters"], 1_235_496, "{v}");
    assert_eq!(v["all_supported"], true);
    // The memory plan at batch 1, from inferred shapes: its largest tensor is the largest
    // node output the dry run reports (f32), and the peak holds at least that.
    let largest_output = nodes
        .iter()
        .flat_map(|n| n["outputs"].as_array().unwrap())
        .map(|t| {
            let dims = t["shape"].as_array().unwrap();
            dims.iter().map(|d| d.as_u64().unwrap()).product::<u64>() * 4
        })
        .max()
        .unwrap();
    let memory = &v["memory"];
    assert_eq!(memory["largest_tensor_bytes"], largest_output, "{memory}");
    assert!(
        memory["peak_bytes"].as_u64().unwrap() > largest_output,
        "{memory}"
    );
    assert_eq!(memory["unknown_shapes"], 0, "{memory}");

    let out = qbench(&["inspect", "digit-cnn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("Conv"), "{text}");
    assert!(text.contains("390,410"), "{text}");
    assert!(text.contains("memory      at batch 1: "), "{text}");
}

/// An opset-13 model `x → nodes → y` (f32, `x` of shape `[N, 4]`).
fn onnx_model(
    nodes: Vec<tract_onnx::pb::NodeProto>,
    initializer: Vec<tract_onnx::pb::TensorProto>,
) -> Vec<u8> {
    use prost::Message;
    use tract_onnx::pb;
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value, Dimension};
    let vi = |name: &str, dims: &[Value]| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(d.clone()),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let batch = Value::DimParam("N".into());
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: nodes,
            input: vec![vi("x", &[batch.clone(), Value::DimValue(4)])],
            output: vec![vi("y", &[batch, Value::DimValue(4)])],
            initializer,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn onnx_node(
    name: &str,
    domain: &str,
    op: &str,
    inputs: &[&str],
    o: &str,
) -> tract_onnx::pb::NodeProto {
    tract_onnx::pb::NodeProto {
        name: name.into(),
        domain: domain.into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![o.into()],
        ..Default::default()
    }
}

/// `x → Relu → Einsum → com.example.Fancy → Relu(frobnicate = 1) → Relu → y`: three nodes
/// the importer refuses for three different reasons, around two it takes.
fn onnx_with_unsupported_nodes() -> Vec<u8> {
    use tract_onnx::pb;
    let mut odd_attr = onnx_node("relu_with_odd_attr", "", "Relu", &["c"], "d");
    odd_attr.attribute.push(pb::AttributeProto {
        name: "frobnicate".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 1,
        ..Default::default()
    });
    onnx_model(
        vec![
            onnx_node("first_relu", "", "Relu", &["x"], "a"),
            onnx_node("the_einsum", "", "Einsum", &["a"], "b"),
            onnx_node("custom_op", "com.example", "Fancy", &["b"], "c"),
            odd_attr,
            onnx_node("last_relu", "", "Relu", &["d"], "y"),
        ],
        Vec::new(),
    )
}

#[test]
fn inspect_lists_every_node_of_a_file_with_unsupported_ops_and_fails() {
    let path = temp_path("unsupported.onnx");
    std::fs::write(&path, onnx_with_unsupported_nodes()).unwrap();
    let p = path.to_str().unwrap();

    let out = qbench(&["inspect", p, "--json"]);
    assert_clean_error(&out, &[p, "3 of 5 nodes are not supported"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = v["nodes"].as_array().unwrap();
    let verdicts: Vec<(&str, &str, bool)> = nodes
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["op"].as_str().unwrap(),
                n["supported"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("first_relu", "Relu", true),
            ("the_einsum", "Einsum", false),
            ("custom_op", "com.example.Fancy", false),
            ("relu_with_odd_attr", "Relu", false),
            ("last_relu", "Relu", true),
        ],
        "{v}"
    );
    let reason = |i: usize| nodes[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(reason(1).contains("unsupported op \"Einsum\""), "{v}");
    assert!(
        reason(2).contains("unsupported domain \"com.example\""),
        "{v}"
    );
    assert!(reason(3).contains("frobnicate"), "{v}");
    assert_eq!(v["all_supported"], false);
    assert_eq!(v["graph_inputs"][0]["name"], "x");

    // The table shows every node and each reason.
    let out = qbench(&["inspect", p]);
    assert_clean_error(&out, &[p, "the_einsum", "custom_op", "relu_with_odd_attr"]);
    let text = stdout(&out);
    for name in [
        "first_relu",
        "the_einsum",
        "custom_op",
        "relu_with_odd_attr",
        "last_relu",
    ] {
        assert!(text.contains(name), "{name}: {text}");
    }
    assert!(text.contains("no: unsupported op \"Einsum\""), "{text}");
    assert!(
        text.contains("no: unsupported attribute \"frobnicate\""),
        "{text}"
    );
    assert!(
        text.contains("5 nodes; some nodes are NOT supported"),
        "{text}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn crosscheck_digit_cnn_passes() {
    let out = qbench(&["crosscheck", "digit-cnn", "--samples", "200"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("200 / 200 samples (100.00 %"), "{text}");
    assert!(text.trim_end().ends_with("PASS"), "{text}");
}

/// The value after `label` on the line of `text` that starts with it.
fn figure(text: &str, label: &str) -> f64 {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {label:?} figure in {text}"))
}

#[test]
fn crosscheck_resnet50_runs_random_weights_and_compares_the_logits() {
    let out = qbench(&["crosscheck", "resnet50"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("239 ConstantOfShape weights replaced by seeded random values (seed 1)"),
        "{text}"
    );
    assert!(text.contains("the final Softmax's input"), "{text}");
    // The file's own constant weights give a flat softmax: every output 1e-3. With random
    // weights the logits are compared, and their scale is far above that.
    assert!(figure(&text, "max |tract|") > 1.0, "{text}");
    assert!(figure(&text, "relative") <= 1e-4, "{text}");
    assert!(text.trim_end().ends_with("PASS"), "{text}");
}

#[test]
fn crosscheck_that_fails_exits_non_zero_with_the_failed_line() {
    // `y = x / 0`: ±inf on both sides, so the outputs cannot be compared (inf − inf is
    // NaN) and the finiteness rule fails. A file on which the two engines really disagree
    // would be a bug in one of them; this one fails by the policy's own rules.
    let zeros = tract_onnx::pb::TensorProto {
        name: "zero".into(),
        dims: vec![4],
        data_type: tract_onnx::pb::tensor_proto::DataType::Float as i32,
        float_data: vec![0.0; 4],
        ..Default::default()
    };
    let path = temp_path("div-by-zero.onnx");
    std::fs::write(
        &path,
        onnx_model(
            vec![onnx_node("div", "", "Div", &["x", "zero"], "y")],
            vec![zeros],
        ),
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let out = qbench(&["crosscheck", p, "--seed", "3"]);
    assert_clean_error(&out, &["against tract FAILED", "non-finite outputs"]);
    let text = stdout(&out);
    assert!(text.contains("all outputs finite   no"), "{text}");
    assert!(!text.contains("PASS"), "{text}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unknown_model_and_missing_file_are_named() {
    let out = qbench(&["eval", "no-such-model"]);
    // The message lists what does exist.
    assert_clean_error(&out, &["no-such-model", "digit-cnn"]);

    let missing = temp_path("missing.onnx");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["eval", missing, "--dataset", "mnist"],
        vec!["inspect", missing],
        vec!["crosscheck", missing],
    ] {
        assert_clean_error(&qbench(&args), &[missing]);
    }
}

#[test]
fn corrupted_onnx_is_a_clean_error() {
    let path = temp_path("garbage.onnx");
    std::fs::write(
        &path,
        b"this is not an onnx model\x00\xff\xfe\x01\x02garbage",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["inspect", p],
        vec!["eval", p, "--dataset", "mnist"],
        vec!["crosscheck", p],
    ] {
        let out = qbench(&args);
        assert_clean_error(&out, &[p, "not a valid ONNX"]);
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn bad_arguments_fail_fast_naming_the_flag() {
    let light = repo_file("models/zoo/light/light_squeezenet.onnx");
    let cases: [(&[&str], &str); 4] = [
        (&["eval", "digit-cnn", "--batch", "0"], "--batch"),
        (&["eval", "digit-cnn", "--limit", "many"], "--limit"),
        (&["eval", &light], "--dataset"),
        (
            &["eval", "digit-cnn", "--dataset", "fashion-mnist"],
            "--dataset",
        ),
    ];
    for (args, flag) in cases {
        let start = Instant::now();
        let out = qbench(args);
        // Nothing is loaded before the arguments are checked; generous for a busy machine.
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{args:?} took {:?}",
            start.elapsed()
        );
        assert_clean_error(&out, &[flag]);
    }
}
