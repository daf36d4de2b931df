//! The parent's fuzz loop for one format: cases in child processes, findings saved.
//!
//! Cases run in batches, one child process per batch; a child that dies is replaced by a
//! new one starting at the case after the one that killed it. Inputs are rebuilt in the
//! parent from the case number (they are a pure function of it, see [`crate::case`]) to
//! be saved, so children never write files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::case;
use crate::findings::{self, Finding, Known};
use crate::format::Format;
use crate::seeds;
use crate::supervise::{self, Outcome};

/// Settings of a fuzz run.
pub struct RunOptions {
    pub seed: u64,
    pub cases: u64,
    pub budget: usize,
    pub timeout: Duration,
    /// Cases per child process.
    pub batch: u64,
    /// Where findings are saved (`<out>/<format>/crash-<hash>`).
    pub out: PathBuf,
    pub known: Known,
}

/// What a format's run found.
pub struct Stats {
    pub format: Format,
    pub cases: u64,
    pub accepted: u64,
    pub peak: usize,
    pub elapsed: Duration,
    pub findings: Vec<Finding>,
    /// Why the run stopped before `cases`, if it did.
    pub stopped: Option<String>,
}

/// The child command for cases `start..start + count`.
fn child_cmd(format: Format, opts: &RunOptions, start: u64, count: u64) -> Command {
    let exe = std::env::current_exe().expect("the driver knows its own path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--child",
        "--format",
        format.name(),
        "--seed",
        &opts.seed.to_string(),
        "--start",
        &start.to_string(),
        "--cases",
        &count.to_string(),
        "--budget",
        &opts.budget.to_string(),
    ]);
    cmd
}

/// Fuzzes `format` for `opts.cases` cases.
pub fn fuzz(format: Format, opts: &RunOptions) -> Stats {
    let t0 = Instant::now();
    let seeds = seeds::for_format(format);
    let mut stats = Stats {
        format,
        cases: 0,
        accepted: 0,
        peak: 0,
        elapsed: Duration::ZERO,
        findings: Vec::new(),
        stopped: None,
    };
    let mut next = 0;
    let mut stuck = 0;
    while next < opts.cases {
        let count = opts.batch.min(opts.cases - next);
        let run = supervise::run(
            child_cmd(format, opts, next, count),
            opts.timeout,
            opts.budget,
        );
        if let Some(e) = run.spawn_error {
            stats.stopped = Some(format!(
                "cannot start a child process ({e}); was the binary rebuilt during the run?"
            ));
            break;
        }
        let before = next;
        for (i, outcome) in run.cases {
            stats.cases += 1;
            next = next.max(i + 1);
            match outcome {
                Outcome::Ok { peak, accepted } => {
                    stats.peak = stats.peak.max(peak);
                    stats.accepted += u64::from(accepted);
                }
                Outcome::Failed(reason) => {
                    stats.findings.push(record(format, &seeds, opts, i, reason));
                }
            }
        }
        if !run.clean && next == before {
            // A child that dies before its first case (or between cases) would loop
            // forever; give it a few tries, then skip the case.
            stuck += 1;
            if stuck >= 3 {
                eprintln!(
                    "qbench-fuzz: {} case {next}: child keeps dying before it starts; skipped",
                    format.name()
                );
                next += 1;
                stuck = 0;
            }
        } else {
            stuck = 0;
        }
    }
    stats.elapsed = t0.elapsed();
    stats
}

/// Saves case `i`'s input and returns the finding.
fn record(
    format: Format,
    seeds: &[seeds::Seed],
    opts: &RunOptions,
    i: u64,
    reason: String,
) -> Finding {
    let c = case::generate(format, seeds, opts.seed, i);
    let key = findings::key(format, &c.bytes);
    let line = format!("{reason} | seed {} case {i} | {}", opts.seed, c.describe());
    let saved = match findings::save(&opts.out, &key, &c.bytes, &line) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("qbench-fuzz: cannot save {key}: {e}");
            None
        }
    };
    Finding {
        format,
        case: i,
        listed: opts.known.contains(&key),
        key,
        reason,
        saved,
    }
}
