//! ONNX export of static quantized models, run in tract-onnx and compared with our
//! executor under the tolerance policy of `qbench_quantizers::export::tract_check`.

use std::path::Path;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{tract_check, Form};
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
        let r = tract_check::check(&model, Form::QOperator, std::slice::from_ref(&x)).unwrap();
        eprintln!("{}: {r:?}", backend.name());
        assert_eq!(r.rows, 200);
        assert!(r.passes(), "{}: {r:?}", backend.name());
    }
}
