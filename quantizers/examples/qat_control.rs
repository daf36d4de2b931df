//! The control run for the QAT table of reports/record/2026-11-27-amd-epyc-zen4.md: the QAT fine-tuning recipe (the
//! `QatConfig` defaults, one epoch over the training split) with fake quantization
//! switched off, so the table can tell what fine-tuning itself does to a model from
//! what quantization-aware training recovers.
//!
//!     cargo run -p qbench-quantizers --example qat_control -- resnet-fashion fbgemm
//!
//! Prints the fp32 test top-1 of the fine-tuned network (eval mode). The network is the
//! QAT one with `fake_quant_enabled = false`, so shuffles, schedule and BatchNorm
//! handling are those of `qbench quantize --method qat`; with fake quantization off the
//! backend changes nothing.

use std::path::Path;
use std::time::Instant;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::train;
use qbench_quantizers::{prepare_qat, Backend, QConfig, QConfigMap, QatConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, backend] = args.as_slice() else {
        return Err("usage: qat_control <digit-cnn|resnet-fashion> <fbgemm|vnni|qnnpack>".into());
    };
    let kind = match model.as_str() {
        "digit-cnn" => DatasetKind::Mnist,
        "resnet-fashion" => DatasetKind::FashionMnist,
        other => return Err(format!("{other}: digit-cnn or resnet-fashion").into()),
    };
    let backend = Backend::from_name(backend)?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/zoo")
        .join(model)
        .join("model.onnx");
    let graph = qbench_models::onnx::load(&path)?;
    // Both manifests normalise as their dataset does, so the dataset's pixels are the
    // model's inputs.
    let train_set = Dataset::load(kind, Split::Train)?;
    let test = Dataset::load(kind, Split::Test)?;
    let mut qat = prepare_qat(
        &graph,
        backend,
        QConfigMap::global(QConfig::qat_preset(backend)),
    )?;
    qat.network_mut().fake_quant_enabled = false;
    let start = Instant::now();
    qat.train(&train_set, &QatConfig::default(), |_| {}, |_| {})?;
    let top1 = train::evaluate(qat.network_mut(), &test, 250)?;
    println!(
        "{model} fine-tuned in fp32 with the QAT recipe ({}): test top-1 {:.2} %, {:.0} s",
        backend.name(),
        100.0 * top1,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
