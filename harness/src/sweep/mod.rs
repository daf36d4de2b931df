//! `qbench sweep`: the model × method × backend × batch × threads grid, measured and
//! written to `results.json` (schema in [`crate::results`]) plus the reports beside it.
//!
//! Order of work, and why:
//! 1. The whole plan is resolved and validated first (config file, flags, zoo names,
//!    eval sets), so a typo fails in milliseconds, not after an hour of measuring.
//! 2. Cells are grouped by (model, backend), the shard unit: a group builds each
//!    quantized model once, evaluates it once (accuracy does not depend on the latency
//!    batch), then per (batch, threads) times fp32 and every method interleaved in one
//!    run, so each speedup is against an fp32 baseline measured alongside it.
//! 3. Cells are recorded as soon as they are final (`store`: an atomic rewrite of
//!    `results.json`): skipped ones before any work, a failed build's at once, measured
//!    ones per (batch, threads) after that batch's interleaved run (ours and tract's). An
//!    interrupted sweep keeps every recorded cell and `--resume DIR` completes the rest.
//! 4. Each unit of work (a group, a method's build, a batch's timing) runs isolated
//!    (`isolate`): an error or a panic fails the cells it was to fill, with its message,
//!    and the sweep goes on.

mod cell;
mod executors;
mod group;
mod isolate;
mod minilm;
pub mod plan;
mod store;
mod tract;

use std::collections::BTreeSet;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::progress::Progress;
use crate::results::{Backend, Cell, CellKey};
use cell::failed;
use plan::{groups, Plan};
use store::Store;

pub use plan::{plan, print_plan, SweepArgs};

/// `qbench sweep`.
pub fn cmd_sweep(args: &SweepArgs) -> Result<()> {
    let plan = plan(args)?;
    if args.dry_run {
        print_plan(&plan);
        return Ok(());
    }
    let mut store = Store::open(&plan, args.resume.is_some())?;
    let done = store.final_keys();
    let todo: Vec<&CellKey> = plan.cells.iter().filter(|k| !done.contains(k)).collect();
    eprintln!(
        "sweep: {} cells planned, {} already done, {} to run → {}",
        plan.cells.len(),
        plan.cells.len() - todo.len(),
        todo.len(),
        store.path().display()
    );
    let start = Instant::now();
    let progress = Progress::new(todo.len());
    for (model, backend) in groups(&plan.config) {
        let keys: Vec<CellKey> = todo
            .iter()
            .filter(|k| k.model == model && k.backend == backend)
            .map(|&k| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        progress.group(&model, backend.name(), keys.len());
        isolated_group(&plan, &model, backend, &keys, &progress, &mut store)?;
    }
    progress.finish();
    let path = store.path().to_owned();
    let results = store.finish()?;
    crate::report::write_all(&results, &plan.out)?;
    println!("{}", crate::report::terminal(&results));
    eprintln!(
        "sweep finished in {:.1} s: {} (report.md, report.html, results.csv beside it)",
        start.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// Runs one (model, backend) group with its cells recorded as they become final. An error
/// or a panic that escapes the group (a model that does not load, a bug) fails only the
/// group's cells not yet recorded, with its message, and the sweep goes on; only a failure
/// to write `results.json` ends the sweep.
fn isolated_group(
    plan: &Plan,
    model: &str,
    backend: Backend,
    keys: &[CellKey],
    progress: &Progress,
    store: &mut Store,
) -> Result<()> {
    let mut open: BTreeSet<CellKey> = keys.iter().cloned().collect();
    let mut write_error: Option<anyhow::Error> = None;
    let outcome = {
        let mut emit = |cells: Vec<Cell>| -> Result<()> {
            let n = cells.len();
            for c in &cells {
                open.remove(&c.key());
            }
            if let Err(e) = store.record(cells) {
                let text = format!("{e:#}");
                write_error = Some(e);
                bail!("{text}");
            }
            progress.done(n);
            Ok(())
        };
        isolate::run(|| {
            if plan::weights_model(model)?.is_some() {
                minilm::run_group(plan, model, backend, keys, progress, &mut emit)
            } else {
                group::run_group(plan, model, backend, keys, progress, &mut emit)
            }
        })
    };
    if let Some(e) = write_error {
        return Err(e);
    }
    let reason = match outcome {
        Err(e) => e,
        // Every cell is handed over by a group that returns; a cell left over would
        // otherwise vanish from the results, so it is recorded as failed.
        Ok(()) if !open.is_empty() => "the group ended without measuring this cell".to_owned(),
        Ok(()) => return Ok(()),
    };
    let rest: Vec<Cell> = keys
        .iter()
        .filter(|k| open.contains(k))
        .map(|k| failed(k, &reason))
        .collect();
    progress.note(&format!(
        "{model} / {}: {} cell(s) failed: {reason}",
        backend.name(),
        rest.len()
    ));
    let n = rest.len();
    store.record(rest)?;
    progress.done(n);
    Ok(())
}
