//! `qbench train <model>`: trains one of the zoo models qbench trains itself
//! (`mlp-mnist`, `resnet-fashion`) from a seed, measures the exported ONNX file's test
//! top-1 through the fp32 executor (what `qbench eval` runs), and writes `model.onnx`,
//! `manifest.toml` and `README.md` into the model's zoo directory (or `--out`).
//!
//! Owns the recipes (data, optimizer, defaults) and the files; the architectures live in
//! `qbench_models::train::arch`, the training loop in `qbench_models::train::fit`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use qbench_models::data::{Dataset, DatasetKind, Split, IMAGE_LEN};
use qbench_models::ir::Graph;
use qbench_models::train::fit::OptimizerKind;
use qbench_models::train::{arch, fit, FitConfig, Network};
use qbench_models::zoo::{self, MANIFEST_FILE};
use rayon::prelude::*;

use crate::target;

/// Training images and test images of a `--quick` run.
pub const QUICK_TRAIN: usize = 2000;
pub const QUICK_TEST: usize = 1000;

/// A model qbench can train: its data, architecture and default recipe.
pub struct Recipe {
    pub name: &'static str,
    pub dataset: DatasetKind,
    pub build: fn(u64) -> Graph,
    pub description: &'static str,
    pub epochs: usize,
    pub lr: f32,
    pub batch: usize,
    pub weight_decay: f32,
    pub optimizer: OptimizerKind,
    /// The accuracy the issue requires of the full training, in percent.
    pub target: f64,
}

pub const RECIPES: [Recipe; 2] = [
    Recipe {
        name: "mlp-mnist",
        dataset: DatasetKind::Mnist,
        build: arch::mlp_mnist,
        description: "784-512-256-10 ReLU MLP trained by qbench on MNIST (535,818 parameters)",
        epochs: 10,
        lr: 0.05,
        batch: 128,
        weight_decay: 1e-4,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        target: 98.0,
    },
    Recipe {
        name: "resnet-fashion",
        dataset: DatasetKind::FashionMnist,
        build: arch::resnet_fashion,
        description: "Small ResNet trained by qbench on Fashion-MNIST: conv3x3/2-bn-relu stem (16 channels, 14x14), three stages of basic blocks (16, 32, 64 channels; residual Add, stride-2 downsampling with 1x1 conv-bn shortcuts), a depthwise-separable block (depthwise 3x3-bn-relu, pointwise 1x1-bn-relu), global average pool, FC 64-10",
        epochs: 5,
        lr: 0.1,
        batch: 128,
        weight_decay: 5e-4,
        optimizer: OptimizerKind::Sgd { momentum: 0.9 },
        target: 91.0,
    },
];

/// Validated arguments of `qbench train`.
pub struct TrainArgs {
    pub model: String,
    pub epochs: Option<usize>,
    pub lr: Option<f32>,
    pub batch: Option<usize>,
    pub seed: u64,
    pub quick: bool,
    pub out: Option<PathBuf>,
}

/// The recipe named `name`, or an error listing the trainable models.
pub fn recipe(name: &str) -> Result<&'static Recipe> {
    RECIPES.iter().find(|r| r.name == name).with_context(|| {
        let names: Vec<_> = RECIPES.iter().map(|r| r.name).collect();
        format!(
            "qbench cannot train {name:?}: trainable models are {}",
            names.join(", ")
        )
    })
}

/// The exact command line, for the manifest's provenance.
fn command_line(args: &TrainArgs, cfg: &FitConfig) -> String {
    let mut c = format!(
        "qbench train {} --epochs {} --lr {} --batch {} --seed {}",
        args.model, cfg.epochs, cfg.lr, cfg.batch, cfg.seed
    );
    if args.quick {
        c.push_str(" --quick");
    }
    if let Some(out) = &args.out {
        write!(c, " --out {}", out.display()).unwrap();
    }
    c
}

/// Today's date (UTC) as `YYYY-MM-DD`, from the system clock (civil-from-days, Hinnant).
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Top-1 (percent) of the ONNX file at `path` on `test`, through the fp32 executor in
/// batches of 250 across rayon threads, as `qbench eval` runs it.
fn executor_top1(path: &Path, test: &Dataset) -> Result<f64> {
    let graph = target::load_graph(path)?;
    let exec = target::executor(&graph, path)?;
    let correct: usize = test
        .images()
        .par_chunks(250 * IMAGE_LEN)
        .zip(test.labels().par_chunks(250))
        .map(|(x, y)| -> Result<usize> {
            let out = exec.run(&[target::batch_tensor(x)?])?;
            let pred = target::predictions(&out, y.len())?;
            Ok(pred
                .iter()
                .zip(y)
                .filter(|(p, l)| **p == usize::from(**l))
                .count())
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(100.0 * correct as f64 / test.len() as f64)
}

/// `qbench train`.
pub fn cmd_train(args: &TrainArgs) -> Result<()> {
    // The whole plan is checked before any data is read.
    let r = recipe(&args.model)?;
    let cfg = FitConfig {
        epochs: args.epochs.unwrap_or(if args.quick { 1 } else { r.epochs }),
        batch: args.batch.unwrap_or(r.batch),
        lr: args.lr.unwrap_or(r.lr),
        weight_decay: r.weight_decay,
        optimizer: r.optimizer,
        seed: args.seed,
    };
    ensure!(
        cfg.lr.is_finite() && cfg.lr > 0.0,
        "--lr {} must be a positive number",
        cfg.lr
    );
    let out_dir = match (&args.out, args.quick) {
        (Some(dir), _) => dir.clone(),
        // A quick model would overwrite the committed zoo model with a worse one.
        (None, true) => bail!(
            "--quick trains on a slice: give --out DIR so the zoo's {} is not overwritten",
            r.name
        ),
        (None, false) => zoo::zoo_dir().join(r.name),
    };

    let load = |split: Split| {
        Dataset::load(r.dataset, split)
            .with_context(|| format!("loading {} {}", r.dataset.name(), split.name()))
    };
    let (mut train, mut test) = (load(Split::Train)?, load(Split::Test)?);
    if args.quick {
        // A shuffled slice: the first images of a split are not a uniform sample.
        train = train.shuffled(args.seed).take(QUICK_TRAIN);
        test = test.take(QUICK_TEST);
    }
    let graph = (r.build)(args.seed);
    let mut net = Network::new(&graph).context("compiling the model for training")?;
    let params: usize = net
        .params()
        .iter()
        .filter(|p| p.trainable())
        .map(|p| p.value.len())
        .sum();
    println!(
        "train {} on {} train ({} images), test on {} test ({} images); {params} parameters",
        r.name,
        r.dataset.name(),
        train.len(),
        r.dataset.name(),
        test.len()
    );
    println!(
        "  epochs {}, batch {}, lr {} (cosine to 0), weight decay {}, {:?}, seed {}, {} rayon threads",
        cfg.epochs,
        cfg.batch,
        cfg.lr,
        cfg.weight_decay,
        cfg.optimizer,
        cfg.seed,
        rayon::current_num_threads()
    );
    let start = Instant::now();
    fit(&mut net, &train, &cfg, |e| {
        println!(
            "  epoch {:>3}/{}  loss {:.4}  train top-1 {:.2} %  lr {:.4}  {:.1} s",
            e.epoch,
            cfg.epochs,
            e.loss,
            100.0 * e.train_top1,
            e.lr,
            e.seconds
        );
    })?;
    let train_secs = start.elapsed().as_secs_f64();

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let model_path = out_dir.join("model.onnx");
    let trained = net.to_graph();
    qbench_models::onnx::save(&trained, &model_path)
        .with_context(|| format!("writing {}", model_path.display()))?;
    let top1 = executor_top1(&model_path, &test)?;
    println!(
        "{}: test top-1 {top1:.2} % ({} {} images, exported ONNX on the fp32 executor); training took {train_secs:.0} s",
        r.name,
        test.len(),
        r.dataset.name()
    );
    println!("wrote {}", model_path.display());

    let command = command_line(args, &cfg);
    let date = today();
    let manifest = manifest_text(r, &command, &cfg, top1, &date, train_secs, args.quick);
    let manifest_path = out_dir.join(MANIFEST_FILE);
    std::fs::write(&manifest_path, manifest)
        .with_context(|| format!("writing {}", manifest_path.display()))?;
    let readme = readme_text(
        r, &command, &cfg, top1, &date, train_secs, params, args.quick,
    );
    std::fs::write(out_dir.join("README.md"), readme)
        .with_context(|| format!("writing {}/README.md", out_dir.display()))?;
    // The manifest must load as the zoo will load it (name = directory name, file exists).
    if out_dir.file_name().and_then(|n| n.to_str()) == Some(r.name) {
        zoo::load_entry(&out_dir)
            .with_context(|| format!("validating {}", manifest_path.display()))?;
    }
    println!("wrote {} and README.md", manifest_path.display());
    if !args.quick && top1 < r.target {
        eprintln!(
            "warning: {top1:.2} % is below the {:.1} % the zoo expects of {}",
            r.target, r.name
        );
    }
    Ok(())
}

/// TOML basic string with `"` and `\` escaped.
fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn manifest_text(
    r: &Recipe,
    command: &str,
    cfg: &FitConfig,
    top1: f64,
    date: &str,
    secs: f64,
    quick: bool,
) -> String {
    let norm = r.dataset.normalization();
    let slice = if quick {
        format!(" (--quick: {QUICK_TRAIN} training images, metric on the first {QUICK_TEST} test images)")
    } else {
        String::new()
    };
    format!(
        r#"# The {name} zoo model, written by `qbench train` (harness/src/commands/train.rs). Schema:
# models/src/zoo.rs. Details: README.md here.
name = "{name}"
description = {desc}
license = "MIT OR Apache-2.0"
file = "model.onnx"
purpose = "accuracy"

[provenance]
source = {source}
obtained = {obtained}

[input]
name = "input"
shape = ["N", 1, 28, 28]
dtype = "f32"
layout = "NCHW"

[preprocessing]
scale = 255.0
mean = [{mean}]
std = [{std}]

[eval]
dataset = "{dataset}"
split = "test"
metric = "top1"

[eval.fp32]
value = {top1:.2}
command = {command}
date = "{date}"
"#,
        name = r.name,
        desc = toml_str(r.description),
        source = toml_str(&format!(
            "trained by qbench{slice}: seed {}, {} epochs, batch {}, lr {}, {:.0} s of training",
            cfg.seed, cfg.epochs, cfg.batch, cfg.lr, secs
        )),
        obtained = toml_str(command),
        mean = norm.mean,
        std = norm.std,
        dataset = r.dataset.name(),
        command = toml_str(command),
    )
}

#[allow(clippy::too_many_arguments)]
fn readme_text(
    r: &Recipe,
    command: &str,
    cfg: &FitConfig,
    top1: f64,
    date: &str,
    secs: f64,
    params: usize,
    quick: bool,
) -> String {
    let mut s = format!("# {}\n\n{}.\n\n", r.name, r.description);
    if quick {
        s.push_str("**A `--quick` model** (trained on a slice): not the zoo model.\n\n");
    }
    write!(
        s,
        "Trained by qbench ({date}) with\n\n```sh\n{command}\n```\n\n\
         - data: {} train split ({} normalisation: (x/255 − {}) / {}), shuffled per epoch from the seed;\n\
         - {params} trainable parameters, He-normal initialisation from the seed;\n\
         - {:?}, lr {} with a cosine decay to 0 over all steps, weight decay {} on conv/linear weights, batch {}, {} epochs;\n\
         - training took {secs:.0} s on this 2-core machine, shared with other builds at the time;\n\
         - test top-1: **{top1:.2} %** on the {} test split, measured on the exported `model.onnx` through qbench's fp32 executor (`qbench eval {}`).\n\n\
         The run is deterministic: the same command and seed give the same weights bit for bit, whatever the number of threads.\n",
        r.dataset.name(),
        r.dataset.name(),
        r.dataset.normalization().mean,
        r.dataset.normalization().std,
        cfg.optimizer,
        cfg.lr,
        cfg.weight_decay,
        cfg.batch,
        cfg.epochs,
        r.dataset.name(),
        r.name,
    )
    .unwrap();
    s
}
