//! `qbench bench-minilm`: all-MiniLM-L6-v2 in fp32, our executor against tract-onnx, in
//! one run: batch × tokens of real text, both on `--threads` threads, samples
//! interleaved; with
//! `--int8 fbgemm|vnni`, dynamic int8 (per-token and per-tensor scales) in the same run.
//!
//! Both sides run the same graph: ours is built from the fetched safetensors
//! (`qbench_models::bert`), exported to ONNX, and that file is what tract optimises.
//! Before timing, the two outputs are compared on the benchmark input (max |Δ| and the
//! worst cosine similarity), so a fast wrong answer cannot pass unnoticed.

use anyhow::{bail, ensure, Context, Result};
use qbench_models::bert::{self, tokenize};
use qbench_models::exec::{Executor, Options};
use qbench_models::onnx::{self, TractPlan};
use qbench_models::tensor::Tensor;
use qbench_quantizers::{quantize_dynamic, ActScales, Backend, DynamicOptions, QExecutor};
use serde::Serialize;
use tract_linalg::multithread::multithread_tract_scope;

use crate::timing::measure::{self, Budget, Candidate};
use crate::timing::pools;

/// Real English text, repeated as needed, so inputs are ordinary tokens (not padding and
/// not one id repeated, which could flatter caches).
const TEXT: &str = "Dynamic quantization stores the weights of every linear layer as eight-bit \
integers and chooses the scale of the activations at run time, one token or one tensor at a \
time. Transformers spend most of their time in those matrix products, so the saving is large, \
but a few outlier channels in the hidden states can make a single scale per tensor too coarse. \
Sentence encoders such as this one map a sentence to a vector whose direction carries its \
meaning; two paraphrases land close together, and a review that praises a film lands far from \
one that pans it. Measuring fidelity therefore means comparing embeddings, not logits.";

/// One row of the result table.
#[derive(Serialize)]
pub struct Row {
    pub model: &'static str,
    pub implementation: String,
    pub batch: usize,
    pub tokens: usize,
    pub threads: usize,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub samples: usize,
}

/// `batch` rows of exactly `tokens` real tokens ([CLS] … [SEP]), each starting at a
/// different word, with a full attention mask.
pub(crate) fn inputs(
    dir: &std::path::Path,
    batch: usize,
    tokens: usize,
) -> Result<tokenize::Batch> {
    let tok = tokenize::SentenceTokenizer::new(&dir.join("tokenizer.json"), tokens)?;
    let words: Vec<&str> = TEXT.split_whitespace().collect();
    let mut rows = Vec::with_capacity(batch);
    for b in 0..batch {
        let mut text = String::new();
        let mut i = b;
        // ~1.3 tokens per word: 2·tokens words are always enough.
        while text.split_whitespace().count() < 2 * tokens {
            text.push_str(words[i % words.len()]);
            text.push(' ');
            i += 1;
        }
        let ids = tok.encode(&text)?;
        ensure!(
            ids.len() == tokens,
            "tokenizer gave {} ids, not {tokens}",
            ids.len()
        );
        rows.push(ids);
    }
    Ok(tokenize::pad(&rows))
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum();
    let na: f64 = a.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Dynamic int8 of every Linear under `scheme`, with `act` activation scales and
/// per-channel weights (as the sweep quantizes MiniLM).
fn dynamic_int8(
    graph: &qbench_models::ir::Graph,
    scheme: Backend,
    act: ActScales,
    threads: usize,
) -> Result<QExecutor> {
    let mut opts = DynamicOptions::new(scheme);
    opts.op_types = vec!["MatMul".into()];
    opts.act_scales = act;
    opts.per_channel = true;
    Ok(QExecutor::with_threads(
        &quantize_dynamic(graph, &opts)?,
        threads,
    )?)
}

/// `qbench bench-minilm`.
pub fn cmd_bench_minilm(
    batch: usize,
    tokens: usize,
    quick: bool,
    json: bool,
    int8: Option<&str>,
    save_onnx: Option<&std::path::Path>,
    threads: usize,
) -> Result<()> {
    ensure!(
        (2..=512).contains(&tokens),
        "--tokens {tokens}: MiniLM takes 2..=512 tokens"
    );
    let scheme = match int8 {
        None => None,
        Some("fbgemm") => Some(Backend::Fbgemm),
        Some("vnni") => Some(Backend::Vnni),
        Some(other) => bail!("--int8 {other:?}: the schemes are fbgemm and vnni"),
    };
    let entry = crate::fetch::fetchable_entry("minilm")?;
    let dir = crate::fetch::fetched_dir(&entry)?;
    let graph = bert::load_graph(&dir)
        .with_context(|| format!("building MiniLM from {}", dir.display()))?;
    let exec = Executor::new(&graph, Options { threads })?;
    // The batch is a flag: the run's memory is planned from the shapes (and refused over
    // the budget, naming the node) before any row is tokenized or allocated.
    let shape = vec![batch, tokens];
    exec.memory_plan(&[shape.clone(), shape])
        .with_context(|| format!("MiniLM at batch {batch} x {tokens} tokens"))?;
    let batch_in = inputs(&dir, batch, tokens)?;
    let feed = [batch_in.input_ids, batch_in.attention_mask];

    let onnx_path = match save_onnx {
        Some(p) => p.to_path_buf(),
        None => std::env::temp_dir().join(format!("qbench-minilm-{}.onnx", std::process::id())),
    };
    onnx::save(&graph, &onnx_path)?;
    let shapes: Vec<&[usize]> = feed.iter().map(Tensor::shape).collect();
    let tract = TractPlan::new(&onnx_path, &shapes);
    if save_onnx.is_none() {
        let _ = std::fs::remove_file(&onnx_path);
    }
    let tract = tract?;

    let ours = exec.run(&feed)?.remove(0);
    let theirs = tract.run(&feed)?.remove(0);
    let d = ours.shape()[1];
    let (ov, tv) = (ours.f32s()?, theirs.f32s()?);
    let max_diff = ov
        .iter()
        .zip(tv)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let worst_cos = ov
        .chunks(d)
        .zip(tv.chunks(d))
        .map(|(a, b)| cosine(a, b))
        .fold(1f64, f64::min);
    if !json {
        eprintln!(
            "MiniLM fp32, batch {batch} x {tokens} tokens: ours vs tract max |diff| {max_diff:.2e}, worst cosine {worst_cos:.7}"
        );
    }
    ensure!(
        worst_cos >= 0.9999,
        "our output and tract's disagree (worst cosine {worst_cos}): not timing a wrong answer"
    );

    // Dynamic int8, per token and per tensor: checked against our fp32 output first.
    let int8_execs: Vec<(String, QExecutor)> = match scheme {
        None => Vec::new(),
        Some(b) => [(ActScales::PerRow, "per-token"), (ActScales::PerTensor, "per-tensor")]
            .into_iter()
            .map(|(act, label)| {
                let e = dynamic_int8(&graph, b, act, threads)?;
                let y = e.run(&feed)?.remove(0);
                let worst = y
                    .f32s()?
                    .chunks(d)
                    .zip(ov.chunks(d))
                    .map(|(a, b)| cosine(a, b))
                    .fold(1f64, f64::min);
                if !json {
                    eprintln!(
                        "dynamic int8 ({}, {label}, rung {}): worst cosine to our fp32 on this input {worst:.5}",
                        b.name(),
                        e.rung().name()
                    );
                }
                Ok((format!("qbench-int8-{}-{label}", b.name()), e))
            })
            .collect::<Result<_>>()?,
    };
    let budget = Budget::quick_or_default(quick);
    let names: Vec<String> = ["qbench-fp32", "tract-fp32"]
        .into_iter()
        .map(str::to_owned)
        .chain(int8_execs.iter().map(|(name, _)| name.clone()))
        .collect();
    let tract_threads = pools::tract_executor(threads);
    let summaries = pools::on_threads(threads, || {
        let mut candidates = vec![
            Candidate {
                name: names[0].clone(),
                run: Box::new(|| {
                    exec.run(&feed).expect("ran once above");
                }),
            },
            Candidate {
                name: names[1].clone(),
                run: Box::new(|| {
                    multithread_tract_scope(tract_threads.clone(), || {
                        tract.run(&feed).expect("ran once above")
                    });
                }),
            },
        ];
        for (name, e) in &int8_execs {
            candidates.push(Candidate {
                name: name.clone(),
                run: Box::new(|| {
                    e.run(&feed).expect("ran once above");
                }),
            });
        }
        measure::interleaved(&mut candidates, budget)
    })?;
    let fp32_median = summaries[0].median;
    let rows: Vec<Row> = names
        .iter()
        .zip(&summaries)
        .map(|(name, s)| Row {
            model: "minilm",
            implementation: name.clone(),
            batch,
            tokens,
            threads,
            median_ms: s.median / 1e6,
            p10_ms: s.p10 / 1e6,
            p90_ms: s.p90 / 1e6,
            samples: s.samples,
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "| impl | batch x tokens | median ms | p10–p90 ms | samples | speedup vs qbench-fp32 |"
        );
        println!("|---|---|---|---|---|---|");
        for r in &rows {
            println!(
                "| {} | {}x{} | {:.2} | {:.2}–{:.2} | {} | {:.2}x |",
                r.implementation,
                r.batch,
                r.tokens,
                r.median_ms,
                r.p10_ms,
                r.p90_ms,
                r.samples,
                fp32_median / 1e6 / r.median_ms
            );
        }
        let threads_note = if threads == 1 {
            "single thread".to_owned()
        } else {
            format!("{threads} threads for qbench and tract alike")
        };
        println!(
            "\n{threads_note}; samples of every implementation interleaved in one run; tract runs the ONNX export of the same graph"
        );
    }
    Ok(())
}
