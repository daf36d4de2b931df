//! Building a quantized model: a [`QuantSpec`] (method, backend and their options)
//! through the dynamic, fp16, static or QAT pipeline ([`build`]), with the calibration
//! batches and the QAT fine-tuning data it needs (the model's training split, never its
//! test set). `quantize`, `bench-model` and the sweep all build through here.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qbench_models::data::{Dataset, DatasetKind, Split, IMAGE_LEN};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::qparams::QSpec;
use qbench_quantizers::{
    prepare, prepare_qat, quantize_dynamic, ActScales, Backend, DynamicOptions, Method, QConfig,
    QConfigMap, QatConfig, QuantizedModel,
};

use crate::progress::Progress;
use crate::target::{self, batch_tensor, Target};

/// What to build.
#[derive(Clone, Debug)]
pub struct QuantSpec {
    pub method: Method,
    pub backend: Backend,
    /// Static: overrides the preset's activation observer.
    pub observer: Option<ObserverKind>,
    /// Node names kept in fp32.
    pub skip: Vec<String>,
    /// Static: calibration images from the training split.
    pub calib_samples: usize,
    /// Static: the training split to calibrate a bare ONNX file on (`--calib-data`);
    /// zoo models use their manifest's.
    pub calib_data: Option<DatasetKind>,
    /// Weights per output channel (`Some(true)`) or per tensor (`Some(false)`) instead
    /// of the backend's default (`--per-channel` / `--per-tensor`).
    pub per_channel: Option<bool>,
    /// Dynamic: per-tensor or per-row activation scales.
    pub act_scales: ActScales,
    /// Dynamic: op types to quantize.
    pub op_types: Vec<String>,
    /// QAT: the fine-tuning run.
    pub qat: QatConfig,
    /// QAT: fine-tune on a seeded shuffled slice of this many training images (`None`:
    /// the whole training split).
    pub qat_samples: Option<usize>,
}

/// Training images of a `--quick` QAT run (a seeded shuffled slice).
pub const QUICK_QAT_SAMPLES: usize = 2000;

impl QuantSpec {
    pub fn new(method: Method, backend: Backend) -> QuantSpec {
        QuantSpec {
            method,
            backend,
            observer: None,
            skip: Vec::new(),
            calib_samples: 1024,
            calib_data: None,
            per_channel: None,
            act_scales: ActScales::PerTensor,
            op_types: vec!["Gemm".into(), "MatMul".into()],
            qat: QatConfig::default(),
            qat_samples: None,
        }
    }
}

/// Calibration batches of 64 images from the first `n` images of the model's training
/// split, preprocessed as its manifest says, or, for a bare ONNX file, of `calib_data`'s
/// training split (the dataset's own normalisation). A model with neither (a speed-only
/// zoo model such as resnet50, or a file without `--calib-data`) is calibrated on seeded
/// uniform noise of its input shape: good enough to time it, meaningless for accuracy,
/// and said so on stderr.
pub fn calibration_batches(
    target: &Target,
    graph: &Graph,
    n: usize,
    calib_data: Option<DatasetKind>,
) -> Result<Vec<Tensor>> {
    let own = target::eval_spec(target, None, false)?;
    let spec = match (own, calib_data) {
        (Some(spec), Some(d)) if spec.dataset != d => bail!(
            "--calib-data {}: {} is a zoo model calibrated on its own training split ({}); drop the flag",
            d.name(),
            target.name,
            spec.dataset.name()
        ),
        (Some(spec), _) => Some(spec),
        (None, Some(d)) if target.entry.is_some() => bail!(
            "--calib-data {}: {} is a speed-only zoo model whose input is not a 28x28 image; drop the flag",
            d.name(),
            target.name
        ),
        (None, Some(d)) => target::eval_spec(target, Some(d), false)?,
        (None, None) => None,
    };
    let Some(mut spec) = spec else {
        let (why, hint) = if target.entry.is_none() {
            (
                "is not a zoo model and --calib-data was not given",
                "; give --calib-data mnist|fashion-mnist to calibrate on real images",
            )
        } else {
            ("has no eval set", "")
        };
        eprintln!(
            "note: {} {why}: calibrating on synthetic noise, so the quantized model's accuracy means nothing (fine for timing){hint}",
            target.name
        );
        let batches = n.div_ceil(64).min(4);
        return (0..batches)
            .map(|i| crate::target::input_batch(target, graph, 1).map(|t| shift(t, i)))
            .collect();
    };
    spec.split = Split::Train;
    let ds = target::load_dataset(&spec, Some(n))?;
    let images = target::model_inputs(&ds, &spec);
    images.chunks(64 * IMAGE_LEN).map(batch_tensor).collect()
}

/// QAT's fine-tuning images: the model's training split, preprocessed as its manifest
/// says, optionally a seeded shuffled slice of `n` images.
pub fn qat_training_data(target: &Target, n: Option<usize>, seed: u64) -> Result<Dataset> {
    let Some(mut spec) = target::eval_spec(target, None, false)? else {
        bail!(
            "{} has no eval set, so no training split to fine-tune QAT on (static or dynamic quantization work without one)",
            target.name
        );
    };
    spec.split = Split::Train;
    let ds = target::load_dataset(&spec, None)?;
    let ds = match target::model_inputs(&ds, &spec) {
        std::borrow::Cow::Borrowed(_) => ds,
        std::borrow::Cow::Owned(images) => ds.with_images(images),
    };
    Ok(match n {
        Some(n) => ds.shuffled(seed).take(n),
        None => ds,
    })
}

/// Quantizes `graph` (from `target`) per `spec`; returns the model and the time spent
/// (calibration or QAT fine-tuning included). Calibration and training steps go to
/// `progress`.
pub fn build(
    target: &Target,
    graph: &Graph,
    spec: &QuantSpec,
    progress: &Progress,
) -> Result<(QuantizedModel, Duration)> {
    let start = Instant::now();
    let mut model = match spec.method {
        Method::Fp32 => bail!("fp32 is the baseline: there is nothing to quantize"),
        Method::Dynamic => {
            let mut opts = DynamicOptions::new(spec.backend);
            opts.act_scales = spec.act_scales;
            opts.skip = spec.skip.clone();
            opts.op_types = spec.op_types.clone();
            opts.per_channel = spec
                .per_channel
                .unwrap_or_else(|| dynamic_per_channel(spec.backend));
            quantize_dynamic(graph, &opts)?
        }
        Method::Fp16 => quantize_fp16(graph)?,
        Method::Static => {
            let mut config = QConfig::preset(spec.backend);
            if let Some(obs) = spec.observer {
                config = config.with_activation_observer(obs);
            }
            if let Some(pc) = spec.per_channel {
                config.weight.spec = QSpec::weight_qint8(pc.then_some(0));
            }
            let mut map = QConfigMap::global(config);
            for s in &spec.skip {
                map = map.set_layer(s, None);
            }
            let batches = calibration_batches(target, graph, spec.calib_samples, spec.calib_data)?;
            let mut prepared = prepare(graph, spec.backend, map)?;
            prepared.calibrate(batches.iter(), |done, total| {
                if done == total || done % 8 == 0 {
                    progress.step(&format!("calibrating: batch {done}/{total}"));
                }
            })?;
            prepared.convert()?
        }
        Method::Qat => {
            let mut config = QConfig::qat_preset(spec.backend);
            if let Some(obs) = spec.observer {
                config = config.with_activation_observer(obs);
            }
            if let Some(pc) = spec.per_channel {
                config.weight.spec = QSpec::weight_qint8(pc.then_some(0));
            }
            let mut map = QConfigMap::global(config);
            for s in &spec.skip {
                map = map.set_layer(s, None);
            }
            let data = qat_training_data(target, spec.qat_samples, spec.qat.seed)?;
            let mut qat = prepare_qat(graph, spec.backend, map)?;
            let c = &spec.qat;
            let freeze = |at: Option<usize>| match at {
                None => "never".to_string(),
                Some(0) => "from the start".to_string(),
                Some(e) => format!("after epoch {e}"),
            };
            progress.note(&format!(
                "qat: {} epoch{} over {} training images, batch {}, SGD lr {} (cosine) momentum {}, weight decay {}; observers freeze {}, BatchNorm statistics {}; seed {}",
                c.epochs,
                if c.epochs == 1 { "" } else { "s" },
                data.len(),
                c.batch,
                c.lr,
                c.momentum,
                c.weight_decay,
                freeze(c.freeze_observers_after),
                freeze(c.freeze_bn_after),
                c.seed
            ));
            let epochs = c.epochs;
            qat.train(
                &data,
                c,
                |p| {
                    if p.step % 25 == 0 || p.step == p.steps {
                        progress.step(&format!(
                            "qat epoch {}/{epochs}: step {}/{} loss {:.4}",
                            p.epoch, p.step, p.steps, p.loss
                        ));
                    }
                },
                |e| {
                    progress.note(&format!(
                        "qat epoch {}/{epochs}: loss {:.4}, fake-quant train top-1 {:.2} %, lr {:.2e}, {:.1} s",
                        e.epoch,
                        e.loss,
                        100.0 * e.train_top1,
                        e.lr,
                        e.seconds
                    ));
                },
            )?;
            qat.convert()?
        }
    };
    let (source, sha) = target::source_identity(target)?;
    model.recipe.source = source;
    model.recipe.source_sha256 = Some(sha);
    Ok((model, start.elapsed()))
}

/// Dynamic quantization's default weight granularity per backend: per channel under
/// vnni, per tensor under fbgemm (PyTorch's `default_dynamic_qconfig`) and qnnpack (its
/// kernels' per-tensor weights). Static and QAT follow the preset
/// ([`Backend::per_channel_weights`]: per channel under fbgemm and vnni).
pub fn dynamic_per_channel(backend: Backend) -> bool {
    backend.per_channel_weights() && backend != Backend::Fbgemm
}

/// The fp32 model's size in bytes: its file, or, when the file builds its weights at load
/// (light_resnet50 fills 25.5M weights with `ConstantOfShape`, so its file is 78 KiB), the
/// f32 bytes of the weights it builds, so that size ratios compare weights with weights.
pub(crate) fn fp32_size(target: &Target, graph: &Graph) -> Result<u64> {
    let file = std::fs::metadata(&target.path)
        .with_context(|| format!("reading {}", target.path.display()))?
        .len();
    let folded = qbench_quantizers::fuse::fold_constants(graph)
        .with_context(|| format!("folding the constants of {}", target.path.display()))?;
    let weights: usize = folded.initializers.values().map(|t| 4 * t.len()).sum();
    Ok(file.max(weights as u64))
}

/// A cheap variation of a synthetic batch, so calibration batches differ.
fn shift(mut t: Tensor, i: usize) -> Tensor {
    if let Ok(x) = t.f32s_mut() {
        let k = x.len().max(1);
        x.rotate_left((i * 7919) % k);
    }
    t
}
