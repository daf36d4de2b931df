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
//! 5. Each model's groups run in a child process (`child`, [`Isolation::ChildProcess`]):
//!    a segfault or an abort fails that model's open cells with the signal, and the sweep
//!    goes on to the next model. `--resume` retries a crashed cell once.

mod cell;
mod child;
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

pub use child::child_main;
pub use plan::{plan, print_plan, Isolation, SweepArgs};

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
    for (model, groups) in models_todo(&plan, &todo) {
        match args.isolation {
            Isolation::InProcess => {
                for (backend, keys) in groups {
                    progress.group(&model, backend.name(), keys.len());
                    isolated_group(&plan, &model, backend, &keys, &progress, &mut store)?;
                }
            }
            Isolation::ChildProcess => {
                model_in_child(&plan, &model, groups, &progress, &mut store)?;
            }
        }
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

/// A model's backends with their cells still to run, in grid order.
type ModelTodo = (String, Vec<(Backend, Vec<CellKey>)>);

/// The cells still to run, by model and then backend, in grid order.
fn models_todo(plan: &Plan, todo: &[&CellKey]) -> Vec<ModelTodo> {
    let mut out: Vec<ModelTodo> = Vec::new();
    for (model, backend) in groups(&plan.config) {
        let keys: Vec<CellKey> = todo
            .iter()
            .filter(|k| k.model == model && k.backend == backend)
            .map(|&k| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some((m, g)) if *m == model => g.push((backend, keys)),
            _ => out.push((model, vec![(backend, keys)])),
        }
    }
    out
}

/// Runs one (model, backend) group in this process, its errors and panics caught: the
/// work a child process does per group, and the in-process sweep's.
fn run_group_isolated(
    plan: &Plan,
    model: &str,
    backend: Backend,
    keys: &[CellKey],
    progress: &Progress,
    emit: &mut cell::Emit,
) -> std::result::Result<(), String> {
    isolate::run(|| {
        if plan::weights_model(model)?.is_some() {
            minilm::run_group(plan, model, backend, keys, progress, emit)
        } else {
            group::run_group(plan, model, backend, keys, progress, emit)
        }
    })
}

/// Runs a model's groups in a child process, recording its cells as they arrive. A group
/// that fails in the child fails its open cells with the child's message; a child that
/// dies fails every cell still open with the signal or status and its last stderr lines,
/// counted as a crash, and the sweep goes on. Only a failure to write `results.json` (or
/// to start a process) ends the sweep.
fn model_in_child(
    plan: &Plan,
    model: &str,
    groups: Vec<(Backend, Vec<CellKey>)>,
    progress: &Progress,
    store: &mut Store,
) -> Result<()> {
    let backends: Vec<&str> = groups.iter().map(|(b, _)| b.name()).collect();
    let total: usize = groups.iter().map(|(_, k)| k.len()).sum();
    progress.group(model, &backends.join(","), total);
    let mut open: BTreeSet<CellKey> = groups.iter().flat_map(|(_, k)| k.clone()).collect();
    let job = child::Job {
        config: plan.config.clone(),
        model: model.to_owned(),
        skips: plan
            .skips
            .iter()
            .filter(|(k, _)| open.contains(*k))
            .map(|(k, r)| (k.clone(), r.clone()))
            .collect(),
        groups,
    };
    let mut group_failed: Vec<(Backend, String)> = Vec::new();
    let outcome = {
        let mut on_cells = |cells: Vec<Cell>| -> Result<()> {
            let n = cells.len();
            for c in &cells {
                open.remove(&c.key());
            }
            store.record(cells)?;
            progress.done(n);
            Ok(())
        };
        child::run(&job, progress, &mut on_cells, &mut |b, r| {
            group_failed.push((b, r))
        })?
    };
    for (backend, keys) in &job.groups {
        let rest: Vec<&CellKey> = keys.iter().filter(|k| open.contains(*k)).collect();
        if rest.is_empty() {
            continue;
        }
        let failure = group_failed.iter().find(|(b, _)| b == backend);
        let cells: Vec<Cell> = match (&outcome, failure) {
            (_, Some((_, reason))) => rest.iter().map(|k| failed(k, reason)).collect(),
            (Err(died), None) => rest
                .iter()
                .map(|k| {
                    let crashes = store.crashed_before(k) + 1;
                    let reason = if crashes >= store::MAX_CRASHES {
                        format!(
                            "{died} (crash {crashes} of this cell: not retried by --resume again)"
                        )
                    } else {
                        format!("{died} (--resume retries it once)")
                    };
                    let mut c = failed(k, &reason);
                    c.crashes = crashes;
                    c
                })
                .collect(),
            (Ok(()), None) => rest
                .iter()
                .map(|k| failed(k, "the group ended without measuring this cell"))
                .collect(),
        };
        progress.note(&format!(
            "{model} / {}: {} cell(s) failed: {}",
            backend.name(),
            cells.len(),
            cells[0].reason.as_deref().unwrap_or("")
        ));
        let n = cells.len();
        store.record(cells)?;
        progress.done(n);
    }
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
        run_group_isolated(plan, model, backend, keys, progress, &mut emit)
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
