//! ONNX export of static quantized models, run in tract-onnx and compared with our
//! executor under the tolerance policy of `qbench_quantizers::export::tract_check`.

use std::path::Path;

use qbench_models::data::{Dataset, DatasetKind, Split};
use std::collections::BTreeMap;

use qbench_models::ir::{Dim, Graph, Node, Op, Spatial, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{self, tract_check, Form};
use qbench_quantizers::QExecutor;
use qbench_quantizers::{prepare, Backend, QConfig, QConfigMap, QuantizedModel};

fn digit_cnn() -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/zoo/digit-cnn/model.onnx");
    qbench_models::onnx::load(path).unwrap()
}

fn mnist(split: Split, n: usize) -> Tensor {
    let d = Dataset::load(DatasetKind::Mnist, split).unwrap().take(n);
    Tensor::new(vec![n, 1, 28, 28], d.images().to_vec()).unwrap()
}

fn static_model(g: &Graph, backend: Backend, map: QConfigMap) -> QuantizedModel {
    let calib = mnist(Split::Train, 128);
    let mut prepared = prepare(g, backend, map).unwrap();
    prepared
        .calibrate(std::iter::once(&calib), |_, _| {})
        .unwrap();
    prepared.convert().unwrap()
}

#[test]
fn digit_cnn_qoperator_agrees_with_tract_under_every_backend() {
    let g = digit_cnn();
    let x = mnist(Split::Test, 200);
    for backend in Backend::ALL {
        let model = static_model(&g, backend, QConfigMap::global(QConfig::preset(backend)));
        let proto = export::to_model_proto(&model, Form::QOperator).unwrap();
        let ops: Vec<&str> = proto
            .graph
            .as_ref()
            .unwrap()
            .node
            .iter()
            .map(|n| n.op_type.as_str())
            .collect();
        // int8 against int8: tract must run the int8 ops, not a float graph.
        for op in [
            "QuantizeLinear",
            "QLinearConv",
            "MatMulInteger",
            "MaxPool",
            "DequantizeLinear",
        ] {
            assert!(ops.contains(&op), "{}: no {op} in {ops:?}", backend.name());
        }
        assert!(!ops.contains(&"Conv") && !ops.contains(&"Gemm"), "{ops:?}");
        for form in [Form::QOperator, Form::Qdq] {
            let r = tract_check::check(&model, form, std::slice::from_ref(&x)).unwrap();
            eprintln!("{} {form:?}: {r:?}", backend.name());
            assert_eq!(r.rows, 200);
            assert!(r.passes(), "{} {form:?}: {r:?}", backend.name());
        }
        // tract's outputs are a working classifier, not two equal wrong answers.
        let theirs = tract_check::run_tract(&proto, std::slice::from_ref(&x), "digit-cnn").unwrap();
        let labels = Dataset::load(DatasetKind::Mnist, Split::Test)
            .unwrap()
            .take(200);
        let correct = theirs[0]
            .argmax_rows()
            .unwrap()
            .iter()
            .zip(labels.labels())
            .filter(|(p, l)| **p == **l as usize)
            .count();
        assert!(
            correct >= 190,
            "{}: tract top-1 {correct}/200",
            backend.name()
        );
    }
}

#[test]
fn a_wrong_bias_in_the_export_is_caught() {
    let g = digit_cnn();
    let model = static_model(
        &g,
        Backend::Vnni,
        QConfigMap::global(QConfig::preset(Backend::Vnni)),
    );
    let x = mnist(Split::Test, 50);
    let mut proto = export::to_model_proto(&model, Form::QOperator).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    let bias = graph
        .initializer
        .iter_mut()
        .find(|t| t.name.ends_with("::bias_i32"))
        .unwrap();
    // Shift every bias of the first int8 layer by a large amount on the accumulator grid.
    for chunk in bias.raw_data.chunks_mut(4) {
        let v = i32::from_le_bytes(chunk.try_into().unwrap()).wrapping_add(50_000);
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    let ours = QExecutor::new(&model)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    let theirs = tract_check::run_tract(&proto, std::slice::from_ref(&x), "broken").unwrap();
    let out_scale = model.activations[&model.graph.outputs[0].name].scales[0];
    let r = tract_check::compare(Form::QOperator, out_scale, &ours[0], &theirs[0]).unwrap();
    assert!(!r.passes(), "{r:?}");
}

fn vi(name: &str, dims: Vec<Dim>) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dims,
    }
}

fn node(name: &str, op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op,
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
    }
}

/// x[N,2,4,4] → Conv 1x1 (3 out channels whose weights differ by 10^5 in magnitude) →
/// Flatten → Gemm (48 → 4) with rows of very different magnitudes too.
fn channel_scales_graph() -> Graph {
    let mut init = BTreeMap::new();
    let mags = [1e-3f32, 1.0, 100.0];
    let w: Vec<f32> = (0..6)
        .map(|i| mags[i / 2] * if i % 2 == 0 { 0.7 } else { -0.4 })
        .collect();
    init.insert("w".into(), Tensor::new(vec![3, 2, 1, 1], w).unwrap());
    init.insert(
        "b".into(),
        Tensor::new(vec![3], vec![0.0, 0.1, 5.0]).unwrap(),
    );
    let fc: Vec<f32> = (0..4 * 48)
        .map(|i| [1e-2f32, 1.0, 3.0, 0.1][i / 48] * (((i * 7) % 11) as f32 - 5.0) / 5.0)
        .collect();
    init.insert("fc_w".into(), Tensor::new(vec![4, 48], fc).unwrap());
    init.insert("fc_b".into(), Tensor::new(vec![4], vec![0.0; 4]).unwrap());
    Graph {
        name: "channel-scales".into(),
        inputs: vec![vi(
            "x",
            vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(2),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ],
        )],
        outputs: vec![vi("y", vec![Dim::Symbolic("N".into()), Dim::Fixed(4)])],
        initializers: init,
        nodes: vec![
            node(
                "conv",
                Op::Conv {
                    spatial: Spatial::default(),
                    group: 1,
                },
                &["x", "w", "b"],
                &["c"],
            ),
            node("flat", Op::Flatten { axis: 1 }, &["c"], &["f"]),
            node(
                "fc",
                Op::Gemm {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: true,
                },
                &["f", "fc_w", "fc_b"],
                &["y"],
            ),
        ],
    }
}

fn seeded(n: usize, seed: u64) -> Tensor {
    let mut s = seed;
    let v = (0..n * 32)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect();
    Tensor::new(vec![n, 2, 4, 4], v).unwrap()
}

/// Some tract versions read only the first scale of a per-channel DequantizeLinear (and
/// of per-channel QLinearConv weights): here that would shrink channels 2 and 3 by
/// 10^3..10^5, far outside the tolerance.
#[test]
fn per_channel_scales_work_end_to_end_in_tract() {
    let g = channel_scales_graph();
    let calib = seeded(16, 7);
    let mut prepared = prepare(
        &g,
        Backend::Fbgemm,
        QConfigMap::global(QConfig::preset(Backend::Fbgemm)),
    )
    .unwrap();
    prepared
        .calibrate(std::iter::once(&calib), |_, _| {})
        .unwrap();
    let model = prepared.convert().unwrap();
    let conv = model.layer("conv").unwrap();
    assert_eq!(
        conv.weight_q.scales.len(),
        3,
        "fbgemm weights are per channel"
    );
    assert!(conv.weight_q.scales[2] / conv.weight_q.scales[0] > 1e4);
    let x = seeded(8, 99);
    for form in [Form::QOperator, Form::Qdq] {
        let r = tract_check::check(&model, form, std::slice::from_ref(&x)).unwrap();
        eprintln!("per-channel {form:?}: {r:?}");
        assert!(r.passes(), "{form:?}: {r:?}");
    }
    // What the bug would look like: the conv's per-channel weight scales all read as the
    // first. The same comparison must reject it, in both forms.
    let ours = QExecutor::new(&model)
        .unwrap()
        .run(std::slice::from_ref(&x))
        .unwrap();
    let out_scale = model.activations["y"].scales[0];
    for form in [Form::QOperator, Form::Qdq] {
        let mut proto = export::to_model_proto(&model, form).unwrap();
        let graph = proto.graph.as_mut().unwrap();
        let ws = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == "conv::w_scale")
            .unwrap();
        assert_eq!(ws.dims, vec![3], "{form:?}: per-channel scales are 1-D");
        let first = ws.raw_data[..4].to_vec();
        for c in ws.raw_data.chunks_mut(4) {
            c.copy_from_slice(&first);
        }
        let theirs =
            tract_check::run_tract(&proto, std::slice::from_ref(&x), "first-scale").unwrap();
        let r = tract_check::compare(form, out_scale, &ours[0], &theirs[0]).unwrap();
        assert!(!r.passes(), "{form:?}: first-scale-only not caught: {r:?}");
    }
}

#[test]
fn an_fp32_fallback_layer_is_exported_as_float() {
    let g = digit_cnn();
    let fc = g
        .nodes
        .iter()
        .rev()
        .find(|n| matches!(n.op, Op::Gemm { .. }))
        .unwrap()
        .name
        .clone();
    let map = QConfigMap::global(QConfig::preset(Backend::Qnnpack)).set_layer(&fc, None);
    let model = static_model(&g, Backend::Qnnpack, map);
    assert!(model.layer(&fc).is_none());
    let proto = export::to_model_proto(&model, Form::QOperator).unwrap();
    let nodes = &proto.graph.as_ref().unwrap().node;
    let fc_node = nodes.iter().find(|n| n.name == fc).unwrap();
    assert_eq!(fc_node.op_type, "Gemm");
    let x = mnist(Split::Test, 100);
    for form in [Form::QOperator, Form::Qdq] {
        let r = tract_check::check(&model, form, std::slice::from_ref(&x)).unwrap();
        eprintln!("fallback {form:?}: {r:?}");
        assert!(r.passes(), "{form:?}: {r:?}");
    }
}
