//! all-MiniLM-L6-v2's dynamic int8 models (every Linear; the sweep's options: per-channel
//! weights, per-token and per-tensor activation scales) under fbgemm, vnni and qnnpack,
//! and its fp16 model, exported as ONNX and run in tract-onnx against our executor on
//! six real sentences (padded to the longest), under `tract_check`'s policy where they
//! meet it and to the int8 error where 36 quantizers in a row amplify sub-ulp fp32
//! differences (see the assertion's comment), and the first encoder layer alone exactly;
//! every figure is printed (`-- --nocapture`) for docs/minilm.md. The output is the
//! unit-length sentence embedding, so the check's unit is max |embedding| / 127.5; the
//! test also reports the embeddings' cosine, the measure users read for this model.
//!
//! The model is not in the repository. Without `qbench fetch minilm` the test prints why
//! it skips and passes; ci/test.sh fetches the model first so that CI runs it.

use qbench_models::bert::{self, tokenize::SentenceTokenizer};
use qbench_quantizers::export::{self, tract_check, Form};
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::{quantize_dynamic, ActScales, Backend, DynamicOptions, QExecutor};

#[path = "../../models/tests/support/minilm_dir.rs"]
mod minilm_dir;
mod support;
use minilm_dir::model_dir;

/// Dynamic int8 of every Linear as the sweep quantizes MiniLM: per-channel weights.
fn sweep_options(backend: Backend, act: ActScales) -> DynamicOptions {
    let mut opts = DynamicOptions::new(backend);
    opts.op_types = vec!["MatMul".into()];
    opts.act_scales = act;
    opts.per_channel = true;
    opts
}

fn worst_cosine(a: &[f32], b: &[f32], d: usize) -> f64 {
    a.chunks(d)
        .zip(b.chunks(d))
        .map(|(x, y)| {
            let dot: f64 = x
                .iter()
                .zip(y)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            let n = |v: &[f32]| v.iter().map(|&p| f64::from(p).powi(2)).sum::<f64>().sqrt();
            dot / (n(x) * n(y))
        })
        .fold(1.0, f64::min)
}

#[test]
fn minilm_dynamic_and_fp16_agree_with_tract_under_every_scheme() {
    let Some(dir) = model_dir("minilm_dynamic_and_fp16_agree_with_tract_under_every_scheme") else {
        return;
    };
    let graph = bert::load_graph(&dir).unwrap();
    let tok = SentenceTokenizer::from_dir(&dir).unwrap();
    let b = tok
        .batch(&[
            "A quiet, moving film about grief that never tells you how to feel.",
            "The plot is a mess and the jokes land with a thud.",
            "Int8 weights make the model four times smaller.",
            "Padding tokens must not change a sentence's embedding.",
            "Two paraphrases should land close together.",
            "Short.",
        ])
        .unwrap();
    let inputs = [b.input_ids, b.attention_mask];

    let mut models = Vec::new();
    for backend in Backend::ALL {
        for act in [ActScales::PerRow, ActScales::PerTensor] {
            let name = format!("minilm dynamic/{} {act:?}", backend.name());
            models.push((
                name,
                quantize_dynamic(&graph, &sweep_options(backend, act)).unwrap(),
            ));
        }
    }
    models.push(("minilm fp16".into(), quantize_fp16(&graph).unwrap()));

    for (name, model) in &models {
        let ops = support::ops(model);
        if name.contains("dynamic") {
            let int8 = ops.iter().filter(|op| *op == "MatMulInteger").count();
            assert_eq!(int8, 36, "{name}: every Linear is int8 in the file");
        }
        let r = tract_check::check(model, Form::QOperator, &inputs)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = QExecutor::new(model).unwrap().run(&inputs).unwrap();
        let theirs = tract_check::run_tract(
            &export::to_model_proto(model, Form::QOperator).unwrap(),
            &inputs,
            name,
        )
        .unwrap();
        let cos = worst_cosine(ours[0].f32s().unwrap(), theirs[0].f32s().unwrap(), 384);
        println!(
            "{name}: max {:.3} LSB ({:.2e}), {:.2} % of elements differ, worst cosine {cos:.7}",
            r.max_lsb,
            r.max_lsb * r.out_scale,
            100.0 * r.diff_fraction
        );
        // fp16 and the 7-bit per-tensor form agree to the policy (bit for bit up to float
        // rounding). The other forms differ by more than the policy's 2 LSB (measured
        // 2026-11-27: max 4.6–14.8 output LSB on 35–97 % of the elements, worst cosine
        // 0.9920–0.9990), and not because the export computes something else: with only
        // the first encoder layer's six Linears in int8, every form is exact (the test
        // below), and with more layers the difference grows with depth (per token, vnni,
        // one sentence: 2 layers 0.02 LSB, 3 layers 0.55, 4 layers 1.4, 6 layers 4.3).
        // What fits these figures (inferred, not traced flip by flip): sub-ulp fp32
        // differences (tract's and ONNX Runtime's exp, erf and sums against
        // `kernels::fmath`'s) move an activation across a rounding boundary of a later
        // dynamic quantizer now and then, and each flip propagates through the layers
        // after it; ONNX Runtime lands where tract does on the per-token files. So the
        // whole model is held to the int8 error those flips stay within.
        let exact = name.contains("fp16") || name.contains("fbgemm PerTensor");
        if exact {
            assert!(r.passes(), "{name}: {r:?}");
            assert!(cos >= 0.9999, "{name}: worst cosine to tract {cos}");
        } else {
            assert!(cos >= 0.99, "{name}: worst cosine to tract {cos}");
        }
    }
}

/// The export computes what the executor computes: with only the first encoder layer's
/// six Linears quantized (the rest fp32), every dynamic form agrees with tract to the
/// policy (measured: exact), per token and per tensor, under every backend.
#[test]
fn minilm_first_encoder_layer_in_int8_agrees_with_tract_exactly() {
    let Some(dir) = model_dir("minilm_first_encoder_layer_in_int8_agrees_with_tract_exactly")
    else {
        return;
    };
    let graph = bert::load_graph(&dir).unwrap();
    let tok = SentenceTokenizer::from_dir(&dir).unwrap();
    let b = tok
        .batch(&[
            "The plot is a mess and the jokes land with a thud.",
            "Short.",
        ])
        .unwrap();
    let inputs = [b.input_ids, b.attention_mask];
    let later: Vec<String> = graph
        .nodes
        .iter()
        .filter(|n| n.name.ends_with("/matmul") && !n.name.starts_with("encoder.layer.0."))
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(later.len(), 30, "five later layers of six Linears");
    for backend in Backend::ALL {
        for act in [ActScales::PerRow, ActScales::PerTensor] {
            let mut opts = sweep_options(backend, act);
            opts.skip = later.clone();
            let model = quantize_dynamic(&graph, &opts).unwrap();
            let name = format!("minilm layer 0 dynamic/{} {act:?}", backend.name());
            let r = tract_check::check(&model, Form::QOperator, &inputs)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            println!(
                "{name}: max {:.3} LSB, {:.2} % of elements differ",
                r.max_lsb,
                100.0 * r.diff_fraction
            );
            assert!(r.passes(), "{name}: {r:?}");
            assert!(r.max_lsb <= 0.1, "{name}: not exact: {r:?}");
        }
    }
}
