//! The model a command names and the data it runs on: resolving a `<model|file.onnx>`
//! argument ([`resolve`]) to a zoo entry or a bare file, loading its graph and executor,
//! working out which data it is evaluated on and how its pixels are preprocessed
//! ([`eval_spec`], [`model_inputs`]), and a deterministic input batch for timing
//! ([`input_batch`]). Every command shares these; none owns them. Everything that can be
//! checked without loading a model or a dataset is checked first, so a bad argument fails
//! in milliseconds.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use qbench_models::data::{self, Dataset, DatasetKind, Split, IMAGE_LEN, IMAGE_SIDE};
use qbench_models::exec::{Executor, Options};
use qbench_models::ir::Graph;
use qbench_models::tensor::Tensor;
use qbench_models::zoo::{self, DType, Layout, Preprocessing, ZooEntry};
use qbench_quantizers::QExecutor;

/// A model named on the command line: a zoo entry (with its manifest) or a bare file.
pub struct Target {
    /// The zoo name, or the path as given.
    pub name: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// The manifest, for zoo models.
    pub entry: Option<ZooEntry>,
}

/// Resolves `spec`: something that looks like a path (ends in `.onnx`, has a separator, or
/// is an existing file) is a file, which must exist; anything else is a zoo name.
pub fn resolve(spec: &str) -> Result<Target> {
    let path = Path::new(spec);
    let looks_like_path = spec.to_ascii_lowercase().ends_with(".onnx")
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.contains('/')
        || path.is_file();
    if looks_like_path {
        if !path.is_file() {
            bail!("model file {spec} does not exist (or is not a file)");
        }
        return Ok(Target {
            name: spec.to_string(),
            path: path.to_path_buf(),
            entry: None,
        });
    }
    let dir = zoo::zoo_dir();
    let entries =
        zoo::list(&dir).with_context(|| format!("reading the model zoo in {}", dir.display()))?;
    match entries.into_iter().find(|e| e.manifest.name == spec) {
        // Not an ONNX file: say what works instead of failing to decode safetensors.
        Some(entry) if entry.manifest.architecture.is_some() => bail!(
            "{spec} is built from its weights ({}), not loaded from an ONNX file, so eval, inspect and \
             crosscheck do not take it yet; `qbench bench-minilm` runs it against tract (after `qbench fetch {spec}`)",
            entry.manifest_path().display()
        ),
        Some(entry) => Ok(Target {
            name: spec.to_string(),
            path: entry.model_path(),
            entry: Some(entry),
        }),
        None => {
            // Re-list for the message: the names are what the user needs to pick from.
            let names: Vec<String> = zoo::list(&dir)?
                .into_iter()
                .map(|e| e.manifest.name)
                .collect();
            bail!(
                "unknown model {spec:?}: zoo models are {} (in {}); or give a path to an .onnx file",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                },
                dir.display()
            )
        }
    }
}

/// Which images a model is evaluated on and how they are preprocessed.
pub struct EvalSpec {
    pub dataset: DatasetKind,
    pub split: Split,
    /// The manifest's preprocessing; `None` for a bare file (the dataset's own
    /// normalisation) or a manifest that feeds raw pixels (see [`model_inputs`]).
    pub preprocessing: Option<Preprocessing>,
    /// `true` when the manifest says inputs are not scaled at all.
    pub raw_pixels: bool,
}

/// The eval data of `target`: from its manifest, or from `--dataset` for a bare file.
/// `None` for a zoo model without an eval set when `required` is false.
pub fn eval_spec(
    target: &Target,
    dataset_flag: Option<DatasetKind>,
    required: bool,
) -> Result<Option<EvalSpec>> {
    let Some(entry) = &target.entry else {
        return match dataset_flag {
            Some(dataset) => Ok(Some(EvalSpec {
                dataset,
                split: Split::Test,
                preprocessing: None,
                raw_pixels: false,
            })),
            None if required => bail!(
                "{} is not a zoo model, so --dataset mnist|fashion-mnist must say which test set to evaluate it on",
                target.path.display()
            ),
            None => Ok(None),
        };
    };
    let m = &entry.manifest;
    let manifest = entry.manifest_path();
    let Some(eval) = &m.eval else {
        if required || dataset_flag.is_some() {
            bail!(
                "{} has no [eval] section in {}: it has no eval set",
                m.name,
                manifest.display()
            );
        }
        return Ok(None);
    };
    if let Some(flag) = dataset_flag {
        ensure!(
            flag == eval.dataset,
            "--dataset {} contradicts {}, which evaluates {} on {}",
            flag.name(),
            manifest.display(),
            m.name,
            eval.dataset.name()
        );
    }
    // The datasets are 1x28x28 f32 images; refuse a manifest that asks for anything else
    // rather than failing inside the executor.
    let input = &m.input;
    ensure!(
        input.dtype == DType::F32
            && input.layout == Layout::Nchw
            && input.concrete_shape(1) == [1, 1, IMAGE_SIDE, IMAGE_SIDE],
        "{}: input {:?} is {:?} {:?} {:?}; the {} images are f32 NCHW [N, 1, 28, 28]",
        manifest.display(),
        input.name,
        input.dtype,
        input.layout,
        input
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>(),
        eval.dataset.name()
    );
    Ok(Some(EvalSpec {
        dataset: eval.dataset,
        split: eval.split,
        raw_pixels: m.preprocessing.is_none(),
        preprocessing: m.preprocessing.clone(),
    }))
}

/// Loads the spec's split, keeping the first `limit` images.
pub fn load_dataset(spec: &EvalSpec, limit: Option<usize>) -> Result<Dataset> {
    let ds = Dataset::load(spec.dataset, spec.split).with_context(|| {
        format!(
            "loading {} {} from {}",
            spec.dataset.name(),
            spec.split.name(),
            data::data_dir().display()
        )
    })?;
    Ok(match limit {
        Some(n) => ds.take(n),
        None => ds,
    })
}

/// The images as the model wants them. The dataset is normalised with its own constants;
/// when the manifest's preprocessing is the same (digit-cnn) the pixels are used as they
/// are, bit for bit. Otherwise each raw byte is recovered (the normalisation is a
/// well-conditioned affine map of a u8, so rounding gets the byte back exactly) and the
/// manifest's `(x / scale - mean) / std` applied to it.
pub fn model_inputs<'a>(ds: &'a Dataset, spec: &EvalSpec) -> Cow<'a, [f32]> {
    let norm = spec.dataset.normalization();
    let target = match (&spec.preprocessing, spec.raw_pixels) {
        (_, true) => None,
        (None, false) => return Cow::Borrowed(ds.images()),
        (Some(p), false) => {
            if p.scale == 255.0 && p.mean == [norm.mean] && p.std == [norm.std] {
                return Cow::Borrowed(ds.images());
            }
            Some(p)
        }
    };
    let table: Vec<f32> = (0..=255u8)
        .map(|x| match target {
            None => f32::from(x),
            Some(p) => (f32::from(x) / p.scale - p.mean[0]) / p.std[0],
        })
        .collect();
    Cow::Owned(
        ds.images()
            .iter()
            .map(|&v| {
                let byte = ((v * norm.std + norm.mean) * 255.0)
                    .round()
                    .clamp(0.0, 255.0);
                table[byte as usize]
            })
            .collect(),
    )
}

/// Either executor behind one `run`.
pub enum Runner {
    Fp32(Box<Executor>),
    Quantized(Box<QExecutor>),
}

impl Runner {
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        match self {
            Runner::Fp32(e) => Ok(e.run(inputs)?),
            Runner::Quantized(e) => Ok(e.run(inputs)?),
        }
    }
}

/// Loads and imports an ONNX file, naming it in the error.
pub fn load_graph(path: &Path) -> Result<Graph> {
    qbench_models::onnx::load(path).with_context(|| format!("importing {}", path.display()))
}

/// Builds the single-threaded executor (parallelism is across batches instead).
pub fn executor(graph: &Graph, path: &Path) -> Result<Executor> {
    Executor::new(graph, Options { threads: 1 })
        .with_context(|| format!("preparing {} for the fp32 executor", path.display()))
}

/// Wraps a batch of images as an NCHW tensor.
pub fn batch_tensor(images: &[f32]) -> Result<Tensor> {
    let n = images.len() / IMAGE_LEN;
    Ok(Tensor::new(
        vec![n, 1, IMAGE_SIDE, IMAGE_SIDE],
        images.to_vec(),
    )?)
}

/// The argmax of each sample (axis 0) over all its other elements, so a classifier whose
/// logits are `[N, C, 1, 1]` (e.g. SqueezeNet) gets one prediction per image rather than
/// one per trailing axis of size 1.
pub fn per_sample_argmax(t: &Tensor) -> Result<Vec<usize>> {
    let n = t.shape().first().copied().unwrap_or(1).max(1);
    let flat = t.clone().reshaped(vec![n, t.len() / n])?;
    Ok(flat.argmax_rows()?)
}

/// The predicted class of each image from a classifier's first output, checked to be one
/// per image.
pub fn predictions(outputs: &[Tensor], batch: usize) -> Result<Vec<usize>> {
    let out = outputs.first().context("the model has no outputs")?;
    let pred = per_sample_argmax(out)?;
    ensure!(
        pred.len() == batch,
        "output shape {:?} is not [batch = {batch}, classes]",
        out.shape()
    );
    Ok(pred)
}

/// The seed of a speed-only model's input batch (uniform in [0, 1), the range of
/// preprocessed pixels).
const SPEED_INPUT_SEED: u64 = 0x2545_f491_4f6c_dd1d;

/// A deterministic input batch for the model: eval images when it has an eval set, else
/// a seeded pseudo-random tensor of its declared input shape.
pub fn input_batch(target: &Target, graph: &Graph, batch: usize) -> Result<Tensor> {
    if let Some(spec) = eval_spec(target, None, false)? {
        let ds = load_dataset(&spec, Some(batch))?;
        // A batch the data cannot fill would be timed at the data's size and recorded at
        // the batch's: refused instead.
        ensure!(
            ds.len() == batch,
            "batch {batch} is larger than {}'s eval set ({} inputs)",
            target.name,
            ds.len()
        );
        return batch_tensor(&model_inputs(&ds, &spec));
    }
    let mut dims = qbench_quantizers::shapes::zero_inputs(graph)?
        .into_iter()
        .next()
        .context("the model has no inputs")?
        .1
        .shape()
        .to_vec();
    dims[0] = batch;
    // The batch comes from a flag: its tensor is checked against the memory budget
    // before anything is allocated.
    let n = qbench_models::budget::check_shape(
        &format!("{}'s input at batch {batch}", target.name),
        &dims,
        std::mem::size_of::<f32>(),
    )?;
    let data = qbench_models::rng::Rng::new(SPEED_INPUT_SEED).uniforms_f32(n, 0.0, 1.0);
    Ok(Tensor::new(dims, data)?)
}

/// How a quantized model names the model it was made from: the zoo name, or the file's
/// canonical absolute path; and the file's sha256.
pub fn source_identity(target: &Target) -> Result<(String, String)> {
    let sha = qbench_models::fetch::sha256_file(&target.path)
        .with_context(|| format!("hashing {}", target.path.display()))?;
    let name = match &target.entry {
        Some(_) => target.name.clone(),
        None => std::fs::canonicalize(&target.path)
            .with_context(|| format!("resolving {}", target.path.display()))?
            .display()
            .to_string(),
    };
    Ok((name, sha))
}

/// The model a quantized file (`quantized`, for messages) was made from, checked: a zoo
/// name, or an absolute path to an `.onnx` file whose sha256 is the recorded one. A
/// relative path, a path that is not ONNX, or a hash that differs is refused before the
/// file is used, so a crafted `recipe.source` cannot point a command at another file.
pub fn resolve_source(
    quantized: &Path,
    recipe: &qbench_quantizers::model::Recipe,
) -> Result<Target> {
    let src = recipe.source.as_str();
    let whose = || format!("{}: recipe.source {src:?}", quantized.display());
    let is_zoo_name = !src.is_empty()
        && src
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let target = if is_zoo_name {
        let t = resolve(src).with_context(whose)?;
        ensure!(t.entry.is_some(), "{}: not a zoo model", whose());
        t
    } else {
        let path = Path::new(src);
        ensure!(
            path.is_absolute() && path.extension().is_some_and(|e| e == "onnx"),
            "{}: not a zoo name or an absolute path to an .onnx file",
            whose()
        );
        resolve(src).with_context(whose)?
    };
    let recorded = recipe.source_sha256.as_deref().with_context(|| {
        format!(
            "{}: no source_sha256 (quantized by an older qbench); quantize it again",
            whose()
        )
    })?;
    let actual = qbench_models::fetch::sha256_file(&target.path)
        .with_context(|| format!("hashing {}", target.path.display()))?;
    ensure!(
        actual == recorded,
        "{}: {} has changed since it was quantized (sha256 {actual}, recorded {recorded})",
        whose(),
        target.path.display()
    );
    Ok(target)
}
