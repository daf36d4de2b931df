//! `qbench quantize`: a zoo model or ONNX file through the dynamic, fp16 or static
//! pipeline into a `.safetensors` quantized model. Also owns what `bench-model` and the
//! sweep share: building a quantized model from a `<model|file>` ([`build`]) and the
//! calibration batches (the model's training split, never its test set).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use qbench_models::data::{Split, IMAGE_LEN};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_quantizers::export::{self, Form};
use qbench_quantizers::fp16::quantize_fp16;
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::{
    prepare, quantize_dynamic, save, ActScales, Backend, DynamicOptions, Method, QConfig,
    QConfigMap, QExecutor, QuantizedModel,
};

use crate::eval::{self, batch_tensor, Target};

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
    /// Dynamic: per-tensor or per-row activation scales.
    pub act_scales: ActScales,
    /// Dynamic: op types to quantize.
    pub op_types: Vec<String>,
}

impl QuantSpec {
    pub fn new(method: Method, backend: Backend) -> QuantSpec {
        QuantSpec {
            method,
            backend,
            observer: None,
            skip: Vec::new(),
            calib_samples: 1024,
            act_scales: ActScales::PerTensor,
            op_types: vec!["Gemm".into(), "MatMul".into()],
        }
    }
}

/// Calibration batches of 64 images from the first `n` images of the model's training
/// split, preprocessed as its manifest says. A model without an eval set (a speed-only
/// model such as resnet50) is calibrated on seeded uniform noise of its input shape:
/// good enough to time it, meaningless for accuracy, and said so on stderr.
pub fn calibration_batches(target: &Target, graph: &Graph, n: usize) -> Result<Vec<Tensor>> {
    let Some(mut spec) = eval::eval_spec(target, None, false)? else {
        eprintln!(
            "note: {} has no eval set; calibrating on synthetic inputs (for speed only)",
            target.name
        );
        let batches = n.div_ceil(64).min(4);
        return (0..batches)
            .map(|i| crate::bench_model::input_batch(target, graph, 1).map(|t| shift(t, i)))
            .collect();
    };
    spec.split = Split::Train;
    let ds = eval::load_dataset(&spec, Some(n))?;
    let images = eval::model_inputs(&ds, &spec);
    images.chunks(64 * IMAGE_LEN).map(batch_tensor).collect()
}

/// Quantizes `graph` (from `target`) per `spec`; returns the model and the time spent
/// (calibration included).
pub fn build(
    target: &Target,
    graph: &Graph,
    spec: &QuantSpec,
) -> Result<(QuantizedModel, Duration)> {
    let start = Instant::now();
    let mut model = match spec.method {
        Method::Dynamic => {
            let mut opts = DynamicOptions::new(spec.backend);
            opts.act_scales = spec.act_scales;
            opts.skip = spec.skip.clone();
            opts.op_types = spec.op_types.clone();
            opts.per_channel =
                spec.backend.per_channel_weights() && spec.backend != Backend::Fbgemm;
            quantize_dynamic(graph, &opts)?
        }
        Method::Fp16 => quantize_fp16(graph)?,
        Method::Static => {
            let mut config = QConfig::preset(spec.backend);
            if let Some(obs) = spec.observer {
                config = config.with_activation_observer(obs);
            }
            let mut map = QConfigMap::global(config);
            for s in &spec.skip {
                map = map.set_layer(s, None);
            }
            let batches = calibration_batches(target, graph, spec.calib_samples)?;
            let mut prepared = prepare(graph, spec.backend, map)?;
            prepared.calibrate(batches.iter(), |done, total| {
                if done == total || done % 8 == 0 {
                    eprint!("\rcalibrating: batch {done}/{total}");
                }
            })?;
            eprintln!();
            prepared.convert()?
        }
        Method::Qat => {
            bail!("--method qat is not built yet (quantization-aware training needs the trainer)")
        }
    };
    model.recipe.source = target.name.clone();
    Ok((model, start.elapsed()))
}

/// Validated arguments of `qbench quantize`.
pub struct QuantizeArgs {
    pub model: String,
    pub spec: QuantSpec,
    pub out: PathBuf,
    /// `--export-onnx FORM FILE.onnx`.
    pub export_onnx: Option<(Form, PathBuf)>,
}

/// `--export-onnx`'s two values (form, path), if given.
pub fn parse_export(v: &[String]) -> Result<Option<(Form, PathBuf)>> {
    match v {
        [] => Ok(None),
        [form, path] => {
            let f = Form::from_name(form).with_context(|| {
                format!("--export-onnx: unknown form {form:?}; valid: qdq, qoperator")
            })?;
            Ok(Some((f, PathBuf::from(path))))
        }
        _ => bail!("--export-onnx takes a form and a path"),
    }
}

/// `qbench quantize`.
pub fn cmd_quantize(args: &QuantizeArgs) -> Result<()> {
    let target = eval::resolve(&args.model)?;
    let graph = eval::load_graph(&target.path)?;
    let (model, took) = build(&target, &graph, &args.spec)?;
    let exec = QExecutor::new(&model).context("preparing the quantized model")?;
    save::save(&model, &args.out)?;
    let size = file_len(&args.out)?;
    let fp32_size = file_len(&target.path)?;
    let int8: Vec<&str> = exec
        .placements()
        .iter()
        .filter(|p| p.int8)
        .map(|p| p.node.as_str())
        .collect();
    let fp32: Vec<String> = exec
        .placements()
        .iter()
        .filter(|p| !p.int8)
        .map(|p| format!("{} ({})", p.node, p.op))
        .collect();
    println!(
        "{} → {}: {} / {}, {} int8 layers, kernel rung {}",
        target.name,
        args.out.display(),
        args.spec.method.name(),
        args.spec.backend.name(),
        model.layers.len(),
        exec.rung().name()
    );
    println!(
        "size {} bytes = {:.3}x the fp32 file ({} bytes); took {:.2} s",
        size,
        size as f64 / fp32_size as f64,
        fp32_size,
        took.as_secs_f64()
    );
    println!("int8 nodes ({}): {}", int8.len(), int8.join(", "));
    if !fp32.is_empty() {
        println!("fp32 nodes ({}): {}", fp32.len(), fp32.join(", "));
    }
    if let Some((form, path)) = &args.export_onnx {
        export::save(&model, *form, path)
            .with_context(|| format!("exporting {} as ONNX ({form:?})", target.name))?;
        println!("ONNX ({form:?}) → {}", path.display());
    }
    Ok(())
}

/// A cheap variation of a synthetic batch, so calibration batches differ.
fn shift(mut t: Tensor, i: usize) -> Tensor {
    if let Ok(x) = t.f32s_mut() {
        let k = x.len().max(1);
        x.rotate_left((i * 7919) % k);
    }
    t
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}
