//! The report for a terminal: per section (model, backend, batch, threads) the
//! Method | Size | Speed | Accuracy table with the detail columns, drawn by tabled, and
//! the section's notes. What `qbench sweep` prints when it finishes and
//! `qbench report --format table` prints.

use std::fmt::Write as _;

use tabled::{builder::Builder, settings::Style};

use super::{
    accuracy_text, notes, sections, size_text, speed_text, tract_agreement_text, tract_speed_text,
};
use crate::results::Results;

/// Every section of `results` as terminal tables.
pub fn terminal(results: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "qbench {} ({}), schema {}; Size = bytes / fp32, Speed = fp32 median / median, Accuracy = value / fp32 value",
        results.qbench_version, results.git_commit, results.schema
    );
    for ((model, backend, batch, threads), cells) in sections(results) {
        let _ = writeln!(
            s,
            "\n{model} — {backend}, batch {batch}, {threads} thread{}",
            if threads == 1 { "" } else { "s" }
        );
        let mut b = Builder::default();
        b.push_record([
            "Method",
            "Size",
            "Speed",
            "Accuracy",
            "Agreement",
            "Worst layer SQNR",
            "tract (ms)",
            "tract agreement",
        ]);
        for c in &cells {
            b.push_record([
                c.method.name().to_owned(),
                size_text(c),
                speed_text(c),
                accuracy_text(c),
                c.agreement
                    .map_or("—".into(), |a| format!("{:.2} %", 100.0 * a)),
                c.sqnr.as_ref().map_or("—".into(), |q| {
                    format!("{:.1} dB ({})", q.worst_db, q.worst_layer)
                }),
                tract_speed_text(c),
                tract_agreement_text(c),
            ]);
        }
        let _ = writeln!(s, "{}", b.build().with(Style::rounded()));
        for line in notes(&cells) {
            let _ = writeln!(s, "  - {line}");
        }
    }
    s
}
