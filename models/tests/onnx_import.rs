//! ONNX import validation: malformed or truncated bytes, unsupported ops, attributes and
//! dtypes are errors naming the file, node and op; nothing panics.

use prost::Message;
use qbench_models::error::ModelError;
use qbench_models::exec::{Executor, Options};
use qbench_models::onnx;
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use tract_onnx::pb;

fn squeezenet_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/zoo/light/light_squeezenet.onnx"
    ))
    .unwrap()
}

#[test]
fn truncated_files_are_decode_errors_naming_the_file() {
    let bytes = squeezenet_bytes();
    for cut in [
        0usize,
        1,
        7,
        100,
        bytes.len() / 3,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        match onnx::from_bytes(&bytes[..cut], "cut.onnx") {
            Ok(_) => {} // a prefix can be a valid (smaller) message: it must then validate
            Err(e) => assert!(e.to_string().contains("cut.onnx"), "{e}"),
        }
    }
    let e = onnx::from_bytes(&bytes[..bytes.len() - 1], "cut.onnx").unwrap_err();
    assert!(
        matches!(
            e,
            ModelError::Decode { .. } | ModelError::Graph { .. } | ModelError::Node { .. }
        ),
        "{e}"
    );
    let e = onnx::load("/nonexistent/model.onnx").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.onnx"), "{e}");
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = squeezenet_bytes();
    // The intact model's input shape at batch 1: what a caller of a corrupted file would
    // feed it.
    let input = Tensor::new(vec![1, 3, 224, 224], vec![0.5; 3 * 224 * 224]).unwrap();
    let mut rng = Rng::new(0x9e3779b97f4a7c15);
    let (mut imported, mut ran) = (0, 0);
    for trial in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..(1 + trial % 8) {
            let s = rng.next_u64();
            let at = (s >> 33) as usize % b.len();
            b[at] ^= (s >> 13) as u8 | 1;
        }
        // Either an error, or a graph the executor accepts or refuses with an error; and
        // an accepted graph runs or returns an error, on as many inputs as it declares.
        let Ok(g) = onnx::from_bytes(&b, "corrupt.onnx") else {
            continue;
        };
        imported += 1;
        let Ok(exec) = Executor::new(&g, Options::default()) else {
            continue;
        };
        let inputs = vec![input.clone(); g.inputs.len()];
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exec.run(&inputs)));
        assert!(run.is_ok(), "trial {trial}: the executor panicked");
        ran += 1;
    }
    // The light file is nearly all structure (its weights are ConstantOfShape nodes), so
    // few corrupted copies import; the flips are seeded, so the count is fixed (16
    // imported and 11 ran when written). This keeps the run path from going untested.
    assert!(ran >= 10, "only {ran} of {imported} imported graphs ran");
}

fn model_with_node(node: pb::NodeProto, extra_inits: Vec<pb::TensorProto>) -> Vec<u8> {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let vi = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: 1,
                shape: Some(pb::TensorShapeProto {
                    dim: [1, 4]
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            node: vec![node],
            input: vec![vi("x")],
            output: vec![vi("y")],
            initializer: extra_inits,
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn node(op: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
    pb::NodeProto {
        name: "the_node".into(),
        op_type: op.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["y".into()],
        attribute: attrs,
        ..Default::default()
    }
}

fn node_error(bytes: &[u8]) -> String {
    let e = onnx::from_bytes(bytes, "bad.onnx").unwrap_err();
    let s = e.to_string();
    assert!(s.contains("bad.onnx") && s.contains("the_node"), "{s}");
    s
}

#[test]
fn unsupported_op_attribute_and_dtype_name_file_node_op() {
    let s = node_error(&model_with_node(node("Einsum", &["x"], vec![]), vec![]));
    assert!(s.contains("Einsum") && s.contains("unsupported op"), "{s}");

    let attr = pb::AttributeProto {
        name: "frobnicate".into(),
        r#type: 2,
        i: 1,
        ..Default::default()
    };
    let s = node_error(&model_with_node(node("Relu", &["x"], vec![attr]), vec![]));
    assert!(s.contains("Relu") && s.contains("frobnicate"), "{s}");

    let f16 = pb::TensorProto {
        name: "w".into(),
        dims: vec![4],
        data_type: 10,
        raw_data: vec![0; 8],
        ..Default::default()
    };
    let e = onnx::from_bytes(
        &model_with_node(node("Add", &["x", "w"], vec![]), vec![f16]),
        "bad.onnx",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("bad.onnx") && e.to_string().contains("FLOAT16"),
        "{e}"
    );

    let s = node_error(&model_with_node(
        node("Add", &["x", "missing"], vec![]),
        vec![],
    ));
    assert!(s.contains("missing"), "{s}");

    let custom = pb::NodeProto {
        domain: "com.example".into(),
        ..node("Relu", &["x"], vec![])
    };
    let s = node_error(&model_with_node(custom, vec![]));
    assert!(s.contains("com.example"), "{s}");
}

#[test]
fn bad_attribute_values_are_errors() {
    let ints = |name: &str, v: &[i64]| pb::AttributeProto {
        name: name.into(),
        r#type: 7,
        ints: v.to_vec(),
        ..Default::default()
    };
    let s = node_error(&model_with_node(
        node("MaxPool", &["x"], vec![ints("kernel_shape", &[2, 2, 2])]),
        vec![],
    ));
    assert!(s.contains("kernel_shape"), "{s}");
    let s = node_error(&model_with_node(node("MaxPool", &["x"], vec![]), vec![]));
    assert!(s.contains("kernel_shape is required"), "{s}");
    let s = node_error(&model_with_node(node("Conv", &["x"], vec![]), vec![]));
    assert!(s.contains("inputs"), "{s}");
}
