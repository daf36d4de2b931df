//! The `results.json` of a running sweep: created (or reopened by `--resume`), rewritten
//! atomically whenever cells become final, and closed with the run's finish time.
//!
//! Owns what "final" means for `--resume`: a measured or skipped cell in the file is final
//! and kept as it is; a failed cell is tried again, unless its model's process crashed on
//! it [`MAX_CRASHES`] times; a planned cell absent from the file was never finished. Since cells are recorded as soon as they are final (not per model), a
//! killed sweep loses only the cells whose work was under way.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::results::{self, Cell, CellKey, Results, State};
use anyhow::{ensure, Context, Result};

use super::plan::Plan;

pub struct Store {
    path: PathBuf,
    results: Results,
    /// This process's index in `runs`, stamped on every cell it records.
    run: usize,
    /// Calls of `record` that wrote cells, for [`ABORT_AFTER_RECORDS_ENV`].
    records: usize,
    /// Crash counts of the failed cells a resume dropped to try again.
    crashed_before: BTreeMap<CellKey, u32>,
}

/// A cell whose model's process died this many times is failed for good: `--resume`
/// retries a crash once, since a second one is the model's, not bad luck.
pub const MAX_CRASHES: u32 = 2;

/// Test hook: `QBENCH_ABORT_AFTER_RECORDS=N` aborts the process right after the N-th
/// write of recorded cells, as a `kill -9` at that moment would. The kill/resume test
/// uses it to stop a sweep exactly between two writes; a test that polled the file and
/// killed the process would depend on winning a race against the sweep.
pub const ABORT_AFTER_RECORDS_ENV: &str = "QBENCH_ABORT_AFTER_RECORDS";

fn abort_after_records() -> Option<usize> {
    std::env::var(ABORT_AFTER_RECORDS_ENV).ok()?.parse().ok()
}

impl Store {
    /// A new `results.json` in the plan's directory (refused if one exists), or with
    /// `resume` the one there, checked to hold this plan's config, its failed cells
    /// dropped and this process added to its runs. Written before returning, so the file
    /// names this run even if it is killed before its first cell.
    pub fn open(plan: &Plan, resume: bool) -> Result<Store> {
        let path = plan.out.join("results.json");
        let mut crashed_before = BTreeMap::new();
        let results = if resume {
            let mut r =
                Results::read(&path).with_context(|| format!("--resume {}", plan.out.display()))?;
            ensure!(
                r.config == plan.config,
                "--resume {}: its config differs from this sweep's (give the same --config and flags; recorded: {})",
                plan.out.display(),
                serde_json::to_string(&r.config)?
            );
            // Failed cells are tried again, unless they crashed their process too often;
            // measured and skipped ones are final.
            for c in &r.cells {
                if c.state == State::Failed && c.crashes > 0 && c.crashes < MAX_CRASHES {
                    crashed_before.insert(c.key(), c.crashes);
                }
            }
            r.cells
                .retain(|c| c.state != State::Failed || c.crashes >= MAX_CRASHES);
            r.add_run(results::Run::detect(plan.shard));
            r
        } else {
            ensure!(
                !path.exists(),
                "{} exists; use --resume {} to complete it, or another --out",
                path.display(),
                plan.out.display()
            );
            let mut r = Results::new(plan.config.clone(), plan.shard);
            for (purpose, offset) in [
                ("calibration", 1u64),
                ("random_inputs", 2),
                ("qat_shuffle", 3),
            ] {
                r.seeds
                    .insert(purpose.into(), plan.config.seed.wrapping_add(offset));
            }
            r
        };
        let run = results.runs.len() - 1;
        results.write(&path)?;
        Ok(Store {
            path,
            results,
            run,
            records: 0,
            crashed_before,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cells already final in the file (kept from an earlier run or recorded now).
    pub fn final_keys(&self) -> BTreeSet<CellKey> {
        self.results.cells.iter().map(Cell::key).collect()
    }

    /// How many times `key`'s model process had crashed on it before this run.
    pub fn crashed_before(&self, key: &CellKey) -> u32 {
        self.crashed_before.get(key).copied().unwrap_or(0)
    }

    /// Adds `cells`, now final, as this run's, and rewrites the file atomically.
    pub fn record(&mut self, cells: Vec<Cell>) -> Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        for mut c in cells {
            c.run = self.run;
            self.results.cells.push(c);
        }
        self.results.cells.sort_by_key(Cell::key);
        self.results.write(&self.path)?;
        self.records += 1;
        if abort_after_records() == Some(self.records) {
            // The test hook below: die as a kill would, with no cleanup.
            std::process::abort();
        }
        Ok(())
    }

    /// Stamps the run's finish time, writes the file and hands back the results.
    pub fn finish(mut self) -> Result<Results> {
        self.results.runs[self.run].finished_at =
            Some(results::rfc3339_utc(std::time::SystemTime::now()));
        self.results.write(&self.path)?;
        Ok(self.results)
    }
}
