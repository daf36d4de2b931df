//! `qbench baseline update --from results.json`: makes a finished, fully measured
//! results file the committed baseline (`reports/baseline.json`), deliberately. Refuses
//! an unfinished run or one with failed cells, writes atomically, and prints what changed
//! against the previous baseline. Owns nothing else; the comparison rules are `compare`'s.

use crate::results::{Results, State};
use anyhow::{bail, Result};
use std::path::Path;

/// The baseline's default path, relative to the repository root.
pub const DEFAULT_PATH: &str = "reports/baseline.json";

/// Checks that `results` can serve as a baseline.
pub fn check_eligible(results: &Results, path: &Path) -> Result<()> {
    let file = path.display();
    if results.cells.is_empty() {
        bail!("{file}: key `cells` is empty: nothing to keep as a baseline");
    }
    if let Some(i) = results.runs.iter().position(|r| r.finished_at.is_none()) {
        bail!(
            "{file}: key `runs[{i}].finished_at` is null: the sweep did not finish (resume it first)"
        );
    }
    let failed: Vec<String> = results
        .cells
        .iter()
        .filter(|c| c.state == State::Failed)
        .map(|c| c.key().to_string())
        .collect();
    if !failed.is_empty() {
        bail!(
            "{file}: {} cell(s) failed ({}); a baseline must not hide failures",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// What changed between the old baseline and the new one, one line each.
pub fn changes(old: &Results, new: &Results) -> Vec<String> {
    let mut lines = Vec::new();
    if old.git_commit != new.git_commit {
        lines.push(format!("commit {} → {}", old.git_commit, new.git_commit));
    }
    let rules = crate::ci::compare::Rules {
        floor: 0.0,
        k: 0.0,
        few_samples: 0,
        few_samples_floor: 0.0,
        acc_pp: 0.0,
        size_pct: 0.0,
    };
    let cmp = crate::ci::compare::compare(old, new, &rules);
    for k in &cmp.only_in_base {
        lines.push(format!("removed {k}"));
    }
    for k in &cmp.only_in_head {
        lines.push(format!("added {k}"));
    }
    for c in &cmp.cells {
        let mut parts = Vec::new();
        if let Some(d) = c.accuracy_pp.filter(|d| *d != 0.0) {
            parts.push(format!("accuracy {d:+.2} pp"));
        }
        if let Some(d) = c.size_change.filter(|d| *d != 0.0) {
            parts.push(format!("size {:+.2} %", d * 100.0));
        }
        if let Some(s) = c.speed.as_ref().filter(|s| s.change != 0.0) {
            parts.push(format!(
                "latency {:.4} → {:.4} ms ({:+.1} %)",
                s.base_ms,
                s.head_ms,
                s.change * 100.0
            ));
        }
        if !parts.is_empty() {
            lines.push(format!("{}: {}", c.key, parts.join(", ")));
        }
    }
    lines
}

/// Runs `qbench baseline update`.
pub fn update(from: &Path, to: &Path) -> Result<()> {
    let new = Results::read(from)?;
    check_eligible(&new, from)?;
    let old = if to.exists() {
        Some(Results::read(to).map_err(|e| {
            anyhow::anyhow!(
                "{e:#}\n(the current baseline is unreadable; move it aside to replace it)"
            )
        })?)
    } else {
        None
    };
    new.write(to)?;
    match old {
        None => println!(
            "wrote {} ({} cells); there was no baseline before",
            to.display(),
            new.cells.len()
        ),
        Some(old) => {
            let lines = changes(&old, &new);
            println!(
                "wrote {} ({} cells); {} change(s) from the previous baseline:",
                to.display(),
                new.cells.len(),
                lines.len()
            );
            for l in lines {
                println!("  {l}");
            }
        }
    }
    Ok(())
}
