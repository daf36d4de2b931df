//! The saved file's size against the fp32 ONNX file (issue 5: int8 ≤ 0.27x, fp16 ≤ 0.52x)
//! on the zoo models with an eval set, and a bit-identical load of the smallest one, whose
//! fixed overhead (skeleton, qparams, stripped biases) matters most.

mod support;

use std::path::Path;
use std::slice::from_ref;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::rng::Rng;
use qbench_models::tensor::Tensor;
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::{
    quantize_dynamic, save, Backend, DynamicOptions, QExecutor, QuantizedModel,
};
use support::{static_model, zoo};

fn images(kind: DatasetKind, split: Split, n: usize) -> Tensor {
    let d = Dataset::load(kind, split).unwrap().take(n);
    Tensor::new(vec![n, 1, 28, 28], d.images().to_vec()).unwrap()
}

/// Both models compute the same bits on `x`.
fn assert_same_outputs(a: &QuantizedModel, b: &QuantizedModel, x: &Tensor) {
    let run = |m| {
        QExecutor::new(m)
            .unwrap()
            .run(std::slice::from_ref(x))
            .unwrap()
    };
    let (a, b) = (run(a), run(b));
    let (a, b) = (a[0].f32s().unwrap(), b[0].f32s().unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn saved_files_meet_the_size_targets() {
    for (name, kind) in [
        ("digit-cnn", DatasetKind::Mnist),
        ("mlp-mnist", DatasetKind::Mnist),
        ("resnet-fashion", DatasetKind::FashionMnist),
    ] {
        let path = zoo(&format!("{name}/model.onnx"));
        let fp32 = std::fs::metadata(&path).unwrap().len() as f64;
        let g = qbench_models::onnx::load(&path).unwrap();
        let calib = images(kind, Split::Train, 32);
        for backend in Backend::ALL {
            let m = static_model(&g, backend, from_ref(&calib));
            let ratio = save::to_bytes(&m).unwrap().len() as f64 / fp32;
            eprintln!("{name} static/{}: {ratio:.3}x", backend.name());
            assert!(
                ratio <= 0.27,
                "{name} static/{}: {ratio:.4}x",
                backend.name()
            );
        }
        let d = quantize_dynamic(&g, &DynamicOptions::new(Backend::Fbgemm)).unwrap();
        let ratio = save::to_bytes(&d).unwrap().len() as f64 / fp32;
        eprintln!("{name} dynamic: {ratio:.3}x");
        if name == "mlp-mnist" {
            // Dynamic quantizes Gemm/MatMul only: the all-Linear MLP is the model it is for.
            assert!(ratio <= 0.27, "{name} dynamic: {ratio:.4}x");
        }
        let f = quantize_fp16(&g).unwrap();
        let ratio = save::to_bytes(&f).unwrap().len() as f64 / fp32;
        eprintln!("{name} fp16: {ratio:.3}x");
        assert!(ratio <= 0.52, "{name} fp16: {ratio:.4}x");
    }
}

#[test]
fn resnet_fashion_loads_back_bit_identically() {
    let g = qbench_models::onnx::load(zoo("resnet-fashion/model.onnx")).unwrap();
    let calib = images(DatasetKind::FashionMnist, Split::Train, 32);
    let m = static_model(&g, Backend::Fbgemm, from_ref(&calib));
    let bytes = save::to_bytes(&m).unwrap();
    let back = save::from_bytes(&bytes, Path::new("rf.safetensors")).unwrap();
    // The stripped biases are back in the graph, with their bits.
    assert_eq!(
        back.graph.initializers.keys().collect::<Vec<_>>(),
        m.graph.initializers.keys().collect::<Vec<_>>()
    );
    for (k, t) in &m.graph.initializers {
        let u = &back.graph.initializers[k];
        assert_eq!(t.shape(), u.shape(), "{k}");
        let (a, b) = (t.f32s().unwrap(), u.f32s().unwrap());
        assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{k}"
        );
    }
    assert_eq!(
        back.graph
            .inputs
            .iter()
            .map(|i| &i.name)
            .collect::<Vec<_>>(),
        m.graph.inputs.iter().map(|i| &i.name).collect::<Vec<_>>()
    );
    assert_same_outputs(
        &m,
        &back,
        &images(DatasetKind::FashionMnist, Split::Test, 64),
    );
    // A file of an unknown format is refused naming the file and the format.
    let mut bytes = bytes;
    let at = bytes
        .windows(18)
        .position(|w| w == b"qbench-quantized-2")
        .unwrap();
    bytes[at + 17] = b'9';
    let e = save::from_bytes(&bytes, Path::new("rf.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rf.safetensors") && e.contains("qbench-quantized-9"),
        "{e}"
    );
}

/// One model, one file: saving twice gives the same bytes (the header's keys sorted; the
/// safetensors crate alone writes its metadata in a per-process random order), and the
/// canonical file still loads and computes what the model computes.
#[test]
fn saving_is_byte_for_byte_reproducible() {
    let g = qbench_models::onnx::load(zoo("digit-cnn/model.onnx")).unwrap();
    let x = images(DatasetKind::Mnist, Split::Test, 8);
    let m = static_model(
        &g,
        Backend::Fbgemm,
        from_ref(&images(DatasetKind::Mnist, Split::Train, 32)),
    );
    let first = save::to_bytes(&m).unwrap();
    for _ in 0..20 {
        assert!(save::to_bytes(&m).unwrap() == first, "two saves differ");
    }
    let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "header padded to 8 bytes");
    let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
    assert!(
        header.find("\"format\"").unwrap() < header.find("\"recipe\"").unwrap(),
        "metadata keys sorted: {header}"
    );
    let back = save::from_bytes(&first, Path::new("m.safetensors")).unwrap();
    assert_same_outputs(&m, &back, &x);
}

/// A file of the first format (`qbench-quantized-1`: the parts as plain metadata strings
/// and a `graph.onnx` tensor), rebuilt here from a format-2 file of an fp16 model, loads
/// and computes what the model computes.
#[test]
fn format_1_files_still_load() {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    use std::collections::HashMap;
    use std::io::Read;

    let g = qbench_models::onnx::load(zoo("mlp-mnist/model.onnx")).unwrap();
    let m = quantize_fp16(&g).unwrap();
    let v2 = save::to_bytes(&m).unwrap();
    let st = SafeTensors::deserialize(&v2).unwrap();
    let (_, header) = SafeTensors::read_metadata(&v2).unwrap();
    let recipe = header.metadata().as_ref().unwrap()["recipe"].clone();
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(st.tensor("qbench.model").unwrap().data())
        .read_to_end(&mut raw)
        .unwrap();
    let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
    let parts: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw[4..4 + len]).unwrap();
    let onnx = raw[4 + len..].to_vec();
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert("format".into(), "qbench-quantized-1".into());
    meta.insert("recipe".into(), recipe);
    for key in [
        "layers",
        "activations",
        "shapes",
        "graph_weight_inputs",
        "fp16_initializers",
    ] {
        meta.insert(key.into(), parts[key].to_string());
    }
    let mut views = vec![(
        "graph.onnx".to_string(),
        TensorView::new(Dtype::U8, vec![onnx.len()], &onnx).unwrap(),
    )];
    for (name, t) in st.tensors() {
        if name != "qbench.model" {
            views.push((name, t));
        }
    }
    let v1 = safetensors::serialize(views, Some(meta)).unwrap();
    let back = save::from_bytes(&v1, Path::new("old.safetensors")).unwrap();
    assert_same_outputs(&m, &back, &images(DatasetKind::Mnist, Split::Test, 16));
}

/// resnet50 ends in a legacy (opset < 13) Softmax, which the skeleton's ONNX cannot hold
/// as one node: a saved static resnet50 must still load and compute what it computed.
#[test]
fn resnet50_static_loads_back_and_runs() {
    let g = qbench_models::onnx::load(zoo("light/light_resnet50.onnx")).unwrap();
    let x = Rng::new(0x9e37_79b9).uniforms_f32(3 * 224 * 224, -2.0, 2.0);
    let x = Tensor::new(vec![1, 3, 224, 224], x).unwrap();
    let m = static_model(&g, Backend::Vnni, from_ref(&x));
    let back =
        save::from_bytes(&save::to_bytes(&m).unwrap(), Path::new("r50.safetensors")).unwrap();
    assert_eq!(m.graph.nodes.len(), back.graph.nodes.len());
    assert_same_outputs(&m, &back, &x);
}
