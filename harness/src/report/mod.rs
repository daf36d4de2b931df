//! Reports of a results file: markdown (the Method | Size | Speed | Accuracy table users
//! know from the PyTorch guide, fp32 = 1.0x / 1.0x / 100 %), CSV (one row per cell, fixed
//! units), JSON (the results file itself), self-contained HTML ([`html`]: tables and inline
//! SVG plots, no scripts, no network) and terminal tables ([`terminal`]). Pure formatting:
//! reads `Results`, measures nothing.

mod html;
mod svg;
mod terminal;

pub use html::html;
pub use terminal::terminal;

use crate::results::{Cell, Measure, Results, State};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// Report formats of `qbench report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Csv,
    Json,
    Html,
    /// Tables for a terminal (tabled), as the sweep prints them.
    Table,
}

impl Format {
    pub fn from_name(s: &str) -> Option<Format> {
        match s {
            "md" => Some(Format::Md),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            "html" => Some(Format::Html),
            "table" => Some(Format::Table),
            _ => None,
        }
    }
}

/// Renders `results` in `format`.
pub fn render(results: &Results, format: Format) -> Result<String> {
    Ok(match format {
        Format::Md => markdown(results),
        Format::Csv => csv(results),
        Format::Json => serde_json::to_string_pretty(results)? + "\n",
        Format::Html => html(results),
        Format::Table => terminal(results),
    })
}

/// Writes report.md, report.html and results.csv into `dir`, atomically.
pub fn write_all(results: &Results, dir: &Path) -> Result<()> {
    crate::output::write_atomic(&dir.join("report.md"), markdown(results).as_bytes())?;
    crate::output::write_atomic(&dir.join("report.html"), html(results).as_bytes())?;
    crate::output::write_atomic(&dir.join("results.csv"), csv(results).as_bytes())?;
    Ok(())
}

/// A report section: model, backend, batch, threads.
type SectionKey = (String, &'static str, u32, u32);

/// The (model, backend, batch, threads) sections in file order, each with its cells.
fn sections(results: &Results) -> Vec<(SectionKey, Vec<&Cell>)> {
    let mut out: Vec<(SectionKey, Vec<&Cell>)> = Vec::new();
    for c in &results.cells {
        let key = (c.model.clone(), c.backend.name(), c.batch, c.threads);
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(c),
            None => out.push((key, vec![c])),
        }
    }
    out
}

fn short_reason(c: &Cell, m: Measure) -> String {
    match c.absence(m) {
        Some(r) if r.starts_with("n/a") => "n/a".into(),
        Some(r) if r.starts_with("skipped") => "skipped".into(),
        Some(_) => "failed".into(),
        None => "—".into(),
    }
}

fn size_text(c: &Cell) -> String {
    match (c.size_ratio, c.size_bytes) {
        (Some(r), Some(b)) => format!("{r:.2}x ({})", bytes(b)),
        _ => short_reason(c, Measure::Size),
    }
}

fn speed_text(c: &Cell) -> String {
    match (c.speedup_vs_fp32, &c.latency_ms) {
        (Some(s), Some(l)) => format!("{s:.2}x ({:.3} ms ±{:.0} %)", l.median, 50.0 * l.spread),
        _ => short_reason(c, Measure::Speed),
    }
}

fn accuracy_text(c: &Cell) -> String {
    match &c.accuracy {
        Some(a) => format!(
            "{:.2} % ({:.2} % {})",
            100.0 * a.relative,
            100.0 * a.value,
            a.metric
        ),
        None => short_reason(c, Measure::Accuracy),
    }
}

/// tract's latencies for a cell: "fp32 A ms, export B ms (ours C ms)", or why not.
fn tract_speed_text(c: &Cell) -> String {
    let Some(t) = &c.tract else {
        return short_reason(c, Measure::Tract);
    };
    let ms = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
    let mut s = format!("fp32 {}", ms(t.fp32_ms));
    if c.method.name() != "fp32" {
        let _ = write!(s, ", {} {}", c.method.name(), ms(t.int8_ms));
    }
    if let Some(o) = t.ours_ms {
        let _ = write!(s, " (ours {o:.3})");
    }
    s
}

/// tract's argmax agreement with ours for this cell, and with our fp32.
fn tract_agreement_text(c: &Cell) -> String {
    let Some(t) = &c.tract else {
        return short_reason(c, Measure::Tract);
    };
    let pct = |v: f64| format!("{:.2} %", 100.0 * v);
    match (t.agreement, t.agreement_fp32) {
        (Some(a), Some(f)) => format!("{} (vs fp32 {})", pct(a), pct(f)),
        (Some(a), None) => pct(a),
        (None, _) => "—".into(),
    }
}

fn bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// Footnotes: every skip, failure and not-applicable reason, once per distinct text.
fn notes(cells: &[&Cell]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in cells {
        let mut push = |s: String| {
            if !out.contains(&s) {
                out.push(s);
            }
        };
        match c.state {
            State::Skipped | State::Failed => push(format!(
                "{} {}: {}",
                c.method.name(),
                if c.state == State::Skipped {
                    "skipped"
                } else {
                    "failed"
                },
                c.reason.as_deref().unwrap_or("")
            )),
            State::Measured => {
                for (m, r) in &c.not_applicable {
                    push(format!("{} {} n/a: {r}", c.method.name(), m.as_str()));
                }
                if let Some(n) = c.tract.as_ref().and_then(|t| t.note.as_deref()) {
                    push(format!("{} tract: {n}", c.method.name()));
                }
            }
        }
    }
    out
}

/// Sentence encoders: cosine to fp32 and, for dynamic cells, the per-tensor variant.
fn embedding_table(s: &mut String, cells: &[&Cell]) {
    let rows = embedding_rows(cells);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n| {} |", EMBEDDING_HEADER.join(" | "));
    let _ = writeln!(s, "|---|---|---|---|---|");
    for row in rows {
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
}

/// Columns of the sentence-encoder table (markdown and HTML).
const EMBEDDING_HEADER: [&str; 5] = [
    "Method",
    "Activation scales",
    "Cosine to fp32 (mean / worst)",
    "Probe accuracy",
    "Per-tensor variant: cosine (mean / worst), probe, speed",
];

/// One row per cell with embedding metrics, in [`EMBEDDING_HEADER`]'s columns; empty
/// when no cell has them (models that are not sentence encoders).
fn embedding_rows(cells: &[&Cell]) -> Vec<[String; 5]> {
    cells
        .iter()
        .filter_map(|c| {
            let e = c.embedding.as_ref()?;
            let variant = e.per_tensor.as_ref().map_or("—".into(), |v| {
                format!(
                    "{:.4} / {:.4}, {:.2} %, {}",
                    v.cosine_mean,
                    v.cosine_worst,
                    100.0 * v.accuracy,
                    v.speedup_vs_fp32
                        .map_or("speed n/a".into(), |x| format!("{x:.2}x"))
                )
            });
            Some([
                c.method.name().to_owned(),
                e.act_scales.as_deref().unwrap_or("—").to_owned(),
                format!(
                    "{:.4} / {:.4} ({} sentences)",
                    e.cosine_mean, e.cosine_worst, e.samples
                ),
                c.accuracy
                    .as_ref()
                    .map_or("—".into(), |a| format!("{:.2} %", 100.0 * a.value)),
                variant,
            ])
        })
        .collect()
}

/// The markdown report: a header with provenance, then per model × backend × batch the
/// Method | Size | Speed | Accuracy table and a detail table.
pub fn markdown(results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# qbench sweep report\n");
    let _ = writeln!(
        s,
        "qbench {} ({}), schema {}",
        results.qbench_version, results.git_commit, results.schema
    );
    for (i, run) in results.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "run {i}: {} — kernels {} (detected {}), started {}{}",
            run.machine,
            run.kernels.active,
            run.kernels.detected,
            run.started_at,
            run.finished_at
                .as_deref()
                .map_or(" (unfinished)".to_string(), |f| format!(", finished {f}"))
        );
    }
    let c = &results.config;
    let _ = writeln!(
        s,
        "\neval: {}; latency: {} ms warm-up + {} ms per candidate, fp32 timed interleaved in the same run; seed {}{}\n",
        c.eval_limit
            .map_or("full test set".to_string(), |n| format!("first {n} test inputs (a slice: not comparable with full-set numbers)")),
        c.warmup_ms,
        c.budget_ms,
        c.seed,
        if c.quick { "; quick" } else { "" }
    );
    let _ = writeln!(
        s,
        "Size = bytes / fp32 file; Speed = fp32 median / median (± half the p10–p90 band); Accuracy = value / fp32 value.\n"
    );
    for ((model, backend, batch, threads), cells) in sections(results) {
        let _ = writeln!(
            s,
            "## {} — {backend}, batch {batch}, {threads} thread{}\n",
            md_escape(&model),
            if threads == 1 { "" } else { "s" }
        );
        let _ = writeln!(s, "| Method | Size | Speed | Accuracy |");
        let _ = writeln!(s, "|---|---|---|---|");
        for c in &cells {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                c.method.name(),
                size_text(c),
                speed_text(c),
                accuracy_text(c)
            );
        }
        let _ = writeln!(
            s,
            "\n| Method | Kernel | Drop (pp) | Agreement | Worst layer SQNR | Quantize (s) | tract (ms) | tract agreement |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for c in &cells {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                c.method.name(),
                c.kernel.as_deref().unwrap_or("—"),
                c.accuracy
                    .as_ref()
                    .map_or("—".into(), |a| format!("{:+.2}", a.drop_pp)),
                c.agreement
                    .map_or("—".into(), |a| format!("{:.2} %", 100.0 * a)),
                c.sqnr.as_ref().map_or("—".into(), |q| format!(
                    "{:.1} dB ({})",
                    q.worst_db,
                    md_escape(&q.worst_layer)
                )),
                c.quantize_s.map_or("—".into(), |q| format!("{q:.2}")),
                tract_speed_text(c),
                tract_agreement_text(c),
            );
        }
        embedding_table(&mut s, &cells);
        let n = notes(&cells);
        if !n.is_empty() {
            let _ = writeln!(s);
            for line in n {
                let _ = writeln!(s, "- {}", md_escape(&line));
            }
        }
        let _ = writeln!(s);
    }
    s
}

/// Text from a file (a model's name or path, a node's name, an error quoting them) as
/// literal markdown: every character markdown gives a meaning is backslash-escaped and a
/// line break becomes a space, so a crafted name can neither break a table nor inject
/// markup or HTML into a pull-request comment.
pub fn md_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' | '!' | '(' | ')' | '{'
            | '}' | '~' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}

/// The CSV columns, fixed units in the names.
pub const CSV_HEADER: [&str; 27] = [
    "model",
    "method",
    "backend",
    "batch",
    "threads",
    "state",
    "reason",
    "kernel",
    "size_bytes",
    "size_ratio",
    "latency_median_ms",
    "latency_p10_ms",
    "latency_p90_ms",
    "latency_spread",
    "throughput_per_s",
    "speedup_vs_fp32",
    "accuracy",
    "accuracy_fp32",
    "accuracy_drop_pp",
    "agreement",
    "sqnr_worst_db",
    "quantize_s",
    "tract_fp32_ms",
    "tract_int8_ms",
    "tract_ours_ms",
    "tract_agreement",
    "tract_agreement_fp32",
];

/// RFC 4180 field: quoted when it holds a comma, quote or line break; quotes doubled.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// One row per cell; an absent value is an empty field.
pub fn csv(results: &Results) -> String {
    let mut s = CSV_HEADER.join(",");
    s.push_str("\r\n");
    let num = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for c in &results.cells {
        let l = c.latency_ms.as_ref();
        let a = c.accuracy.as_ref();
        let row = [
            c.model.clone(),
            c.method.name().into(),
            c.backend.name().into(),
            c.batch.to_string(),
            c.threads.to_string(),
            match c.state {
                State::Measured => "measured",
                State::Skipped => "skipped",
                State::Failed => "failed",
            }
            .into(),
            c.reason.clone().unwrap_or_default(),
            c.kernel.clone().unwrap_or_default(),
            c.size_bytes.map_or(String::new(), |b| b.to_string()),
            num(c.size_ratio),
            num(l.map(|l| l.median)),
            num(l.map(|l| l.p10)),
            num(l.map(|l| l.p90)),
            num(l.map(|l| l.spread)),
            num(l.map(|l| l.throughput)),
            num(c.speedup_vs_fp32),
            num(a.map(|a| a.value)),
            num(a.map(|a| a.fp32)),
            num(a.map(|a| a.drop_pp)),
            num(c.agreement),
            num(c.sqnr.as_ref().map(|q| q.worst_db)),
            num(c.quantize_s),
            num(c.tract.as_ref().and_then(|t| t.fp32_ms)),
            num(c.tract.as_ref().and_then(|t| t.int8_ms)),
            num(c.tract.as_ref().and_then(|t| t.ours_ms)),
            num(c.tract.as_ref().and_then(|t| t.agreement)),
            num(c.tract.as_ref().and_then(|t| t.agreement_fp32)),
        ];
        let fields: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
        s.push_str(&fields.join(","));
        s.push_str("\r\n");
    }
    s
}

/// `qbench report`: reads and validates `path`, prints it in `format`.
pub fn run(path: &Path, format: Format) -> Result<String> {
    let results = Results::read(path)?;
    render(&results, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_escapes_what_a_file_names() {
        assert_eq!(
            md_escape("a|b <img src=x> *x* [l](u)\n# h"),
            "a\\|b \\<img src=x\\> \\*x\\* \\[l\\]\\(u\\) \\# h"
        );
        assert_eq!(md_escape("digit-cnn"), "digit-cnn");
    }

    #[test]
    fn csv_fields_with_commas_quotes_and_newlines_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
