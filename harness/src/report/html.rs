//! The HTML report: per model, a scatter of speedup against accuracy drop over every
//! (method, backend, batch) and median latency per method and backend; per section
//! (model, backend, batch, threads), the markdown tables as HTML (with the embedding
//! table of sentence encoders) and the per-layer SQNR of each quantized method.
//! Self-contained: no script, no stylesheet or font from the network.

use std::fmt::Write as _;

use super::svg::{self, esc, Point};
use super::{
    accuracy_text, embedding_rows, notes, sections, size_text, speed_text, tract_agreement_text,
    tract_speed_text, EMBEDDING_HEADER,
};
use crate::results::{Cell, Results};

/// The whole report as one HTML document.
pub fn html(results: &Results) -> String {
    let mut s = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>qbench sweep report</title>\n<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#eee}.plot{display:block;margin:.5em 0}</style></head><body>\n<h1>qbench sweep report</h1>\n",
    );
    let _ = writeln!(
        s,
        "<p>qbench {} ({}), schema {}</p>",
        esc(&results.qbench_version),
        esc(&results.git_commit),
        esc(&results.schema)
    );
    for (i, run) in results.runs.iter().enumerate() {
        let _ = writeln!(
            s,
            "<p>run {i}: {} — kernels {}, started {}</p>",
            esc(&run.machine.to_string()),
            esc(&run.kernels.active),
            esc(&run.started_at)
        );
    }
    let sections = sections(results);
    let mut models: Vec<&str> = Vec::new();
    for ((model, ..), _) in &sections {
        if !models.contains(&model.as_str()) {
            models.push(model);
        }
    }
    for model in models {
        let _ = writeln!(s, "<h2>{}</h2>", esc(model));
        let cells: Vec<&Cell> = results.cells.iter().filter(|c| c.model == model).collect();
        overview_plots(&mut s, model, &cells);
        let mut sqnr_shown: Vec<&str> = Vec::new();
        for ((_, backend, batch, threads), cells) in sections.iter().filter(|(k, _)| k.0 == model) {
            let _ = writeln!(
                s,
                "<h3>{} — {backend}, batch {batch}, threads {threads}</h3>",
                esc(model)
            );
            section_table(&mut s, cells);
            embedding_table(&mut s, cells);
            // SQNR does not depend on the batch: plot it once per backend.
            if !sqnr_shown.contains(backend) {
                sqnr_shown.push(backend);
                sqnr_plots(&mut s, backend, cells);
            }
            let n = notes(cells);
            if !n.is_empty() {
                s.push_str("<ul>\n");
                for line in n {
                    let _ = writeln!(s, "<li>{}</li>", esc(&line));
                }
                s.push_str("</ul>\n");
            }
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// The model's trade-off at a glance: speedup against accuracy drop for every quantized
/// cell that has both, and median latency per method and backend at each batch.
fn overview_plots(s: &mut String, model: &str, cells: &[&Cell]) {
    let points: Vec<Point> = cells
        .iter()
        .filter(|c| c.method.name() != "fp32")
        .filter_map(|c| {
            Some(Point {
                label: format!("{}/{} b{}", c.method.name(), c.backend.name(), c.batch),
                x: c.accuracy.as_ref()?.drop_pp,
                y: c.speedup_vs_fp32?,
            })
        })
        .collect();
    if !points.is_empty() {
        s.push_str(&svg::scatter(
            &format!("{model}: speedup vs accuracy drop"),
            ("accuracy drop (pp)", 0.0),
            ("speedup vs fp32 (x)", 1.0),
            &points,
        ));
    }
    let mut batches: Vec<u32> = cells.iter().map(|c| c.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    for batch in batches {
        let bars: Vec<(String, f64)> = cells
            .iter()
            .filter(|c| c.batch == batch)
            .filter_map(|c| {
                let l = c.latency_ms.as_ref()?;
                Some((
                    format!("{} / {}", c.method.name(), c.backend.name()),
                    l.median,
                ))
            })
            .collect();
        if !bars.is_empty() {
            s.push_str(&svg::bars(
                &format!("{model}: median latency (ms), batch {batch}"),
                " ms",
                &bars,
                0.0,
            ));
        }
    }
}

/// The Method | Size | Speed | Accuracy table with agreement, SQNR and tract columns.
fn section_table(s: &mut String, cells: &[&Cell]) {
    s.push_str("<table><tr><th>Method</th><th>Size</th><th>Speed</th><th>Accuracy</th><th>Agreement</th><th>Worst layer SQNR</th><th>tract (ms)</th><th>tract agreement</th></tr>\n");
    for c in cells {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.method.name(),
            esc(&size_text(c)),
            esc(&speed_text(c)),
            esc(&accuracy_text(c)),
            c.agreement
                .map_or("—".into(), |a| format!("{:.2} %", 100.0 * a)),
            esc(&c.sqnr.as_ref().map_or("—".into(), |q| format!(
                "{:.1} dB ({})",
                q.worst_db, q.worst_layer
            ))),
            esc(&tract_speed_text(c)),
            esc(&tract_agreement_text(c)),
        );
    }
    s.push_str("</table>\n");
}

/// Sentence encoders: cosine to fp32, probe accuracy and the per-tensor variant.
fn embedding_table(s: &mut String, cells: &[&Cell]) {
    let rows = embedding_rows(cells);
    if rows.is_empty() {
        return;
    }
    s.push_str("<table><tr>");
    for h in EMBEDDING_HEADER {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for row in rows {
        s.push_str("<tr>");
        for v in row {
            let _ = write!(s, "<td>{}</td>", esc(&v));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
}

/// Per-layer SQNR (dB) of each method that recorded it, one bar per layer.
fn sqnr_plots(s: &mut String, backend: &str, cells: &[&Cell]) {
    for c in cells {
        let Some(q) = c.sqnr.as_ref().filter(|q| !q.per_layer.is_empty()) else {
            continue;
        };
        let bars: Vec<(String, f64)> = q
            .per_layer
            .iter()
            .map(|l| (l.layer.clone(), l.db))
            .collect();
        s.push_str(&svg::bars(
            &format!("Per-layer SQNR (dB): {} / {backend}", c.method.name()),
            " dB",
            &bars,
            0.0,
        ));
    }
}
