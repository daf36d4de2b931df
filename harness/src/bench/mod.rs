//! The benches: int8 GEMM and conv on every rung against the fp32 baseline, a whole model
//! fp32 against quantized, and MiniLM against tract, each timed with samples interleaved
//! in one run. This module prints and writes the GEMM and conv tables; each bench's
//! measurement lives in its own file.

pub mod conv;
pub mod gemm;
pub mod minilm;
pub mod model;

use anyhow::Result;
use tabled::{builder::Builder, settings::Style};

use crate::output;
use crate::timing::measure::Budget;
use crate::timing::pools;

pub fn cmd_bench_gemm(
    json: bool,
    shapes: Option<&str>,
    quick: bool,
    out: Option<&std::path::Path>,
    threads: usize,
) -> Result<()> {
    // Validate everything before the first measurement.
    let shapes = match shapes {
        Some(spec) => gemm::parse_shapes(spec)?,
        None => gemm::DEFAULT_SHAPES.to_vec(),
    };
    let budget = Budget::quick_or_default(quick);
    let mut rows = Vec::new();
    for shape in shapes {
        if !json {
            eprintln!("measuring {}x{}x{} ...", shape.0, shape.1, shape.2);
        }
        rows.extend(pools::on_threads(threads, || {
            gemm::bench_shape(shape, budget, threads)
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

pub fn cmd_bench_conv(
    json: bool,
    layers: Option<&str>,
    quick: bool,
    out: Option<&std::path::Path>,
    threads: usize,
) -> Result<()> {
    let layers = conv::select(layers)?;
    let budget = Budget::quick_or_default(quick);
    let mut rows = Vec::new();
    for layer in &layers {
        if !json {
            eprintln!("measuring {} ...", layer.id);
        }
        rows.extend(pools::on_threads(threads, || {
            conv::bench_layer(layer, budget, threads)
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
