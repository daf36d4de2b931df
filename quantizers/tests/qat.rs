//! Quantization-aware training: fake quantization against `qparams.rs` bit for bit, the
//! QAT network's forward pass against an independent computation, conversion from the
//! folded trained weights, and the converted int8 model against its own fake-quant
//! predictions on zoo models (plus safetensors and the tract check on one of them); the
//! observer and BatchNorm freezes between epochs, bit-identical runs for a seed on 1 and
//! 3 threads, and a 4-bit qconfig end to end.

use std::collections::BTreeMap;
use std::path::Path;

use qbench_models::data::{Dataset, DatasetKind, Split};
use qbench_models::ir::{Dim, Graph, Node, Op, ValueInfo};
use qbench_models::tensor::Tensor;
use qbench_models::train::init::Rng;
use qbench_models::train::{Buf, Mode};
use qbench_quantizers::export::{tract_check, Form};
use qbench_quantizers::qparams::{QDType, QParams, QSpec, Symmetry};
use qbench_quantizers::{
    prepare_qat, save, Backend, Method, QConfig, QConfigMap, QExecutor, QatConfig, QuantError,
};

/// Rounds `x` with `qp` as the int8 model does (quantize, then dequantize), element by
/// element from the integers: the reference fake quantization must equal.
fn quantize_then_dequantize(qp: &QParams, shape: &[usize], x: &[f32]) -> Vec<f32> {
    let q = qp.quantize_tensor(shape, x);
    let inner: usize = match qp.spec.granularity {
        qbench_quantizers::qparams::Granularity::PerTensor => x.len(),
        qbench_quantizers::qparams::Granularity::PerChannel { axis } => {
            shape[axis + 1..].iter().product()
        }
    };
    let channels = qp.scales.len();
    q.iter()
        .enumerate()
        .map(|(i, &v)| qp.dequantize_one(v, (i / inner) % channels))
        .collect()
}

#[test]
fn fake_quantization_is_quantize_then_dequantize_bit_for_bit() {
    let mut rng = Rng::new(1);
    let u3 = QSpec::activation_quint8(false).with_bits(3).unwrap();
    let s4 = QSpec::weight_qint8(Some(1)).with_bits(4).unwrap();
    let affine_i8 = QSpec {
        symmetry: Symmetry::Affine,
        ..QSpec::weight_qint8(None)
    };
    let specs = [
        QSpec::activation_quint8(false),
        QSpec::activation_quint8(true),
        u3,
        QSpec::weight_qint8(None),
        QSpec::weight_qint8(Some(0)),
        s4,
        affine_i8,
    ];
    let shape = [4usize, 3, 5];
    for spec in specs {
        let x = rng.normals(60, 2.0);
        let channels = match spec.granularity {
            qbench_quantizers::qparams::Granularity::PerTensor => 1,
            qbench_quantizers::qparams::Granularity::PerChannel { axis } => shape[axis],
        };
        // Ranges narrower than the data, so some values clamp.
        let (mins, maxs): (Vec<f32>, Vec<f32>) = (0..channels)
            .map(|c| (-1.5 - 0.2 * c as f32, 1.0 + 0.3 * c as f32))
            .unzip();
        let qp = spec.qparams(&mins, &maxs);
        let (fq, mask) = qp.fake_quantize_with_mask(&shape, &x);
        let reference = quantize_then_dequantize(&qp, &shape, &x);
        assert_eq!(
            fq.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            reference.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{spec:?}"
        );
        assert_eq!(fq, qp.fake_quantize_tensor(&shape, &x), "{spec:?}");
        // The mask: rounding moves a value by at most half a step; clamping by more.
        let inner: usize = match spec.granularity {
            qbench_quantizers::qparams::Granularity::PerTensor => x.len(),
            qbench_quantizers::qparams::Granularity::PerChannel { axis } => {
                shape[axis + 1..].iter().product()
            }
        };
        let (mut pass, mut clamped) = (0, 0);
        for (i, ((&v, &f), &m)) in x.iter().zip(&fq).zip(&mask).enumerate() {
            let c = if channels == 1 {
                0
            } else {
                (i / inner) % channels
            };
            let half = 0.5 * qp.scales[c];
            let err = (v - f).abs();
            if (err - half).abs() < 1e-4 * half {
                continue;
            }
            assert_eq!(m, err < half, "{spec:?} x[{i}] = {v} → {f}");
            if m {
                pass += 1;
            } else {
                clamped += 1;
            }
        }
        assert!(pass > 0 && clamped > 0, "{spec:?}: {pass} / {clamped}");
        assert!(matches!(spec.dtype, QDType::QUInt8 | QDType::QInt8));
    }
}

fn vi(name: &str, dims: Vec<Dim>) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        dims,
    }
}

/// `x [N, 1] → fc (W [2, 1], transB; b) → y`: one product per output, so f32 computes
/// it exactly as the reference below does.
fn scalar_linear() -> Graph {
    let mut init = BTreeMap::new();
    init.insert(
        "w".to_string(),
        Tensor::new(vec![2, 1], vec![0.731, -0.284]).unwrap(),
    );
    init.insert(
        "b".to_string(),
        Tensor::new(vec![2], vec![0.05, -0.11]).unwrap(),
    );
    Graph {
        name: "scalar-linear".into(),
        inputs: vec![vi("x", vec![Dim::Symbolic("N".into()), Dim::Fixed(1)])],
        outputs: vec![vi("y", vec![])],
        initializers: init,
        nodes: vec![Node {
            name: "fc".into(),
            op: Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            inputs: vec!["x".into(), "w".into(), "b".into()],
            outputs: vec!["y".into()],
        }],
    }
}

fn extremes(v: &[f32]) -> (f32, f32) {
    v.iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        })
}

#[test]
fn the_qat_forward_pass_is_the_reference_fake_quantization() {
    for backend in [Backend::Qnnpack, Backend::Fbgemm] {
        let cfg = QConfig::qat_preset(backend);
        let mut qat = prepare_qat(&scalar_linear(), backend, QConfigMap::global(cfg)).unwrap();
        assert_eq!(qat.fake_quantized_tensors(), ["x", "y"]);
        let w = [0.731f32, -0.284];
        let b = [0.05f32, -0.11];
        let mut rng = Rng::new(2);
        // Moving-average min/max, PyTorch's update (c = 0.01), kept here independently.
        type Range = Option<(f32, f32)>;
        let (mut xr, mut yr): (Range, Range) = (None, None);
        let ema = |r: Option<(f32, f32)>, (lo, hi): (f32, f32)| match r {
            None => (lo, hi),
            Some((a, b)) => (a + 0.01 * (lo - a), b + 0.01 * (hi - b)),
        };
        for step in 0..3 {
            let x = rng.normals(16, 1.0 + step as f32);
            let out = qat
                .network_mut()
                .forward(&Buf::new(vec![16, 1], x.clone()), Mode::Train)
                .unwrap()
                .output()
                .clone();
            let xr_now = ema(xr, extremes(&x));
            xr = Some(xr_now);
            let qx = cfg.activation.spec.qparams(&[xr_now.0], &[xr_now.1]);
            let xf = qx.fake_quantize_tensor(&[16, 1], &x);
            let wspec = QSpec {
                granularity: cfg.weight.spec.granularity,
                ..cfg.weight.spec
            };
            let qw = if backend.per_channel_weights() {
                wspec.qparams(&w, &w)
            } else {
                wspec.qparams(&[w[1]], &[w[0]])
            };
            let wf = qw.fake_quantize_tensor(&[2, 1], &w);
            let y: Vec<f32> = xf
                .iter()
                .flat_map(|&xv| (0..2).map(move |c| (c, xv)))
                .map(|(c, xv)| xv * wf[c] + b[c])
                .collect();
            let yr_now = ema(yr, extremes(&y));
            yr = Some(yr_now);
            let qy = cfg.activation.spec.qparams(&[yr_now.0], &[yr_now.1]);
            let expect = qy.fake_quantize_tensor(&[16, 2], &y);
            assert_eq!(
                out.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expect.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{} step {step}",
                backend.name()
            );
            assert_eq!(qat.activation_qparams("x"), Some(qx));
            assert_eq!(qat.activation_qparams("y"), Some(qy));
        }
        // Eval-mode passes do not observe.
        let before = qat.activation_qparams("x");
        qat.network_mut()
            .forward(&Buf::new(vec![2, 1], vec![50.0, -50.0]), Mode::Eval)
            .unwrap();
        assert_eq!(qat.activation_qparams("x"), before);
    }
}

fn zoo(name: &str) -> Graph {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/zoo")
        .join(name)
        .join("model.onnx");
    qbench_models::onnx::load(path).unwrap()
}

fn quick_config() -> QatConfig {
    QatConfig {
        epochs: 1,
        batch: 64,
        lr: 1e-3,
        seed: 1,
        ..QatConfig::default()
    }
}

fn agreement(a: &[usize], b: &[usize]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Fine-tunes `model` on 512 training images, converts, and compares the int8 model's
/// predictions with the fake-quant network's on the first `test_images` test images.
/// Returns the int8 top-1, the converted model and the test images.
fn qat_agreement(
    model: &str,
    kind: DatasetKind,
    backend: Backend,
    test_images: usize,
) -> (f64, qbench_quantizers::QuantizedModel, Tensor) {
    let g = zoo(model);
    let train = Dataset::load(kind, Split::Train)
        .unwrap()
        .shuffled(1)
        .take(512);
    let test = Dataset::load(kind, Split::Test).unwrap().take(test_images);
    let mut qat = prepare_qat(
        &g,
        backend,
        QConfigMap::global(QConfig::qat_preset(backend)),
    )
    .unwrap();
    let reports = qat.train(&train, &quick_config(), |_| {}, |_| {}).unwrap();
    assert_eq!(reports.len(), 1);
    let fake = qat.predict(&test, 250).unwrap();
    let model_q = qat.convert().unwrap();
    assert_eq!(model_q.recipe.method, Method::Qat);
    assert_eq!(model_q.recipe.calibration_samples, 512);
    let exec = QExecutor::new(&model_q).unwrap();
    let x = Tensor::new(vec![test.len(), 1, 28, 28], test.images().to_vec()).unwrap();
    // Layer by layer on 100 images: every fake-quantized tensor is the int8 model's
    // (dequantized) up to rare 1-LSB rounding flips of f32 against integer arithmetic.
    let x100 = Tensor::new(vec![100, 1, 28, 28], test.images()[..100 * 784].to_vec()).unwrap();
    let traced = exec.run_traced(std::slice::from_ref(&x100)).unwrap();
    let net = qat.network_mut();
    let tape = net
        .forward(
            &Buf::new(vec![100, 1, 28, 28], x100.f32s().unwrap().to_vec()),
            Mode::Eval,
        )
        .unwrap();
    let mut compared = 0;
    for (name, fq) in net.step_outputs(&tape) {
        // The graph input is traced in its f32 form; its quantization is one formula.
        let Some(t) = name
            .strip_suffix(":fake_quant")
            .filter(|t| model_q.graph.inputs.iter().all(|i| i.name != *t))
        else {
            continue;
        };
        let (Some(q), Some(qp)) = (traced.get(t), model_q.activations.get(t)) else {
            continue;
        };
        let lsb: Vec<f32> = q
            .f32s()
            .unwrap()
            .iter()
            .zip(&fq.data)
            .map(|(a, b)| (a - b).abs() / qp.scales[0])
            .collect();
        let differ = lsb.iter().filter(|&&d| d > 1e-3).count() as f64 / lsb.len() as f64;
        assert!(
            differ < 0.01,
            "{model} {}: {t}: {:.2} % of values differ from int8",
            backend.name(),
            100.0 * differ
        );
        compared += 1;
    }
    assert!(compared >= 3, "{compared} tensors compared");
    // In batches of 1,000: one batch of 10,000 would hold a GB of activations.
    let int8: Vec<usize> = test
        .images()
        .chunks(1000 * 784)
        .flat_map(|b| {
            let xb = Tensor::new(vec![b.len() / 784, 1, 28, 28], b.to_vec()).unwrap();
            exec.run(&[xb]).unwrap()[0].argmax_rows().unwrap()
        })
        .collect();
    let agree = agreement(&fake, &int8);
    let top1 = agreement(
        &int8,
        &test
            .labels()
            .iter()
            .map(|&l| usize::from(l))
            .collect::<Vec<_>>(),
    );
    eprintln!(
        "{model} {}: int8 vs fake-quant agreement {:.2} %, int8 top-1 {:.1} %",
        backend.name(),
        100.0 * agree,
        100.0 * top1
    );
    assert!(
        agree >= 0.995,
        "{model} {}: int8 and fake-quant predictions agree on {:.2} % only",
        backend.name(),
        100.0 * agree
    );
    // Every conv/linear ran in int8 (nothing fell back to fp32).
    assert!(exec
        .placements()
        .iter()
        .filter(|p| p.op == "Conv" || p.op == "Gemm")
        .all(|p| p.int8));
    (top1, model_q, x)
}

#[test]
fn resnet_fashion_int8_agrees_with_its_fake_quant_network() {
    for backend in [Backend::Qnnpack, Backend::Fbgemm] {
        let (top1, ..) = qat_agreement("resnet-fashion", DatasetKind::FashionMnist, backend, 1000);
        assert!(top1 > 0.85, "{}: top-1 {top1}", backend.name());
    }
}

#[test]
fn digit_cnn_int8_agrees_with_its_fake_quant_network() {
    // The whole MNIST test set (10,000 images): the issue asks for ≥ 99.5 % agreement on
    // the eval set, and it costs a few seconds here.
    let (top1, model, x) = qat_agreement("digit-cnn", DatasetKind::Mnist, Backend::Vnni, 10_000);
    assert_eq!(x.shape()[0], 10_000);
    assert!(top1 > 0.97, "top-1 {top1}");
    // A QAT model is a static model to everything downstream: the safetensors round
    // trip, and the ONNX exports against tract under the export's tolerance policy.
    let back = save::from_bytes(&save::to_bytes(&model).unwrap(), Path::new("m")).unwrap();
    assert_eq!(back.recipe.method, Method::Qat);
    let x200 = Tensor::new(
        vec![200, 1, 28, 28],
        x.f32s().unwrap()[..200 * 784].to_vec(),
    )
    .unwrap();
    let run = |m| {
        QExecutor::new(m)
            .unwrap()
            .run(std::slice::from_ref(&x200))
            .unwrap()
    };
    assert_eq!(run(&model), run(&back));
    for form in [Form::QOperator, Form::Qdq] {
        let r = tract_check::check(&model, form, std::slice::from_ref(&x200)).unwrap();
        assert!(r.passes(), "{form:?}: {r:?}");
    }
}

#[test]
fn convert_quantizes_the_folded_trained_weights() {
    let g = zoo("resnet-fashion");
    let backend = Backend::Fbgemm;
    let cfg = QConfig::qat_preset(backend);
    let mut qat = prepare_qat(&g, backend, QConfigMap::global(cfg)).unwrap();
    let train = Dataset::load(DatasetKind::FashionMnist, Split::Train)
        .unwrap()
        .take(128);
    qat.train(&train, &quick_config(), |_| {}, |_| {}).unwrap();
    let model = qat.convert().unwrap();
    let net = qat.network();
    let p = |n: &str| net.params()[net.param_index(n).unwrap()].value.clone();
    let mut checked = 0;
    for layer in model.layers.iter().filter(|l| l.node.ends_with(".conv")) {
        let base = layer.node.trim_end_matches(".conv");
        let w = p(&format!("{base}.conv.weight"));
        let gamma = p(&format!("{base}.bn.weight"));
        let var = p(&format!("{base}.bn.running_var"));
        // The trained weights, folded with the trained statistics.
        let per = w.len() / gamma.len();
        let folded: Vec<f32> = w
            .chunks(per)
            .enumerate()
            .flat_map(|(c, row)| {
                let s = gamma[c] / (var[c] + 1e-5).sqrt();
                row.iter().map(move |v| v * s)
            })
            .collect();
        let (mins, maxs): (Vec<f32>, Vec<f32>) = folded.chunks(per).map(extremes).unzip();
        let qp = cfg.weight.spec.qparams(&mins, &maxs);
        assert_eq!(layer.weight_q, qp, "{}", layer.node);
        let q: Vec<i8> = qp
            .quantize_tensor(&layer.weight_shape, &folded)
            .into_iter()
            .map(|v| v as i8)
            .collect();
        assert_eq!(layer.weight, q, "{}", layer.node);
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn qat_errors_name_the_setting_or_layer() {
    let g = zoo("resnet-fashion");
    let backend = Backend::Qnnpack;
    let map = || QConfigMap::global(QConfig::qat_preset(backend));
    // Converting before any training: the observers saw nothing.
    let qat = prepare_qat(&g, backend, map()).unwrap();
    match qat.convert() {
        Err(QuantError::NoData { layer, .. }) => assert_eq!(layer, "stem.conv"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("converted without observing"),
    }
    let mut qat = prepare_qat(&g, backend, map()).unwrap();
    let train = Dataset::load(DatasetKind::FashionMnist, Split::Train)
        .unwrap()
        .take(8);
    let bad = QatConfig {
        freeze_observers_after: Some(0),
        ..quick_config()
    };
    let e = qat.train(&train, &bad, |_| {}, |_| {}).unwrap_err();
    assert!(e.to_string().contains("freeze_observers_after"), "{e}");
    let e = qat
        .train(
            &train,
            &QatConfig {
                lr: f32::NAN,
                ..quick_config()
            },
            |_| {},
            |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("qat.lr"), "{e}");
    // An op the trainer cannot differentiate is named.
    let mut g2 = scalar_linear();
    g2.nodes.push(Node {
        name: "soft".into(),
        op: Op::Softmax {
            axis: 1,
            legacy: false,
        },
        inputs: vec!["y".into()],
        outputs: vec!["z".into()],
    });
    g2.outputs[0].name = "z".into();
    let e = prepare_qat(&g2, backend, map()).err().unwrap().to_string();
    assert!(e.contains("soft") && e.contains("Softmax"), "{e}");
}

/// What a test compares of a QAT network between epochs, as bits: the qparams of every
/// activation fake quantizer, the BatchNorm running statistics, the trainable weights.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    qparams: Vec<Option<QParams>>,
    bn_stats: Vec<Vec<u32>>,
    weights: Vec<Vec<u32>>,
}

fn snapshot(
    net: &qbench_models::train::Network,
    qparams: impl Fn(&str) -> Option<QParams>,
    tensors: &[String],
) -> Snapshot {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    Snapshot {
        qparams: tensors.iter().map(|t| qparams(t)).collect(),
        bn_stats: net
            .params()
            .iter()
            .filter(|p| !p.trainable())
            .map(|p| bits(&p.value))
            .collect(),
        weights: net
            .params()
            .iter()
            .filter(|p| p.trainable())
            .map(|p| bits(&p.value))
            .collect(),
    }
}

/// Three epochs of QAT on `train` with the given freeze points: a snapshot at the start
/// of each epoch (after its freeze switches are set) and one at the end, with the
/// switches each epoch ran with.
fn snapshots_per_epoch(
    train: &Dataset,
    freeze_observers_after: Option<usize>,
    freeze_bn_after: Option<usize>,
) -> (Vec<Snapshot>, Vec<(bool, bool)>) {
    let backend = Backend::Qnnpack;
    let mut qat = prepare_qat(
        &zoo("resnet-fashion"),
        backend,
        QConfigMap::global(QConfig::qat_preset(backend)),
    )
    .unwrap();
    let tensors: Vec<String> = qat
        .fake_quantized_tensors()
        .iter()
        .map(|t| t.to_string())
        .collect();
    let cfg = QatConfig {
        epochs: 3,
        batch: 64,
        lr: 0.01,
        seed: 4,
        freeze_observers_after,
        freeze_bn_after,
        ..QatConfig::default()
    };
    let mut snaps = Vec::new();
    let mut switches = Vec::new();
    qat.train_with(
        train,
        &cfg,
        |e| {
            snaps.push(snapshot(e.network, |t| e.activation_qparams(t), &tensors));
            switches.push((e.network.observers_enabled, e.network.bn_frozen));
        },
        |_| {},
        |_| {},
    )
    .unwrap();
    snaps.push(snapshot(
        qat.network(),
        |t| qat.activation_qparams(t),
        &tensors,
    ));
    (snaps, switches)
}

#[test]
fn observers_and_batchnorm_statistics_freeze_after_their_epochs() {
    let train = Dataset::load(DatasetKind::FashionMnist, Split::Train)
        .unwrap()
        .shuffled(2)
        .take(256);
    // snaps[e] is the model after epoch e (snaps[0]: before training).
    let (frozen, switches) = snapshots_per_epoch(&train, Some(1), Some(2));
    assert_eq!(frozen.len(), 4);
    assert_eq!(
        switches,
        [(true, false), (false, false), (false, true)],
        "(observers enabled, BN frozen) per epoch"
    );
    // Observers: nothing before training, qparams after epoch 1, and those unchanged by
    // epochs 2 and 3.
    assert!(frozen[0].qparams.iter().all(Option::is_none));
    assert!(frozen[1].qparams.iter().all(Option::is_some));
    assert_eq!(
        frozen[2].qparams, frozen[1].qparams,
        "epoch 2 moved frozen observers"
    );
    assert_eq!(
        frozen[3].qparams, frozen[1].qparams,
        "epoch 3 moved frozen observers"
    );
    // BatchNorm statistics move in epochs 1 and 2, not in 3.
    assert_ne!(frozen[1].bn_stats, frozen[0].bn_stats);
    assert_ne!(frozen[2].bn_stats, frozen[1].bn_stats);
    assert_eq!(
        frozen[3].bn_stats, frozen[2].bn_stats,
        "epoch 3 moved frozen BN"
    );
    // Training goes on meanwhile, so the equalities above are the freezes' doing.
    assert_ne!(frozen[3].weights, frozen[2].weights);

    // The same run without freezing: epoch 1 is identical (the freezes act only from
    // epoch 2), and afterwards observers and statistics keep moving.
    let (free, switches) = snapshots_per_epoch(&train, None, None);
    assert_eq!(switches, [(true, false); 3]);
    assert_eq!(free[1], frozen[1]);
    assert_ne!(free[2].qparams, free[1].qparams);
    assert_ne!(free[3].qparams, free[2].qparams);
    assert_ne!(free[3].bn_stats, free[2].bn_stats);
}

/// QAT on digit-cnn with `threads` rayon threads: the trained network's parameters (as
/// bits) and the converted model's safetensors file (int8 weights, qparams, biases,
/// graph, recipe; one byte sequence per model since the header's keys are sorted).
fn qat_run(threads: usize, seed: u64) -> (Vec<Vec<u32>>, Vec<u8>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let backend = Backend::Fbgemm;
        let mut qat = prepare_qat(
            &zoo("digit-cnn"),
            backend,
            QConfigMap::global(QConfig::qat_preset(backend)),
        )
        .unwrap();
        let train = Dataset::load(DatasetKind::Mnist, Split::Train)
            .unwrap()
            .shuffled(seed)
            .take(200);
        let cfg = QatConfig {
            epochs: 2,
            batch: 32,
            lr: 0.01,
            seed,
            freeze_bn_after: None,
            ..QatConfig::default()
        };
        qat.train(&train, &cfg, |_| {}, |_| {}).unwrap();
        let params = qat
            .network()
            .params()
            .iter()
            .map(|p| p.value.iter().map(|v| v.to_bits()).collect())
            .collect();
        (params, save::to_bytes(&qat.convert().unwrap()).unwrap())
    })
}

#[test]
fn qat_is_bit_identical_for_a_seed_whatever_the_thread_count() {
    let (params_1, model_1) = qat_run(1, 9);
    let (params_3, model_3) = qat_run(3, 9);
    assert!(
        params_1 == params_3,
        "weights differ between 1 and 3 threads"
    );
    assert!(
        model_1 == model_3,
        "converted models differ between 1 and 3 threads"
    );
    // The seed matters: another one trains to other weights.
    let (params_other, _) = qat_run(3, 10);
    assert!(params_other != params_1, "seed 10 gave seed 9's weights");
}

#[test]
fn a_4_bit_qconfig_trains_converts_and_runs_on_16_levels() {
    let backend = Backend::Qnnpack;
    let mut cfg = QConfig::qat_preset(backend);
    cfg.activation.spec = cfg.activation.spec.with_bits(4).unwrap();
    cfg.weight.spec = cfg.weight.spec.with_bits(4).unwrap();
    let mut qat = prepare_qat(&zoo("digit-cnn"), backend, QConfigMap::global(cfg)).unwrap();
    let train = Dataset::load(DatasetKind::Mnist, Split::Train)
        .unwrap()
        .shuffled(1)
        .take(512);
    let test = Dataset::load(DatasetKind::Mnist, Split::Test)
        .unwrap()
        .take(500);
    qat.train(&train, &quick_config(), |_| {}, |_| {}).unwrap();
    let fake = qat.predict(&test, 250).unwrap();
    let model = qat.convert().unwrap();

    // Weights: 4-bit symmetric qparams, every value in [-8, 7].
    assert!(!model.layers.is_empty());
    for l in &model.layers {
        let spec = l.weight_q.spec;
        assert_eq!((spec.qmin, spec.qmax), (-8, 7), "{}", l.node);
        let (lo, hi) = l
            .weight
            .iter()
            .fold((i8::MAX, i8::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= -8 && hi <= 7, "{}: weights in [{lo}, {hi}]", l.node);
        // The range is used, not collapsed onto a few levels.
        assert!(hi - lo >= 8, "{}: weights in [{lo}, {hi}]", l.node);
    }
    // Activations: every tensor the int8 model materialises holds at most 16 levels, each
    // an integer in [0, 15] of its qparams.
    let exec = QExecutor::new(&model).unwrap();
    let x = Tensor::new(vec![500, 1, 28, 28], test.images().to_vec()).unwrap();
    let x100 = Tensor::new(vec![100, 1, 28, 28], test.images()[..100 * 784].to_vec()).unwrap();
    let traced = exec.run_traced(std::slice::from_ref(&x100)).unwrap();
    let (mut checked, mut most_levels) = (0, 0);
    for (t, qp) in &model.activations {
        assert_eq!((qp.spec.qmin, qp.spec.qmax), (0, 15), "{t}");
        // The graph input is traced in its f32 form; its quantization is one formula.
        if model.graph.inputs.iter().any(|i| i.name == *t) {
            continue;
        }
        let Some(v) = traced.get(t) else { continue };
        let (s, z) = (qp.scales[0], qp.zero_points[0]);
        let mut levels = std::collections::BTreeSet::new();
        for &y in v.f32s().unwrap() {
            let q = y / s + z as f32;
            assert!(
                (q - q.round()).abs() < 1e-3 && (-0.5..15.5).contains(&q),
                "{t}: {y} is level {q}"
            );
            levels.insert(q.round() as i32);
        }
        assert!(levels.len() <= 16, "{t}: {} levels", levels.len());
        most_levels = most_levels.max(levels.len());
        checked += 1;
    }
    assert!(checked >= 3, "{checked} activation tensors checked");
    // The 4-bit grid is used, not a coarser one.
    assert!(
        most_levels > 8,
        "at most {most_levels} levels in any tensor"
    );
    // The int8 model predicts what the fake-quant network trained to predict.
    let int8 = exec.run(std::slice::from_ref(&x)).unwrap()[0]
        .argmax_rows()
        .unwrap();
    let agree = agreement(&fake, &int8);
    eprintln!("4-bit: int8 vs fake-quant agreement {:.2} %", 100.0 * agree);
    assert!(agree >= 0.98, "agreement {:.2} %", 100.0 * agree);
}
