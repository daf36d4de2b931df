//! `qbench`: the command-line front end. Parses arguments into a validated plan, then
//! hands off to the module that owns each command. Errors are reported with `anyhow`
//! context naming the file, flag or key at fault.

mod bench_conv;
mod bench_gemm;
mod crosscheck;
mod eval;
mod inspect;
mod machine;
mod measure;
mod output;
mod stats;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tabled::{builder::Builder, settings::Style};

#[derive(Parser)]
#[command(
    name = "qbench",
    version,
    about = "Quantize neural networks to int8, measure what it costs and gains, and compare"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the CPU, its ISA features, and which int8 kernel rung runs here.
    Machine {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure int8 GEMM on every rung this CPU runs and the fp32 baseline, interleaved, single thread.
    BenchGemm {
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
        /// Shapes as MxNxK, comma separated (default: the zoo's transformer shapes and squares).
        #[arg(long)]
        shapes: Option<String>,
        /// Also write bench-gemm.json and bench-gemm.md (with the machine fingerprint) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Short time budgets (for smoke tests; numbers are noisier).
        #[arg(long)]
        quick: bool,
    },
    /// Measure int8 conv on every rung and the fp32 conv on ResNet-50 and MobileNetV2 layers, interleaved, single thread.
    BenchConv {
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
        /// Layer ids or network prefixes, comma separated (default: all).
        #[arg(long)]
        layers: Option<String>,
        /// Also write bench-conv.json and bench-conv.md (with the machine fingerprint) into DIR.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Short time budgets (for smoke tests; numbers are noisier).
        #[arg(long)]
        quick: bool,
    },
    /// Evaluate a model's fp32 top-1 accuracy on its eval set with qbench's executor.
    Eval {
        /// A zoo model name or a path to an .onnx file.
        #[arg(value_name = "MODEL|FILE.onnx")]
        model: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Evaluate only the first N images.
        #[arg(long, value_name = "N", value_parser = positive)]
        limit: Option<usize>,
        /// Images per executor call (batches run in parallel).
        #[arg(long, value_name = "B", default_value_t = 256, value_parser = positive)]
        batch: usize,
        /// The test set for a bare .onnx file (zoo models name theirs in the manifest).
        #[arg(long, value_enum)]
        dataset: Option<DatasetArg>,
    },
    /// List a model's nodes, tensor shapes, parameter count and op support.
    Inspect {
        /// A zoo model name or a path to an .onnx file.
        #[arg(value_name = "MODEL|FILE.onnx")]
        model: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Compare qbench's fp32 executor with tract-onnx on the same file and inputs; fails on a mismatch.
    Crosscheck {
        /// A zoo model name or a path to an .onnx file.
        #[arg(value_name = "MODEL|FILE.onnx")]
        model: String,
        /// Eval images to compare, for models with an eval set.
        #[arg(long, value_name = "N", default_value_t = 1000, value_parser = positive)]
        samples: usize,
        /// Images per executor/tract call.
        #[arg(long, value_name = "B", default_value_t = 250, value_parser = positive)]
        batch: usize,
        /// Use this test set's images for a bare .onnx file (default: a seeded random input).
        #[arg(long, value_enum)]
        dataset: Option<DatasetArg>,
        /// Seed of the random input used when there is no eval set.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Train a zoo model qbench trains itself (mlp-mnist, resnet-fashion); writes model.onnx, manifest.toml, README.md.
    Train {
        /// mlp-mnist or resnet-fashion.
        model: String,
        /// Epochs (default: the model's recipe; 1 with --quick).
        #[arg(long, value_parser = positive)]
        epochs: Option<usize>,
        /// Peak learning rate of the cosine schedule (default: the recipe's).
        #[arg(long)]
        lr: Option<f32>,
        /// Images per step (default: the recipe's).
        #[arg(long, value_parser = positive)]
        batch: Option<usize>,
        /// Seeds the initial weights and the shuffles.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Train on 2,000 shuffled training images and test on 1,000 (needs --out).
        #[arg(long)]
        quick: bool,
        /// Write the model, manifest and README here instead of models/zoo/<model>/.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
}

/// `--dataset` values, spelt as manifests spell them.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DatasetArg {
    Mnist,
    FashionMnist,
}

impl From<DatasetArg> for qbench_models::data::DatasetKind {
    fn from(d: DatasetArg) -> Self {
        match d {
            DatasetArg::Mnist => Self::Mnist,
            DatasetArg::FashionMnist => Self::FashionMnist,
        }
    }
}

/// A count that must be at least 1; clap reports the flag with the message.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?} is not a count: {e}")),
    }
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Machine { json } => cmd_machine(json),
        Command::BenchGemm {
            json,
            shapes,
            quick,
            out,
        } => cmd_bench_gemm(json, shapes.as_deref(), quick, out.as_deref()),
        Command::BenchConv {
            json,
            layers,
            quick,
            out,
        } => cmd_bench_conv(json, layers.as_deref(), quick, out.as_deref()),
        Command::Eval {
            model,
            json,
            limit,
            batch,
            dataset,
        } => eval::cmd_eval(&eval::EvalArgs {
            model,
            json,
            limit,
            batch,
            dataset: dataset.map(Into::into),
        }),
        Command::Inspect { model, json } => inspect::cmd_inspect(&model, json),
        Command::Crosscheck {
            model,
            samples,
            batch,
            dataset,
            seed,
        } => crosscheck::cmd_crosscheck(&crosscheck::CrosscheckArgs {
            model,
            samples,
            batch,
            dataset: dataset.map(Into::into),
            seed,
        }),
        Command::Train {
            model,
            epochs,
            lr,
            batch,
            seed,
            quick,
            out,
        } => train::cmd_train(&train::TrainArgs {
            model,
            epochs,
            lr,
            batch,
            seed,
            quick,
            out,
        }),
    }
}

fn cmd_machine(json: bool) -> Result<()> {
    let fingerprint = machine::Fingerprint::detect();
    let kernels = machine::KernelReport::detect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "machine": fingerprint, "kernels": kernels })
            )?
        );
        return Ok(());
    }
    println!("cpu       {}", fingerprint.cpu_model);
    println!(
        "arch      {} ({} cores)",
        fingerprint.arch, fingerprint.cores
    );
    println!("features  {}", fingerprint.features.join(" "));
    println!(
        "active    {} (detected {}{})",
        kernels.active,
        kernels.detected,
        kernels
            .knob
            .as_deref()
            .map(|k| format!(", {}={k}", qbench_kernels::isa::KERNEL_ENV))
            .unwrap_or_default()
    );
    if let Some(w) = &kernels.warning {
        println!("warning   {w}");
    }
    let mut table = Builder::default();
    table.push_record(["rung", "runs here", "kernels"]);
    for rung in &kernels.ladder {
        let runs = if rung.available {
            "yes".to_owned()
        } else {
            format!("no: {}", rung.reason.as_deref().unwrap_or(""))
        };
        table.push_record([rung.rung.clone(), runs, rung.kernels.join(", ")]);
    }
    println!("{}", table.build().with(Style::rounded()));
    Ok(())
}

fn cmd_bench_gemm(
    json: bool,
    shapes: Option<&str>,
    quick: bool,
    out: Option<&std::path::Path>,
) -> Result<()> {
    // Validate everything before the first measurement.
    let shapes = match shapes {
        Some(spec) => bench_gemm::parse_shapes(spec)?,
        None => bench_gemm::DEFAULT_SHAPES.to_vec(),
    };
    let budget = if quick {
        measure::Budget::QUICK
    } else {
        measure::Budget::DEFAULT
    };
    let mut rows = Vec::new();
    for shape in shapes {
        if !json {
            eprintln!("measuring {}x{}x{} ...", shape.0, shape.1, shape.2);
        }
        rows.extend(bench_gemm::bench_shape(shape, budget)?);
    }
    let mut table = Builder::default();
    table.push_record([
        "M x N x K",
        "impl",
        "kernel",
        "GOP/s",
        "median µs",
        "p10–p90 µs",
        "vs fp32",
    ]);
    for r in &rows {
        table.push_record([
            format!("{}x{}x{}", r.m, r.n, r.k),
            r.implementation.clone(),
            r.kernel.clone(),
            format!("{:.1}", r.gops),
            format!("{:.1}", r.median_ns / 1e3),
            format!("{:.1}–{:.1}", r.p10_ns / 1e3, r.p90_ns / 1e3),
            format!("{:.2}x", r.speedup_vs_fp32),
        ]);
    }
    let note = "single thread; samples of each implementation interleaved in one run; GOP/s = 2·M·N·K / median";
    finish_bench("bench-gemm", &rows, table, note, json, out)
}

fn cmd_bench_conv(
    json: bool,
    layers: Option<&str>,
    quick: bool,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let layers = bench_conv::select(layers)?;
    let budget = if quick {
        measure::Budget::QUICK
    } else {
        measure::Budget::DEFAULT
    };
    let mut rows = Vec::new();
    for layer in &layers {
        if !json {
            eprintln!("measuring {} ...", layer.id);
        }
        rows.extend(bench_conv::bench_layer(layer, budget)?);
    }
    let mut table = Builder::default();
    table.push_record([
        "layer",
        "impl",
        "path",
        "kernel",
        "GOP/s",
        "median µs",
        "vs fp32",
    ]);
    for r in &rows {
        table.push_record([
            r.layer.to_owned(),
            r.implementation.clone(),
            r.path.clone(),
            r.kernel.clone(),
            format!("{:.1}", r.gops),
            format!("{:.1}", r.median_ns / 1e3),
            format!("{:.2}x", r.speedup_vs_fp32),
        ]);
    }
    let note = "batch 1, single thread, int8 = requantized u8 output; samples interleaved in one run; GOP/s = 2·MACs / median";
    finish_bench("bench-conv", &rows, table, note, json, out)
}

/// Prints a bench's rows (JSON or a markdown table) and, with `--out`, writes
/// `{name}.json` (provenance + rows) and `{name}.md` atomically.
fn finish_bench(
    name: &str,
    rows: &impl serde::Serialize,
    table: Builder,
    note: &str,
    json: bool,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let markdown = table.build().with(Style::markdown()).to_string();
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        println!("{markdown}\n\n{note}");
    }
    if let Some(dir) = out {
        let provenance = output::Provenance::detect();
        output::write_json(
            &dir.join(format!("{name}.json")),
            &serde_json::json!({ "schema": format!("qbench.{name}/1"), "provenance": provenance, "rows": rows }),
        )?;
        let header = format!(
            "# qbench {name}\n\n{} ({} cores, {}), kernels: {} active; qbench {} ({})\n\n",
            provenance.machine.cpu_model,
            provenance.machine.cores,
            provenance.machine.features.join(" "),
            provenance.kernels.active,
            provenance.qbench_version,
            provenance.git_commit
        );
        output::write_atomic(
            &dir.join(format!("{name}.md")),
            format!("{header}{markdown}\n\n{note}\n").as_bytes(),
        )?;
        eprintln!("wrote {}/{name}.json and {name}.md", dir.display());
    }
    Ok(())
}
